//! Path normalisation: decode once, refuse anything ambiguous, re-encode what is forwarded.
//!
//! The gateway and the rack must never disagree about which route a request is, so the
//! decoded path is what the catalogue matches and exactly that path, re-encoded strictly, is
//! what the rack receives.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Bytes left as they are in a forwarded segment: RFC 3986 unreserved, plus a few sub-delims
/// that are harmless in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b':')
    .remove(b'+')
    .remove(b'=')
    .remove(b',');

/// A path that passed normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalisedPath {
    /// The decoded path (`/apps/web`), what the catalogue matches.
    pub decoded: String,
    /// The re-encoded path sent to the rack.
    pub forward: String,
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ambiguous path: {0}")]
pub struct PathError(pub &'static str);

/// Normalises the part of the request path after the proxy prefix.
pub fn normalise(raw: &str) -> Result<NormalisedPath, PathError> {
    normalise_open_after(raw, usize::MAX)
}

/// [`normalise`], except that empty segments are kept from the segment after `segments` on
/// (counting from 0): where a route ends in a rest-of-path parameter, the rack takes
/// everything after its fixed segments as one value (a registry's server,
/// `https://index.docker.io/v1/`), and every route that could match has a value there. The
/// segment at `segments` must not be empty. Everything else `normalise` refuses is still
/// refused, dot segments included. [`crate::classify::normalise_for`] decides when to use it.
pub fn normalise_open_after(raw: &str, segments: usize) -> Result<NormalisedPath, PathError> {
    if raw.is_empty() || raw == "/" {
        return Ok(NormalisedPath {
            decoded: "/".into(),
            forward: "/".into(),
        });
    }
    if !raw.starts_with('/') {
        return Err(PathError("must start with /"));
    }
    if raw.contains('\\') {
        return Err(PathError("backslash in path"));
    }
    // A `%` must start a two-hex-digit escape; a lone one is malformed (and parsers disagree
    // on what it means).
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(PathError("malformed percent-encoding in path"));
        }
    }
    let lower = raw.to_ascii_lowercase();
    for (needle, why) in [
        ("%2f", "encoded / in path"),
        ("%5c", "encoded \\ in path"),
        ("%25", "double-encoded path"),
        ("%00", "NUL in path"),
    ] {
        if lower.contains(needle) {
            return Err(PathError(why));
        }
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError("path is not valid UTF-8"))?;
    if decoded.chars().any(crate::text::is_hidden) {
        return Err(PathError("control or invisible character in path"));
    }
    let mut forward = String::with_capacity(raw.len());
    for (n, segment) in decoded.split('/').skip(1).enumerate() {
        match segment {
            "" if n > segments => {}
            "" => return Err(PathError("empty path segment")),
            "." | ".." => return Err(PathError("dot segment in path")),
            _ => {}
        }
        forward.push('/');
        forward.extend(utf8_percent_encode(segment, SEGMENT));
    }
    Ok(NormalisedPath {
        decoded: decoded.into_owned(),
        forward,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass_through() {
        let p = normalise("/apps/web/processes").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.decoded, "/apps/web/processes");
        assert_eq!(p.forward, "/apps/web/processes");
        let p = normalise("/apps/web/builds/B1.tgz").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.forward, "/apps/web/builds/B1.tgz");
    }

    #[test]
    fn encoded_characters_are_decoded_once_and_re_encoded() {
        let p = normalise("/apps/my%20app").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.decoded, "/apps/my app");
        assert_eq!(p.forward, "/apps/my%20app");
        // An encoded letter is just the letter: both sides see /apps.
        let p = normalise("/%61pps").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.forward, "/apps");
    }

    proptest::proptest! {
        /// Whatever arrives: no panic; what passes is stable (normalising the forwarded path
        /// again gives the same path) and free of the shapes two parsers could read apart.
        #[test]
        fn normalisation_is_total_and_stable(raw in "(/|[a-z]|%[0-9a-fA-F]{2}|\\.|\\\\|%|[ -~]){0,40}") {
            if let Ok(p) = normalise(&raw) {
                let again = normalise(&p.forward).unwrap_or_else(|e| panic!("{raw:?} -> {:?}: {e}", p.forward));
                proptest::prop_assert_eq!(&again.forward, &p.forward);
                proptest::prop_assert_eq!(&again.decoded, &p.decoded);
                proptest::prop_assert!(!p.decoded.contains("//"));
                proptest::prop_assert!(!p.decoded.split('/').any(|s| s == ".." || s == "."));
                proptest::prop_assert!(!p.decoded.contains('\\'));
            }
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for bad in [
            "/apps/../system",
            "/apps/%2e%2e/system",
            "/apps/./web",
            "/apps//web",
            "/apps/web/",
            "/apps%2fweb",
            "/apps%2Fweb",
            "/apps%5cweb",
            "/apps\\web",
            "/apps/%252e%252e",
            "/apps/%00",
            "/apps/%0a",
            "/apps/%ff",
            "/apps/%",
            "/apps/%zz",
            "/apps/web%2",
            "apps",
        ] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
    }
}
