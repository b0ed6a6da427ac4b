//! `rack-gateway tokens`: admins list the gateway's API tokens and revoke one from their
//! laptop; the token is refused from then on; others may not.

use crate::kit::{Dev, Home};

#[test]
fn an_admin_revokes_a_token_and_it_stops_working() {
    let dev = Dev::start();
    let ops = Home::new();
    ops.login(&dev, "dev", "ops");
    ops.run(&["apps"]).ok();
    let err = ops.run(&["tokens"]).failed();
    assert!(
        err.contains("gateway:tokens:list is required (your role: ops)"),
        "{err}"
    );

    let admin = Home::new();
    admin.login(&dev, "dev", "admin");
    let table = admin.run(&["tokens"]).ok();
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("SCOPE") && header.contains("LAST USED"),
        "{table}"
    );
    let ops_line = table
        .lines()
        .find(|l| l.contains("dev-ops"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        ops_line.contains("role ops") && ops_line.ends_with("active"),
        "{ops_line}"
    );
    for role in ["admin", "ops", "viewer"] {
        assert!(!table.contains(dev.token(role)), "a secret in the list");
    }

    let out = admin.run(&["tokens", "revoke", "dev-ops"]).ok();
    assert!(
        out.starts_with("Revoked API token ") && out.contains("\"dev-ops\""),
        "{out}"
    );
    let err = ops.run(&["apps"]).failed();
    assert!(err.contains("revoked"), "{err}");
    let listed = admin.run(&["tokens", "--json"]).json();
    let ops_row = listed
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "dev-ops"))
        .cloned()
        .unwrap_or_default();
    assert!(ops_row["revoked_at"].is_i64(), "{listed}");
    let err = admin.run(&["tokens", "revoke", "dev-ops"]).failed();
    assert!(err.contains("dev-ops"), "{err}");
}

#[test]
fn an_admin_mints_a_token_and_its_secret_works() {
    let dev = Dev::start();
    let admin = Home::new();
    admin.login(&dev, "dev", "admin");
    let out = admin
        .run(&[
            "tokens",
            "create",
            "--name",
            "circleci",
            "--role",
            "cicd",
            "--expires-in",
            "30d",
        ])
        .ok();
    assert!(
        out.starts_with("Created API token ") && out.contains("\"circleci\" (role cicd; expires "),
        "{out}"
    );
    let secret = out.lines().last().unwrap_or_default().trim().to_string();
    assert!(secret.starts_with("rgw_"), "{out}");
    let ci = Home::new();
    ci.run(&["login", "ci", &dev.gateway, "--token", &secret])
        .ok();
    ci.run(&["apps"]).ok();
    let listed = admin.run(&["tokens"]).ok();
    assert!(!listed.contains(&secret), "a secret in the list");

    // Never more than the minter holds: a reader's token cannot mint, nor name what it lacks.
    let json = admin
        .run(&[
            "tokens",
            "create",
            "--name",
            "reader",
            "--permissions",
            "gateway:tokens:create,convox:apps:list",
            "--json",
        ])
        .json();
    let reader = json["secret"].as_str().unwrap_or_default().to_string();
    let minter = Home::new();
    minter
        .run(&["login", "m", &dev.gateway, "--token", &reader])
        .ok();
    let err = minter
        .run(&["tokens", "create", "--name", "more", "--role", "deployer"])
        .failed();
    assert!(err.contains("cannot hold more than its creator"), "{err}");
    minter
        .run(&[
            "tokens",
            "create",
            "--name",
            "less",
            "--permissions",
            "convox:apps:list",
        ])
        .ok();
}
