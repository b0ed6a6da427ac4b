//! Racks and credentials: login with a token, the config file, rack selection, switch,
//! env-url, pass-through to `convox`, completions, help and version.

use crate::kit::{Dev, Home};

#[test]
fn login_with_a_token_writes_a_private_config() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "ops");

    let config = home.config();
    assert_eq!(config["current"], "dev");
    let entry = &config["racks"]["dev"];
    assert_eq!(entry["gateway_url"], dev.gateway.as_str());
    assert_eq!(entry["token"], dev.token("ops"));
    assert_eq!(entry["token_type"], "api_token");
    assert_eq!(entry["role"], "ops");
    assert_eq!(entry["token_name"], "dev-ops");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.config_path())
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default();
        assert_eq!(mode, 0o600, "config file mode");
    }

    let rack = home.run(&["rack"]).ok();
    assert!(rack.contains(&dev.gateway), "{rack}");
    assert!(rack.contains("API token dev-ops"), "{rack}");
    assert!(
        rack.lines()
            .any(|l| l.starts_with("Role") && l.ends_with("ops")),
        "{rack}"
    );
    assert!(
        rack.lines().any(|l| l.starts_with("Version")),
        "rack info from /system: {rack}"
    );

    let racks = home.run(&["racks"]).ok();
    let mut lines = racks.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("NAME  CURRENT  GATEWAY"),
        "{racks}"
    );
    assert!(
        lines.next().unwrap_or_default().starts_with("dev   *"),
        "{racks}"
    );
    let json = home.run(&["racks", "--json"]).json();
    assert_eq!(json[0]["name"], "dev");
    assert!(
        json[0].get("token").is_none(),
        "racks --json must not print tokens"
    );

    // A wrong token is refused at login and nothing is stored.
    let err = home
        .run(&[
            "login",
            "other",
            &dev.gateway,
            "--token",
            "rgw_NopeNopeNope0123456789abcdef",
        ])
        .failed();
    assert!(err.contains("expired or revoked"), "{err}");
    assert!(home.config()["racks"].get("other").is_none());
    // So is something that is not a gateway token at all, before it is sent anywhere.
    let err = home
        .run(&["login", "other", &dev.gateway, "--token", "$(touch pwned)"])
        .failed();
    assert!(err.contains("not a rack-gateway token"), "{err}");
    // Plain http to another machine needs saying so.
    let err = home
        .run(&[
            "login",
            "other",
            "http://gateway.example.com",
            "--token",
            dev.token("ops"),
        ])
        .failed();
    assert!(err.contains("--insecure-http"), "{err}");

    // --token - reads the token from stdin.
    let out = home.run_input(
        &["login", "piped", &dev.gateway, "--token", "-"],
        dev.token("viewer"),
    );
    assert!(out.ok().contains("role viewer"));
}

#[test]
fn rack_selection_flag_then_env_then_current() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "ro", "viewer");
    home.login(&dev, "rw", "ops");
    let role = |out: serde_json::Value| out["identity"]["role"].as_str().map(str::to_string);

    // The last login is current.
    assert_eq!(
        role(home.run(&["rack", "--json"]).json()).as_deref(),
        Some("ops")
    );

    // RACK_GATEWAY_RACK beats the current rack.
    let mut cmd = home.command(&["rack", "--json"]);
    cmd.env("RACK_GATEWAY_RACK", "ro");
    let out = home.run_with(cmd, None).json();
    assert_eq!(out["rack"], "ro");
    assert_eq!(role(out).as_deref(), Some("viewer"));

    // --rack beats RACK_GATEWAY_RACK.
    let mut cmd = home.command(&["--rack", "rw", "rack", "--json"]);
    cmd.env("RACK_GATEWAY_RACK", "ro");
    assert_eq!(
        role(home.run_with(cmd, None).json()).as_deref(),
        Some("ops")
    );

    // The credential really is the selected one: viewers may not read the environment.
    assert!(
        home.run(&["env", "-a", "web"])
            .ok()
            .contains("RAILS_ENV=production")
    );
    let err = home.run(&["--rack", "ro", "env", "-a", "web"]).failed();
    assert!(
        err.contains("permission denied") && err.contains("your role: viewer"),
        "{err}"
    );

    // switch changes the current rack.
    let out = home.run(&["switch", "ro"]).ok();
    assert!(out.contains("Switched to ro"), "{out}");
    assert_eq!(home.config()["current"], "ro");
    assert_eq!(
        role(home.run(&["rack", "--json"]).json()).as_deref(),
        Some("viewer")
    );

    // Unknown racks are named, with the fix.
    let err = home.run(&["switch", "nope"]).failed();
    assert!(
        err.contains("unknown rack \"nope\"") && err.contains("configured racks: ro, rw"),
        "{err}"
    );
    assert!(
        !err.contains("--rack"),
        "switch's argument is not --rack: {err}"
    );
    let mut cmd = home.command(&["apps"]);
    cmd.env("RACK_GATEWAY_RACK", "gone");
    let err = home.run_with(cmd, None).failed();
    assert!(err.contains("from RACK_GATEWAY_RACK"), "{err}");

    let err = home.run(&["logout", "nope"]).failed();
    assert!(
        err.contains("not logged in to \"nope\" (logged in: ")
            && !err.contains("--rack")
            && !err.contains("login"),
        "logout's argument is not --rack, and needs no login advice: {err}"
    );

    // logout forgets the rack (API tokens stay valid on the gateway).
    assert!(
        home.run(&["logout", "ro"])
            .ok()
            .contains("Logged out of ro")
    );
    assert!(home.config()["racks"].get("ro").is_none());
    assert!(home.config().get("current").is_none());
    let err = home.run(&["apps"]).failed();
    assert!(
        err.contains("no rack selected")
            && err.contains("rack-gateway switch <rack>")
            && err.contains("signed in: rw"),
        "{err}"
    );
    assert!(home.run(&["--rack", "rw", "apps"]).ok().contains("web"));
}

#[test]
fn env_url_and_passthrough_to_convox() {
    let dev = Dev::start();
    let mut home = Home::new();
    home.login(&dev, "dev", "ops");
    let host = dev.gateway.trim_start_matches("http://");
    let expected = format!(
        "http://convox:{}@{host}/api/v1/rack-proxy",
        dev.token("ops")
    );

    let line = home.run(&["env-url"]).ok();
    // Single-quoted: `eval "$(rack-gateway env-url)"` runs nothing that is in it.
    assert_eq!(line.trim(), format!("export RACK_URL='{expected}'"));

    // Without convox on PATH: a clear error.
    let empty = home.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = home.command(&["certs", "-a", "web"]);
    cmd.env("PATH", &empty);
    let err = home.run_with(cmd, None).failed();
    assert!(
        err.contains("`certs` is not a rack-gateway command") && err.contains("PATH"),
        "{err}"
    );

    // A stand-in convox prints what it got and exits 7.
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    let script = bin.join("convox");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"args: $*\"\necho \"RACK_URL=$RACK_URL\"\nexit 7\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    home.set_env("PATH", &format!("{}:/usr/bin:/bin", bin.display()));
    let out = home.run(&["certs", "-a", "web", "--json"]);
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stdout.contains("args: certs -a web --json"), "{out:?}");
    assert!(
        out.stdout.contains(&format!("RACK_URL={expected}")),
        "{out:?}"
    );
    // `--rack` after a passed-through command chooses the credential convox runs with (it
    // is not passed on: convox would read it as a rack name of its own).
    home.login(&dev, "dev-viewer", "viewer");
    home.login(&dev, "dev-ops", "ops");
    let out = home.run(&["certs", "--rack", "dev-viewer", "-a", "web"]);
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stdout.contains("args: certs -a web\n"), "{out:?}");
    assert!(
        out.stdout.contains(dev.token("viewer")) && !out.stdout.contains(dev.token("ops")),
        "{out:?}"
    );
}

#[test]
fn completions_help_and_version() {
    let home = Home::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = home.run(&["completion", shell]).ok();
        assert!(
            script.contains("rack-gateway") && script.contains("deploy"),
            "{shell}"
        );
    }
    let version = home.run(&["--version"]).ok();
    assert_eq!(
        version.trim(),
        format!("rack-gateway {}", env!("CARGO_PKG_VERSION"))
    );
    let help = home.run(&["--help"]).ok();
    for cmd in [
        "login",
        "logout",
        "racks",
        "switch",
        "apps",
        "ps",
        "logs",
        "env",
        "releases",
        "builds",
        "deploy",
        "restart",
        "run",
        "exec",
        "scale",
        "services",
        "instances",
        "env-url",
        "completion",
    ] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "--help lists {cmd}:\n{help}"
        );
    }
    for cmd in [["deploy", "--help"], ["exec", "--help"], ["env", "--help"]] {
        let help = home.run(&cmd).ok();
        assert!(
            help.contains("Example") && help.contains("rack-gateway "),
            "{help}"
        );
    }
    let help = home.run(&["env", "set", "--help"]).ok();
    assert!(help.contains("rack-gateway env set"), "{help}");
}

#[test]
fn signing_in_again_to_a_rack_says_what_it_replaced() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "viewer");
    let out = home.run(&["login", "dev", &dev.gateway, "--token", dev.token("ops")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("note: replaced the earlier sign-in for rack dev"),
        "{out:?}"
    );
    assert!(out.stdout.contains("role ops"), "{out:?}");
}
