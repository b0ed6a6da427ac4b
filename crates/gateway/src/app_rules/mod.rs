//! Per-app rules: what an admin sets for one app beyond roles.
//!
//! - **Secret env vars** (`secret_env`): their values are masked in every release the rack
//!   returns (`convox env`, `convox releases info`, the answer to `convox env set`) for anyone
//!   without [`READ_SECRETS`]; a masked value sent back (`convox env set OTHER=1` writes the
//!   whole environment it read) keeps the value the app has.
//! - **Protected env vars** (`protected_env`): nobody without [`WRITE_PROTECTED`] sets,
//!   changes or unsets them through the gateway.
//! - **Approved commands** (`approved_commands`): what a credential deploying through an
//!   approved deploy request may run on the app (`convox run`, `convox exec`), such as
//!   migrations before the promote.
//! - **Service images** (`service_images`): for each service (or `*`, every service), the image
//!   a release promoted through an approved deploy request must name, with `{commit}` standing
//!   for the approved commit.
//!
//! Names and images are patterns where `*` stands for any run of characters. Rules are kept
//! by the store ([`crate::store`]); [`change`] sets them, audited. This module is the rules'
//! shape and how they judge; [`mod@env`] reads the rack's environment text, [`manifest`] a build's
//! `convox.yml`.

pub mod change;
pub mod env;
pub mod manifest;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use change::{clear_rules, set_rules};

/// Read the rules of any app.
pub const READ: &str = "gateway:app-rules:read";
/// Set or clear an app's rules.
pub const WRITE: &str = "gateway:app-rules:write";
/// See the values of apps' secret env vars.
pub const READ_SECRETS: &str = "gateway:secrets:read";
/// Set, change or unset apps' protected env vars.
pub const WRITE_PROTECTED: &str = "gateway:protected-env:write";

/// The most entries one list (or the image map) holds.
pub const MAX_ENTRIES: usize = 100;
/// The longest env var name pattern.
const MAX_NAME: usize = 128;
/// The longest approved command.
const MAX_COMMAND: usize = 1000;
/// The longest image pattern.
const MAX_IMAGE: usize = 500;
/// What stands for the approved commit in an image pattern.
pub const COMMIT: &str = "{commit}";

/// One app's rules. Unknown fields are refused, so a typo cannot pass for a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRules {
    /// Env var names (patterns) whose values only [`READ_SECRETS`] holders see.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Env var names (patterns) only [`WRITE_PROTECTED`] holders change.
    #[serde(default)]
    pub protected_env: Vec<String>,
    /// Commands an approved deploy may run on the app, exactly as given to `convox run`.
    #[serde(default)]
    pub approved_commands: Vec<String>,
    /// Service name (or `*`) → the image pattern an approved deploy's release must name.
    #[serde(default)]
    pub service_images: BTreeMap<String, String>,
}

impl AppRules {
    /// No rule at all.
    pub fn is_empty(&self) -> bool {
        self.secret_env.is_empty()
            && self.protected_env.is_empty()
            && self.approved_commands.is_empty()
            && self.service_images.is_empty()
    }

    /// The rules as given, trimmed, each entry once, checked: the message says what is wrong
    /// and where.
    pub fn checked(self) -> Result<AppRules, String> {
        let secret_env = names("secret_env", self.secret_env)?;
        let protected_env = names("protected_env", self.protected_env)?;
        let approved_commands = listed("approved_commands", self.approved_commands, |c| {
            if c.chars().count() > MAX_COMMAND || c.chars().any(gateway_core::text::is_hidden) {
                Err(format!(
                    "at most {MAX_COMMAND} printable characters on one line"
                ))
            } else {
                Ok(())
            }
        })?;
        if self.service_images.len() > MAX_ENTRIES {
            return Err(format!("service_images: at most {MAX_ENTRIES} services"));
        }
        let mut service_images = BTreeMap::new();
        for (service, pattern) in self.service_images {
            let service = service.trim().to_string();
            if service != "*" && !is_service_name(&service) {
                return Err(format!(
                    "service_images: {} is not a service name (lower-case letters, digits and \
                     '-', at most 63) nor *",
                    shown(&service)
                ));
            }
            let pattern = pattern.trim().to_string();
            image_pattern_problem(&pattern)
                .map_err(|why| format!("service_images.{service}: {why}"))?;
            service_images.insert(service, pattern);
        }
        Ok(AppRules {
            secret_env,
            protected_env,
            approved_commands,
            service_images,
        })
    }

    /// Whether env var `name` is one of the app's secret ones.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret_env.iter().any(|p| matches(p, name))
    }

    /// Whether env var `name` is one of the app's protected ones.
    pub fn is_protected(&self, name: &str) -> bool {
        self.protected_env.iter().any(|p| matches(p, name))
    }

    /// Whether `command` (as `convox run` sends it) is one of the approved ones; surrounding
    /// spaces aside, it must be the same text.
    pub fn approves_command(&self, command: &str) -> bool {
        let command = command.trim();
        self.approved_commands.iter().any(|c| c == command)
    }

    /// Why the `images` a release's services name (service → image, `None` for a service
    /// built from source) break the image rules for `commit`, or `None` when they keep them.
    /// A service a rule names must be there, with an image matching its pattern; `*` holds
    /// every service.
    pub fn image_problem(
        &self,
        images: &BTreeMap<String, Option<String>>,
        commit: &str,
    ) -> Option<String> {
        for (service, pattern) in &self.service_images {
            let expected = pattern.replace(COMMIT, commit);
            let judged: Vec<(&String, &Option<String>)> = if service == "*" {
                images.iter().collect()
            } else {
                match images.get_key_value(service) {
                    Some(found) => vec![found],
                    None => {
                        return Some(format!(
                            "the release has no service {service}, which must run an image \
                             matching {expected}"
                        ));
                    }
                }
            };
            for (name, image) in judged {
                match image {
                    // The rack fills `${VAR}` from the release's environment before it pulls:
                    // the text here is not what would run, so it cannot be judged.
                    Some(image) if image.contains('$') => {
                        return Some(format!(
                            "service {name}'s image {} takes part of its name from the \
                             environment (${{…}}), which the image rules cannot judge: name the \
                             image in full",
                            shown(image)
                        ));
                    }
                    Some(image) if matches(&expected, image) => {}
                    Some(image) => {
                        return Some(format!(
                            "service {name} runs image {}, which does not match {expected}",
                            shown(image)
                        ));
                    }
                    None => {
                        return Some(format!(
                            "service {name} is built from source, but must run an image \
                             matching {expected}"
                        ));
                    }
                }
            }
        }
        None
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and everything else for itself.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Greedy with one backtrack point (the last `*`): linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A Convox service name.
fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// Env var name patterns: what the rack reads as a name (no space, no `=`), printable.
fn names(list: &str, given: Vec<String>) -> Result<Vec<String>, String> {
    listed(list, given, |name| {
        if name.len() > MAX_NAME
            || name.contains('=')
            || name.chars().any(char::is_whitespace)
            || name.chars().any(gateway_core::text::is_hidden)
        {
            Err(format!(
                "an env var name (or pattern with *): at most {MAX_NAME} characters, no spaces \
                 or '='"
            ))
        } else {
            Ok(())
        }
    })
}

/// `given` trimmed, without blanks or repeats, each entry checked by `check`.
fn listed(
    list: &str,
    given: Vec<String>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, String> {
    let mut kept: Vec<String> = Vec::new();
    for entry in given.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        check(entry).map_err(|why| format!("{list}: {}: {why}", shown(entry)))?;
        if !kept.iter().any(|k| k == entry) {
            kept.push(entry.to_string());
        }
    }
    if kept.len() > MAX_ENTRIES {
        return Err(format!("{list}: at most {MAX_ENTRIES} entries"));
    }
    Ok(kept)
}

/// Why `pattern` is not an image pattern: an image reference with `*` and `{commit}` in it.
fn image_pattern_problem(pattern: &str) -> Result<(), String> {
    if pattern.is_empty()
        || pattern.len() > MAX_IMAGE
        || pattern
            .chars()
            .any(|c| c.is_whitespace() || gateway_core::text::is_hidden(c))
    {
        return Err(format!(
            "an image pattern: 1 to {MAX_IMAGE} characters, no spaces"
        ));
    }
    // `{commit}` is the one placeholder: any other brace is a typo (`{sha}`), refused rather
    // than matched literally and never met.
    if pattern.replace(COMMIT, "").contains(['{', '}']) {
        return Err(format!(
            "{}: the only placeholder is {COMMIT}",
            shown(pattern)
        ));
    }
    Ok(())
}

/// Input as a message may quote it: visible, cut short.
fn shown(text: &str) -> String {
    let visible: String = text
        .chars()
        .map(gateway_core::text::shown)
        .take(80)
        .collect();
    format!("{visible:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Result<AppRules, String> {
        serde_json::from_str::<AppRules>(json)
            .map_err(|e| e.to_string())?
            .checked()
    }

    #[test]
    fn patterns_match_whole_names_with_stars_for_any_run() {
        assert!(matches("DATABASE_URL", "DATABASE_URL"));
        assert!(!matches("DATABASE_URL", "DATABASE_URL2"));
        assert!(!matches("DATABASE_URL", "MY_DATABASE_URL"));
        assert!(matches("AWS_*", "AWS_SECRET_ACCESS_KEY"));
        assert!(matches("AWS_*", "AWS_"));
        assert!(!matches("AWS_*", "XAWS_KEY"));
        assert!(matches("*_KEY", "STRIPE_KEY"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXXbYYbc"));
        assert!(!matches("a*b*c", "aXXbYYb"));
        assert!(matches("ghcr.io/acme/*:abc", "ghcr.io/acme/web:abc"));
        assert!(!matches("ghcr.io/acme/*:abc", "ghcr.io/acme/web:abcd"));
        // Many stars and a long near-miss: still quick (no exponential backtracking).
        let long = "a".repeat(5000);
        assert!(!matches(&format!("{}b", "*a".repeat(50)), &long));
    }

    #[test]
    fn rules_are_trimmed_deduplicated_and_checked() {
        let r = rules(
            r#"{"secret_env":[" STRIPE_KEY ","STRIPE_KEY","","AWS_*"],
                "approved_commands":["bin/migrate "],
                "service_images":{"web":" ghcr.io/acme/web:{commit} "}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.secret_env, ["STRIPE_KEY", "AWS_*"]);
        assert_eq!(r.approved_commands, ["bin/migrate"]);
        assert_eq!(r.service_images["web"], "ghcr.io/acme/web:{commit}");
        assert!(r.is_secret("AWS_REGION") && !r.is_secret("PORT"));
        assert!(r.approves_command("  bin/migrate") && !r.approves_command("bin/migrate; sh"));
        assert!(rules("{}").unwrap_or_else(|e| panic!("{e}")).is_empty());
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (json, says) in [
            (r#"{"secret_env":["A B"]}"#, "secret_env: \"A B\""),
            (r#"{"protected_env":["A=1"]}"#, "protected_env"),
            (r#"{"approved_commands":["a\nb"]}"#, "approved_commands"),
            (r#"{"service_images":{"Web":"x"}}"#, "not a service name"),
            (
                r#"{"service_images":{"web":"x:{sha}"}}"#,
                "only placeholder",
            ),
            (r#"{"service_images":{"web":""}}"#, "service_images.web"),
            (r#"{"secrets":["A"]}"#, "unknown field"),
        ] {
            let err = rules(json).err().unwrap_or_default();
            assert!(err.contains(says), "{json}: {err}");
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("V{i}")).collect();
        let too_many = AppRules {
            secret_env: many,
            ..AppRules::default()
        };
        assert!(too_many.checked().is_err());
    }

    #[test]
    fn images_must_match_their_service_pattern_with_the_commit() {
        let r = rules(r#"{"service_images":{"web":"ghcr.io/acme/web:{commit}"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let images = |web: Option<&str>| {
            BTreeMap::from([
                ("web".to_string(), web.map(str::to_string)),
                ("worker".to_string(), None),
            ])
        };
        assert_eq!(
            r.image_problem(&images(Some("ghcr.io/acme/web:abc123")), "abc123"),
            None
        );
        let wrong = r.image_problem(&images(Some("ghcr.io/acme/web:ffff")), "abc123");
        assert!(wrong.is_some_and(|w| w.contains("does not match ghcr.io/acme/web:abc123")));
        // `*` would match an interpolation, which the rack fills from the environment.
        let loose = rules(r#"{"service_images":{"web":"ghcr.io/acme/*"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let filled = loose.image_problem(&images(Some("ghcr.io/acme/${IMAGE}")), "abc123");
        assert!(filled.is_some_and(|w| w.contains("from the environment")));
        let built = r.image_problem(&images(None), "abc123");
        assert!(built.is_some_and(|w| w.contains("built from source")));
        let missing = r.image_problem(&BTreeMap::new(), "abc123");
        assert!(missing.is_some_and(|w| w.contains("no service web")));
        // `*` holds every service: the worker, built from source, breaks it.
        let all = rules(r#"{"service_images":{"*":"ghcr.io/acme/*:{commit}"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let worker = all.image_problem(&images(Some("ghcr.io/acme/web:abc123")), "abc123");
        assert!(worker.is_some_and(|w| w.contains("service worker")));
    }
}
