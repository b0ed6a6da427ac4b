//! Faults: the gateway killed mid-load, clients that vanish mid-upload.

use std::time::Duration;

use crate::both_backends;
use crate::kit::{Gateway, admin, client, role_token, store};
use crate::upstream::TestRack;

both_backends!(
    kill_9_under_load_loses_no_audited_request,
    |db| async move {
        let rack = TestRack::start().await;
        let deployer = role_token(&db, "deployer");
        let mut gw = Gateway::start(&db, &rack.url, &[]).await;
        let url = gw.proxy("/apps/web/services/web/restart");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..16 {
            let (url, token, stop) = (url.clone(), deployer.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let c = client();
                let mut ok_ids = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match c.post(&url).basic_auth("convox", Some(&token)).send().await {
                        Ok(r) if r.status().is_success() => {
                            if let Some(id) = r
                                .headers()
                                .get("x-request-id")
                                .and_then(|v| v.to_str().ok())
                            {
                                ok_ids.push(id.to_string());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                ok_ids
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        crate::kit::signal(gw.pid(), "KILL");
        let _ = gw.child.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut ok_ids = Vec::new();
        for c in clients {
            ok_ids.extend(c.await.unwrap_or_default());
        }
        assert!(
            ok_ids.len() > 10,
            "load did not get going: {} successes",
            ok_ids.len()
        );
        drop(gw);

        // Restart on the same database: it starts, and every answered request is in the trail.
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let resp = client()
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&deployer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let s = store(&db).await;
        let rows = s.audit_rows(0, 1_000_000).await.unwrap_or_default();
        let requests: std::collections::HashSet<&str> = rows
            .iter()
            .filter(|r| {
                r.event.kind.as_str() == "request" && r.event.rbac_decision.as_str() == "allow"
            })
            .map(|r| r.event.request_id.as_str())
            .collect();
        let missing: Vec<&String> = ok_ids
            .iter()
            .filter(|id| !requests.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} answered requests without an audit event",
            missing.len()
        );
        // Forwarded requests = audited requests at most (nothing reached the rack unaudited).
        let forwarded = rack.seen().iter().filter(|s| s.method == "POST").count();
        assert!(
            forwarded <= requests.len(),
            "{forwarded} forwarded, {} audited",
            requests.len()
        );
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "chain broken after kill -9: {out} {err}");
    }
);

both_backends!(client_vanishing_mid_upload_is_recorded, |db| async move {
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    // Promise 10 MiB, send 1 MiB, then hang up.
    let addr = gw.url.trim_start_matches("http://").to_string();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("convox:{deployer}"),
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let head = format!(
            "POST /api/v1/rack-proxy/apps/web/objects/tmp/x.tgz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\n\r\n",
            10 * 1024 * 1024
        );
        tcp.write_all(head.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp.write_all(&vec![0u8; 1024 * 1024])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = store(&db).await;
    let found = crate::kit::eventually(|| {
        let s = s.clone();
        async move {
            s.audit_rows(0, 1000)
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| {
                    r.event.kind.as_str() == "outcome"
                        && r.event.action == "convox:objects:create"
                        && r.event.details["completed"] == false
                        && r.event.details["error"].is_string()
                })
        }
    })
    .await;
    let rows = s.audit_rows(0, 1000).await.unwrap_or_default();
    let outcomes: Vec<_> = rows
        .iter()
        .filter(|r| r.event.kind.as_str() == "outcome")
        .map(|r| (&r.event.action, &r.event.status, &r.event.details))
        .collect();
    assert!(
        found,
        "outcome of the broken upload not recorded: {outcomes:?}"
    );
    // And the gateway serves on.
    let resp = client()
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(&deployer))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
});
