//! The everyday Convox commands, natively through the gateway, with tokens of each role.

use crate::kit::{Dev, Home, first_pid};

#[test]
fn every_role_lists_apps_as_a_table_and_as_json() {
    let dev = Dev::start();
    for role in ["admin", "deployer", "ops", "viewer", "cicd"] {
        let home = Home::new();
        home.login(&dev, "dev", role);
        let table = home.run(&["apps"]).ok();
        let mut lines = table.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.starts_with("APP") && header.contains("STATUS") && header.contains("RELEASE"),
            "{role}: {table}"
        );
        let names: Vec<&str> = lines.filter_map(|l| l.split_whitespace().next()).collect();
        assert_eq!(names, ["api", "web", "worker"], "{role}: {table}");
        let json = home.run(&["apps", "--json"]).json();
        assert_eq!(json[1]["name"], "web", "{role}");
        assert_eq!(json[1]["status"], "running", "{role}");
    }
}

#[test]
fn viewer_reads_processes_services_builds_instances_and_logs() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "viewer");

    let ps = home.run(&["ps", "-a", "web"]).ok();
    assert!(
        ps.starts_with("ID") && ps.contains("SERVICE") && ps.contains("STARTED"),
        "{ps}"
    );
    assert!(
        ps.lines()
            .skip(1)
            .all(|l| l.split_whitespace().nth(2) == Some("running")),
        "{ps}"
    );
    let pid = first_pid(&home, "web");
    let info = home.run(&["ps", "info", &pid, "-a", "web"]).ok();
    assert!(info.contains(&format!("Id        {pid}")), "{info}");
    let only = home
        .run(&["ps", "-a", "web", "--service", "worker", "--json"])
        .json();
    assert!(
        only.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|p| p["name"] == "worker")),
        "{only}"
    );

    let info = home.run(&["apps", "info", "web"]).ok();
    assert!(
        info.contains("Name        web") && info.contains("Status      running"),
        "{info}"
    );
    assert_eq!(
        home.run(&["apps", "info", "-a", "web", "--json"]).json()["name"],
        "web"
    );

    let services = home.run(&["services", "-a", "web"]).ok();
    assert!(services.starts_with("SERVICE  DOMAIN"), "{services}");
    assert!(services.contains("443:3000"), "{services}");
    assert!(
        home.run(&["services", "-a", "web", "--json"])
            .json()
            .is_array()
    );

    let instances = home.run(&["instances"]).ok();
    assert!(
        instances.starts_with("ID") && instances.contains("PRIVATE"),
        "{instances}"
    );
    assert_eq!(
        home.run(&["instances", "--json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    let builds = home.run(&["builds", "-a", "web", "--json"]).json();
    let build = builds[0]["id"].as_str().unwrap_or_default().to_string();
    assert!(build.starts_with('B'), "{builds}");
    let table = home.run(&["builds", "-a", "web"]).ok();
    assert!(
        table.starts_with("ID") && table.contains("ELAPSED") && table.contains(&build),
        "{table}"
    );
    let info = home.run(&["builds", "info", &build, "-a", "web"]).ok();
    assert!(
        info.contains("Status") && info.contains("complete"),
        "{info}"
    );
    let logs = home.run(&["builds", "logs", &build, "-a", "web"]).ok();
    assert!(logs.contains("Step 1/"), "{logs}");

    let logs = home
        .run(&["logs", "-a", "web", "--since", "1h", "--no-follow"])
        .ok();
    assert!(
        logs.lines().count() > 1 && logs.contains(" service/web/"),
        "{logs}"
    );
    let worker = home
        .run(&[
            "logs",
            "-a",
            "web",
            "--since",
            "1h",
            "--service",
            "worker",
            "--no-follow",
        ])
        .ok();
    assert!(
        worker.lines().all(|l| l.contains(" service/worker/")),
        "{worker}"
    );
    // Without --no-follow the stream is followed, as `convox logs` does: still running
    // after the history is out.
    let mut following = home
        .command(&["logs", "-a", "web", "--since", "1h"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let still = following.try_wait().ok().flatten().is_none();
    let _ = following.kill();
    let _ = following.wait();
    assert!(still, "`logs` without --no-follow stopped by itself");

    let scale = home.run(&["scale", "-a", "web"]).ok();
    assert!(scale.starts_with("SERVICE  DESIRED  RUNNING"), "{scale}");
    let rack = home.run(&["rack", "--json"]).json();
    assert_eq!(rack["identity"]["role"], "viewer");
    assert_eq!(rack["system"]["status"], "running");
}

#[test]
fn env_set_get_unset_make_releases() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "deployer");
    let env = home.run(&["env", "-a", "web"]).ok();
    assert!(env.contains("RAILS_ENV=production"), "{env}");
    assert!(home.run(&["env", "-a", "web", "--json"]).json()["RAILS_ENV"] == "production");

    let out = home
        .run(&["env", "set", "FEATURE=on", "OTHER=a=b", "-a", "web"])
        .ok();
    assert!(out.contains("Setting FEATURE, OTHER... OK"), "{out}");
    let release = out
        .lines()
        .find_map(|l| l.strip_prefix("Release: "))
        .unwrap_or_default()
        .to_string();
    assert!(release.starts_with('R'), "{out}");
    // Visible to env at once (the newest release), not yet promoted.
    assert_eq!(
        home.run(&["env", "get", "OTHER", "-a", "web"]).ok(),
        "a=b\n"
    );
    let app = home.run(&["apps", "info", "web", "--json"]).json();
    assert_ne!(
        app["release"],
        release.as_str(),
        "env set does not promote by default"
    );
    // The rest of the environment is kept.
    let env = home.run(&["env", "-a", "web"]).ok();
    assert!(
        env.contains("RAILS_ENV=production") && env.contains("FEATURE=on"),
        "{env}"
    );

    let out = home
        .run(&["env", "unset", "FEATURE", "-a", "web", "--promote"])
        .ok();
    assert!(
        out.contains("Unsetting FEATURE... OK") && out.contains("Promoting R"),
        "{out}"
    );
    let err = home.run(&["env", "get", "FEATURE", "-a", "web"]).failed();
    assert!(err.contains("env not found: FEATURE"), "{err}");
    let newest = home.run(&["releases", "-a", "web", "--json"]).json();
    let app = home.run(&["apps", "info", "web", "--json"]).json();
    assert_eq!(app["release"], newest[0]["id"], "--promote promoted it");
    assert_eq!(newest[0]["description"], "env remove:FEATURE");

    // From stdin.
    let out = home
        .run_input(&["env", "set", "-a", "web"], "PIPED=1\n")
        .ok();
    assert!(out.contains("Setting PIPED"), "{out}");
    assert_eq!(home.run(&["env", "get", "PIPED", "-a", "web"]).ok(), "1\n");

    // Viewers may not set the environment.
    let viewer = Home::new();
    viewer.login(&dev, "dev", "viewer");
    let err = viewer.run(&["env", "set", "X=1", "-a", "web"]).failed();
    assert!(
        err.contains("permission denied") && err.contains("your role: viewer"),
        "{err}"
    );
}

#[test]
fn releases_list_info_promote_and_rollback() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "deployer");
    let list = home.run(&["releases", "-a", "web", "--json"]).json();
    let ids: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(ids.len() >= 3, "{list}");
    let table = home.run(&["releases", "-a", "web"]).ok();
    let active = table
        .lines()
        .find(|l| l.contains(" active "))
        .unwrap_or_default();
    assert!(active.starts_with(&ids[0]), "{table}");

    let info = home.run(&["releases", "info", &ids[2], "-a", "web"]).ok();
    assert!(
        info.contains(&format!("Id           {}", ids[2])) && info.contains("Env"),
        "{info}"
    );

    let out = home
        .run(&["releases", "promote", &ids[1], "-a", "web", "--wait"])
        .ok();
    assert!(
        out.contains(&format!("Promoting {}... OK", ids[1])),
        "{out}"
    );
    assert_eq!(
        home.run(&["apps", "info", "web", "--json"]).json()["release"],
        ids[1].as_str()
    );

    let out = home
        .run(&["releases", "rollback", &ids[2], "-a", "web"])
        .ok();
    assert!(
        out.contains(&format!("Rolling back to {}... OK, R", ids[2])),
        "{out}"
    );
    let app = home.run(&["apps", "info", "web", "--json"]).json();
    let new = app["release"].as_str().unwrap_or_default().to_string();
    assert!(!ids.contains(&new), "rollback makes a new release: {new}");
    let old = home
        .run(&["releases", "info", &ids[2], "-a", "web", "--json"])
        .json();
    let now = home
        .run(&["releases", "info", &new, "-a", "web", "--json"])
        .json();
    assert_eq!(now["build"], old["build"]);
    assert_eq!(now["env"], old["env"]);

    // Ops may list releases but not promote them.
    let ops = Home::new();
    ops.login(&dev, "dev", "ops");
    assert!(ops.run(&["releases", "-a", "web"]).ok().contains("active"));
    let err = ops
        .run(&["releases", "promote", &ids[1], "-a", "web"])
        .failed();
    assert!(
        err.contains("permission denied") && err.contains("your role: ops"),
        "{err}"
    );
}

#[test]
fn apps_create_and_delete_as_admin() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "admin");
    let out = home.run(&["apps", "create", "fresh"]).ok();
    assert_eq!(out, "Creating fresh... OK\n");
    assert!(
        home.run(&["apps"])
            .ok()
            .lines()
            .any(|l| l.starts_with("fresh "))
    );
    let err = home.run(&["apps", "create", "fresh"]).failed();
    assert!(err.contains("already exists"), "{err}");
    let out = home.run(&["apps", "delete", "fresh"]).ok();
    assert_eq!(out, "Deleting fresh... OK\n");
    assert!(!home.run(&["apps"]).ok().contains("fresh"));
    let err = home.run(&["apps", "info", "fresh"]).failed();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn ps_stop_restart_and_scale() {
    let dev = Dev::start();
    let ops = Home::new();
    ops.login(&dev, "dev", "ops");
    let pid = first_pid(&ops, "web");
    let out = ops.run(&["ps", "stop", &pid, "-a", "web"]).ok();
    assert_eq!(out, format!("Stopping {pid}... OK\n"));
    assert!(!ops.run(&["ps", "-a", "web"]).ok().contains(&pid));

    let before = ops.run(&["ps", "-a", "web", "--json"]).json();
    let out = ops.run(&["restart", "-a", "web"]).ok();
    assert_eq!(out, "Restarting web... OK\nRestarting worker... OK\n");
    let after = ops.run(&["ps", "-a", "web", "--json"]).json();
    assert_ne!(
        before[0]["id"], after[0]["id"],
        "restart replaced the processes"
    );

    // Scaling needs deployer.
    let err = ops
        .run(&["scale", "web", "--count", "3", "-a", "web"])
        .failed();
    assert!(err.contains("permission denied"), "{err}");
    let deployer = Home::new();
    deployer.login(&dev, "dev", "deployer");
    let out = deployer
        .run(&["scale", "web", "--count", "3", "-a", "web"])
        .ok();
    assert_eq!(out, "Scaling web... OK\n");
    let scale = deployer.run(&["scale", "-a", "web", "--json"]).json();
    let web = scale
        .as_array()
        .and_then(|a| a.iter().find(|s| s["service"] == "web").cloned())
        .unwrap_or_default();
    assert_eq!(web["desired"], 3, "{scale}");
    let err = deployer
        .run(&["scale", "--count", "3", "-a", "web"])
        .failed();
    assert!(err.contains("name the service"), "{err}");
    // A count no rack could run is refused with the rack's reason, and `dev` keeps serving
    // (its fake rack once held a process per count in memory until the machine ran out).
    let err = deployer
        .run(&["scale", "web", "--count", "99999999999", "-a", "web"])
        .failed();
    assert!(err.contains("at most 1000 processes"), "{err}");
    let scale = deployer.run(&["scale", "-a", "web", "--json"]).json();
    assert!(scale.as_array().is_some_and(|a| !a.is_empty()), "{scale}");
}
