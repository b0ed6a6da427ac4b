//! Requests that reach beyond the app, judged by more than their route.
//!
//! `convox:processes:start` grants "run a command in the app", and `convox:processes:exec` and
//! `convox:files:*` "work inside its processes". Some requests on those routes reach further,
//! so they need `convox:processes:privileged` ([`gateway_core::rbac::PRIVILEGED_RUN`]), which
//! only admins hold:
//!
//! - **Run options.** The rack takes a run's options as request headers (`Command`, `Height`,
//!   `Release`, …) and honours some that the stock CLI never sends but any caller can:
//!   `Privileged` (a privileged container, AppArmor off, when the path's service is `build`),
//!   `Volumes` (host paths such as the container runtime's socket or `/proc`), `Image` (any
//!   image), `System-Critical` (a priority that evicts other pods) and `Node-Labels` (which
//!   nodes it lands on). Judged on the headers as they will be forwarded (one the client lists
//!   in `Connection` never reaches the rack), and by presence: `Privileged: false` counts too,
//!   since what the rack makes of a value is the rack's business.
//! - **The build service.** A run of the service named `build` gets an unconfined seccomp
//!   profile and is placed as a build.
//! - **Build processes.** The rack gives every build's pod its own password (`RACK_URL`), to
//!   report back with: a shell in one, or its files (`/proc/1/environ`), is the rack's admin
//!   password. Build pods are named `build-` and five letters or digits, and `exec` also takes
//!   a service name (`build`) and picks one of its running processes.

use http::HeaderMap;

use super::headers::request_headers;

/// The permission of `POST /apps/{app}/services/{service}/processes`.
const RUN: &str = "convox:processes:start";

/// Permissions of routes that work inside a process, `/apps/{app}/processes/{pid}/…`.
const INSIDE_A_PROCESS: &[&str] = &[
    "convox:processes:exec",
    "convox:files:read",
    "convox:files:upload",
    "convox:files:delete",
];

/// Request headers (lower case) that make a run privileged.
const PRIVILEGED_HEADERS: &[&str] = &[
    "privileged",
    "volumes",
    "image",
    "system-critical",
    "node-labels",
];

/// The service name the rack treats as a build.
const BUILD: &str = "build";

/// Why a request needs `convox:processes:privileged`: the run option headers it carries (lower
/// case), `build service`, or `build process`.
pub type Reasons = Vec<&'static str>;

/// For a request classified as `permission` on `decoded_path` with the client's `headers`:
/// the reasons it needs `convox:processes:privileged` rather than `permission`, or `None`.
pub fn reasons(permission: &str, decoded_path: &str, headers: &HeaderMap) -> Option<Reasons> {
    // `/apps/{app}/services/{service}/processes` and `/apps/{app}/processes/{pid}/…`: the
    // service or process is the fourth segment. (Not looked at on any other route.)
    let named = || decoded_path.split('/').nth(4).unwrap_or_default();
    let reasons: Reasons = if permission == RUN {
        let forwarded = request_headers(headers);
        let mut reasons: Reasons = PRIVILEGED_HEADERS
            .iter()
            .copied()
            .filter(|name| forwarded.contains_key(*name))
            .collect();
        if named() == BUILD {
            reasons.push("build service");
        }
        reasons
    } else if INSIDE_A_PROCESS.contains(&permission) && is_build_process(named()) {
        vec!["build process"]
    } else {
        return None;
    };
    (!reasons.is_empty()).then_some(reasons)
}

/// `build`, or a build pod's name: `build-` and five lower-case letters or digits.
fn is_build_process(pid: &str) -> bool {
    pid == BUILD
        || pid.strip_prefix("build-").is_some_and(|rest| {
            rest.len() == 5
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                http::HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    const PATH: &str = "/apps/web/services/web/processes";

    #[test]
    fn what_the_stock_cli_sends_is_an_ordinary_run() {
        let h = headers(&[
            ("command", "rails console"),
            ("height", "40"),
            ("width", "120"),
            ("release", "RABC"),
            ("environment", "A=1"),
            ("cpu", "256"),
            ("memory", "512"),
            ("use-service-volume", "true"),
        ]);
        assert_eq!(reasons(RUN, PATH, &h), None);
    }

    #[test]
    fn reaching_options_are_privileged_whatever_their_value() {
        for name in PRIVILEGED_HEADERS {
            for value in ["true", "false", ""] {
                let found = reasons(RUN, PATH, &headers(&[(name, value)]));
                assert_eq!(found, Some(vec![*name]), "{name}: {value:?}");
            }
        }
        let found = reasons(
            RUN,
            "/apps/web/services/build/processes",
            &headers(&[
                ("Privileged", "true"),
                ("Volumes", "/var/run/docker.sock=/s"),
            ]),
        );
        assert_eq!(found, Some(vec!["privileged", "volumes", "build service"]));
        let hidden = reasons(
            RUN,
            PATH,
            &headers(&[("connection", "privileged"), ("privileged", "true")]),
        );
        assert_eq!(
            hidden, None,
            "a header that never reaches the rack is not judged"
        );
    }

    #[test]
    fn the_build_service_and_build_processes_are_privileged() {
        let none = HeaderMap::new();
        let run = |path| reasons(RUN, path, &none);
        assert_eq!(
            run("/apps/web/services/build/processes"),
            Some(vec!["build service"])
        );
        assert_eq!(
            run("/apps/build/services/builder/processes"),
            None,
            "an app named build"
        );
        for permission in INSIDE_A_PROCESS {
            for pid in ["build", "build-x7k2q"] {
                let path = format!("/apps/web/processes/{pid}/exec");
                assert_eq!(
                    reasons(permission, &path, &none),
                    Some(vec!["build process"])
                );
            }
            for pid in [
                "web-5d9c7b6f4-x7k2q",
                "build-worker-5d9c7b6f4-x7k2q",
                "build-X7K2Q",
                "builds",
            ] {
                let path = format!("/apps/web/processes/{pid}/files");
                assert_eq!(reasons(permission, &path, &none), None, "{pid}");
            }
        }
        let read = reasons(
            "convox:processes:read",
            "/apps/web/processes/build-x7k2q",
            &none,
        );
        assert_eq!(
            read, None,
            "reading a build process's state is not privileged"
        );
    }
}
