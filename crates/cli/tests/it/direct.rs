//! `RACK_GATEWAY_DIRECT_RACK_URL`: the same commands straight against a fake rack, no gateway
//! (what the benchmark compares against).

use crate::kit::Home;

const RACK_TOKEN: &str = "direct-rack-token";

/// A fake rack in this process, on a runtime thread of its own.
fn start_rack() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
            let _ = tx.send(format!("127.0.0.1:{port}"));
            let config = mock_rack::MockRackConfig {
                token: RACK_TOKEN.into(),
                seed: 1,
            };
            let _ = mock_rack::serve(listener, config, std::future::pending()).await;
        });
    });
    rx.recv().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_direct_rack_url_bypasses_the_gateway() {
    let addr = start_rack();
    let mut home = Home::new();
    home.set_env(
        "RACK_GATEWAY_DIRECT_RACK_URL",
        &format!("http://convox:{RACK_TOKEN}@{addr}"),
    );
    let apps = home.run(&["apps"]).ok();
    assert!(apps.starts_with("APP") && apps.contains("web"), "{apps}");
    // A rack asked for by name is not silently replaced by the direct URL.
    let out = home.run(&["apps", "--rack", "production"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("--rack production is ignored")
            && out.stderr.contains("not through a gateway"),
        "{out:?}"
    );
    let rack = home.run(&["rack"]).ok();
    assert!(rack.contains(&format!("Rack URL  http://{addr}")), "{rack}");
    let pid = crate::kit::first_pid(&home, "web");
    for _ in 0..20 {
        let out = home.run_input(&["exec", &pid, "sh", "-a", "web"], "echo hello\nexit 5\n");
        assert_eq!(out.code, 5, "{out:?}");
    }
    // What only a gateway answers is refused, saying why, in one line.
    for (args, subject) in [
        (&["users"][..], "users are a rack-gateway's"),
        (&["roles"][..], "roles are a rack-gateway's"),
        (&["app-rules"][..], "app rules are a rack-gateway's"),
        (&["tokens"][..], "tokens are a rack-gateway's"),
        (&["audit"][..], "audit reads a rack-gateway's trail"),
    ] {
        let err = home.run(args).failed();
        assert!(
            err.contains(&format!(
                "{subject}: this rack has no gateway (RACK_URL points at the rack itself)"
            )),
            "{args:?}: {err}"
        );
        assert!(!err.contains('\\'), "{args:?}: {err}");
    }
    // A wrong rack token.
    let mut bad = Home::new();
    bad.set_env(
        "RACK_GATEWAY_DIRECT_RACK_URL",
        &format!("http://convox:wrong@{addr}"),
    );
    let err = bad.run(&["apps"]).failed();
    assert!(err.contains("the rack refused the token"), "{err}");
}
