//! How a setting's value is read: whole numbers as plain digits within bounds, durations in
//! seconds, switches.

use std::time::Duration;

use super::{ConfigError, Secret};

/// Longest duration a setting takes: ten years. Near `u64::MAX` seconds, deadlines computed
/// from "now" overflow: with `CLIENT_TIMEOUT_SECS=18446744073709551615` every request panicked
/// in hyper's header deadline.
pub const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

pub(super) fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    whole_number(get, name, default, MAX_SECONDS, || {
        format!("a whole number of seconds from 1 to {MAX_SECONDS} (10 years)")
    })
    .map(Duration::from_secs)
}

/// Largest count a setting takes (connections, sessions).
const MAX_COUNT: usize = 1_000_000;

pub(super) fn count(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    let max = MAX_COUNT as u64;
    whole_number(get, name, default as u64, max, || {
        format!("a whole number from 1 to {MAX_COUNT}")
    })
    .map(|n| n as usize)
}

/// `name` as a whole number from 1 to `max` (`default` when unset); `expected` says what a
/// valid value looks like.
pub(super) fn whole_number(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    max: u64,
    expected: impl FnOnce() -> String,
) -> Result<u64, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) => digits(&v)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ConfigError::Invalid {
                name,
                expected: expected(),
            }),
    }
}

/// `value` without surrounding whitespace when it is only ASCII digits; Rust's integer parser
/// also takes a leading `+`, which no documented example has.
pub(super) fn digits(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())).then_some(value)
}

/// The secret `name`, required, as sent: no surrounding whitespace and no control
/// characters. A secret read from a file often keeps its newline, and sent as is it fails only
/// where it is used (a 401 from the rack, `invalid_client` from the provider); it is refused
/// here with the reason, never with the value. `missing` says what to set; `what` names it in
/// the refusal.
pub(super) fn required_secret(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    missing: &'static str,
    what: &str,
) -> Result<Secret, ConfigError> {
    let secret = get(name).map(Secret::new).ok_or(ConfigError::Missing {
        name,
        expected: missing,
    })?;
    let value = secret.expose();
    // Surrounding whitespace shows as a shorter trimmed length; no comparison of contents.
    if value.trim().len() != value.len() || value.chars().any(char::is_control) {
        return Err(ConfigError::Invalid {
            name,
            expected: format!(
                "{what} without surrounding whitespace or control characters (a trailing \
                 newline from a file?)"
            ),
        });
    }
    Ok(secret)
}

pub(super) fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    // In any letter case, as the other word-valued settings (`SQLITE_SYNCHRONOUS=FULL`).
    match get(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(ConfigError::Invalid {
            name,
            expected: "true or false (also 1/0, yes/no, on/off)".into(),
        }),
    }
}

/// Two settings that only work together, read with `get`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pair {
    /// Both set (trimmed).
    Both(String, String),
    /// Neither set.
    Neither,
    /// Only one set: this one is missing.
    Lacks(&'static str),
}

/// `first` and `second` together, or neither; `needs_both`, when set, is only valid with the
/// pair (an address for their service, say).
pub(super) fn pair(
    get: &impl Fn(&str) -> Option<String>,
    first: &'static str,
    second: &'static str,
    needs_both: &'static str,
) -> Result<Pair, ConfigError> {
    Ok(match (get(first), get(second)) {
        (Some(a), Some(b)) => Pair::Both(a.trim().to_string(), b.trim().to_string()),
        (None, None) if get(needs_both).is_some() => {
            return Err(ConfigError::Invalid {
                name: needs_both,
                expected: format!("{first} and {second} as well"),
            });
        }
        (None, None) => Pair::Neither,
        (Some(_), None) => Pair::Lacks(second),
        (None, Some(_)) => Pair::Lacks(first),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_both_or_neither_and_names_what_is_missing() {
        let read = |set: &[(&str, &str)]| {
            let set: Vec<(String, String)> = set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            pair(
                &|name: &str| set.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
                "A_ID",
                "A_KEY",
                "A_URL",
            )
        };
        assert_eq!(
            read(&[("A_ID", " 1 "), ("A_KEY", "k")]).ok(),
            Some(Pair::Both("1".into(), "k".into()))
        );
        assert_eq!(read(&[]).ok(), Some(Pair::Neither));
        assert_eq!(read(&[("A_ID", "1")]).ok(), Some(Pair::Lacks("A_KEY")));
        assert_eq!(read(&[("A_KEY", "k")]).ok(), Some(Pair::Lacks("A_ID")));
        let alone = read(&[("A_URL", "https://x")]).err().map(|e| e.to_string());
        assert!(
            alone
                .as_deref()
                .is_some_and(|e| e.contains("A_URL") && e.contains("A_ID and A_KEY")),
            "{alone:?}"
        );
    }
}
