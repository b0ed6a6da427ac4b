//! `rack-gateway audit`: the trail, newest first, for admins, filtered on the gateway, a page
//! at a time or all of it; refused to a viewer; every read itself on the trail.

use crate::kit::{Dev, Home};

#[test]
fn an_admin_reads_the_trail_and_a_viewer_may_not() {
    let dev = Dev::start();
    let viewer = Home::new();
    viewer.login(&dev, "dev", "viewer");
    viewer.run(&["apps"]).ok();
    let refused = viewer.run(&["apps", "delete", "web"]).failed();
    assert!(refused.contains("convox:apps:delete"), "{refused}");
    let err = viewer.run(&["audit"]).failed();
    assert!(
        err.contains("gateway:audit:read is required (your role: viewer)"),
        "{err}"
    );

    let admin = Home::new();
    admin.login(&dev, "dev", "admin");
    let table = admin.run(&["audit", "--limit", "5"]);
    assert!(
        table.stderr.contains("older events: add --before "),
        "{}",
        table.stderr
    );
    let table = table.ok();
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("SEQ") && header.contains("ACTION") && header.contains("DECISION"),
        "{table}"
    );
    assert_eq!(lines.count(), 5, "{table}");

    let denials = admin
        .run(&[
            "audit",
            "--decision",
            "deny",
            "--action",
            "convox:apps:*",
            "--json",
        ])
        .json();
    let denials = denials.as_array().cloned().unwrap_or_default();
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0]["action"], "convox:apps:delete");
    assert_eq!(denials[0]["token_name"], "dev-viewer");
    assert_eq!(denials[0]["status"], 403);

    // Page by page and all at once agree, newest first, without gaps.
    let all = admin.run(&["audit", "--all", "--json"]).json();
    let seqs: Vec<i64> = all
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["seq"].as_i64()).collect())
        .unwrap_or_default();
    assert!(seqs.len() > 10, "{all}");
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "{seqs:?}");
    assert_eq!(seqs.last(), Some(&1));
    let before = seqs[2].to_string();
    let page = admin
        .run(&["audit", "--before", &before, "--limit", "3", "--json"])
        .json();
    let page: Vec<i64> = page
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["seq"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(page, seqs[3..6].to_vec());

    // Reading is audited, and a bad filter is said plainly.
    let err = admin.run(&["audit", "--since", "yesterday"]).failed();
    assert!(err.contains("\"yesterday\" is not a time"), "{err}");
    let reads = admin
        .run(&[
            "audit",
            "--action",
            "gateway:audit:read",
            "--decision",
            "allow",
            "--json",
        ])
        .json();
    assert!(
        reads
            .as_array()
            .is_some_and(|r| r.len() >= 4 && r.iter().all(|e| e["token_name"] == "dev-admin")),
        "{reads}"
    );
}
