//! What a rack request is: the catalogue route it matches and the permission that guards it.

use convox_api::{CATALOGUE, Method, Route};

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
    use crate::path::normalise;

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
    fn methods_outside_the_rack_api_are_not_classified() {
        let trace = http::Method::from_bytes(b"TRACE").unwrap_or(http::Method::GET);
        assert!(classify(&trace, "/apps").is_none());
        let get = classify(&http::Method::GET, "/apps");
        assert_eq!(get.map(|c| c.permission), Some("convox:apps:list".into()));
    }
}
