//! Characters that must not appear in text people read to decide who did what (e-mail
//! addresses, names, token names, paths in the audit trail).

/// True for a control character, or an invisible one that hides text or changes the order it
/// displays in: bidirectional overrides and isolates (`a\u{202E}moc.live@b` reads as another
/// address), zero-width spaces and joiners, the soft hyphen, the byte-order mark. None of them
/// belongs in an e-mail address, a name or a rack path.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::is_hidden;

    #[test]
    fn hidden_characters() {
        for c in [
            '\0', '\n', '\u{7f}', '\u{202E}', '\u{2066}', '\u{200B}', '\u{FEFF}', '\u{AD}',
        ] {
            assert!(is_hidden(c), "{:?}", c);
        }
        for c in ['a', 'é', 'ß', '漢', '-', '@', ' ', '\u{1F600}'] {
            assert!(!is_hidden(c), "{:?}", c);
        }
    }
}
