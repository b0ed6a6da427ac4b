//! Path normalisation and route classification on hostile paths.
//!
//! Input: UTF-8 `METHOD PATH` (or just `PATH`, as `GET`), the path being what follows the
//! proxy prefix. Checks, for every path `normalise_for` accepts:
//! - the decoded path has none of the shapes two parsers could read apart: no `.` or `..`
//!   segment, no `\`, no `%` (it was decoded exactly once), no control character, no empty
//!   segment except inside the value of the rest-of-path parameter of the route it matches
//!   (after that value's first segment); and the raw path had no `%2f`, `%5c`, `%25`, `%00`,
//!   lone `%`;
//! - the forwarded path is strictly encoded and decodes to exactly the decoded path (what the
//!   catalogue matched is what the rack sees), segment for segment;
//! - normalising is idempotent: on the forwarded path and on the decoded path;
//! - classification is total: a known method always gets a valid `convox:` permission; a
//!   matched route re-expands to exactly the path; no two routes tie for the same path; an
//!   unknown route is granted to admin only; the methods a 405 names for a path
//!   (`methods_for`) each classify to a route, and include a matched route's own.
#![no_main]

use convox_api::route::specificity;
use convox_api::{ROUTES, Route, RouteMatch, match_route};
use gateway_core::classify::{classify, methods_for, normalise_for};
use gateway_core::rbac::{Role, unknown_route_permission, validate_permission};
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (method, raw) = text.split_once(' ').unwrap_or(("GET", text));
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    check(&method, raw);
});

fn check(m: &http::Method, raw: &str) {
    let Ok(p) = normalise_for(m, raw) else {
        return;
    };

    // The raw shapes that must be refused never pass.
    let lower = raw.to_ascii_lowercase();
    for needle in ["%2f", "%5c", "%25", "%00", "\\"] {
        assert!(!lower.contains(needle), "{raw:?} accepted with {needle}");
    }
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            assert!(
                bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit),
                "{raw:?}: lone % accepted"
            );
        }
    }

    // The decoded path.
    let d = &p.decoded;
    assert!(d.starts_with('/'), "{raw:?} -> {d:?}");
    // Where the first empty segment is, if any: only inside a rest-of-path value.
    let mut first_empty = None;
    if d != "/" {
        for (n, seg) in d.split('/').skip(1).enumerate() {
            if seg.is_empty() && first_empty.is_none() {
                first_empty = Some(n);
            }
            assert!(seg != "." && seg != "..", "{raw:?} -> {d:?}: dot segment");
        }
    }
    if let Some(n) = first_empty {
        let route = classify(m, d)
            .and_then(|c| c.route)
            .unwrap_or_else(|| panic!("{m} {raw:?} -> {d:?}: empty segment, no route"));
        let fixed = route.pattern.split('/').skip(1).count() - 1;
        assert!(
            route.pattern.ends_with("*}") && n > fixed,
            "{m} {raw:?} -> {d:?}: empty segment {n} outside {}'s rest",
            route.pattern
        );
    }
    assert!(!d.contains('\\'), "{raw:?} -> {d:?}: backslash");
    assert!(
        !d.contains('%'),
        "{raw:?} -> {d:?}: decoded twice would differ"
    );
    assert!(
        !d.chars().any(char::is_control),
        "{raw:?} -> {d:?}: control"
    );

    // The forwarded path: ASCII, strictly encoded, decodes to exactly the decoded path.
    let f = &p.forward;
    assert!(f.starts_with('/'), "{raw:?} -> {f:?}");
    let fb = f.as_bytes();
    for (i, b) in fb.iter().enumerate() {
        let ok = b.is_ascii_alphanumeric()
            || b"/-._~@:+=,".contains(b)
            || (*b == b'%'
                && fb.get(i + 1).is_some_and(upper_hex)
                && fb.get(i + 2).is_some_and(upper_hex));
        assert!(ok, "{raw:?} -> {f:?}: byte {b:#x} not strictly encoded");
    }
    let back = percent_decode_str(f)
        .decode_utf8()
        .unwrap_or_else(|e| panic!("{raw:?} -> {f:?}: {e}"));
    assert_eq!(&back, d, "{raw:?}: the rack would see another path");
    assert_eq!(
        f.split('/').count(),
        d.split('/').count(),
        "{raw:?}: segment count changed"
    );

    // Idempotent: on the forwarded path, and on the decoded one (which has no `%` left).
    let again = normalise_for(m, f).unwrap_or_else(|e| panic!("{raw:?} -> {f:?} refused: {e}"));
    assert_eq!(again, p, "{raw:?}: not idempotent on the forwarded path");
    let again = normalise_for(m, d).unwrap_or_else(|e| panic!("{raw:?} -> {d:?} refused: {e}"));
    assert_eq!(again, p, "{raw:?}: not idempotent on the decoded path");

    // Classification.
    let known = convox_api::Method::parse(m.as_str());
    let c = match classify(m, d) {
        Some(c) => c,
        None => {
            assert!(known.is_none(), "{m} {d:?}: known method refused");
            return;
        }
    };
    let known = known.unwrap_or_else(|| panic!("{m}: unknown method classified"));
    assert!(
        validate_permission(&c.permission).is_ok() && c.permission.starts_with("convox:"),
        "{m} {d:?}: bad permission {}",
        c.permission
    );
    match c.route {
        Some(route) => {
            assert_eq!(route.method, known);
            assert_eq!(c.permission, route.permission());
            let found = match_route(ROUTES, known, d)
                .unwrap_or_else(|| panic!("{m} {d:?}: classified but no match"));
            assert!(std::ptr::eq(found.route, route));
            assert_eq!(
                expand(&found),
                *d,
                "{m} {d:?}: {} does not re-expand",
                route.pattern
            );
            no_tie(known, d, route);
            assert!(
                methods_for(d).contains(&known.as_str()),
                "{m} {d:?}: its own method is not among the path's"
            );
        }
        None => {
            // A 405 names these methods: each must classify to a route of its own.
            for other in methods_for(d) {
                let other = http::Method::from_bytes(other.as_bytes())
                    .unwrap_or_else(|e| panic!("{other}: {e}"));
                assert!(
                    classify(&other, d).is_some_and(|c| c.route.is_some()),
                    "{other} {d:?}: named for the path but not a route"
                );
            }
            assert_eq!(c.permission, unknown_route_permission(m.as_str()));
            for role in Role::ALL {
                assert_eq!(
                    role.permissions().allows(&c.permission),
                    *role == Role::Admin,
                    "{m} {d:?}: unknown route and {role}"
                );
            }
        }
    }
}

fn upper_hex(c: &u8) -> bool {
    c.is_ascii_digit() || (b'A'..=b'F').contains(c)
}

/// The path a match stands for: the pattern with its parameters put back.
fn expand(m: &RouteMatch) -> String {
    let mut params = m.params.iter();
    let mut out = String::new();
    for seg in m.route.pattern.split('/').skip(1) {
        out.push('/');
        match seg.strip_prefix('{').and_then(|s| s.split_once('}')) {
            None => out.push_str(seg),
            Some((name, suffix)) => {
                let (pname, value) = params
                    .next()
                    .unwrap_or_else(|| panic!("{}: missing parameter", m.route.pattern));
                assert_eq!(*pname, name.trim_end_matches('*'));
                assert!(!value.is_empty(), "{}: empty {name}", m.route.pattern);
                if !name.ends_with('*') {
                    assert!(
                        !value.contains('/'),
                        "{}: {name} = {value:?}",
                        m.route.pattern
                    );
                }
                out.push_str(value);
                out.push_str(suffix);
            }
        }
    }
    assert!(
        params.next().is_none(),
        "{}: extra parameters",
        m.route.pattern
    );
    out
}

/// No other route of the same method matches `path` with an equal or better shape: the
/// catalogue's order never decides what a request is.
fn no_tie(method: convox_api::Method, path: &str, chosen: &'static Route) {
    let best = specificity(chosen.pattern);
    for route in ROUTES.iter().filter(|r| r.method == method) {
        if std::ptr::eq(route, chosen) {
            continue;
        }
        if match_route(std::slice::from_ref(route), method, path).is_some() {
            assert!(
                specificity(route.pattern) < best,
                "{method} {path:?}: {} ties with {}",
                route.pattern,
                chosen.pattern
            );
        }
    }
}
