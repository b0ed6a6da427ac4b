//! Masks the rack's credentials in bytes going back to clients.
//!
//! The gateway adds the rack token to every request it forwards; a rack that echoes it (a
//! debug endpoint, an error page quoting the request, an env value someone pasted) must not
//! hand it to a caller. Each occurrence is overwritten with `*` of the same length, so bodies
//! keep their `Content-Length` and text stays valid UTF-8 (a valid UTF-8 needle only ever
//! matches on character boundaries).

use std::borrow::Cow;
use std::sync::Arc;

use memchr::memmem::Finder;

/// Needles shorter than this are not searched for: masking every occurrence of a short string
/// would corrupt ordinary responses. Convox rack tokens are long random strings.
pub const MIN_SECRET_LEN: usize = 8;

/// The secrets to mask, with their searchers built once.
#[derive(Debug, Clone)]
pub struct Scrubber {
    needles: Vec<Finder<'static>>,
    /// For each byte value, the proper beginnings of secrets that end in it, as (secret,
    /// length), longest first.
    beginnings_ending_in: Vec<Vec<(usize, usize)>>,
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
        let mut beginnings_ending_in = vec![Vec::new(); 256];
        for (i, finder) in needles.iter().enumerate() {
            let needle = finder.needle();
            for len in 1..needle.len() {
                beginnings_ending_in[usize::from(needle[len - 1])].push((i, len));
            }
        }
        for beginnings in &mut beginnings_ending_in {
            beginnings.sort_unstable_by_key(|&(_, len)| std::cmp::Reverse(len));
        }
        Scrubber {
            needles,
            beginnings_ending_in,
        }
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

    /// The length of the longest tail of `buf` that is the beginning (not the whole) of a
    /// secret: bytes that a following chunk could complete into one. 0 when there is none.
    pub fn partial_suffix(&self, buf: &[u8]) -> usize {
        // This runs on every WebSocket message, so it starts from the last byte: only the
        // secrets' beginnings that end in that byte are compared, longest first. A log line
        // ends in a newline, which no secret holds: one lookup.
        let Some(&last) = buf.last() else {
            return 0;
        };
        self.beginnings_ending_in[usize::from(last)]
            .iter()
            .find(|&&(needle, len)| {
                len <= buf.len() && buf[buf.len() - len..] == self.needles[needle].needle()[..len]
            })
            .map_or(0, |&(_, len)| len)
    }

    /// State for masking one stream whose chunks may split a secret.
    pub fn stream(self: &Arc<Self>) -> StreamScrub {
        StreamScrub {
            inner: MessageScrub::new(Arc::clone(self)),
            masked: 0,
        }
    }
}

/// Masks secrets across the chunks of a body: a [`MessageScrub`] whose held bytes are
/// released only at the end (a body has no prompt waiting on it, and its chunks follow
/// each other as fast as the rack sends them).
#[derive(Debug)]
pub struct StreamScrub {
    inner: MessageScrub,
    masked: usize,
}

impl StreamScrub {
    /// Takes the next chunk; returns the bytes that are safe to send now (possibly none).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let (safe, masked) = self.inner.push(chunk);
        self.masked += masked;
        safe.into_owned()
    }

    /// The stream ended: the bytes still held (they cannot start a whole secret any more).
    pub fn finish(&mut self) -> Vec<u8> {
        self.inner.release()
    }

    /// True when there is nothing to mask: chunks may be passed on as they are.
    pub fn is_passthrough(&self) -> bool {
        self.inner.scrubber.is_empty()
    }

    /// How many secrets were masked so far.
    pub fn masked(&self) -> usize {
        self.masked
    }
}

/// Masks secrets across the messages of a WebSocket stream while holding back as little as
/// possible, so that interactive sessions are not delayed: only a message's tail that could
/// begin a secret waits, until the next message shows whether it does, or until the caller
/// gives up waiting ([`MessageScrub::release`]). Bytes released that way are remembered, so
/// the rest of a secret arriving later is still masked (its released beginning is not).
#[derive(Debug)]
pub struct MessageScrub {
    scrubber: Arc<Scrubber>,
    /// The stream's last bytes that may begin a secret (fewer than the longest secret's).
    tail: Vec<u8>,
    /// How many of `tail`'s last bytes have not been sent.
    unsent: usize,
}

impl MessageScrub {
    /// A scrubber for one stream of messages.
    pub fn new(scrubber: Arc<Scrubber>) -> MessageScrub {
        MessageScrub {
            scrubber,
            tail: Vec::new(),
            unsent: 0,
        }
    }

    /// Takes the next message's payload; returns what may be sent now (masked; possibly
    /// nothing) and how many secrets were masked. The payload itself comes back when nothing
    /// in it had to change or wait, as is the case for nearly every message.
    pub fn push<'a>(&mut self, payload: &'a [u8]) -> (Cow<'a, [u8]>, usize) {
        if self.scrubber.is_empty()
            || (self.tail.is_empty()
                && !self.scrubber.contains(payload)
                && self.scrubber.partial_suffix(payload) == 0)
        {
            return (Cow::Borrowed(payload), 0);
        }
        let sent = self.tail.len() - self.unsent;
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(payload);
        let masked = self.scrubber.mask(&mut buf);
        let keep = self.scrubber.partial_suffix(&buf);
        // Bytes already sent stay sent; the tail that may begin a secret waits.
        let hold_from = (buf.len() - keep).max(sent);
        self.tail = buf[buf.len() - keep..].to_vec();
        self.unsent = buf.len() - hold_from;
        buf.truncate(hold_from);
        buf.drain(..sent);
        (Cow::Owned(buf), masked)
    }

    /// The bytes being held back (a possible secret's beginning), to send now: the caller has
    /// waited long enough for the rest, or the stream is ending. They are still remembered,
    /// so a secret's rest arriving later is masked.
    pub fn release(&mut self) -> Vec<u8> {
        let held = self.tail[self.tail.len() - self.unsent..].to_vec();
        self.unsent = 0;
        held
    }

    /// True while bytes are held back.
    pub fn is_holding(&self) -> bool {
        self.unsent > 0
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
            let (out, m) = scrub_chunks(&s, &pieces(&whole, cuts));
            prop_assert_eq!(out, expected);
            prop_assert_eq!(m, n);
        }
    }

    /// Messages as cut at `cuts` (sorted, clamped): the pieces of `whole`.
    fn pieces(whole: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(whole.len())).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            out.push(&whole[at..c]);
            at = c;
        }
        out.push(&whole[at..]);
        out
    }

    /// Bits of text that begin the token, to put partial secrets at message ends.
    fn text_part() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(TOKEN.to_string()),
            (1..TOKEN.len()).prop_map(|n| TOKEN[..n].to_string()),
            "[a-z0-9 -]{0,12}",
        ]
    }

    #[test]
    fn partial_suffix_is_the_longest_beginning_of_any_secret() {
        let s = Scrubber::new(&["abcdefgh12", "Y29udm94abc"]);
        for (buf, want) in [
            (&b""[..], 0),
            (b"a", 1),
            (b"xxab", 2),
            (b"xxabc", 3),
            (b"xxY29", 3),
            (b"Y29udm94ab", 10),
            (b"abcdefgh1", 9),
            (b"abcdefgh12", 0),
            (b"abcdefgh12ab", 2),
            (b"line\n", 0),
        ] {
            assert_eq!(
                s.partial_suffix(buf),
                want,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn a_secret_split_across_messages_is_masked() {
        let s = Arc::new(Scrubber::new(&[TOKEN]));
        let mut m = MessageScrub::new(s);
        let (out, n) = m.push(b"env RACK=rack-to");
        assert_eq!((&*out, n), (&b"env RACK="[..], 0));
        assert!(m.is_holding());
        let (out, n) = m.push(b"ken-0123456789\n");
        assert_eq!((&*out, n), (&b"*********************\n"[..], 1));
        assert!(!m.is_holding());
    }

    #[test]
    fn ordinary_messages_pass_through_untouched() {
        let s = Arc::new(Scrubber::new(&[TOKEN]));
        let mut m = MessageScrub::new(s);
        for message in [&b"hello\n"[..], b"", b"tok", b"x-cab"] {
            let (out, n) = m.push(message);
            assert!(matches!(out, Cow::Borrowed(_)), "{message:?}");
            assert_eq!(n, 0);
            assert!(!m.is_holding());
        }
        // A whole message that could begin the token waits for the next one, which is then
        // no secret: both go out as they were.
        let (out, _) = m.push(b"rack");
        assert!(out.is_empty() && m.is_holding());
        let (out, _) = m.push(b"et science");
        assert_eq!(&*out, b"racket science");
        assert!(!m.is_holding());
    }

    #[test]
    fn the_rest_of_a_secret_after_a_release_is_still_masked() {
        let s = Arc::new(Scrubber::new(&[TOKEN]));
        let mut m = MessageScrub::new(s);
        let (out, _) = m.push(b"RACK=rack-tok");
        assert_eq!(&*out, b"RACK=");
        assert_eq!(m.release(), b"rack-tok");
        assert!(!m.is_holding());
        assert!(m.release().is_empty());
        let (out, n) = m.push(b"en-0123");
        assert_eq!((&*out, n), (&b""[..], 0));
        assert!(m.is_holding());
        let (out, n) = m.push(b"456789 done");
        assert_eq!((&*out, n), (&b"************* done"[..], 1));
    }

    proptest! {
        /// Without releases, messages come out as masking the whole stream at once would give,
        /// and whatever is held back could begin the token.
        #[test]
        fn message_boundaries_do_not_matter(
            parts in proptest::collection::vec(text_part(), 0..10),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let s = Arc::new(Scrubber::new(&[TOKEN]));
            let whole = parts.concat().into_bytes();
            let mut expected = whole.clone();
            let n = s.mask(&mut expected);
            let mut m = MessageScrub::new(s);
            let (mut out, mut masked, mut pushed) = (Vec::new(), 0, 0);
            for message in pieces(&whole, cuts) {
                pushed += message.len();
                let (sent, k) = m.push(message);
                out.extend_from_slice(&sent);
                masked += k;
                if m.is_holding() {
                    let held = whole[out.len()..pushed].to_vec();
                    prop_assert!(TOKEN.as_bytes().starts_with(&held) && held.len() < TOKEN.len());
                }
            }
            out.extend(m.release());
            prop_assert_eq!(out, expected);
            prop_assert_eq!(masked, n);
        }

        /// With releases anywhere (a caller that stopped waiting), the whole token still never
        /// goes out, and nothing is lost or added.
        #[test]
        fn releases_never_let_a_whole_secret_out(
            parts in proptest::collection::vec(text_part(), 0..10),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            releases in proptest::collection::vec(any::<bool>(), 9),
        ) {
            let s = Arc::new(Scrubber::new(&[TOKEN]));
            let whole = parts.concat().into_bytes();
            let mut m = MessageScrub::new(s);
            let mut out = Vec::new();
            for (i, message) in pieces(&whole, cuts).into_iter().enumerate() {
                out.extend_from_slice(&m.push(message).0);
                if releases.get(i).copied().unwrap_or(false) {
                    out.extend(m.release());
                }
            }
            out.extend(m.release());
            prop_assert_eq!(out.len(), whole.len());
            let text = String::from_utf8_lossy(&out);
            prop_assert!(!text.contains(TOKEN), "{}", text);
        }
    }
}
