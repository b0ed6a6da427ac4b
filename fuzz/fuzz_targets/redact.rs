//! Redaction on hostile JSON, query strings and values.
//!
//! Input: UTF-8 text, up to four lines: a JSON document (event details), a URL query string,
//! a lone value and a command line. Checks:
//! - the output never depends on a secret's value: the same input with every value under a
//!   secret-named key (`is_secret_name`), every value of an `env` object and every `VALUE` of
//!   an `env` string's `NAME=VALUE` lines (and every line without a `NAME=`) swapped for
//!   another gives the identical output — so a secret can only show when the same text is
//!   also elsewhere in the input (stronger than "a distinctive secret of 8+ characters never
//!   appears");
//! - a query keeps its pairs in order: each output pair is the input pair or `key=[redacted]`,
//!   and a pair is always masked when its name is secret or its value, read as the rack reads
//!   it (`+` is a space), looks like a credential;
//! - `Bearer …`/`Basic …` values are masked, and `scheme://user:password@host/rest` becomes
//!   exactly `scheme://user:[redacted]@host/rest`; `scheme://user@host/rest` stays as it is when
//!   the user is plainly a name (letters, `.`, `-`, `_`, up to 32) and is otherwise exactly
//!   `scheme://[redacted]@host/rest`;
//! - a gateway token (`rgw_`/`rgs_` and 16 or more token characters) never survives, wherever
//!   it is in a value, a query or a command;
//! - a command line's redaction is idempotent and clipped;
//! - redaction is idempotent, and `is_secret_name` ignores ASCII case.
#![no_main]

use gateway_core::redact::{
    MAX_AUDITED_COMMAND, REDACTED, is_secret_name, redact_command, redact_json, redact_query,
    redact_value,
};
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

mod common;
use common::rotate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(4, '\n');
    let doc = lines.next().unwrap_or_default();
    let query = lines.next().unwrap_or_default();
    let value = lines.next().unwrap_or_default();
    let command = lines.next().unwrap_or_default();
    check_json(doc);
    check_query(query);
    check_value(value);
    check_command(command);
});

/// Whether `text` holds a gateway token as the redaction finds them anywhere.
fn has_embedded_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| {
        matches!(bytes.get(i..i + 4), Some(b"rgw_" | b"rgs_"))
            && bytes[i + 4..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                .count()
                >= 16
    })
}

fn check_command(command: &str) {
    let out = redact_command(command);
    assert!(out.len() <= MAX_AUDITED_COMMAND + 32, "{command:?}: not clipped");
    // A clipped text ends in a note of what was cut, which another clip would count again;
    // and clipping may cut a token short of what is recognised: judge unclipped texts.
    if out.len() <= MAX_AUDITED_COMMAND {
        assert_eq!(redact_command(&out), out, "{command:?}: not idempotent");
        assert!(!has_embedded_token(&out), "{command:?} -> {out:?}: a token survived");
    }
}

fn is_env_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("env") || name.eq_ignore_ascii_case("environment")
}

fn check_name(name: &str) {
    assert_eq!(
        is_secret_name(name),
        is_secret_name(&name.to_ascii_uppercase()),
        "{name:?}"
    );
    assert_eq!(
        is_secret_name(name),
        is_secret_name(&name.to_ascii_lowercase()),
        "{name:?}"
    );
}

/// `v` with every secret swapped for `other(secret)`.
fn swap(v: &Value, other: &dyn Fn(&Value) -> Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    check_name(k);
                    // A null says nothing and stays as it is.
                    let v = if v.is_null() {
                        Value::Null
                    } else if is_env_name(k) {
                        swap_env(v, other)
                    } else if is_secret_name(k) {
                        other(v)
                    } else {
                        swap(v, other)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => items.iter().map(|i| swap(i, other)).collect(),
        v => v.clone(),
    }
}

/// Under `env`: names stay, every value is a secret.
fn swap_env(v: &Value, other: &dyn Fn(&Value) -> Value) -> Value {
    match v {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), other(v))).collect())
        }
        // `NAME=VALUE` lines: the value is secret, and so is a line without a name (the rest
        // of a multi-line value). Split on `\n` exactly, so the swapped text has the same lines
        // (`lines()` would drop a final empty line and change the structure, not a secret).
        Value::String(s) => Value::String(
            s.split('\n')
                .map(|line| match line.split_once('=') {
                    Some((k, v)) => format!("{k}={}", rotate(v)),
                    None => rotate(line),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Array(items) => items.iter().map(|i| swap_env(i, other)).collect(),
        Value::Null => Value::Null,
        // A number or boolean: swapped for another one (a string would be read as lines).
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(_) => json!(7),
    }
}

fn check_json(doc: &str) {
    let v: Value = serde_json::from_str(doc).unwrap_or_else(|_| Value::String(doc.to_string()));
    let out = redact_json(v.clone());
    let others: [&dyn Fn(&Value) -> Value; 3] = [
        &|s| Value::String(rotate(&s.to_string())),
        &|_| json!(7),
        &|s| json!({"nested": s, "list": [s]}),
    ];
    for other in others {
        let swapped = swap(&v, other);
        assert_eq!(
            out,
            redact_json(swapped.clone()),
            "{doc:?}: output depends on a secret (swapped: {swapped})"
        );
    }
    assert_eq!(redact_json(out.clone()), out, "{doc:?}: not idempotent");
}

/// A query component as Go's `url.ParseQuery` (the rack) reads it.
fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn check_query(q: &str) {
    let out = redact_query(q);
    let ins: Vec<&str> = q.split('&').collect();
    let outs: Vec<&str> = out.split('&').collect();
    assert_eq!(ins.len(), outs.len(), "{q:?} -> {out:?}");
    let mut swapped = Vec::new();
    for (i, o) in ins.iter().zip(&outs) {
        // `name=[redacted]`; or, for a credential given as a name or as a bare word, the
        // pair masked whole.
        let masked = i
            .split_once('=')
            .is_some_and(|(k, _)| *o == format!("{k}={REDACTED}"))
            || *o == format!("{REDACTED}={REDACTED}")
            || (!i.contains('=') && *o == REDACTED);
        assert!(i == o || masked, "{q:?}: {i:?} -> {o:?}");
        match i.split_once('=') {
            Some((k, _)) if redact_value(&form_decode(k)) != form_decode(k) => {
                assert_eq!(*o, format!("{REDACTED}={REDACTED}"), "{q:?}: {i:?}");
                swapped.push(i.to_string());
            }
            Some((k, v)) => {
                // Name and value as the rack reads a query: a form, where `+` is a space.
                let name = form_decode(k);
                check_name(&name);
                let value = form_decode(v);
                if is_secret_name(&name) || is_env_name(&name) {
                    assert!(masked, "{q:?}: {i:?} not masked");
                    swapped.push(format!("{k}={}", rotate(v)));
                } else {
                    if redact_value(&value) != value {
                        assert!(masked, "{q:?}: {i:?} looks like a credential, not masked");
                    }
                    swapped.push(i.to_string());
                }
            }
            None => swapped.push(i.to_string()),
        }
    }
    let swapped = swapped.join("&");
    assert_eq!(
        redact_query(&swapped),
        out,
        "{q:?}: output depends on a secret ({swapped:?})"
    );
    assert_eq!(redact_query(&out), out, "{q:?}: not idempotent");
    assert!(!has_embedded_token(&out), "{q:?} -> {out:?}: a token survived");
}

fn check_value(v: &str) {
    let r = redact_value(v);
    assert_eq!(redact_value(&r), r, "{v:?}: not idempotent");
    assert!(!has_embedded_token(&r), "{v:?} -> {r:?}: a token survived");
    // The exact shapes below are for URLs without a token inside (one is masked as well).
    if has_embedded_token(v) {
        return;
    }

    // Authorization-shaped values, whatever the scheme's case.
    let lower = v.to_ascii_lowercase();
    if lower.starts_with("basic ") || lower.starts_with("bearer ") {
        assert_eq!(r, REDACTED, "{v:?}");
    }
    for scheme in ["Basic ", "BEARER ", "bearer "] {
        assert_eq!(redact_value(&format!("{scheme}{v}")), REDACTED, "{v:?}");
    }

    // scheme://user:password@host[/?#rest]: exactly the password is masked.
    if let Some((scheme, after)) = v.split_once("://") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
            && !v.starts_with("rgw_")
            && !v.starts_with("rgs_")
            && !lower.starts_with("basic ")
            && !lower.starts_with("bearer ")
        {
            assert_eq!(
                r,
                format!("{scheme}://{user}:{REDACTED}@{host}{rest}"),
                "{v:?}"
            );
        }
        // scheme://user@host: a user name that is not plainly a name (a token) is masked whole.
        if let Some((user, host)) = authority.rsplit_once('@')
            && !user.contains(':')
            && !v.starts_with("rgw_")
            && !v.starts_with("rgs_")
            && !lower.starts_with("basic ")
            && !lower.starts_with("bearer ")
        {
            let plain = !user.is_empty()
                && user.len() <= 32
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b"._-".contains(&b));
            let expected = if plain {
                v.to_string()
            } else {
                format!("{scheme}://{REDACTED}@{host}{rest}")
            };
            assert_eq!(r, expected, "{v:?}");
        }
    }
}
