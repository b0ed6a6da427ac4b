//! An app's environment as the rack writes and reads it: `KEY=value` lines.
//!
//! Read the way the rack reads the `env` of a release (Go's `bufio.Scanner` lines, a `\r`
//! before the `\n` dropped; the name is what comes before the first `=`, trimmed; lines
//! without `=` or a name are skipped; a later line wins), and written back as the rack writes
//! it: sorted lines joined by `\n`. So what the gateway judges is what the rack will store.

use std::collections::BTreeMap;

use serde_json::Value;

/// Name → value.
pub type Environment = BTreeMap<String, String>;

/// The environment `text` holds.
pub fn parse(text: &str) -> Environment {
    let mut env = Environment::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((name, value)) = line.split_once('=') {
            let name = name.trim();
            if !name.is_empty() {
                env.insert(name.to_string(), value.to_string());
            }
        }
    }
    env
}

/// `env` as the rack writes it.
pub fn render(env: &Environment) -> String {
    let mut lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // The rack sorts whole lines (`A_B=` after `A=`); the same order keeps a round trip exact.
    lines.sort();
    lines.join("\n")
}

/// The rack's answer about releases (one, or a list) with the value of every env var that
/// `hidden` names masked, names kept; how many values were masked. Lines are kept as they
/// are otherwise, so the text is what the rack sent but for those values.
pub fn mask_values(answer: &mut Value, hidden: &dyn Fn(&str) -> bool) -> usize {
    let mask = |release: &mut Value| match release.get_mut("env") {
        Some(Value::String(text)) => {
            let mut masked = 0;
            let lines: Vec<String> = text
                .split('\n')
                .map(|line| match line.split_once('=') {
                    Some((name, _)) if hidden(name.trim()) => {
                        masked += 1;
                        format!("{name}={}", gateway_core::redact::REDACTED)
                    }
                    _ => line.to_string(),
                })
                .collect();
            *text = lines.join("\n");
            masked
        }
        Some(Value::Object(map)) => {
            let mut masked = 0;
            for (name, value) in map.iter_mut() {
                if hidden(name.trim()) {
                    *value = Value::String(gateway_core::redact::REDACTED.into());
                    masked += 1;
                }
            }
            masked
        }
        _ => 0,
    };
    match answer {
        Value::Array(releases) => releases.iter_mut().map(mask).sum(),
        Value::Object(_) => mask(answer),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_as_the_rack_reads_it() {
        let env = parse("B=2\r\n A =1\nnot a line\n=nameless\nC=x=y\nB=3\n\n");
        assert_eq!(
            env,
            Environment::from([
                ("A".into(), "1".into()),
                ("B".into(), "3".into()),
                ("C".into(), "x=y".into()),
            ])
        );
        assert_eq!(render(&env), "A=1\nB=3\nC=x=y");
        assert_eq!(parse(&render(&env)), env);
        assert_eq!(render(&Environment::new()), "");
    }

    proptest::proptest! {
        /// What the gateway writes back is what it read, for every environment the rack could
        /// hold (names without spaces, `=` or line breaks; values on one line).
        #[test]
        fn render_then_parse_is_the_same_environment(
            env in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_.]{0,10}", "[^\n\r]{0,20}", 0..8)
        ) {
            proptest::prop_assert_eq!(parse(&render(&env)), env);
        }
    }

    #[test]
    fn only_named_values_are_masked() {
        let mut answer: Value = serde_json::json!([
            {"id": "R1", "env": "API_KEY=s3cret\nPORT=3000\n SECRET_X =y"},
            {"id": "R2", "env": {"API_KEY": "s3cret", "PORT": "3000"}},
            {"id": "R3"}
        ]);
        let n = mask_values(&mut answer, &|name| name == "API_KEY" || name == "SECRET_X");
        assert_eq!(n, 3);
        assert_eq!(
            answer[0]["env"],
            "API_KEY=[redacted]\nPORT=3000\n SECRET_X =[redacted]"
        );
        assert_eq!(answer[1]["env"]["API_KEY"], "[redacted]");
        assert_eq!(answer[1]["env"]["PORT"], "3000");
    }
}
