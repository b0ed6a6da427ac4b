//! `rack-gateway app-rules`: admins set an app's rules from their laptop; everyone reads them;
//! and they hold for the CLI's own `env` commands — secrets masked and kept, protected
//! variables refused.

use crate::kit::{Dev, Home};

#[test]
fn an_admin_sets_rules_that_hold_for_env_commands() {
    let dev = Dev::start();
    let (admin, ops, deployer) = (Home::new(), Home::new(), Home::new());
    admin.login(&dev, "dev", "admin");
    ops.login(&dev, "dev", "ops");
    deployer.login(&dev, "dev", "deployer");

    let err = ops
        .run(&[
            "app-rules",
            "set",
            "-a",
            "web",
            "--secret-env",
            "DATABASE_URL",
        ])
        .failed();
    assert!(err.contains("gateway:app-rules:write is required"), "{err}");
    let err = admin.run(&["app-rules", "set", "-a", "web"]).failed();
    assert!(err.contains("nothing to set"), "{err}");
    let err = admin
        .run(&[
            "app-rules",
            "set",
            "-a",
            "web",
            "--service-image",
            "web-image",
        ])
        .failed();
    assert!(err.contains("expected SERVICE=PATTERN"), "{err}");

    let out = admin
        .run(&[
            "app-rules",
            "set",
            "-a",
            "web",
            "--secret-env",
            "DATABASE_URL,SECRET_*",
            "--protected-env",
            "RAILS_ENV",
        ])
        .ok();
    assert!(out.starts_with("Rules of app web set.\n"), "{out}");
    assert!(
        out.contains("Secret env:        DATABASE_URL,SECRET_*"),
        "{out}"
    );
    // A second `set` changes the lists it names and keeps the others.
    let out = admin
        .run(&[
            "app-rules",
            "set",
            "-a",
            "web",
            "--approved-command",
            "bin/rails db:migrate",
            "--service-image",
            "web=registry.example.com/web:{commit}",
        ])
        .ok();
    assert!(out.contains("Protected env:     RAILS_ENV"), "{out}");
    assert!(
        out.contains("Approved commands: bin/rails db:migrate"),
        "{out}"
    );
    assert!(
        out.contains("Service images:    web=registry.example.com/web:{commit}"),
        "{out}"
    );

    let shown = ops.run(&["app-rules", "show", "-a", "web"]).ok();
    assert!(
        shown.contains("Secret env:        DATABASE_URL,SECRET_*"),
        "{shown}"
    );
    let listed = ops.run(&["--json", "app-rules"]).json();
    assert_eq!(listed[0]["app"], "web", "{listed}");
    assert_eq!(
        listed[0]["rules"]["protected_env"][0], "RAILS_ENV",
        "{listed}"
    );

    // ops reads the environment with the secrets masked; a deployer's `env set` keeps them.
    let env = ops.run(&["env", "-a", "web"]).ok();
    assert!(
        env.contains("DATABASE_URL=[redacted]") && env.contains("RAILS_ENV=production"),
        "{env}"
    );
    deployer.run(&["env", "set", "FOO=bar", "-a", "web"]).ok();
    let env = admin.run(&["env", "-a", "web"]).ok();
    assert!(
        env.contains("FOO=bar") && env.contains("s3cr3t-web-db-pass"),
        "{env}"
    );
    let err = deployer
        .run(&["env", "set", "RAILS_ENV=staging", "-a", "web"])
        .failed();
    assert!(err.contains("RAILS_ENV of app web is protected"), "{err}");
    let err = deployer
        .run(&["env", "unset", "RAILS_ENV", "-a", "web"])
        .failed();
    assert!(err.contains("protected"), "{err}");

    let out = admin.run(&["app-rules", "clear", "-a", "web"]).ok();
    assert_eq!(out, "Rules of app web cleared.\n");
    assert_eq!(admin.run(&["app-rules"]).ok(), "No app has rules.\n");
    let env = ops.run(&["env", "-a", "web"]).ok();
    assert!(env.contains("s3cr3t-web-db-pass"), "{env}");
}
