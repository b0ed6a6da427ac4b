//! Keeps the rack's credentials out of audit events.
//!
//! Redaction ([`super::redact`]) masks secrets by their names and shapes; the rack token has
//! neither (a Convox rack password is a plain random string), so a caller who puts it in a
//! path, a query, a user agent, a command or a token name would otherwise have it written into
//! a trail nobody can edit. Every text field a caller or an admin can fill is searched for the
//! rack's credentials (the [`Scrubber`] that masks rack answers) and each occurrence is
//! overwritten with `*`, as in answers, before the event reaches the writer.

use gateway_core::scrub::Scrubber;
use serde_json::Value;

use super::AuditEvent;

/// Masks the rack's credentials in every text field of `event` that does not come from the
/// gateway itself.
pub(super) fn mask_event(secrets: &Scrubber, event: &mut AuditEvent) {
    if secrets.is_empty() {
        return;
    }
    for text in [
        event.user_email.as_mut(),
        event.token_name.as_mut(),
        event.method.as_mut(),
        event.path.as_mut(),
        event.user_agent.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        mask_text(secrets, text);
    }
    mask_json(secrets, &mut event.details);
}

fn mask_text(secrets: &Scrubber, text: &mut String) {
    if !secrets.contains(text.as_bytes()) {
        return;
    }
    let mut bytes = std::mem::take(text).into_bytes();
    secrets.mask(&mut bytes);
    // A secret that is valid UTF-8 only ever matches whole characters, so the masked bytes stay
    // UTF-8; a lossy copy covers a secret that is not.
    *text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

fn mask_json(secrets: &Scrubber, value: &mut Value) {
    match value {
        Value::String(s) => mask_text(secrets, s),
        Value::Array(items) => items.iter_mut().for_each(|v| mask_json(secrets, v)),
        Value::Object(map) => {
            if map.keys().any(|k| secrets.contains(k.as_bytes())) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(mut k, v)| {
                        mask_text(secrets, &mut k);
                        (k, v)
                    })
                    .collect();
            }
            map.values_mut().for_each(|v| mask_json(secrets, v));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;

    const TOKEN: &str = "rack-password-1234";

    #[test]
    fn the_rack_token_is_masked_wherever_a_caller_can_put_it() {
        let secrets = Scrubber::new(&[TOKEN]);
        let mut e = AuditEvent::new(EventKind::Request, "r1", "convox:apps:get");
        e.path = Some(format!("/apps/{TOKEN}?q={TOKEN}"));
        e.user_agent = Some(format!("curl ({TOKEN})"));
        e.method = Some(TOKEN.to_string());
        e.token_name = Some(format!("ci-{TOKEN}"));
        e.user_email = Some(format!("{TOKEN}@example.com"));
        e.details = serde_json::json!({
            "command": format!("echo {TOKEN}"),
            TOKEN: [format!("x{TOKEN}x"), 3],
            "nested": { "ok": "plain" },
        });
        mask_event(&secrets, &mut e);
        let stars = "*".repeat(TOKEN.len());
        assert_eq!(
            e.path.as_deref(),
            Some(&*format!("/apps/{stars}?q={stars}"))
        );
        assert_eq!(e.user_agent.as_deref(), Some(&*format!("curl ({stars})")));
        assert_eq!(e.method.as_deref(), Some(&*stars));
        assert_eq!(e.token_name.as_deref(), Some(&*format!("ci-{stars}")));
        assert_eq!(
            e.user_email.as_deref(),
            Some(&*format!("{stars}@example.com"))
        );
        assert_eq!(
            e.details,
            serde_json::json!({
                "command": format!("echo {stars}"),
                stars.clone(): [format!("x{stars}x"), 3],
                "nested": { "ok": "plain" },
            })
        );
    }

    #[test]
    fn events_without_the_token_are_left_alone() {
        let secrets = Scrubber::new(&[TOKEN]);
        let mut e = AuditEvent::new(EventKind::Request, "r1", "convox:apps:get");
        e.path = Some("/apps/web".into());
        e.details = serde_json::json!({"command": "ls"});
        let before = e.canonical_bytes();
        mask_event(&secrets, &mut e);
        assert_eq!(e.canonical_bytes(), before);
        // No secrets configured (admin commands): nothing to do.
        let mut e2 = AuditEvent::new(EventKind::Request, "r1", "x");
        e2.path = Some(format!("/apps/{TOKEN}"));
        mask_event(&Scrubber::new::<&str>(&[]), &mut e2);
        assert_eq!(e2.path.as_deref(), Some(&*format!("/apps/{TOKEN}")));
    }
}
