//! Minimal UTC time handling in the shapes the Convox API uses: Go's JSON time
//! format (RFC 3339 with trimmed nanoseconds), the rack's "sortable" form time
//! format (`20060102.150405.000000000`) and Go duration strings (`2m`, `1h30m`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// Seconds between 0001-01-01T00:00:00Z (Go's zero `time.Time`) and the Unix epoch.
const GO_ZERO_SECS: i64 = -62_135_596_800;

/// A UTC instant with nanosecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Default for Timestamp {
    fn default() -> Self {
        Self::ZERO
    }
}

impl Timestamp {
    /// Go's zero time (`0001-01-01T00:00:00Z`), what the rack sends for unset times.
    pub const ZERO: Timestamp = Timestamp {
        secs: GO_ZERO_SECS,
        nanos: 0,
    };

    /// The current time.
    pub fn now() -> Self {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Self::from_unix(d.as_secs() as i64, d.subsec_nanos()),
            Err(_) => Self::from_unix(0, 0),
        }
    }

    /// Builds a timestamp from Unix seconds and nanoseconds.
    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        Self {
            secs: secs + i64::from(nanos / 1_000_000_000),
            nanos: nanos % 1_000_000_000,
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    fn from_unix_nanos(n: i128) -> Self {
        let secs = n.div_euclid(1_000_000_000);
        let nanos = n.rem_euclid(1_000_000_000);
        Self {
            secs: i64::try_from(secs).unwrap_or(i64::MAX),
            nanos: u32::try_from(nanos).unwrap_or(0),
        }
    }

    /// This instant moved back by `d`.
    pub fn minus(&self, d: Duration) -> Self {
        Self::from_unix_nanos(self.unix_nanos() - d.as_nanos() as i128)
    }

    /// The smallest timestamp strictly after this one.
    pub fn next_nano(&self) -> Self {
        Self::from_unix_nanos(self.unix_nanos() + 1)
    }

    fn parts(&self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let h = (rem / 3600) as u32;
        let mi = ((rem % 3600) / 60) as u32;
        let s = (rem % 60) as u32;
        (y, m, d, h, mi, s)
    }

    /// RFC 3339 with whole seconds, e.g. `2024-01-02T15:04:05Z` (log line timestamps).
    pub fn rfc3339(&self) -> String {
        let (y, m, d, h, mi, s) = self.parts();
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// RFC 3339 with trailing-zero-trimmed nanoseconds, as Go marshals `time.Time`.
    pub fn rfc3339_nano(&self) -> String {
        let (y, m, d, h, mi, s) = self.parts();
        let mut out = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
        if self.nanos > 0 {
            let frac = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }

    /// Parses the rack's form time format `20060102.150405.000000000`.
    pub fn parse_sortable(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 25 || b[8] != b'.' || b[15] != b'.' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = s.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
        let nanos = num(16..25)?;
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        let days = days_from_civil(y, mo as u32, d as u32);
        Some(Self::from_unix(
            days * 86_400 + h * 3600 + mi * 60 + se,
            u32::try_from(nanos).ok()?,
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339_nano())
    }
}

/// Days since 1970-01-01 to (year, month, day). Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01. Howard Hinnant's algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a Go duration string (`300ms`, `-1.5h`, `2h45m`, `0`). Negative
/// durations are clamped to zero. The error text matches Go's `time.ParseDuration`.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration \"{input}\"");
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, rest) = s.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration \"{input}\"")),
            other => {
                return Err(format!(
                    "time: unknown unit \"{other}\" in duration \"{input}\""
                ));
            }
        };
        total += value * scale;
        s = rest;
    }
    if negative || total <= 0.0 {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(total.min(u64::MAX as f64) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(Timestamp::ZERO.rfc3339_nano(), "0001-01-01T00:00:00Z");
        let t = Timestamp::from_unix(1_700_000_000, 120_000_000);
        assert_eq!(t.rfc3339_nano(), "2023-11-14T22:13:20.12Z");
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn parses_sortable() {
        let t = Timestamp::parse_sortable("20231114.221320.120000000");
        assert_eq!(t, Some(Timestamp::from_unix(1_700_000_000, 120_000_000)));
        assert_eq!(Timestamp::parse_sortable("2023-11-14"), None);
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_go_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("abc").is_err());
        assert!(parse_go_duration("5").is_err());
    }
}
