//! `Authorization` parsing (Basic password or Bearer token) on hostile headers.
//!
//! Input: bytes split on `\n` into up to four `Authorization` values. A value starting with
//! `\x01` is shorthand for `Basic <base64 of the rest>`, so that the fuzzer explores the
//! decoded credentials as easily as the header itself. Checks:
//! - `extract_token` never panics, and agrees with an independent reading of RFC 7617/6750:
//!   no header → none; more than one → refused; a token is exactly the Basic password (what
//!   follows the first `:` of the base64-decoded credentials) or the trimmed Bearer token;
//! - a returned token is non-empty, at most 512 bytes, and re-derives the header: encoding
//!   `user:token` again gives the same base64 (one token, one spelling), and a Bearer header
//!   ends with the token.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gateway_core::credentials::extract_token;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// What the token must be, read independently of the code under test.
/// `Err(())` = malformed, `Ok(None)` = no token.
fn oracle(values: &[Vec<u8>]) -> Result<Option<String>, ()> {
    let [v] = values else {
        return if values.is_empty() { Ok(None) } else { Err(()) };
    };
    // HeaderValue::to_str: visible ASCII and tab only.
    if !v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)) {
        return Err(());
    }
    let s = std::str::from_utf8(v).map_err(|_| ())?;
    let sp = s.find(' ').ok_or(())?;
    let (scheme, rest) = (&s[..sp], s[sp + 1..].trim());
    let token = match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let raw = STANDARD.decode(rest).map_err(|_| ())?;
            let creds = String::from_utf8(raw).map_err(|_| ())?;
            let colon = creds.find(':').ok_or(())?;
            creds[colon + 1..].to_string()
        }
        "bearer" => rest.to_string(),
        _ => return Err(()),
    };
    match token.len() {
        0 => Ok(None),
        1..=512 => Ok(Some(token)),
        _ => Err(()),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    let mut accepted = Vec::new();
    for part in data.split(|b| *b == b'\n').take(4) {
        let bytes = match part.strip_prefix(b"\x01") {
            Some(creds) => format!("Basic {}", STANDARD.encode(creds)).into_bytes(),
            None => part.to_vec(),
        };
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            map.append(AUTHORIZATION, v);
            accepted.push(bytes);
        }
    }
    let got = extract_token(&map);
    let want = oracle(&accepted);
    assert_eq!(
        got.as_ref().ok(),
        want.as_ref().ok(),
        "{accepted:?}: {got:?}"
    );

    let Ok(Some(token)) = &got else {
        return;
    };
    assert!(!token.is_empty() && token.len() <= 512);
    let v = std::str::from_utf8(&accepted[0]).unwrap_or_else(|e| panic!("{e}"));
    let (scheme, rest) = v.split_once(' ').unwrap_or_else(|| panic!("{v:?}"));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let creds = STANDARD
            .decode(rest)
            .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let creds = String::from_utf8(creds).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let (user, _) = creds.split_once(':').unwrap_or_else(|| panic!("{v:?}"));
        assert_eq!(
            STANDARD.encode(format!("{user}:{token}")),
            rest,
            "{v:?}: the token does not re-derive the credentials"
        );
    } else {
        assert!(scheme.eq_ignore_ascii_case("bearer"), "{v:?}");
        assert!(v.trim_end().ends_with(token.as_str()), "{v:?}: {token:?}");
    }
});
