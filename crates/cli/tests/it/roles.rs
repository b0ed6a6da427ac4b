//! `rack-gateway roles`: admins list every role, define a custom one, give it, change it and
//! delete it once nobody holds it, from their laptop, with the gateway's rules.

use crate::kit::{Dev, Home};

#[test]
fn an_admin_defines_gives_changes_and_deletes_a_role() {
    let dev = Dev::start();
    let ops = Home::new();
    ops.login(&dev, "dev", "ops");
    let err = ops.run(&["roles"]).failed();
    assert!(
        err.contains("gateway:roles:list is required (your role: ops)"),
        "{err}"
    );

    let admin = Home::new();
    admin.login(&dev, "dev", "admin");
    let out = admin
        .run(&[
            "roles",
            "create",
            "log-readers",
            "--permissions",
            "convox:apps:list,convox:logs:read",
            "--description",
            "read logs",
        ])
        .ok();
    assert_eq!(
        out,
        "Defined role log-readers (convox:apps:list,convox:logs:read, held by 0 users and 0 \
         tokens).\n"
    );
    let table = admin.run(&["roles"]).ok();
    assert!(table.starts_with("ROLE"), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with("log-readers"))
        .unwrap_or_default();
    assert!(
        line.contains("custom") && line.contains("convox:apps:list,convox:logs:read"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("viewer") && l.contains("built-in"))
    );

    let out = admin
        .run(&["users", "set-role", "viewer@example.com", "log-readers"])
        .ok();
    assert_eq!(
        out,
        "Changed the role of viewer@example.com (role log-readers).\n"
    );
    let err = admin.run(&["roles", "delete", "log-readers"]).failed();
    assert!(err.contains("held by 1 user and 0 tokens"), "{err}");
    let out = admin
        .run(&[
            "roles",
            "update",
            "log-readers",
            "--permissions",
            "convox:apps:list,convox:logs:read,convox:builds:logs",
        ])
        .ok();
    assert!(out.starts_with("Changed role log-readers ("), "{out}");
    assert!(out.contains("held by 1 user and 0 tokens"), "{out}");
    let listed = admin.run(&["roles", "--json"]).json();
    let role = listed
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "log-readers"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(role["description"], "read logs");
    assert_eq!(role["permissions"].as_array().map(Vec::len), Some(3));
    assert_eq!(role["users"], 1);

    // The gateway's rules, said as it says them.
    let err = admin
        .run(&[
            "roles",
            "create",
            "ops",
            "--permissions",
            "convox:apps:list",
        ])
        .failed();
    assert!(err.contains("is a built-in name"), "{err}");
    let err = admin
        .run(&[
            "roles",
            "create",
            "typos",
            "--permissions",
            "convox:app:list",
        ])
        .failed();
    assert!(err.contains("grants no rack route"), "{err}");
    let err = admin.run(&["roles", "delete", "nobody-has"]).failed();
    assert!(err.contains("role nobody-has not found"), "{err}");

    admin
        .run(&["users", "set-role", "viewer@example.com", "viewer"])
        .ok();
    let out = admin.run(&["roles", "delete", "log-readers"]).ok();
    assert!(out.starts_with("Deleted role log-readers ("), "{out}");
    assert!(!out.contains("held by"), "{out}");
}

#[test]
fn an_admin_reads_the_settings_and_others_may_not() {
    let dev = Dev::start();
    let ops = Home::new();
    ops.login(&dev, "dev", "ops");
    let err = ops.run(&["settings"]).failed();
    assert!(
        err.contains("gateway:settings:read is required (your role: ops)"),
        "{err}"
    );
    let admin = Home::new();
    admin.login(&dev, "dev", "admin");
    let table = admin.run(&["settings"]).ok();
    assert!(table.starts_with("SECTION"), "{table}");
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("RACK_TOKEN").contains("set (not shown)"), "{table}");
    assert!(line("DATABASE_URL").contains("SQLite"), "{table}");
    let json = admin.run(&["settings", "--json"]).json();
    let titles: Vec<&str> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["title"].as_str())
        .collect();
    assert!(titles.contains(&"Two-step sign-in"), "{json}");
}
