//! Helpers shared by the fuzz targets.

/// The same length and shape, other letters and digits: swapping a secret for this must not
/// change anything the secret's value should not influence.
pub fn rotate(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
            'z' => 'a',
            'Z' => 'A',
            '9' => '0',
            c => c,
        })
        .collect()
}
