//! `rack-gateway users`: admins list people, add one, change a role, lock and unlock, from
//! their laptop, with the gateway's rules; others may not.

use crate::kit::{Dev, Home};

#[test]
fn an_admin_manages_people_and_the_rules_hold() {
    let dev = Dev::start();
    let ops = Home::new();
    ops.login(&dev, "dev", "ops");
    let err = ops.run(&["users"]).failed();
    assert!(
        err.contains("gateway:users:list is required (your role: ops)"),
        "{err}"
    );

    let admin = Home::new();
    admin.login(&dev, "dev", "admin");
    let table = admin.run(&["users"]).ok();
    assert!(table.starts_with("EMAIL"), "{table}");
    for email in ["admin@", "deployer@", "ops@", "viewer@"] {
        assert!(table.contains(email), "{table}");
    }

    let out = admin
        .run(&[
            "users",
            "add",
            "ann@example.com",
            "--role",
            "deployer",
            "--name",
            "Ann Lee",
        ])
        .ok();
    assert_eq!(out, "Added ann@example.com (role deployer).\n");
    let out = admin
        .run(&["users", "set-role", "ann@example.com", "ops"])
        .ok();
    assert_eq!(out, "Changed the role of ann@example.com (role ops).\n");
    let out = admin.run(&["users", "lock", "ann@example.com"]).ok();
    assert!(out.starts_with("Locked"), "{out}");
    let listed = admin.run(&["users", "--json"]).json();
    let ann = listed
        .as_array()
        .and_then(|a| a.iter().find(|u| u["email"] == "ann@example.com"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (ann["role"].as_str(), ann["locked"].as_bool()),
        (Some("ops"), Some(true))
    );
    let out = admin.run(&["users", "unlock", "ann@example.com"]).ok();
    assert!(out.starts_with("Unlocked"), "{out}");

    // The gateway's rules, said as it says them.
    let err = admin
        .run(&["users", "set-role", "nobody@example.com", "ops"])
        .failed();
    assert!(err.contains("user nobody@example.com not found"), "{err}");
    assert!(!err.contains("base URL"), "{err}");
    let err = admin
        .run(&["users", "add", "ann@example.com", "--role", "ops"])
        .failed();
    assert!(err.contains("already exists"), "{err}");
    let err = admin
        .run(&["users", "add", "bob@example.com", "--role", "boss"])
        .failed();
    assert!(err.contains("unknown role \"boss\""), "{err}");
    // admin@ is the only admin: the last one who can manage users stays one.
    let err = admin.run(&["users", "lock", "admin@example.com"]).failed();
    assert!(err.contains("is the only unlocked admin"), "{err}");

    // Forgetting someone's trusted browsers (none yet) says how many, and whose.
    let out = admin
        .run(&["users", "forget-browsers", "ann@example.com"])
        .ok();
    assert!(
        out.starts_with("Forgot 0 trusted browsers of ann@example.com"),
        "{out}"
    );
    let err = admin
        .run(&["users", "forget-browsers", "nobody@example.com"])
        .failed();
    assert!(err.contains("user nobody@example.com not found"), "{err}");
}
