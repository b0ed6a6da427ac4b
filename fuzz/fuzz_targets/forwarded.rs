//! The client address behind trusted proxies (`TRUSTED_PROXIES` + `X-Forwarded-For`).
//!
//! Input: a first line, the `TRUSTED_PROXIES` list; the rest, split on `\n`, up to four
//! `X-Forwarded-For` values from a request whose peer is 10.0.0.1. Checks:
//! - parsing the list and resolving the address never panic;
//! - an untrusted peer is always the answer, whatever the header says;
//! - with the peer trusted, the answer is the peer or an address written in the header, and
//!   no entry right of the answer is an untrusted address (it never skips past the client).
#![no_main]

use std::net::IpAddr;

use gateway_core::client_addr::TrustedProxies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let list = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let Ok(trusted) = list.parse::<TrustedProxies>() else {
        return;
    };
    let values: Vec<&[u8]> = lines.take(4).collect();

    let outsider: IpAddr = [192, 0, 2, 1].into();
    if !trusted.contains(outsider) {
        assert_eq!(trusted.client(outsider, values.iter().copied()), outsider);
    }

    let peer: IpAddr = [10, 0, 0, 1].into();
    let got = trusted.client(peer, values.iter().copied());
    if !trusted.contains(peer) {
        assert_eq!(got, peer);
        return;
    }
    if got == peer {
        return;
    }
    let joined = values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let entries: Vec<Option<IpAddr>> = joined.split(',').map(entry_ip).collect();
    let at = entries
        .iter()
        .rposition(|e| *e == Some(got))
        .unwrap_or_else(|| panic!("{got} is not in {joined:?}"));
    for later in &entries[at + 1..] {
        let ip = later.unwrap_or_else(|| panic!("malformed entry right of {got}: {joined:?}"));
        assert!(trusted.contains(ip), "{got} chosen over untrusted {ip}: {joined:?}");
    }
});

/// An entry as an address, read independently: plain, `a.b.c.d:port` or `[v6]:port`, with
/// IPv4-mapped IPv6 read as IPv4.
fn entry_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}
