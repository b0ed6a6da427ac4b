//! Masking the rack's credentials in WebSocket messages from the rack (`MessageScrub`) and in
//! streamed bodies (`StreamScrub`), on hostile secrets, bytes and message boundaries.
//!
//! Input (structured from bytes): one or two secrets (8–47 bytes, any bytes but `*`), then
//! messages, each a length byte, a flag byte (bit 0: the caller stops waiting after it and
//! releases what is held) and that many bytes. Checks:
//! - nothing is lost or added: the output has the input's length, and each output byte is the
//!   input's byte or `*`;
//! - no secret ever goes out whole, however the messages are cut and whenever held bytes are
//!   released;
//! - what is held back ends a proper beginning of a secret (which may have started in bytes
//!   already released), and is shorter than the longest secret;
//! - with one secret and no early release, the output is exactly masking the whole stream at
//!   once, and the masked count agrees; so is `StreamScrub`'s output for the same chunks.
#![no_main]

use std::sync::Arc;

use gateway_core::scrub::{MessageScrub, Scrubber};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((secrets, mut rest)) = secrets(data) else {
        return;
    };
    let mut messages: Vec<(&[u8], bool)> = Vec::new();
    while let [len, flags, tail @ ..] = rest {
        let len = usize::from(*len % 64).min(tail.len());
        messages.push((&tail[..len], flags & 1 == 1));
        rest = &tail[len..];
    }
    let scrubber = Arc::new(Scrubber::new(&secrets));
    let longest = secrets.iter().map(Vec::len).max().unwrap_or(0);
    let whole: Vec<u8> = messages.iter().flat_map(|(m, _)| m.iter().copied()).collect();

    let mut scrub = MessageScrub::new(scrubber.clone());
    let (mut out, mut masked, mut pushed, mut released) = (Vec::new(), 0, 0, false);
    for (message, release) in &messages {
        pushed += message.len();
        let (sent, n) = scrub.push(message);
        out.extend_from_slice(&sent);
        masked += n;
        if scrub.is_holding() {
            // Held bytes end the stream so far, and that end (with bytes released before
            // them, when the caller stopped waiting) is a secret's proper beginning.
            let held = pushed - out.len();
            assert!(held < longest, "held {held} bytes");
            assert!(
                secrets.iter().any(|s| (held..s.len())
                    .any(|k| k <= pushed && whole[pushed - k..pushed] == s[..k])),
                "held bytes that continue no secret's beginning"
            );
        } else {
            assert_eq!(out.len(), pushed, "bytes neither sent nor held");
        }
        if *release {
            released |= scrub.is_holding();
            out.extend(scrub.release());
        }
    }
    out.extend(scrub.release());
    assert_eq!(out.len(), whole.len());
    for (o, w) in out.iter().zip(&whole) {
        assert!(o == w || *o == b'*', "a byte changed into something else than *");
    }
    for secret in &secrets {
        assert!(
            !out.windows(secret.len()).any(|w| w == secret.as_slice()),
            "a secret went out whole"
        );
    }
    if secrets.len() == 1 && !released {
        let mut expected = whole.clone();
        let n = scrubber.mask(&mut expected);
        assert_eq!(out, expected, "differs from masking the whole stream");
        assert_eq!(masked, n);
        let mut stream = scrubber.stream();
        let mut streamed = Vec::new();
        for (message, _) in &messages {
            streamed.extend(stream.push(message));
        }
        streamed.extend(stream.finish());
        assert_eq!(streamed, expected, "StreamScrub differs from masking the whole");
    }
});

/// One or two secrets from the front of `data`; the rest of it.
fn secrets(data: &[u8]) -> Option<(Vec<Vec<u8>>, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let (&second, mut rest) = rest.split_first()?;
    let mut secrets = Vec::new();
    for len in [first, second] {
        if !secrets.is_empty() && len % 2 == 0 {
            break;
        }
        let len = 8 + usize::from(len % 40);
        if rest.len() < len {
            return None;
        }
        // `*` is what masking writes: a secret made of it would be "found" in masked output.
        let secret = rest[..len]
            .iter()
            .map(|&b| if b == b'*' { b'+' } else { b })
            .collect();
        secrets.push(secret);
        rest = &rest[len..];
    }
    Some((secrets, rest))
}
