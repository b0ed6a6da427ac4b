//! What a rack request is: the catalogue route it matches and the permission that guards it.

use convox_api::{CATALOGUE, Method, Route};

use crate::path::{NormalisedPath, PathError, normalise, normalise_open_after};
use crate::rbac::unknown_route_permission;

/// What the catalogue says a request is.
#[derive(Debug, Clone)]
pub struct Classified {
    /// The permission that guards it.
    pub permission: String,
    /// The matched route, if the catalogue knows it.
    pub route: Option<&'static Route>,
}

/// Maps a method and normalised path to its permission; a path the catalogue does not know
/// gets the permission for unknown routes (which only `*` holds). `None` when the method is
/// not one the rack API uses at all.
pub fn classify(method: &http::Method, decoded_path: &str) -> Option<Classified> {
    let m = Method::parse(method.as_str())?;
    Some(match CATALOGUE.find(m, decoded_path) {
        Some(route) => Classified {
            permission: route.permission(),
            route: Some(route),
        },
        None => Classified {
            permission: unknown_route_permission(method.as_str()),
            route: None,
        },
    })
}

/// Normalises `raw` ([`normalise`]) for a request with `method`. A path refused only for empty
/// segments is accepted when they all lie inside the value of a route's rest-of-path parameter
/// (`DELETE /registries/{server*}` with `https://index.docker.io/v1/`, which the convox CLI
/// sends as it is): the rack takes that value whole, and a slash more or less in it cannot make
/// another route of it. Otherwise `normalise`'s refusal stands.
pub fn normalise_for(method: &http::Method, raw: &str) -> Result<NormalisedPath, PathError> {
    let refused = match normalise(raw) {
        Ok(path) => return Ok(path),
        Err(refused) => refused,
    };
    let Some(m) = Method::parse(method.as_str()) else {
        return Err(refused);
    };
    // Empty segments allowed anywhere after the first: a route can match such a path only
    // through a rest-of-path parameter (a literal or a one-segment parameter is never empty),
    // and only when its fixed segments and the value's first segment are all there.
    let Ok(open) = normalise_open_after(raw, 0) else {
        return Err(refused);
    };
    match CATALOGUE.find(m, &open.decoded) {
        Some(route) if route.pattern.ends_with("*}") => Ok(open),
        _ => Err(refused),
    }
}

/// The methods the catalogue knows for `decoded_path`, in [`Method::ALL`]'s order: empty for
/// a path the rack API does not have at all.
pub fn methods_for(decoded_path: &str) -> Vec<&'static str> {
    Method::ALL
        .iter()
        .filter(|m| CATALOGUE.find(**m, decoded_path).is_some())
        .map(|m| m.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Classification never panics and always names a permission.
        #[test]
        fn classification_is_total(raw in "(/[a-z0-9{}.*-]{1,12}){0,7}", method in "(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|FOO)") {
            if let Ok(p) = normalise(&raw) {
                let m = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
                if let Some(c) = classify(&m, &p.decoded) {
                    proptest::prop_assert!(c.permission.starts_with("convox:"));
                }
            }
        }
    }

    #[test]
    fn the_methods_of_a_path() {
        assert_eq!(methods_for("/apps"), vec!["GET", "POST"]);
        assert_eq!(methods_for("/apps/web"), vec!["GET", "PUT", "DELETE"]);
        assert!(methods_for("/definitely/not/a/route").is_empty());
    }

    #[test]
    fn empty_segments_pass_only_inside_a_rest_of_path_value() {
        let delete = http::Method::DELETE;
        let get = http::Method::GET;
        let post = http::Method::POST;
        // What `convox registries remove https://index.docker.io/v1/` sends.
        let p = normalise_for(&delete, "/registries/https://index.docker.io/v1/")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.decoded, "/registries/https://index.docker.io/v1/");
        assert_eq!(p.forward, "/registries/https://index.docker.io/v1/");
        let c = classify(&delete, &p.decoded).map(|c| c.permission);
        assert_eq!(c.as_deref(), Some("convox:registries:delete"));
        for (method, ok) in [
            (&get, "/apps/web/objects/a//b/"),
            (&post, "/apps/web/objects/tmp//x.tgz"),
            (&delete, "/registries/index.docker.io"),
        ] {
            assert!(normalise_for(method, ok).is_ok(), "{method} {ok}");
        }
        for (method, refused) in [
            // No rest-of-path route for the method.
            (&get, "/registries/https://index.docker.io/v1/"),
            (&delete, "/apps/web/"),
            (&get, "/apps//processes"),
            // Empty where the route has a fixed segment, or the value's first segment.
            (&get, "/apps//objects/a"),
            (&get, "/apps/web//objects/a"),
            (&delete, "/registries//x"),
            (&delete, "/registries/"),
            (&get, "//apps/web/objects/a"),
            // Dot segments stay refused inside the value.
            (&delete, "/registries/https://x/../../apps/web"),
            (&get, "/apps/web/objects/a//./b"),
            // And so does the rest of what `normalise` refuses.
            (&delete, "/registries/https:%2F%2Fx//y"),
        ] {
            assert!(
                normalise_for(method, refused).is_err(),
                "{method} {refused} accepted"
            );
        }
    }

    #[test]
    fn methods_outside_the_rack_api_are_not_classified() {
        let trace = http::Method::from_bytes(b"TRACE").unwrap_or(http::Method::GET);
        assert!(classify(&trace, "/apps").is_none());
        let get = classify(&http::Method::GET, "/apps");
        assert_eq!(get.map(|c| c.permission), Some("convox:apps:list".into()));
    }
}
