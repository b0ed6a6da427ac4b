//! Which address a request comes from, when the gateway sits behind proxies it trusts.
//!
//! By default the client is the TCP peer and `X-Forwarded-For` is ignored: a client can write
//! anything there. With `TRUSTED_PROXIES` set, a request whose peer is one of them is
//! attributed to the address that proxy saw: `X-Forwarded-For` is read from the right (each
//! proxy appends the address it received the request from), trusted hops are skipped, and the
//! first address that is not a trusted proxy is the client. Everything left of it was written
//! by the client and is never believed.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at, from the right: a chain of trusted proxies longer
/// than this stops at the last one looked at.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// The networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// Why `TRUSTED_PROXIES` could not be read: the 1-based position of the first entry that is
/// not an address or network. The entry itself is not repeated: a mistaken paste (a URL with
/// credentials) must not end up in an error message or a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {0} {1}")]
pub struct BadProxy(pub usize, pub &'static str);

impl FromStr for TrustedProxies {
    type Err = BadProxy;

    /// Comma-separated IP addresses and CIDR networks (`10.0.0.0/8, 192.0.2.7, fd00::/8`).
    fn from_str(list: &str) -> Result<TrustedProxies, BadProxy> {
        let mut nets = Vec::new();
        let items = list.split(',').map(str::trim).filter(|s| !s.is_empty());
        for (n, item) in items.enumerate() {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| BadProxy(n + 1, "is not an IP address or CIDR network"))?,
            };
            // Trusting every address lets any client write the address the trail records
            // (and the per-address limits count).
            if net.prefix_len() == 0 {
                return Err(BadProxy(
                    n + 1,
                    "trusts every address: any client could set its audited address",
                ));
            }
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
    }
}

impl TrustedProxies {
    /// The trusted networks, as written (`10.0.0.0/8`).
    pub fn networks(&self) -> Vec<String> {
        self.nets.iter().map(ToString::to_string).collect()
    }

    /// True when no proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// True when `ip` is a trusted proxy. An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, as
    /// a dual-stack listener reports it) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, unless `peer` is a trusted proxy, in which case the
    /// right-most address in `forwarded` (the `X-Forwarded-For` values, in order) that is not a
    /// trusted proxy. Entries are read from the right, each on its own, and only as far as
    /// needed: what a client wrote to the left of the address its proxy added — however long,
    /// whatever its bytes — is never looked at, so it cannot make the client pass for the
    /// proxy. A malformed entry stops the walk at the last trusted hop, and so does the
    /// [`MAX_FORWARDED_HOPS`]th.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let values: Vec<&[u8]> = forwarded.into_iter().collect();
        let entries = values
            .iter()
            .rev()
            .flat_map(|value| value.rsplit(|b| *b == b','))
            .take(MAX_FORWARDED_HOPS);
        let mut client = peer;
        for entry in entries {
            let Some(ip) = std::str::from_utf8(entry)
                .ok()
                .and_then(|e| parse_entry(e.trim()))
            else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.1:5000`,
/// `[2001:db8::1]:5000`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    None
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().unwrap_or_default()
    }

    fn client(list: &str, peer: &str, xff: &[&str]) -> IpAddr {
        trusted(list).client(ip(peer), xff.iter().map(|s| s.as_bytes()))
    }

    #[test]
    fn parses_addresses_and_networks() {
        let t = trusted(" 10.0.0.0/8, 192.0.2.7 ,fd00::/8,");
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(t.contains(ip("fd00::1")));
        assert!(t.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped");
        assert!("".parse::<TrustedProxies>().is_ok_and(|t| t.is_empty()));
        assert_eq!(
            "10.0.0.0/8, proxy.internal".parse::<TrustedProxies>(),
            Err(BadProxy(2, "is not an IP address or CIDR network"))
        );
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        // Everyone trusted: every client could write its audited address.
        for all in ["0.0.0.0/0", "10.0.0.0/8, ::/0"] {
            assert!(
                all.parse::<TrustedProxies>()
                    .is_err_and(|e| e.1.contains("trusts every address")),
                "{all}"
            );
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            client("", "198.51.100.9", &["203.0.113.1"]),
            ip("198.51.100.9")
        );
        assert_eq!(
            client("10.0.0.0/8", "198.51.100.9", &["203.0.113.1"]),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = "10.0.0.0/8";
        assert_eq!(client(t, "10.0.0.1", &["203.0.113.1"]), ip("203.0.113.1"));
        // The client wrote the left part; the load balancer appended the real address.
        assert_eq!(
            client(t, "10.0.0.1", &["1.2.3.4, 203.0.113.1"]),
            ip("203.0.113.1")
        );
        // Two trusted proxies in a row, values split over two header lines.
        assert_eq!(
            client(t, "10.0.0.1", &["6.6.6.6, 203.0.113.1", "10.0.0.2"]),
            ip("203.0.113.1")
        );
        assert_eq!(
            client(t, "10.0.0.1", &["[2001:db8::5]:4711"]),
            ip("2001:db8::5")
        );
        assert_eq!(
            client(t, "10.0.0.1", &["203.0.113.1:5000"]),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn missing_or_malformed_headers_fall_back_to_the_last_trusted_hop() {
        let t = "10.0.0.0/8";
        assert_eq!(client(t, "10.0.0.1", &[]), ip("10.0.0.1"));
        assert_eq!(client(t, "10.0.0.1", &["unknown"]), ip("10.0.0.1"));
        assert_eq!(
            client(t, "10.0.0.1", &["203.0.113.1, garbage, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(client(t, "10.0.0.1", &[""]), ip("10.0.0.1"));
        // Every hop trusted: the left-most one.
        assert_eq!(
            client(t, "10.0.0.1", &["10.0.0.3, 10.0.0.2"]),
            ip("10.0.0.3")
        );
        // What the client wrote left of the address its proxy added is never read: neither a
        // long header nor bytes that are not text make it pass for the proxy.
        let long = format!("{}203.0.113.9", "1.1.1.1,".repeat(10_000));
        assert_eq!(client(t, "10.0.0.1", &[long.as_str()]), ip("203.0.113.9"));
        assert_eq!(
            trusted(t).client(ip("10.0.0.1"), [&b"\xff\xfe, 203.0.113.9"[..]]),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted(t).client(ip("10.0.0.1"), [&b"\xff\xfe"[..], &b"203.0.113.9"[..]]),
            ip("203.0.113.9")
        );
        // Garbage where the proxy's entry should be: the proxy.
        assert_eq!(
            trusted(t).client(ip("10.0.0.1"), [&b"\xff\xfe"[..]]),
            ip("10.0.0.1")
        );
        // A chain of trusted hops longer than is looked at stops at the last one looked at.
        let hops = vec!["10.0.0.9"; MAX_FORWARDED_HOPS + 5].join(",");
        assert_eq!(client(t, "10.0.0.1", &[hops.as_str()]), ip("10.0.0.9"));
    }

    proptest! {
        /// Whatever the header says, the answer is the peer or an address the header holds,
        /// and never one of the addresses left of the right-most untrusted one.
        #[test]
        fn never_believes_what_the_client_wrote(
            forged in proptest::collection::vec(any::<[u8; 4]>(), 0..4),
            real in any::<[u8; 4]>(),
            hops in 0usize..3,
        ) {
            let t = trusted("10.0.0.0/8");
            let real = IpAddr::from(real);
            prop_assume!(!t.contains(real));
            let mut entries: Vec<String> =
                forged.iter().map(|o| IpAddr::from(*o).to_string()).collect();
            entries.push(real.to_string());
            for h in 0..hops {
                entries.push(format!("10.0.0.{}", h + 2));
            }
            let header = entries.join(", ");
            let got = t.client(ip("10.0.0.1"), [header.as_bytes()]);
            prop_assert_eq!(got, real);
        }
    }
}
