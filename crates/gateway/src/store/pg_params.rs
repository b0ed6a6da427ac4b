//! Connection parameters in a PostgreSQL `DATABASE_URL` that the driver does not know.
//!
//! sqlx ignores such a parameter with a warning that prints its value, so a libpq parameter it
//! lacks (`sslpassword=…`, the passphrase of a client key) would put a secret in the log. They
//! are taken out of the URL before the driver sees it, and named (never their values) once.

use url::Url;

/// What sqlx 0.9's PostgreSQL driver reads from a URL's query.
const KNOWN: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A query's name-value pairs, decoded.
type Pairs = Vec<(String, String)>;

fn is_known(key: &str) -> bool {
    KNOWN.contains(&key) || (key.starts_with("options[") && key.ends_with(']'))
}

/// `url` without the query parameters the driver does not know, and their names (each once,
/// shown plainly). A URL that is not PostgreSQL's, or holds none, comes back as it was.
pub fn without_unknown(url: &str) -> (String, Vec<String>) {
    let Ok(mut parsed) = Url::parse(url) else {
        return (url.to_string(), Vec::new());
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return (url.to_string(), Vec::new());
    }
    let (kept, dropped): (Pairs, Pairs) = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| is_known(k));
    if dropped.is_empty() {
        return (url.to_string(), Vec::new());
    }
    let mut names: Vec<String> = Vec::new();
    for (key, _) in dropped {
        let shown: String = key
            .chars()
            .map(gateway_core::text::shown)
            .take(64)
            .collect();
        if !names.contains(&shown) {
            names.push(shown);
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    (parsed.to_string(), names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_are_dropped_and_named_without_their_values() {
        let (url, names) = without_unknown(
            "postgres://gw:pw@db.internal:5432/gw?sslmode=verify-full&sslpassword=hunter2&\
             connect_timeout=10&options[search_path]=x&sslpassword=again",
        );
        assert_eq!(
            url,
            "postgres://gw:pw@db.internal:5432/gw?sslmode=verify-full&options%5Bsearch_path%5D=x"
        );
        assert_eq!(names, ["sslpassword", "connect_timeout"]);
        assert!(!format!("{names:?}").contains("hunter2"));
        let (url, names) = without_unknown("postgres://gw@h/gw?sslpassword=hunter2");
        assert_eq!(url, "postgres://gw@h/gw");
        assert_eq!(names, ["sslpassword"]);
    }

    #[test]
    fn urls_the_driver_reads_whole_are_left_as_they_are() {
        for url in [
            "postgres://gw:p%40ss@h:5432/gw?sslmode=require&options=-c%20x%3Dy",
            "postgres:///gw?host=/run/postgresql",
            "sqlite://gw.db?mode=rwc",
            "not a url",
        ] {
            assert_eq!(without_unknown(url), (url.to_string(), Vec::new()), "{url}");
        }
    }
}
