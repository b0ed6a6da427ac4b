//! Masks the rack's credentials in bytes going back to clients.
//!
//! The gateway adds the rack token to every request it forwards; a rack that echoes it (a
//! debug endpoint, an error page quoting the request, an env value someone pasted) must not
//! hand it to a caller. Each occurrence is overwritten with `*` of the same length, so bodies
//! keep their `Content-Length` and text stays valid UTF-8 (a valid UTF-8 needle only ever
//! matches on character boundaries).

use std::sync::Arc;

use memchr::memmem::Finder;

/// Needles shorter than this are not searched for: masking every occurrence of a short string
/// would corrupt ordinary responses. Convox rack tokens are long random strings.
pub const MIN_SECRET_LEN: usize = 8;

/// The secrets to mask, with their searchers built once.
#[derive(Debug, Clone)]
pub struct Scrubber {
    needles: Vec<Finder<'static>>,
    longest: usize,
}

impl Scrubber {
    /// A scrubber for `secrets`; those shorter than [`MIN_SECRET_LEN`] are skipped.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Scrubber {
        let needles: Vec<Finder<'static>> = secrets
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .map(|s| Finder::new(s).into_owned())
            .collect();
        let longest = needles.iter().map(|f| f.needle().len()).max().unwrap_or(0);
        Scrubber { needles, longest }
    }

    /// True when there is nothing to search for.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// True when `haystack` contains a secret.
    pub fn contains(&self, haystack: &[u8]) -> bool {
        self.needles.iter().any(|f| f.find(haystack).is_some())
    }

    /// Overwrites every secret in `buf` with `*`; returns how many were masked.
    pub fn mask(&self, buf: &mut [u8]) -> usize {
        let mut masked = 0;
        for finder in &self.needles {
            let len = finder.needle().len();
            let mut from = 0;
            while let Some(at) = finder.find(&buf[from..]) {
                let start = from + at;
                buf[start..start + len].fill(b'*');
                masked += 1;
                from = start + len;
            }
        }
        masked
    }

    /// State for masking one stream whose chunks may split a secret.
    pub fn stream(self: &Arc<Self>) -> StreamScrub {
        StreamScrub {
            scrubber: Arc::clone(self),
            held: Vec::new(),
            masked: 0,
        }
    }
}

/// Masks secrets across chunk boundaries by holding back the last `longest - 1` bytes of what
/// it has seen until the next chunk (or the end) shows whether they start a secret.
#[derive(Debug)]
pub struct StreamScrub {
    scrubber: Arc<Scrubber>,
    held: Vec<u8>,
    masked: usize,
}

impl StreamScrub {
    /// Takes the next chunk; returns the bytes that are safe to send now (possibly none).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.scrubber.is_empty() {
            return chunk.to_vec();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        self.masked += self.scrubber.mask(&mut buf);
        // A secret not yet complete starts within the last `longest - 1` bytes.
        let keep = (self.scrubber.longest - 1).min(buf.len());
        self.held = buf.split_off(buf.len() - keep);
        buf
    }

    /// The stream ended: the bytes still held (they cannot start a whole secret any more).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// True when there is nothing to mask: chunks may be passed on as they are.
    pub fn is_passthrough(&self) -> bool {
        self.scrubber.is_empty()
    }

    /// How many secrets were masked so far.
    pub fn masked(&self) -> usize {
        self.masked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "rack-token-0123456789";

    fn scrub_chunks(s: &Arc<Scrubber>, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut st = s.stream();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(st.push(c));
        }
        out.extend(st.finish());
        (out, st.masked())
    }

    #[test]
    fn masks_every_occurrence_keeping_length() {
        let s = Arc::new(Scrubber::new(&[TOKEN]));
        let mut body = format!("{{\"a\":\"{TOKEN}\",\"b\":\"x{TOKEN}{TOKEN}\"}}").into_bytes();
        let len = body.len();
        assert_eq!(s.mask(&mut body), 3);
        assert_eq!(body.len(), len);
        let text = String::from_utf8(body).unwrap_or_default();
        assert!(!text.contains(TOKEN), "{text}");
        assert!(text.starts_with("{\"a\":\"*****"), "{text}");
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked() {
        let s = Arc::new(Scrubber::new(&[TOKEN, "Y29udm94OnJhY2stdG9rZW4="]));
        let whole = format!("before {TOKEN} middle Y29udm94OnJhY2stdG9rZW4= after");
        for cut in 0..whole.len() {
            for cut2 in cut..whole.len() {
                let b = whole.as_bytes();
                let (out, n) = scrub_chunks(&s, &[&b[..cut], &b[cut..cut2], &b[cut2..]]);
                assert_eq!(out.len(), whole.len());
                assert_eq!(n, 2, "cuts {cut} {cut2}");
                let out = String::from_utf8_lossy(&out);
                assert!(!out.contains(TOKEN) && !out.contains("Y29udm94"), "{out}");
            }
        }
    }

    #[test]
    fn short_secrets_are_not_searched() {
        let s = Arc::new(Scrubber::new(&["abc", ""]));
        assert!(s.is_empty() && s.stream().is_passthrough());
        assert!(!Arc::new(Scrubber::new(&[TOKEN])).stream().is_passthrough());
        let (out, n) = scrub_chunks(&s, &[b"abcabc"]);
        assert_eq!((out.as_slice(), n), (&b"abcabc"[..], 0));
    }

    #[test]
    fn utf8_stays_valid() {
        let secret = "géant-secret-✓";
        let s = Arc::new(Scrubber::new(&[secret]));
        let (out, n) = scrub_chunks(&s, &["→ géant-secret-✓ ←".as_bytes()]);
        assert_eq!(n, 1);
        assert!(String::from_utf8(out).is_ok());
    }

    proptest! {
        /// Chunking never changes the output: the same bytes as masking the whole at once.
        #[test]
        fn chunking_does_not_matter(
            parts in proptest::collection::vec(
                prop_oneof![Just(TOKEN.to_string()), "[a-z0-9 -]{0,12}"], 0..12),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let s = Arc::new(Scrubber::new(&[TOKEN]));
            let whole = parts.concat().into_bytes();
            let mut expected = whole.clone();
            let n = s.mask(&mut expected);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(whole.len())).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&whole[at..c]);
                at = c;
            }
            chunks.push(&whole[at..]);
            let (out, m) = scrub_chunks(&s, &chunks);
            prop_assert_eq!(out, expected);
            prop_assert_eq!(m, n);
        }
    }
}
