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

use super::{AuditEvent, MAX_AUDITED_METHOD, MAX_AUDITED_USER_AGENT};

/// Masks the rack's credentials in every text field of `event` that does not come from the
/// gateway itself.
pub(super) fn mask_event(secrets: &Scrubber, event: &mut AuditEvent) {
    if secrets.is_empty() {
        return;
    }
    for (text, cut_at) in [
        (event.user_email.as_mut(), None),
        (event.token_name.as_mut(), None),
        // Methods and user agents are cut without a marker.
        (event.method.as_mut(), Some(Cut::Bytes(MAX_AUDITED_METHOD))),
        (
            event.user_agent.as_mut(),
            Some(Cut::Chars(MAX_AUDITED_USER_AGENT)),
        ),
    ] {
        if let Some(text) = text {
            mask_text(secrets, text, cut_at);
        }
    }
    if let Some(path) = event.path.as_mut() {
        mask_path(secrets, path);
    }
    mask_json(secrets, &mut event.details);
}

/// Masks `path` as [`mask_text`] does, and a copy that percent-encoding hides from that
/// search (`%72` for `r`): the path is then kept decoded and masked, as the proxy keeps one,
/// with hidden characters shown as U+FFFD.
fn mask_path(secrets: &Scrubber, path: &mut String) {
    mask_text(secrets, path, None);
    if !path.contains('%') {
        return;
    }
    let mut decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    if !secrets.contains(&decoded) {
        return;
    }
    secrets.mask(&mut decoded);
    *path = String::from_utf8_lossy(&decoded)
        .chars()
        .map(gateway_core::text::shown)
        .collect();
}

/// The length at which a field is cut without saying so.
#[derive(Clone, Copy)]
enum Cut {
    Bytes(usize),
    Chars(usize),
}

impl Cut {
    fn reached_by(self, text: &str) -> bool {
        match self {
            Cut::Bytes(n) => text.len() >= n,
            Cut::Chars(n) => text.chars().nth(n - 1).is_some(),
        }
    }
}

/// Where the text kept of a field cut by [`gateway_core::redact::clip`] ends: before its
/// `…[N more bytes]`.
fn clip_marker_at(text: &str) -> Option<usize> {
    let rest = text.strip_suffix(" more bytes]")?;
    let at = rest.rfind("…[")?;
    let digits = &rest[at + "…[".len()..];
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(at)
}

/// Masks every whole copy of a secret in `text`, and, where `text` was cut to length (a clip
/// marker, or `cut_at` reached), the beginning of one the cut left at its end: cut first and
/// masked after, a copy across the cut would otherwise keep all but its last characters.
fn mask_text(secrets: &Scrubber, text: &mut String, cut_at: Option<Cut>) {
    let cut_end =
        clip_marker_at(text).or_else(|| cut_at.filter(|c| c.reached_by(text)).map(|_| text.len()));
    let partial = cut_end.map_or(0, |end| secrets.partial_suffix(&text.as_bytes()[..end]));
    if partial == 0 && !secrets.contains(text.as_bytes()) {
        return;
    }
    let mut bytes = std::mem::take(text).into_bytes();
    secrets.mask(&mut bytes);
    if let Some(end) = cut_end {
        bytes[end - partial..end].fill(b'*');
    }
    // A secret that is valid UTF-8 only ever matches whole characters (a beginning of one
    // starts on a character and the cut ends on one), so the masked bytes stay UTF-8; a lossy
    // copy covers a secret that is not.
    *text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

fn mask_json(secrets: &Scrubber, value: &mut Value) {
    match value {
        Value::String(s) => mask_text(secrets, s, None),
        Value::Array(items) => items.iter_mut().for_each(|v| mask_json(secrets, v)),
        Value::Object(map) => {
            if map.keys().any(|k| secrets.contains(k.as_bytes())) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(mut k, v)| {
                        mask_text(secrets, &mut k, None);
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

    /// Found by review: fields are cut to length before they are masked, and a copy across
    /// the cut kept all but its last characters.
    #[test]
    fn the_beginning_of_the_token_left_by_a_cut_is_masked() {
        let secrets = Scrubber::new(&[TOKEN]);
        let mut e = AuditEvent::new(EventKind::Request, "r1", "convox:apps:get");
        let path = crate::audit::audited_path(format!("/apps/{}{TOKEN}", "x".repeat(2030)));
        assert!(
            path.contains(&TOKEN[..8]) && path.ends_with("more bytes]"),
            "{path}"
        );
        e.path = Some(path);
        e.user_agent = Some(format!("{}{}", "u".repeat(250), &TOKEN[..6]));
        e.method = Some(format!("{}{}", "M".repeat(26), &TOKEN[..6]));
        e.details = serde_json::json!({
            "command": gateway_core::redact::clip(format!("{}{TOKEN}", "c".repeat(1015)), 1024),
        });
        mask_event(&secrets, &mut e);
        let path = e.path.unwrap_or_default();
        assert!(!path.contains(&TOKEN[..8]), "{path}");
        assert!(
            path.contains("x*") && path.ends_with("more bytes]"),
            "{path}"
        );
        assert_eq!(
            e.user_agent.as_deref(),
            Some(&*format!("{}******", "u".repeat(250)))
        );
        assert_eq!(
            e.method.as_deref(),
            Some(&*format!("{}******", "M".repeat(26)))
        );
        let command = e.details["command"].as_str().unwrap_or_default();
        assert!(command.starts_with(&"c".repeat(1015)), "{command}");
        assert!(command.contains("c*********…["), "{command}");
        // A text not cut keeps an ending that merely looks like the token's beginning.
        let mut e = AuditEvent::new(EventKind::Request, "r1", "x");
        e.path = Some("/apps/rack".into());
        e.user_agent = Some("curl/8 rack".into());
        mask_event(&secrets, &mut e);
        assert_eq!(e.path.as_deref(), Some("/apps/rack"));
        assert_eq!(e.user_agent.as_deref(), Some("curl/8 rack"));
    }

    #[test]
    fn a_percent_encoded_token_in_a_path_is_masked() {
        let secrets = Scrubber::new(&[TOKEN]);
        let mut e = AuditEvent::new(EventKind::Request, "r1", "gateway:users:lock");
        e.path = Some(format!("/api/v1/users/%72{}%00/lock", &TOKEN[1..]));
        mask_event(&secrets, &mut e);
        let stars = "*".repeat(TOKEN.len());
        assert_eq!(
            e.path.as_deref(),
            Some(&*format!("/api/v1/users/{stars}\u{FFFD}/lock"))
        );
        // Encoded characters elsewhere stay as they were sent.
        let mut e = AuditEvent::new(EventKind::Request, "r1", "x");
        e.path = Some("/api/v1/users/a%40b/lock".into());
        mask_event(&secrets, &mut e);
        assert_eq!(e.path.as_deref(), Some("/api/v1/users/a%40b/lock"));
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
