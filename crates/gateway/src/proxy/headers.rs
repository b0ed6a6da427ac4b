//! Which headers cross the gateway.
//!
//! Hop-by-hop headers never do. Headers a client could use to feed an audit field, a decision
//! or the rack's idea of the original request (forwarding, original-path, method override,
//! audit-looking) are stripped. The caller's credentials are replaced by the rack's; cookies stay with us.

use http::{HeaderMap, HeaderName, header};

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers never forwarded to the rack (besides hop-by-hop ones). A `match`, not a
/// list searched in turn: every header of every request is looked up here.
fn dropped_request_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
        | "proxy-authorization"
        | "cookie"
        | "host"
        | "forwarded"
        | "via"
        // Client addresses as CDNs and load balancers write them: a rack (or something in front
        // of it) that trusts one would believe what the caller wrote.
        | "x-real-ip"
        | "true-client-ip"
        | "cf-connecting-ip"
        | "fastly-client-ip"
        | "x-client-ip"
        | "x-cluster-client-ip"
        | "client-ip"
        | "x-appengine-user-ip"
        | "cf-connecting-ipv6"
        | "fly-client-ip"
        | "x-originating-ip"
        | "x-remote-ip"
        | "x-remote-addr"
        | "x-envoy-external-address"
        // Original-URL and original-host headers some servers honour.
        | "x-rewrite-url"
        | "x-override-url"
        | "x-host"
        | "x-http-host-override"
        | "x-request-id"
        // RBAC decides on the method the gateway saw; a server that honours an override header
        // would run a different one (a viewer's GET executed as DELETE).
        | "x-http-method-override"
        | "x-http-method"
        | "x-method-override"
        // The rack believes these from whoever holds its token, which is the gateway: who the
        // rack records as the actor (the gateway sets it, see `actor`) and which tenant's
        // namespace a request addresses (outside anything the gateway judges).
        | "convox-actor"
        | "x-convox-actor"
        | "convox-tid"
        | "x-convox-tid"
        | "sec-websocket-key"
        | "sec-websocket-version"
        | "sec-websocket-extensions"
        | "sec-websocket-accept"
        // Replaced by `identity` (see `upstream_headers`): a compressed answer could not be
        // checked for the rack token.
        | "accept-encoding"
        // A part of an answer is checked on its own: two ranges could carry the rack token
        // in two halves, neither masked.
        | "range"
        | "if-range"
        | "request-range"
    )
}

/// Prefixes of request headers never forwarded.
const REQUEST_DROP_PREFIXES: &[&str] = &["x-forwarded-", "x-original-", "x-audit-", "proxy-"];

/// The header the rack records as a request's actor when it is authenticated with its own
/// token (Convox's `pkg/api`): set to the gateway's caller, so the rack's own audit events name
/// the person or robot rather than "rack-password".
pub const ACTOR: HeaderName = HeaderName::from_static("convox-actor");

/// [`ACTOR`]'s value for a caller: the signed-in user's e-mail, or `token:<name>` for an API
/// token, followed by its owner's e-mail in parentheses when it has one. Control characters
/// are left out (the rack drops them too) and the value is cut at 256 characters (the rack's
/// own limit), so it is always a valid header value.
pub fn actor(email: Option<&str>, token_name: Option<&str>) -> Option<http::HeaderValue> {
    let text = match (token_name, email) {
        (Some(name), Some(owner)) => format!("token:{name} ({owner})"),
        (Some(name), None) => format!("token:{name}"),
        (None, Some(email)) => email.to_string(),
        (None, None) => return None,
    };
    // Almost always plain already: then the text itself becomes the value, uncopied.
    let plain = text.len() <= 256 && !text.chars().any(char::is_control);
    let clean = if plain {
        text
    } else {
        text.chars().filter(|c| !c.is_control()).take(256).collect()
    };
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(clean)).ok()
}

/// Response headers never returned to the client. The proxy takes no requests from other
/// origins (see [`cross_origin`]), so the rack has no cross-origin policy to state.
const RESPONSE_DROP: &[&str] = &[
    "set-cookie",
    "www-authenticate",
    "proxy-authenticate",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
    "access-control-max-age",
];

/// What browsers say of where a request comes from (Fetch Metadata).
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Why a request looks made by a web page of another site, if it does. A browser that holds
/// a caller's Basic credentials (typed into its prompt once) adds them to requests other sites'
/// pages make: a form posting a restart, a WebSocket opening a shell. Browsers say where a
/// request comes from; command-line clients send neither header, except the convox CLI, whose
/// WebSockets carry `Origin` set to its own `RACK_URL`: the gateway's origin, as the request's
/// `Host` names it or as `public` (`PUBLIC_URL`, for a proxy in front that rewrites `Host`).
pub fn cross_origin(headers: &HeaderMap, public: Option<&url::Url>) -> Option<&'static str> {
    if let Some(site) = headers.get(SEC_FETCH_SITE)
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Some("Sec-Fetch-Site is not same-origin");
    }
    let origin = headers.get(header::ORIGIN)?;
    let Ok(origin) = url::Url::parse(origin.to_str().unwrap_or_default()) else {
        return Some("Origin is not a site");
    };
    if !matches!(origin.scheme(), "http" | "https") || origin.host_str().is_none() {
        return Some("Origin is not a site");
    }
    if public.is_some_and(|p| p.origin() == origin.origin()) {
        return None;
    }
    // Ports as written: `Host` carries one exactly when the client's URL did.
    let host = origin.host_str().unwrap_or_default();
    let authority = match origin.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    match headers.get(header::HOST) {
        Some(h) if h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) => None,
        _ => Some("Origin is another site"),
    }
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn keep_request(name: &HeaderName, listed: &[String]) -> bool {
    let n = name.as_str();
    !HOP_BY_HOP.contains(&n)
        && !dropped_request_header(n)
        && !REQUEST_DROP_PREFIXES.iter().any(|p| n.starts_with(p))
        && !listed.iter().any(|l| l == n)
}

/// The client's headers that may go to the rack.
pub fn request_headers(incoming: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(incoming);
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        if keep_request(name, &listed) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The headers a request carries to the rack: the client's that may cross, the rack's
/// credentials, and the caller as the rack's [`ACTOR`].
pub fn upstream_headers(
    incoming: &HeaderMap,
    authorization: http::HeaderValue,
    actor: Option<http::HeaderValue>,
) -> HeaderMap {
    let mut headers = request_headers(incoming);
    headers.insert(header::AUTHORIZATION, authorization);
    // The rack's answers are checked for its token as they stream through, which a compressed
    // body would hide: the rack is asked for the bytes as they are.
    headers.insert(
        header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
    if let Some(actor) = actor {
        headers.insert(ACTOR, actor);
    }
    headers
}

/// The rack's headers that may go back to the client; any header carrying the rack token, in
/// its name or its value, is dropped (`leaks` says whether some bytes contain it).
pub fn response_headers(incoming: &HeaderMap, leaks: impl Fn(&[u8]) -> bool) -> HeaderMap {
    let listed = connection_listed(incoming);
    // The body is relayed as it is decoded from the chunks, so a length sent beside
    // `Transfer-Encoding` (which HTTP says to ignore) would cut it short or hold the client.
    let chunked = incoming.contains_key(header::TRANSFER_ENCODING);
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || RESPONSE_DROP.contains(&n)
            || listed.iter().any(|l| l == n)
            || (chunked && name == header::CONTENT_LENGTH)
            || leaks(value.as_bytes())
            || leaks(n.as_bytes())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    sandboxed(&mut out);
    out
}

/// Marks a rack answer so that, should a browser ever show one, it is not a page of the
/// gateway's origin: a hostile rack's HTML could otherwise act with the gateway's cookies.
pub fn sandboxed(headers: &mut HeaderMap) {
    headers.append(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
}

/// The coding of a response body the gateway could not check for the rack token, as
/// `Header: coding`: a `Content-Encoding` other than `identity`, or a `Transfer-Encoding` other
/// than `chunked` (which the HTTP client undoes). `None` when the body arrives as it is.
pub fn unreadable_coding(headers: &HeaderMap) -> Option<String> {
    let codings = |name| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| String::from_utf8_lossy(c.trim_ascii()).to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    };
    let content = codings(header::CONTENT_ENCODING);
    let transfer = codings(header::TRANSFER_ENCODING);
    let shown =
        |c: &String| -> String { c.chars().filter(|ch| !ch.is_control()).take(40).collect() };
    match content.iter().find(|c| *c != "identity") {
        Some(c) => Some(format!("Content-Encoding: {}", shown(c))),
        None => transfer
            .iter()
            .find(|c| *c != "chunked")
            .map(|c| format!("Transfer-Encoding: {}", shown(c))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn spoofable_and_secret_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Basic eA=="),
            ("cookie", "a=b"),
            ("x-forwarded-for", "1.2.3.4"),
            ("true-client-ip", "1.2.3.4"),
            ("cf-connecting-ip", "1.2.3.4"),
            ("x-client-ip", "1.2.3.4"),
            ("x-cluster-client-ip", "1.2.3.4"),
            ("client-ip", "1.2.3.4"),
            ("via", "1.1 evil"),
            ("x-host", "evil"),
            ("x-override-url", "/system"),
            ("x-audit-user", "admin"),
            ("x-original-url", "/system"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("connection", "close, x-custom"),
            ("x-custom", "1"),
            ("transfer-encoding", "chunked"),
            ("command", "ls"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("convox-actor", "someone-else"),
            ("x-convox-actor", "someone-else"),
            ("convox-tid", "other-tenant"),
            ("x-convox-tid", "other-tenant"),
            ("accept-encoding", "gzip, br"),
            ("range", "bytes=0-35"),
            ("if-range", "\"etag\""),
            ("request-range", "bytes=0-3"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = request_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["command", "content-type"]);
    }

    #[test]
    fn the_actor_names_the_caller_and_is_always_a_header_value() {
        let value = |email, token| actor(email, token).map(|v| v.as_bytes().to_vec());
        assert_eq!(
            value(Some("ann@example.com"), None),
            Some(b"ann@example.com".to_vec())
        );
        assert_eq!(value(None, Some("ci")), Some(b"token:ci".to_vec()));
        assert_eq!(
            value(Some("ann@example.com"), Some("laptop")),
            Some(b"token:laptop (ann@example.com)".to_vec())
        );
        assert_eq!(value(None, None), None);
        // Control characters go; other text is kept as its UTF-8 bytes; 256 characters at most.
        assert_eq!(
            value(Some("b\r\nx-evil: 1\u{85}\u{7f}\u{0}ob@exämple.com"), None),
            Some("bx-evil: 1ob@exämple.com".as_bytes().to_vec())
        );
        let long = "é".repeat(300);
        let cut = actor(Some(&long), None).map(|v| v.as_bytes().len());
        assert_eq!(cut, Some(512));
    }

    #[test]
    fn the_rack_is_asked_for_uncompressed_answers() {
        let mut h = HeaderMap::new();
        h.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let out = upstream_headers(&h, HeaderValue::from_static("Basic eA=="), None);
        let codings: Vec<&[u8]> = out
            .get_all("accept-encoding")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(codings, vec![b"identity".as_slice()]);
    }

    #[test]
    fn only_bodies_as_they_are_are_readable() {
        let coding = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            unreadable_coding(&h)
        };
        assert_eq!(coding(&[]), None);
        assert_eq!(coding(&[("content-encoding", "identity")]), None);
        assert_eq!(coding(&[("content-encoding", " Identity ")]), None);
        assert_eq!(coding(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(
            coding(&[("content-encoding", "gzip")]),
            Some("Content-Encoding: gzip".into())
        );
        assert_eq!(
            coding(&[("content-encoding", "identity, BR")]),
            Some("Content-Encoding: br".into())
        );
        assert_eq!(
            coding(&[
                ("content-encoding", "identity"),
                ("content-encoding", "deflate")
            ]),
            Some("Content-Encoding: deflate".into())
        );
        assert_eq!(
            coding(&[("transfer-encoding", "gzip, chunked")]),
            Some("Transfer-Encoding: gzip".into())
        );
    }

    #[test]
    fn responses_lose_cookies_and_token_echoes() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("s=1"));
        h.insert("x-echo", HeaderValue::from_static("racktoken"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("racktoken", HeaderValue::from_static("1"));
        let out = response_headers(&h, |v| v.windows(9).any(|w| w == b"racktoken"));
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "content-type",
                "content-security-policy",
                "x-content-type-options"
            ]
        );
    }

    #[test]
    fn only_the_gateways_own_origin_and_command_lines_are_taken() {
        let check = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            cross_origin(&h, None)
        };
        let host = ("host", "gw.example.com:8447");
        // curl, the rack-gateway CLI: neither header.
        assert_eq!(check(&[host]), None);
        // The convox CLI's WebSockets: its RACK_URL's origin, lower-cased.
        assert_eq!(
            check(&[host, ("origin", "https://gw.example.com:8447")]),
            None
        );
        assert_eq!(
            check(&[host, ("origin", "https://GW.example.com:8447")]),
            None
        );
        assert_eq!(check(&[host, ("sec-fetch-site", "none")]), None);
        assert_eq!(check(&[host, ("sec-fetch-site", "same-origin")]), None);
        for refused in [
            vec![host, ("origin", "https://evil.example")],
            vec![host, ("origin", "https://gw.example.com")],
            vec![host, ("origin", "https://gw.example.com:8447.evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "file://gw.example.com:8447")],
            vec![("origin", "https://gw.example.com:8447")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
        ] {
            assert!(check(&refused).is_some(), "{refused:?}");
        }
        // Behind a proxy that rewrites `Host`: PUBLIC_URL's origin.
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("10.0.0.5:8447"));
        h.insert("origin", HeaderValue::from_static("https://gw.example.com"));
        let public = url::Url::parse("https://gw.example.com/").ok();
        assert_eq!(cross_origin(&h, public.as_ref()), None);
        h.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(cross_origin(&h, public.as_ref()).is_some());
    }

    #[test]
    fn a_length_beside_chunks_is_not_relayed() {
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("1000"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let out = response_headers(&h, |_| false);
        assert!(out.get("content-length").is_none());
        h.remove("transfer-encoding");
        let out = response_headers(&h, |_| false);
        assert_eq!(
            out.get("content-length").map(HeaderValue::as_bytes),
            Some(b"1000".as_slice())
        );
    }
}
