//! Requests that reach beyond the app, judged by more than their route.
//!
//! `convox:processes:start` grants "run a command in the app", and `convox:processes:exec` and
//! `convox:files:*` "work inside its processes". Some requests on those routes reach further,
//! so they need `convox:processes:privileged` ([`gateway_core::rbac::PRIVILEGED_RUN`]), which
//! only admins hold:
//!
//! - **Run options.** The rack takes a run's options as request headers (`Command`, `Height`,
//!   `Release`, `Node-Labels`, …) and honours some that reach past the app: `Privileged` (a
//!   privileged container, AppArmor off, when the path's service is `build`), `Volumes` (host
//!   paths such as the container runtime's socket or `/proc`) and `Image` (any image), which
//!   the stock CLI never sends but any caller can, and `System-Critical` (`convox run
//!   --system-critical`: the cluster's own priority class, which preempts other apps' pods).
//!   Judged on the headers as they will be forwarded (one the client lists in `Connection`
//!   never reaches the rack), and by presence: `Privileged: false` counts too, since what the
//!   rack makes of a value is the rack's business.
//! - **The build service.** A run of the service named `build` gets an unconfined seccomp
//!   profile and is placed as a build.
//! - **Build processes.** The rack gives every build's pod its own password (`RACK_URL`), to
//!   report back with: a shell in one, or its files (`/proc/1/environ`), is the rack's admin
//!   password. Build pods are named `build-` and five letters or digits, and `exec` also takes
//!   a service name (`build`) and picks one of its running processes — by a Kubernetes label
//!   selector the rack writes with the id unescaped (`service=<pid>`), so an id like
//!   `build,app`, `build ` or `=build` would select build pods too. [`process_id_problem`]
//!   therefore lets only plain pod names through, on every process route.

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
const PRIVILEGED_HEADERS: &[&str] = &["privileged", "volumes", "image", "system-critical"];

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

/// Why the `{pid}` of a request on `route_pattern` is not a process id the rack reads as one
/// name, or `None`: a Kubernetes pod or service name — lower-case letters, digits, `-` and
/// `.`, starting and ending with a letter or digit, at most 253 characters. Anything else
/// could be more than one term of a label selector.
pub fn process_id_problem(route_pattern: &str, decoded_path: &str) -> Option<String> {
    let at = route_pattern.split('/').position(|seg| seg == "{pid}")?;
    let pid = decoded_path.split('/').nth(at).unwrap_or_default();
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !pid.is_empty()
        && pid.len() <= 253
        && pid.bytes().all(|b| plain(b) || b == b'-' || b == b'.')
        && pid.bytes().next().is_some_and(plain)
        && pid.bytes().last().is_some_and(plain);
    (!ok).then(|| {
        format!(
            "{:?} is not a process id: lower-case letters, digits, '-' and '.'",
            gateway_core::redact::clip(pid.to_string(), 80)
        )
    })
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
            ("node-labels", "pool=batch"),
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

    #[test]
    fn only_plain_pod_names_are_process_ids() {
        let exec = "/apps/{app}/processes/{pid}/exec";
        for pid in ["web-5d9c7b6f4-x7k2q", "build", "web", "a", "web.1", "0abc"] {
            let path = format!("/apps/web/processes/{pid}/exec");
            assert_eq!(process_id_problem(exec, &path), None, "{pid}");
        }
        for pid in [
            "build,app",
            "build ",
            " build",
            "=build",
            "build=x",
            "build!",
            "Build",
            "-build",
            "build-",
            "build.",
            "a(b)",
            "x_y",
        ] {
            let path = format!("/apps/web/processes/{pid}/exec");
            assert!(process_id_problem(exec, &path).is_some(), "{pid:?}");
        }
        let long = "a".repeat(254);
        let path = format!("/apps/web/processes/{long}");
        assert!(process_id_problem("/apps/{app}/processes/{pid}", &path).is_some());
        assert_eq!(
            process_id_problem("/apps/{app}", "/apps/Web,x"),
            None,
            "no {{pid}}"
        );
    }
}
