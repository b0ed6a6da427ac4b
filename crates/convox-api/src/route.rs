//! Route types and the matcher that maps a normalised request path onto the catalogue.

use std::fmt;

/// HTTP methods the rack API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET` (also used for WebSocket upgrades).
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
}

impl Method {
    /// Every method, in declaration order.
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Options,
    ];

    /// The method's position in [`Method::ALL`].
    fn index(self) -> usize {
        match self {
            Method::Get => 0,
            Method::Post => 1,
            Method::Put => 2,
            Method::Patch => 3,
            Method::Delete => 4,
            Method::Head => 5,
            Method::Options => 6,
        }
    }

    /// Parses an HTTP method name (case-sensitive, as HTTP requires).
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }

    /// The method's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a route is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A plain HTTP request/response (bodies may be streamed).
    Http,
    /// A WebSocket upgrade (logs, exec, run, build logs).
    WebSocket,
}

/// One rack API route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path pattern; `{name}` matches one non-empty segment. A segment may also end in a
    /// literal suffix after the parameter, e.g. `{id}.tgz`. A final `{name*}` matches the rest
    /// of the path (one or more segments, joined by `/`), as object keys need.
    pub pattern: &'static str,
    /// The resource, e.g. `apps`; the permission is `convox:<resource>:<action>`.
    pub resource: &'static str,
    /// The action, e.g. `list`.
    pub action: &'static str,
    /// HTTP or WebSocket.
    pub kind: RouteKind,
}

impl Route {
    /// The permission string that guards this route.
    pub fn permission(&self) -> String {
        format!("convox:{}:{}", self.resource, self.action)
    }
}

/// The result of matching a path against the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The matched route.
    pub route: &'static Route,
    /// Captured `{name}` parameters in order.
    pub params: Vec<(&'static str, String)>,
}

impl RouteMatch {
    /// The value of a named parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Finds the route for `method` and a normalised `path` in `routes`.
///
/// Literal segments win over parameters (compared left to right), and a parameter with a
/// literal suffix (`{id}.tgz`) wins over a bare one, so `/apps/{app}/builds/import` is never
/// taken for a build id.
pub fn match_route(routes: &'static [Route], method: Method, path: &str) -> Option<RouteMatch> {
    let route = find_route(routes, method, path)?;
    let params = match_pattern(route.pattern, path)?;
    Some(RouteMatch { route, params })
}

/// [`match_route`] without capturing parameters: it allocates nothing. The proxy uses
/// [`RouteIndex::find`], which answers the same without walking the whole catalogue.
pub fn find_route(routes: &'static [Route], method: Method, path: &str) -> Option<&'static Route> {
    most_specific(routes.iter().filter(|r| r.method == method), path)
}

/// The most specific of `candidates` that matches `path`; the first of equals.
fn most_specific<'r>(candidates: impl Iterator<Item = &'r Route>, path: &str) -> Option<&'r Route> {
    let mut best: Option<&'r Route> = None;
    for route in candidates {
        if !pattern_matches(route.pattern, path) {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => segment_ranks(route.pattern)
                .cmp(segment_ranks(b.pattern))
                .is_gt(),
        };
        if better {
            best = Some(route);
        }
    }
    best
}

/// A catalogue arranged for lookup by method and number of path segments. It answers exactly
/// as [`find_route`] does, but tries a handful of routes instead of every route of the method
/// (most rack routes start `/apps/{app}/…`, so the first segment alone rules out little).
#[derive(Debug)]
pub struct RouteIndex {
    /// `[method][segment count]` → the routes of that shape, in catalogue order.
    fixed: Vec<Vec<Vec<&'static Route>>>,
    /// `[method]` → routes ending in a rest-of-path parameter (`{key*}`), in catalogue order.
    open_ended: Vec<Vec<&'static Route>>,
}

impl RouteIndex {
    /// Indexes `routes`.
    pub fn new(routes: &'static [Route]) -> RouteIndex {
        let mut fixed: Vec<Vec<Vec<&'static Route>>> = vec![Vec::new(); Method::ALL.len()];
        let mut open_ended: Vec<Vec<&'static Route>> = vec![Vec::new(); Method::ALL.len()];
        for route in routes {
            let by_method = route.method.index();
            if route.pattern.ends_with("*}") {
                open_ended[by_method].push(route);
            } else {
                let shapes = &mut fixed[by_method];
                let segments = segment_count(route.pattern);
                if shapes.len() <= segments {
                    shapes.resize(segments + 1, Vec::new());
                }
                shapes[segments].push(route);
            }
        }
        RouteIndex { fixed, open_ended }
    }

    /// The route for `method` and a normalised `path`, as [`find_route`] finds it. A fixed
    /// pattern never ties with an open-ended one (it ranks higher where the other's rest
    /// begins), so trying the fixed ones first keeps "the first of equals" unchanged.
    pub fn find(&self, method: Method, path: &str) -> Option<&'static Route> {
        let by_method = method.index();
        let fixed = self
            .fixed
            .get(by_method)
            .and_then(|shapes| shapes.get(segment_count(path)));
        let open_ended = self.open_ended.get(by_method);
        let candidates = fixed.into_iter().chain(open_ended).flatten().copied();
        most_specific(candidates, path)
    }
}

fn segment_count(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

/// True when `path` matches `pattern` (the same rules as [`match_pattern`]).
fn pattern_matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.split('/').skip(1);
    let mut segs = path.split('/').skip(1);
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with("*}") => {
                return !s.is_empty() && pat.next().is_none();
            }
            (Some(p), Some(s)) => {
                if !segment_matches(p, s) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// True when one path segment matches one pattern segment (the rules of [`match_segment`]).
fn segment_matches(pattern: &str, segment: &str) -> bool {
    let Some(rest) = pattern.strip_prefix('{') else {
        return pattern == segment;
    };
    let Some(close) = rest.find('}') else {
        return false;
    };
    segment
        .strip_suffix(&rest[close + 1..])
        .is_some_and(|value| !value.is_empty())
}

/// Matches one pattern segment against one path segment, capturing a parameter.
fn match_segment(pattern: &'static str, segment: &str) -> Option<Option<(&'static str, String)>> {
    let Some(rest) = pattern.strip_prefix('{') else {
        return (pattern == segment).then_some(None);
    };
    let close = rest.find('}')?;
    let name = &rest[..close];
    let suffix = &rest[close + 1..];
    let value = segment.strip_suffix(suffix)?;
    if value.is_empty() {
        return None;
    }
    Some(Some((name, value.to_string())))
}

/// Matches `path` (already normalised: starts with `/`, no empty segments) against one
/// pattern.
fn match_pattern(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let mut params = Vec::new();
    let mut pat = pattern.split('/').skip(1);
    let mut segs = path.split('/').skip(1);
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with("*}") => {
                let name = &p[1..p.len() - 2];
                let mut rest = s.to_string();
                for more in segs.by_ref() {
                    rest.push('/');
                    rest.push_str(more);
                }
                if s.is_empty() {
                    return None;
                }
                params.push((name, rest));
                return pat.next().is_none().then_some(params);
            }
            (Some(p), Some(s)) => {
                if let Some(capture) = match_segment(p, s)? {
                    params.push(capture);
                }
            }
            _ => return None,
        }
    }
}

/// How specific a pattern is, segment by segment, as [`match_route`] ranks it: literal 3,
/// parameter with a literal suffix (`{id}.tgz`) 2, bare parameter 1, rest-of-path 0. Compared
/// left to right, the greater one wins.
pub fn specificity(pattern: &str) -> Vec<u8> {
    segment_ranks(pattern).collect()
}

fn segment_ranks(pattern: &str) -> impl Iterator<Item = u8> + '_ {
    pattern
        .split('/')
        .skip(1)
        .map(|s| match (s.starts_with('{'), s.ends_with('}')) {
            (false, _) => 3,
            (true, false) => 2,
            (true, true) if s.ends_with("*}") => 0,
            (true, true) => 1,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher as first written: capture every candidate, rank by `specificity`.
    fn reference(routes: &'static [Route], method: Method, path: &str) -> Option<&'static str> {
        let mut best: Option<(Vec<u8>, &'static Route)> = None;
        for route in routes.iter().filter(|r| r.method == method) {
            if match_pattern(route.pattern, path).is_none() {
                continue;
            }
            let shape = specificity(route.pattern);
            if best.as_ref().is_none_or(|(b, _)| shape > *b) {
                best = Some((shape, route));
            }
        }
        best.map(|(_, r)| r.pattern)
    }

    proptest::proptest! {
        /// The allocation-free matcher picks the route the capturing reference picks, on paths
        /// made of the catalogue's own words so that most of them match something.
        #[test]
        fn find_route_agrees_with_the_capturing_matcher(
            segs in proptest::collection::vec(
                "(apps|builds|processes|objects|tmp|web|services|restart|logs|import|releases|b1.tgz|[a-z]{1,3}|)",
                1..7,
            ),
            method in proptest::sample::select(vec![Method::Get, Method::Post, Method::Put, Method::Delete]),
        ) {
            let path = format!("/{}", segs.join("/"));
            let expected = reference(crate::ROUTES, method, &path);
            proptest::prop_assert_eq!(find_route(crate::ROUTES, method, &path).map(|r| r.pattern), expected);
            proptest::prop_assert_eq!(match_route(crate::ROUTES, method, &path).map(|m| m.route.pattern), expected);
            proptest::prop_assert_eq!(crate::CATALOGUE.find(method, &path).map(|r| r.pattern), expected);
        }
    }

    #[test]
    fn method_index_is_the_position_in_all() {
        for (i, m) in Method::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(Method::parse(m.as_str()), Some(*m));
        }
    }

    static TEST_ROUTES: &[Route] = &[
        Route {
            method: Method::Get,
            pattern: "/apps/{app}/builds/{id}",
            resource: "builds",
            action: "read",
            kind: RouteKind::Http,
        },
        Route {
            method: Method::Get,
            pattern: "/apps/{app}/builds/{id}.tgz",
            resource: "builds",
            action: "export",
            kind: RouteKind::Http,
        },
        Route {
            method: Method::Get,
            pattern: "/apps/{app}/builds/import",
            resource: "builds",
            action: "import",
            kind: RouteKind::Http,
        },
    ];

    static REST_ROUTES: &[Route] = &[Route {
        method: Method::Post,
        pattern: "/apps/{app}/objects/{key*}",
        resource: "objects",
        action: "create",
        kind: RouteKind::Http,
    }];

    #[test]
    fn rest_parameter_takes_the_remaining_segments() {
        let m = match_route(REST_ROUTES, Method::Post, "/apps/web/objects/tmp/a.tgz");
        let m = m.unwrap_or_else(|| panic!("no match"));
        assert_eq!(m.param("key"), Some("tmp/a.tgz"));
        assert!(match_route(REST_ROUTES, Method::Post, "/apps/web/objects").is_none());
    }

    #[test]
    fn literal_beats_parameter() {
        let m = match_route(TEST_ROUTES, Method::Get, "/apps/web/builds/import");
        assert_eq!(m.map(|m| m.route.action), Some("import"));
    }

    #[test]
    fn suffix_beats_bare_parameter() {
        let m = match_route(TEST_ROUTES, Method::Get, "/apps/web/builds/B1.tgz");
        let m = m.unwrap_or_else(|| panic!("no match"));
        assert_eq!(m.route.action, "export");
        assert_eq!(m.param("id"), Some("B1"));
    }

    #[test]
    fn parameters_are_captured() {
        let m = match_route(TEST_ROUTES, Method::Get, "/apps/web/builds/B123");
        let m = m.unwrap_or_else(|| panic!("no match"));
        assert_eq!(m.param("app"), Some("web"));
        assert_eq!(m.param("id"), Some("B123"));
    }

    #[test]
    fn no_match_on_wrong_method_or_length() {
        assert!(match_route(TEST_ROUTES, Method::Post, "/apps/web/builds/B1").is_none());
        assert!(match_route(TEST_ROUTES, Method::Get, "/apps/web/builds").is_none());
        assert!(match_route(TEST_ROUTES, Method::Get, "/apps/web/builds/B1/x").is_none());
    }
}
