//! Environment and manifest text helpers, behaving like convox's own.

use std::collections::BTreeMap;

/// `^[a-z][a-z0-9-]*$`, convox's name rule.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Parses `KEY=value` lines like convox's `Environment.Load`.
pub fn parse_env(env: &str) -> BTreeMap<String, String> {
    env.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Renders an environment like convox's `Environment.String` (sorted lines).
pub fn render_env<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    lines.sort();
    lines.join("\n")
}

/// Describes an environment change like convox: `add:A change:B remove:C`.
pub fn env_diff(old: &str, new: &str) -> String {
    let a = parse_env(old.trim());
    let b = parse_env(new.trim());
    let mut parts = Vec::new();
    parts.extend(
        b.keys()
            .filter(|k| !a.contains_key(*k))
            .map(|k| format!("add:{k}")),
    );
    parts.extend(
        b.iter()
            .filter(|(k, v)| a.get(*k).is_some_and(|old| old != *v))
            .map(|(k, _)| format!("change:{k}")),
    );
    parts.extend(
        a.keys()
            .filter(|k| !b.contains_key(*k))
            .map(|k| format!("remove:{k}")),
    );
    parts.join(" ")
}

/// The manifest used for builds of apps that never had one.
pub fn default_manifest() -> &'static str {
    "services:\n  web:\n    build: .\n    port: 3000\n"
}

/// Service names and ports declared in a convox.yml (a tiny, indentation-based
/// reading of the `services:` block; enough for manifests this crate writes).
pub fn manifest_services(manifest: &str) -> Vec<(String, Option<i64>)> {
    let mut out: Vec<(String, Option<i64>)> = Vec::new();
    let mut in_services = false;
    for line in manifest.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 0 {
            in_services = text == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 && text.ends_with(':') {
            out.push((text.trim_end_matches(':').to_string(), None));
        } else if let Some(port) = text.strip_prefix("port:")
            && let Some(last) = out.last_mut()
        {
            last.1 = port.trim().parse().ok();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_helpers() {
        let e = parse_env("B=2\nA=1\n=x\nC=a=b");
        assert_eq!(e.get("C").map(String::as_str), Some("a=b"));
        assert_eq!(
            render_env(e.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            "A=1\nB=2\nC=a=b"
        );
        assert_eq!(env_diff("A=1\nB=2", "A=1\nB=3\nD=4"), "add:D change:B");
        assert_eq!(env_diff("A=1\nB=2", "A=1"), "remove:B");
    }

    #[test]
    fn manifest_parsing() {
        let m = "environment:\n  - PORT\nservices:\n  web:\n    build: .\n    port: 3000\n  worker:\n    command: bin/worker\n";
        assert_eq!(
            manifest_services(m),
            vec![
                ("web".to_string(), Some(3000)),
                ("worker".to_string(), None)
            ]
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("web-2"));
        assert!(!valid_name("Web"));
        assert!(!valid_name("2web"));
        assert!(!valid_name(""));
    }
}
