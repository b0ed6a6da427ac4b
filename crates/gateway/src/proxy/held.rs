//! A bound on the bytes the gateway holds whole at once.
//!
//! Bodies stream through the gateway, except a few it must read whole first: the rack's
//! answers about releases (to mask their environment values), what it looks up on the rack to
//! check an approval or an environment rule, a release's form (to check it), and the rack's
//! answers the pages show. Each has its own limit (16 MiB at most), but many at once — a
//! caller opening hundreds of connections for `?limit=5000` release lists — would take
//! gigabytes, and their parsed JSON several times more. So together the rack's answers to
//! reads hold at most [`HELD_BYTES`] ([`SHARED`]), and callers' release forms half that of
//! their own ([`FORMS`]: a client that trickles its form in must not starve the rack's
//! answers). A read that would go past its budget is refused (`503 gateway_busy`) rather than
//! made to wait: readers that each hold part of a budget and wait for more could wait for
//! ever. A body that says its length takes its room before any of it is read. The answer to a
//! change (a release created, a process started) is never refused this way — the rack has
//! acted by then, and the answer is small — so it is read outside the budget.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The most bytes all whole reads together hold at once.
pub const HELD_BYTES: usize = 64 * 1024 * 1024;

/// The budget is counted in KiB: a permit per byte would overflow the semaphore's `u32`
/// requests for large bodies.
const UNIT: usize = 1024;

/// The budget of the rack's answers read whole, shared by every request.
pub static SHARED: Budget = Budget::new(HELD_BYTES);

/// The budget of callers' release forms read whole.
pub static FORMS: Budget = Budget::new(HELD_BYTES / 2);

/// A number of bytes that whole reads may hold together.
#[derive(Debug)]
pub struct Budget(Semaphore);

impl Budget {
    /// A budget of `bytes`.
    pub const fn new(bytes: usize) -> Budget {
        Budget(Semaphore::const_new(bytes / UNIT))
    }
}

/// Bytes held against a [`Budget`] (or none: counted nowhere), given back when this is
/// dropped.
#[derive(Debug)]
pub struct Held<'a> {
    budget: Option<&'a Budget>,
    permit: Option<SemaphorePermit<'a>>,
    units: usize,
}

/// The budget has not the room asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the gateway is holding as much of the rack's answers and of request bodies it must check \
     as it may at once ({} MiB): try again shortly, or ask for less (?limit=)",
    HELD_BYTES >> 20
)]
pub struct Busy;

impl<'a> Held<'a> {
    /// Nothing held yet, against `budget`.
    pub fn none(budget: Option<&'a Budget>) -> Held<'a> {
        Held {
            budget,
            permit: None,
            units: 0,
        }
    }

    /// Makes room for `total` bytes in all.
    pub fn room_for(&mut self, total: usize) -> Result<(), Busy> {
        let units = total.div_ceil(UNIT);
        let Some(budget) = self.budget else {
            return Ok(());
        };
        if units <= self.units {
            return Ok(());
        }
        let more = u32::try_from(units - self.units).map_err(|_| Busy)?;
        let permit = budget.0.try_acquire_many(more).map_err(|_| Busy)?;
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.units = units;
        Ok(())
    }
}

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum NotRead {
    /// It is longer than the limit.
    #[error("longer than {0} bytes")]
    TooLarge(usize),
    /// It broke off, or was not valid HTTP.
    #[error("cut short: {0}")]
    Broken(String),
    /// The shared budget has no room for it.
    #[error(transparent)]
    Busy(#[from] Busy),
}

/// Reads `body` whole, at most `limit` bytes, holding them against `budget` (if any) until
/// the returned [`Held`] is dropped (keep it while anything made from the bytes is alive).
/// The body itself is left to the caller: dropping it may be what records an outcome.
pub async fn read<'a, B>(
    body: &mut B,
    limit: usize,
    budget: Option<&'a Budget>,
) -> Result<(Bytes, Held<'a>), NotRead>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut held = Held::none(budget);
    // Room for all of it at once when the length is known: not a part of the budget held
    // until the read fails halfway, with others' reads failing beside it.
    if let Some(length) = body.size_hint().exact() {
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > limit {
            return Err(NotRead::TooLarge(limit));
        }
        held.room_for(length)?;
    }
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| NotRead::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = bytes.len() + data.len();
        if total > limit {
            return Err(NotRead::TooLarge(limit));
        }
        held.room_for(total)?;
        bytes.extend_from_slice(&data);
    }
    Ok((bytes.freeze(), held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn body(parts: &[&'static [u8]]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn reads_share_the_budget_and_give_it_back() {
        let budget = Budget::new(4 * UNIT);
        let kib = &[b'x'; UNIT][..];
        let (first, held) = read(&mut body(&[kib, kib, kib]), 1 << 20, Some(&budget))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.len(), 3 * UNIT);
        // One KiB left: a two-KiB answer is refused, a one-KiB one is not.
        let refused = read(&mut body(&[kib, kib]), 1 << 20, Some(&budget)).await;
        assert!(matches!(refused, Err(NotRead::Busy(Busy))), "{refused:?}");
        let (small, small_held) = read(&mut body(&[kib]), 1 << 20, Some(&budget))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(small.len(), UNIT);
        // Given back when dropped: the refused one now fits, as does one of 4 KiB.
        drop((held, small_held));
        let (again, _held) = read(&mut body(&[kib, kib, kib, kib]), 1 << 20, Some(&budget))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.len(), 4 * UNIT);
    }

    #[tokio::test]
    async fn a_refused_read_holds_nothing() {
        let budget = Budget::new(2 * UNIT);
        let kib = &[b'x'; UNIT][..];
        let too_long = read(&mut body(&[kib, kib, kib]), 2 * UNIT + 1, Some(&budget)).await;
        assert!(
            matches!(too_long, Err(NotRead::TooLarge(_))),
            "{too_long:?}"
        );
        let too_much = read(&mut body(&[kib, kib, kib]), 1 << 20, Some(&budget)).await;
        assert!(matches!(too_much, Err(NotRead::Busy(_))), "{too_much:?}");
        let (whole, _held) = read(&mut body(&[kib, kib]), 1 << 20, Some(&budget))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            whole.len(),
            2 * UNIT,
            "the refused reads gave back what they held"
        );
    }

    #[tokio::test]
    async fn a_body_of_known_length_takes_its_room_first() {
        let budget = Budget::new(4 * UNIT);
        let (_, _held) = read(
            &mut Body::from(vec![b'x'; 3 * UNIT]),
            1 << 20,
            Some(&budget),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        // Two KiB said up front: refused before a byte is read (and nothing held).
        let said = read(
            &mut Body::from(vec![b'x'; 2 * UNIT]),
            1 << 20,
            Some(&budget),
        )
        .await;
        assert!(matches!(said, Err(NotRead::Busy(_))), "{said:?}");
        let too_long = read(&mut Body::from(vec![b'x'; 2 * UNIT]), UNIT, Some(&budget)).await;
        assert!(
            matches!(too_long, Err(NotRead::TooLarge(_))),
            "{too_long:?}"
        );
        let (fits, _) = read(&mut Body::from(vec![b'x'; UNIT]), 1 << 20, Some(&budget))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fits.len(), UNIT);
    }

    #[tokio::test]
    async fn a_broken_body_is_said_to_be() {
        let mut broken = Body::from_stream(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"[")),
            Err(std::io::Error::other("reset")),
        ]));
        let budget = Budget::new(UNIT);
        let read = read(&mut broken, 1 << 20, Some(&budget)).await;
        assert!(
            matches!(read, Err(NotRead::Broken(ref e)) if e.contains("reset")),
            "{read:?}"
        );
    }
}
