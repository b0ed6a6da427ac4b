//! Deterministic identifiers. Every id the fake rack hands out comes from one
//! SplitMix64 stream seeded by [`crate::MockRackConfig::seed`], so the same
//! seed and the same sequence of requests always yield the same ids.

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// The alphabet Kubernetes uses for generated name suffixes.
const K8S: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const HEX: &[u8] = b"0123456789abcdef";

/// A SplitMix64 generator: tiny, fast and stable across versions.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn chars(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.below(alphabet.len() as u64) as usize]))
            .collect()
    }

    /// A release id: `R` and ten upper-case letters, like the rack's.
    pub fn release_id(&mut self) -> String {
        format!("R{}", self.chars(UPPER, 10))
    }

    /// A build id: `B` and ten upper-case letters, like the rack's.
    pub fn build_id(&mut self) -> String {
        format!("B{}", self.chars(UPPER, 10))
    }

    /// A Kubernetes replica-set style hash (10 chars).
    pub fn replicaset_hash(&mut self) -> String {
        self.chars(K8S, 10)
    }

    /// A Kubernetes pod-name suffix (5 chars).
    pub fn pod_suffix(&mut self) -> String {
        self.chars(K8S, 5)
    }

    /// `len` lower-case hex digits.
    pub fn hex(&mut self, len: usize) -> String {
        self.chars(HEX, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let mut a = IdGen::new(7);
        let mut b = IdGen::new(7);
        assert_eq!(a.release_id(), b.release_id());
        assert_eq!(a.build_id(), b.build_id());
        let id = IdGen::new(1).release_id();
        assert_eq!(id.len(), 11);
        assert!(id.starts_with('R'));
        assert!(id[1..].chars().all(|c| c.is_ascii_uppercase()));
    }
}
