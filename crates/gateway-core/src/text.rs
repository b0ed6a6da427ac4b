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

#[cfg(test)]
mod tests {
    use super::is_hidden;

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
