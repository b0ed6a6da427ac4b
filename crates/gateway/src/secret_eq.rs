//! The one function that compares secrets.
//!
//! Every comparison of a secret (token hashes, CSRF tokens, login cookies, PKCE challenges,
//! certificate pins, the configured secrets) goes through [`secret_eq`], which takes the same
//! time whatever the contents: a caller cannot learn a secret byte by byte from response
//! times. The test module below checks that no other comparison of secrets creeps in.

use subtle::ConstantTimeEq;

/// True when `a` and `b` are equal, in time that depends only on their lengths.
///
/// Lengths are not secret here (hashes and tokens have fixed, public lengths), so inputs of
/// different lengths are unequal at once.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn compares_contents() {
        assert!(secret_eq(b"", b""));
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"ab"));
        assert!(!secret_eq(b"ab", b"abc"));
        // A difference in the first or last byte is found alike.
        let a = [7u8; 64];
        let mut first = a;
        first[0] ^= 1;
        let mut last = a;
        last[63] ^= 0x80;
        assert!(!secret_eq(&a, &first));
        assert!(!secret_eq(&a, &last));
    }

    /// By construction: `secret_eq` is subtle's constant-time equality, and nothing else in the
    /// gateway compares secrets. Reads the crate's own sources, so a new `==` on a hash, token,
    /// CSRF value, verifier, challenge or pin fails here rather than in a review.
    #[test]
    fn secrets_are_compared_only_by_secret_eq() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        collect_rs(&src, &mut files);
        // gateway-core's parsing code (credentials, config) counts as this crate's.
        let core = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway-core/src");
        collect_rs(&core, &mut files);
        assert!(
            files.len() > 20,
            "expected the crate's sources under {src:?}"
        );

        // The implementation is subtle's: the only `ct_eq(` call is in this file.
        let this = std::fs::read_to_string(src.join("secret_eq.rs")).unwrap_or_default();
        assert!(this.contains("bool::from(a.ct_eq(b))"));

        let secret_words = [
            "token_hash",
            "hash_token",
            "csrf",
            "verifier",
            "challenge",
            "pin",
            "secret",
            "cookie",
            "expose()",
        ];
        let mut offences = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let name = file
                .strip_prefix(&src)
                .unwrap_or(file)
                .display()
                .to_string();
            // Test modules may compare freely; only the code above them counts.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let line = line.trim();
                if line.starts_with("//") {
                    continue;
                }
                if name != "secret_eq.rs" && line.contains("ct_eq(") {
                    offences.push(format!("{name}:{}: ct_eq outside secret_eq: {line}", n + 1));
                }
                let compares = compares_two_values(line);
                let lower = line.to_ascii_lowercase();
                if compares && secret_words.iter().any(|w| lower.contains(w)) {
                    offences.push(format!("{name}:{}: {line}", n + 1));
                }
            }
        }
        assert!(
            offences.is_empty(),
            "compare secrets with secret_eq (or mark a false positive by rewording):\n{}",
            offences.join("\n")
        );
    }

    /// True when the line has an `==`/`!=` whose right side is not a literal: comparing with a
    /// public constant (`!= "S256"`, `.len() != 43`) reveals nothing about a secret.
    fn compares_two_values(line: &str) -> bool {
        [" == ", " != "].iter().any(|op| {
            line.split(op).skip(1).any(|rhs| {
                let rhs = rhs.trim_start();
                !(rhs.starts_with('"')
                    || rhs.starts_with(|c: char| c.is_ascii_digit())
                    || rhs.starts_with("None")
                    || rhs.starts_with("Some("))
            })
        })
    }

    #[test]
    fn the_lint_sees_secret_comparisons() {
        assert!(compares_two_values("if row.token_hash == hash {"));
        assert!(compares_two_values("ok = a != b;"));
        assert!(!compares_two_values("if status != \"pending\" {"));
        assert!(!compares_two_values("challenge.len() != 43"));
    }

    fn collect_rs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect_rs(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
}
