//! Characters that must not appear in text people read to decide who did what (e-mail
//! addresses, names, token names, paths in the audit trail).

/// True for a control character, or an invisible one that hides text or changes the order it
/// displays in: bidirectional overrides and isolates (`a\u{202E}moc.live@b` reads as another
/// address), zero-width spaces and joiners, line and paragraph separators, the soft hyphen,
/// Hangul fillers, interlinear annotation marks, tag characters (which can carry hidden text),
/// the byte-order mark. None of them belongs in an e-mail address, a name or a rack path.
/// (Variation selectors are left alone: emoji need them.)
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// `c`, or U+FFFD when it [`is_hidden`]: hostile text recorded or shown as it was sent,
/// without one stray character erasing it or reordering what follows.
pub fn shown(c: char) -> char {
    if is_hidden(c) {
        char::REPLACEMENT_CHARACTER
    } else {
        c
    }
}

/// `text` with every [`is_hidden`] character but line feeds and tabs as U+FFFD, so multi-line
/// text keeps its shape; borrowed when there is none, which a look at the bytes usually tells
/// (printable ASCII is the common case).
pub fn readable(text: &str) -> std::borrow::Cow<'_, str> {
    let printable = |b: u8| matches!(b, b' '..=b'~' | b'\n' | b'\t');
    let hidden = |c: char| c != '\n' && c != '\t' && is_hidden(c);
    if text.bytes().all(printable) || !text.contains(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if hidden(c) {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// Why `email` cannot name a person here, or `None` when it can. Addresses are plain ASCII:
/// a letter from another script that looks like a Latin one (Cyrillic `а`, the Kelvin sign
/// `K`, which Unicode lower-cases to `k`) would let one address pass for, or be folded into,
/// another in the audit trail and in look-ups. Also refused: spaces and control characters, no
/// `@`, an empty local part, characters mail headers treat specially (`<>()[]\,;:"`), and a
/// domain that is not letters, digits and hyphens in two or more labels (`example.com.`).
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.len() > 254 {
        return Some("is longer than 254 characters");
    }
    if !email.is_ascii() {
        return Some(
            "has characters outside ASCII (internationalised addresses are not supported: \
             look-alike letters could pose as another person)",
        );
    }
    if email.bytes().any(|b| !b.is_ascii_graphic()) {
        return Some("has spaces or control characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Some("has no @");
    };
    if domain.contains('@') {
        // `a@evil.com@example.com`: which domain is it? Readers of the audit trail may differ.
        return Some("has more than one @");
    }
    if local.is_empty() || local.len() > 64 {
        return Some("has an empty or overlong part before the @");
    }
    if !domain.contains('.') || domain_problem(domain).is_some() {
        return Some("does not end in a domain such as example.com");
    }
    // What mail headers read as structure, not as part of an address: `x<y@evil.com>` would
    // be sent to y@evil.com.
    if local.bytes().any(|b| b"<>()[]\\,;:\"".contains(&b)) {
        return Some("has a character mail headers treat specially (<>()[]\\,;:\") before the @");
    }
    None
}

/// Why `domain` cannot be a domain an e-mail address or a Google Workspace ends in, or `None`
/// when it can: ASCII letters, digits and hyphens in dot-separated labels, at least two of
/// them (`@example.com`, `https://example.com` or `example.com.` would match no sign-in).
pub fn domain_problem(domain: &str) -> Option<&'static str> {
    if domain.len() > 253 {
        return Some("is longer than 253 characters");
    }
    if !domain.contains('.') {
        return Some("has no dot (a domain such as example.com)");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !domain.split('.').all(label_ok) {
        return Some(
            "is not a bare domain such as example.com (no @, scheme, path, port or trailing dot)",
        );
    }
    None
}

/// The form an e-mail address is stored and compared in: ASCII letters lower-cased, nothing
/// else changed (full Unicode lower-casing would fold other letters onto ASCII ones).
pub fn email_key(email: &str) -> String {
    email.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {

    #[test]
    fn hidden_characters_are_shown_as_replacement_characters() {
        assert_eq!(shown('a'), 'a');
        assert_eq!(shown('\u{202e}'), '\u{fffd}');
        assert!(matches!(
            readable("GET /apps\n\tok"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(matches!(readable("é ok"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            readable("a\u{1b}[2J\u{202e}b\r\n"),
            "a\u{fffd}[2J\u{fffd}b\u{fffd}\n"
        );
    }

    use super::{email_key, email_problem, is_hidden, readable, shown};

    #[test]
    fn e_mail_addresses_are_plain_ascii() {
        for ok in [
            "ann@example.com",
            "a.b+c@sub.example.co.uk",
            "O'Neil@Example.COM",
        ] {
            assert_eq!(email_problem(ok), None, "{ok}");
        }
        for bad in [
            "\u{212A}ate@example.com",
            "ad\u{0430}min@example.com",
            "admin@example.com.",
            "admin@.example.com",
            "admin@example..com",
            "admin@localhost",
            "@example.com",
            "admin example@x.com",
            "admin\u{7}@example.com",
            "no-at-sign",
            "a@evil.com@example.com",
            // Read by a mail header as a name and another address (`y@evil.com`).
            "x<y@evil.com>",
            "\"x\"@example.com",
            "a,b@example.com",
            "a@exa_mple.com",
            "a@example.com:25",
            "",
        ] {
            assert!(email_problem(bad).is_some(), "{bad:?}");
        }
        assert!(email_problem(&format!("{}@example.com", "a".repeat(65))).is_some());
        assert_eq!(email_key("Kate@Example.COM"), "kate@example.com");
        // Not folded onto ASCII `k`, unlike str::to_lowercase.
        assert_ne!(email_key("\u{212A}ate@example.com"), "kate@example.com");
    }

    #[test]
    fn hidden_characters() {
        for c in [
            '\0',
            '\n',
            '\u{7f}',
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{AD}',
            '\u{2028}',
            '\u{3164}',
            '\u{E0041}',
            '\u{FFF9}',
        ] {
            assert!(is_hidden(c), "{:?}", c);
        }
        for c in ['a', 'é', 'ß', '漢', '-', '@', ' ', '\u{1F600}', '\u{FE0F}'] {
            assert!(!is_hidden(c), "{:?}", c);
        }
    }
}
