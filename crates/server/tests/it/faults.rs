//! Faults: the gateway killed mid-load, clients that vanish mid-upload.

use std::time::Duration;

use crate::both_backends;
use crate::kit::{Backend, Gateway, admin, client, role_token, store};
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
        assert_all_audited(&db, &rack, ok_ids.iter().map(String::as_str)).await;
    }
);

/// Every request answered (`answered`: their request ids) has its audit event, no more POSTs
/// reached the rack than were audited, and the chain verifies.
async fn assert_all_audited<'a>(
    db: &crate::kit::Db,
    rack: &TestRack,
    answered: impl Iterator<Item = &'a str>,
) {
    let rows = store(db)
        .await
        .audit_rows(0, 1_000_000)
        .await
        .unwrap_or_default();
    let audited: std::collections::HashSet<&str> = rows
        .iter()
        .filter(|r| r.event.kind.as_str() == "request" && r.event.rbac_decision.as_str() == "allow")
        .map(|r| r.event.request_id.as_str())
        .collect();
    let missing = answered.filter(|id| !audited.contains(id)).count();
    assert_eq!(missing, 0, "answered requests without an audit event");
    // Nothing reached the rack unaudited.
    let forwarded = rack.seen().iter().filter(|s| s.method == "POST").count();
    assert!(
        forwarded <= audited.len(),
        "{forwarded} forwarded, {} audited",
        audited.len()
    );
    let (ok, out, err) = admin(db, &["audit", "verify"]);
    assert!(ok, "chain broken: {out} {err}");
}

/// Opens a raw connection and starts an upload that promises `promised` bytes but sends only
/// `sent`; the connection is returned open.
async fn partial_upload(
    gw: &Gateway,
    token: &str,
    promised: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = gw.url.trim_start_matches("http://");
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("convox:{token}"),
    );
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST /api/v1/rack-proxy/apps/web/objects/tmp/x.tgz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: {promised}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp.write_all(&vec![0u8; sent])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp
}

both_backends!(client_vanishing_mid_upload_is_recorded, |db| async move {
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    // Promise 10 MiB, send 1 MiB, then hang up.
    let tcp = partial_upload(&gw, &deployer, 10 << 20, 1 << 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp);
    let s = store(&db).await;
    let found = crate::kit::audited(&s, |r| {
        r.event.kind.as_str() == "outcome"
            && r.event.action == "convox:objects:create"
            && r.event.details["completed"] == false
            && r.event.details["error"].is_string()
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

both_backends!(stalled_upload_is_cut_off_and_recorded, |db| async move {
    use tokio::io::AsyncReadExt;
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[("CLIENT_TIMEOUT_SECS", "1")]).await;
    // Promise 1 MiB, send 64 KiB, then go quiet with the connection open.
    let mut tcp = partial_upload(&gw, &deployer, 1 << 20, 64 << 10).await;
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway kept waiting on a silent upload");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {:?}: {answer}",
        started.elapsed()
    );
    assert!(answer.contains("client_timeout"), "{answer}");
    let s = store(&db).await;
    let found = crate::kit::audited(&s, |r| {
        r.event.kind.as_str() == "outcome"
            && r.event.action == "convox:objects:create"
            && r.event.status == Some(408)
            && r.event.details["error"]
                .as_str()
                .is_some_and(|e| e.contains("stalled"))
    })
    .await;
    assert!(found, "the stalled upload's outcome was not recorded");

    // A rack that is slow to read (3 s here) is not the client's silence: a client sending as
    // fast as it may still gets its upload through.
    rack.set_slow(true);
    let size: usize = 16 << 20;
    let resp = client()
        .post(gw.proxy("/apps/web/objects/tmp/slow.tgz"))
        .basic_auth("convox", Some(&deployer))
        .body(vec![7u8; size])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["bytes"], size, "the rack got every byte");
});

both_backends!(
    a_steady_upload_may_outlast_the_rack_read_timeout_but_a_rack_that_stops_reading_may_not,
    |db| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rack = TestRack::start().await;
        let deployer = role_token(&db, "deployer");
        let gw = Gateway::start(&db, &rack.url, &[("RACK_READ_TIMEOUT_SECS", "1")]).await;
        // 8 KiB sent 1 KiB every 400 ms: 3 s in all, three times the rack's read timeout. The
        // rack takes every chunk as it comes, so nothing times out (a deploy over a slow line
        // used to get a 504 after RACK_READ_TIMEOUT_SECS).
        let (chunk, chunks) = (1024usize, 8usize);
        let mut tcp = partial_upload(&gw, &deployer, chunk * chunks, chunk).await;
        for _ in 1..chunks {
            tokio::time::sleep(Duration::from_millis(400)).await;
            tcp.write_all(&vec![1u8; chunk])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            // Read the answer head and body (the connection stays open: keep-alive).
            while !String::from_utf8_lossy(&answer).contains("\"bytes\"") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "no answer to a steady upload");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains(&format!("\"bytes\":{}", chunk * chunks)),
            "{answer}"
        );

        // A rack that stops taking the body (it waits 3 s before reading) is bounded by the same
        // timeout: a 504, not a request that hangs.
        rack.set_slow(true);
        let started = std::time::Instant::now();
        let sent = client()
            .post(gw.proxy("/apps/web/objects/tmp/stuck.tgz"))
            .basic_auth("convox", Some(&deployer))
            .body(vec![7u8; 64 << 20])
            .send()
            .await;
        match sent {
            Ok(resp) => assert_eq!(resp.status(), 504),
            // The answer may come while the client is still sending, and the close reset it.
            Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
        }
        let s = store(&db).await;
        let found = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.action == "convox:objects:create"
                && r.event.status == Some(504)
        })
        .await;
        assert!(
            found,
            "no 504 outcome for the upload the rack stopped reading"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
);

both_backends!(
    a_rack_silent_mid_body_is_cut_off_and_recorded,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[("RACK_READ_TIMEOUT_SECS", "1")]).await;
        // The head and a first chunk arrive, then nothing: the client must not wait forever.
        let resp = client()
            .get(gw.proxy("/apps?stall=1"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let started = std::time::Instant::now();
        let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await;
        assert!(body.is_ok(), "the gateway kept waiting on a silent rack");
        assert!(
            body.is_ok_and(|b| b.is_err()),
            "a cut-off body must not read as complete"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let s = store(&db).await;
        let found = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.action == "convox:apps:list"
                && r.event.details["completed"] == false
                && r.event.details["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("went silent"))
        })
        .await;
        assert!(found, "the cut-off response's outcome was not recorded");
        // Stamped when it happened (~1 s after the request), not when the request began.
        let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
        let outcome = rows
            .iter()
            .find(|r| r.event.kind.as_str() == "outcome" && r.event.action == "convox:apps:list")
            .unwrap_or_else(|| panic!("no outcome"));
        let request = rows
            .iter()
            .find(|r| {
                r.event.kind.as_str() == "request" && r.event.request_id == outcome.event.request_id
            })
            .unwrap_or_else(|| panic!("no request event"));
        assert!(
            outcome.event.ts >= request.event.ts + 900,
            "outcome ts {} is not after its request's {} + ~1 s",
            outcome.event.ts,
            request.event.ts
        );
    }
);

/// A rack that answers an upload at once and then takes none of its body — and never closes
/// the connection — must not hold the gateway's connection to it (nor the client's) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_that_answers_an_upload_early_and_stops_reading_is_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(db) = crate::kit::database(Backend::Sqlite).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    // The rack reads the request head, answers, waits 4 s without reading, then reads
    // everything that is left: the end of the stream (or a reset) within 5 s says the gateway
    // let the connection go; a read that keeps waiting says it is still held.
    let rack = tokio::spawn(async move {
        let (mut tcp, _) = listener
            .accept()
            .await
            .unwrap_or_else(|e| panic!("accept: {e}"));
        let mut head = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return Err("the gateway closed before its head".to_string()),
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        tcp.write_all(answer)
            .await
            .map_err(|e| format!("answer: {e}"))?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        drained.map_err(|_| "the gateway still holds the connection".to_string())
    });

    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(
        &db,
        &format!("http://{addr}"),
        &[("RACK_READ_TIMEOUT_SECS", "1")],
    )
    .await;
    // 64 MiB: far more than the socket buffers between the gateway and the rack hold.
    let upload = client()
        .post(gw.proxy("/apps/web/objects/tmp/early.tgz"))
        .basic_auth("convox", Some(&deployer))
        .body(vec![7u8; 64 << 20])
        .send();
    let sent = tokio::time::timeout(Duration::from_secs(20), upload).await;
    match sent {
        Err(_) => panic!("the client was left waiting"),
        Ok(Ok(resp)) => assert_eq!(resp.status(), 200),
        // The answer may come while the client is still sending, and the close reset it.
        Ok(Err(e)) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let held = tokio::time::timeout(Duration::from_secs(15), rack)
        .await
        .unwrap_or_else(|_| panic!("the rack's check did not end"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held, Ok(()));

    // The gateway serves on (a fresh connection to a rack that is gone now: 502).
    let resp = client()
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(&deployer))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 502);
}

both_backends!(slow_or_idle_clients_are_disconnected, |db| async move {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rack = TestRack::start().await;
    let viewer = role_token(&db, "viewer");
    let gw = Gateway::start(&db, &rack.url, &[("CLIENT_TIMEOUT_SECS", "1")]).await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    let send = |bytes: &'static [u8]| {
        let addr = addr.clone();
        async move {
            let mut conn = tokio::net::TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            conn.write_all(bytes)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            conn
        }
    };
    // Half a request line and headers, then silence (slowloris).
    let mut slow = send(b"GET /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\n").await;
    // A keep-alive connection that asks once and then sits idle.
    let mut idle = send(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // HTTP/2 without TLS (h2c) is not offered: its connections have no header timeout.
    let mut h2c = send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await;
    for (name, conn) in [
        ("slow headers", &mut slow),
        ("idle keep-alive", &mut idle),
        ("h2c", &mut h2c),
    ] {
        let mut buf = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "{name}: connection still open after 10 s");
    }
    assert!(
        rack.seen().is_empty(),
        "the half-sent request reached the rack"
    );
    // Prompt clients are served as before.
    let resp = client()
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(&viewer))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
});

/// A PostgreSQL cluster of the test's own (so it can be stopped), from the binaries in
/// `RGW_TEST_PG_BINDIR` (scripts/test sets it). Run as the `postgres` user when we are root.
struct OwnPostgres {
    bindir: String,
    data: std::path::PathBuf,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnPostgres {
    fn command(&self, program: &str) -> std::process::Command {
        let path = format!("{}/{program}", self.bindir);
        if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]);
            c
        } else {
            std::process::Command::new(path)
        }
    }

    fn start() -> Option<OwnPostgres> {
        let bindir = std::env::var("RGW_TEST_PG_BINDIR").ok()?;
        let dir = crate::kit::scratch_dir();
        if is_root() {
            let _ = std::process::Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status();
        }
        let pg = OwnPostgres {
            bindir,
            data: dir.join("data"),
            port: crate::signin::free_port(),
            dir,
        };
        let ok = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["--auth=trust", "--no-sync", "-U", "postgres"])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "initdb failed");
        pg.pg_ctl_start();
        Some(pg)
    }

    fn pg_ctl_start(&self) {
        let ok = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-l"])
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pg_ctl start failed");
    }

    fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }

    /// A clean restart (`-m fast`): every connection the gateway holds is closed by the
    /// server, as in a failover or a maintenance restart.
    fn restart(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
        self.pg_ctl_start();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops (`STOP`) or resumes (`CONT`) every process of the cluster: connections stay
    /// open and the kernel keeps accepting bytes, but nothing answers — a hung server.
    fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
            .unwrap_or_else(|| panic!("no postmaster.pid"));
        let children = std::process::Command::new("pkill")
            .args([format!("-{signal}"), "-P".into(), pid.clone()])
            .status();
        let own = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status();
        assert!(
            children.is_ok() && own.is_ok_and(|s| s.success()),
            "kill -{signal} failed"
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        // A test that failed while the server was stopped (SIGSTOP) would leave it behind:
        // a stopped postmaster takes no shutdown request.
        if let Some(pid) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
        {
            let _ = std::process::Command::new("pkill")
                .args(["-CONT", "-P", &pid])
                .status();
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid])
                .status();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of the test's own and a database on it; `None` (the test skips)
/// when scripts/test has not said where PostgreSQL's binaries are, unless PostgreSQL is
/// required.
fn own_postgres() -> Option<(OwnPostgres, crate::kit::Db)> {
    let Some(pg) = OwnPostgres::start() else {
        assert!(
            std::env::var("RGW_REQUIRE_POSTGRES").is_err(),
            "RGW_REQUIRE_POSTGRES is set but RGW_TEST_PG_BINDIR is not"
        );
        eprintln!("skipping: RGW_TEST_PG_BINDIR not set (scripts/test sets it)");
        return None;
    };
    let db = crate::kit::Db::at(pg.url(), Backend::Postgres, crate::kit::scratch_dir());
    Some((pg, db))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `POST /apps/web/services/web/restart` through `gw` as `token`: the status (0: no answer).
fn restart_web(
    c: reqwest::Client,
    gw: &Gateway,
    token: &str,
) -> impl std::future::Future<Output = u16> + use<> {
    status_of(
        c.post(gw.proxy("/apps/web/services/web/restart"))
            .basic_auth("convox", Some(token)),
    )
}

/// Sends `request`: the status (0: no answer).
async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_fails_closed_and_recovers() {
    let Some((pg, db)) = own_postgres() else {
        return;
    };
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let restart = |c: reqwest::Client| restart_web(c, &gw, &deployer);
    assert_eq!(restart(c.clone()).await, 200);
    pg.stop();
    rack.clear();
    // Refused at once, not after the pool's 3 s wait for a connection (and its retry's):
    // a request went on holding its connection 6 s or more for its 503 before.
    for n in 0..5 {
        let started = std::time::Instant::now();
        let status = restart(c.clone()).await;
        let took = started.elapsed();
        eprintln!("answered {status} in {took:?} with the database down");
        assert_eq!(status, 503, "database down must fail closed");
        assert!(took < Duration::from_secs(2), "request {n}: {took:?}");
        if n == 2 {
            // Past the probe interval: the next one looks again, and is refused as fast.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert!(
        rack.seen().is_empty(),
        "a request reached the rack while the audit store was down"
    );
    // Readiness alike (it asks the rack too, which is up).
    let started = std::time::Instant::now();
    let ready = c
        .get(format!("{}/api/v1/health/ready", gw.url))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let took = started.elapsed();
    assert_eq!(ready.as_ref().ok(), Some(&503), "{ready:?}");
    assert!(took < Duration::from_secs(2), "readiness: {took:?}");
    pg.pg_ctl_start();
    let recovered = crate::kit::eventually(|| {
        let c = c.clone();
        let fut = restart(c);
        async move { fut.await == 200 }
    })
    .await;
    assert!(
        recovered,
        "the gateway did not recover when PostgreSQL came back"
    );
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(ok, "{out} {err}");
}

/// A restart closes every pooled connection, and each fails its next query: the first
/// requests after it must not be refused for that (they were: the audit write's retry took
/// another dead connection from the pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_right_after_a_postgres_restart_are_served() {
    let Some((pg, db)) = own_postgres() else {
        return;
    };
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let restart = |c: reqwest::Client| restart_web(c, &gw, &deployer);
    // Several at once, so that the pool holds several connections.
    let warm = futures_util::future::join_all((0..8).map(|_| restart(c.clone()))).await;
    assert!(warm.iter().all(|s| *s == 200), "{warm:?}");
    pg.restart();
    for n in 0..4 {
        assert_eq!(
            restart(c.clone()).await,
            200,
            "request {n} after the restart"
        );
    }
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(ok, "{out} {err}");
}

/// A failover can leave a gateway on the old primary, now a standby: it answers reads and
/// refuses every audit write. Readiness must say so, or the load balancer keeps sending it
/// requests it can only refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_postgres_is_not_ready() {
    use sqlx::{Connection, Executor};
    let Some((pg, db)) = own_postgres() else {
        return;
    };
    let rack = TestRack::start().await;
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let ready = || async {
        let resp = client()
            .get(format!("{}/api/v1/health/ready", gw.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        (status, body)
    };
    assert_eq!(ready().await.0, 200);
    let mut conn = sqlx::PgConnection::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for sql in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    ] {
        conn.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let not_ready = crate::kit::eventually(|| async {
        let (status, body) = ready().await;
        status == 503 && body["database"]["error"] == "database read-only"
    })
    .await;
    assert!(not_ready, "{:?}", ready().await);
    for sql in [
        "SET default_transaction_read_only = off",
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    ] {
        conn.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let ready_again = crate::kit::eventually(|| async { ready().await.0 == 200 }).await;
    assert!(ready_again, "{:?}", ready().await);
}

/// An open shell's credentials are read again every 5 s; when the database cannot answer
/// three times in a row, they cannot be trusted any longer and the session ends (fail closed),
/// rather than a shell living on unchecked for as long as the database is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_ends_open_websocket_sessions() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let Some((pg, db)) = own_postgres() else {
        return;
    };
    let rack = TestRack::start().await;
    let ops = role_token(&db, "ops");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let mut shell = crate::streaming::ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
    let mut output = String::new();
    let _ = shell.send(Message::Text("before\n".into())).await;
    crate::streaming::read_until(&mut shell, &mut output, "before").await;

    pg.stop();
    let started = std::time::Instant::now();
    let closed = crate::streaming::closed_by_gateway(&mut shell, Duration::from_secs(30)).await;
    let (code, reason) = closed.unwrap_or_else(|| panic!("the shell outlived the database"));
    eprintln!("closed after {:?}: {code} {reason}", started.elapsed());
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("could not be checked"), "{reason}");
    // Three failed checks 5 s apart: not at the first blip.
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );

    pg.pg_ctl_start();
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(ok, "{out} {err}");
}

/// A database that stops answering without closing anything (a hung server, a failover that
/// drops packets) must not hold requests until TCP gives up: they are refused within the
/// store deadline (10 s), none reaches the rack, and the gateway recovers when it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgres_is_refused_in_seconds_and_recovered_from() {
    let Some((pg, db)) = own_postgres() else {
        return;
    };
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let viewer = role_token(&db, "viewer");
    let admin_token = role_token(&db, "admin");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let refused_ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let get = |token: String| {
        let (c, url, refused_ids) = (c.clone(), gw.proxy("/apps"), refused_ids.clone());
        async move {
            let resp = c
                .get(url)
                .basic_auth("convox", Some(token))
                .timeout(Duration::from_secs(60))
                .send()
                .await;
            match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status == 503
                        && let Ok(mut ids) = refused_ids.lock()
                    {
                        ids.push(crate::kit::request_id(&r));
                    }
                    (status, r.text().await.unwrap_or_default())
                }
                Err(e) => (0, e.to_string()),
            }
        }
    };
    assert_eq!(get(deployer.clone()).await.0, 200);
    // The admin's credentials remembered, as the deployer's are.
    let users = c
        .get(format!("{}/api/v1/users", gw.url))
        .bearer_auth(&admin_token)
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(users.ok(), Some(200));

    pg.signal("STOP");
    rack.clear();
    let started = std::time::Instant::now();
    // Known credentials (remembered): the audit write is what waits.
    let (status, body) = get(deployer.clone()).await;
    let took = started.elapsed();
    eprintln!("known token: {status} after {took:?}");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit_unavailable"), "{body}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Credentials never read before: authentication is what waits.
    let started = std::time::Instant::now();
    let (status, body) = get(viewer.clone()).await;
    let took = started.elapsed();
    eprintln!("new token: {status} after {took:?}");
    assert_eq!(status, 503, "{body}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(
        rack.seen().is_empty(),
        "a request reached the rack while the database hung"
    );
    // The gateway's own API alike: a read, and a change (whose event is what waits).
    for (method, path, body) in [
        ("GET", "/api/v1/users", None),
        (
            "POST",
            "/api/v1/users",
            Some(serde_json::json!({ "email": "hung@example.com", "role": "viewer" })),
        ),
    ] {
        let started = std::time::Instant::now();
        let mut request = c
            .request(
                method.parse().unwrap_or_else(|e| panic!("{e}")),
                format!("{}{path}", gw.url),
            )
            .bearer_auth(&admin_token)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await;
        if let Ok(r) = &response
            && let Ok(mut ids) = refused_ids.lock()
        {
            ids.push(crate::kit::request_id(r));
        }
        let status = response.map(|r| r.status().as_u16());
        let took = started.elapsed();
        eprintln!("{method} {path}: {status:?} after {took:?}");
        assert_eq!(status.ok(), Some(503), "{method} {path}");
        assert!(took < Duration::from_secs(20), "{method} {path}: {took:?}");
    }

    pg.signal("CONT");
    let recovered = crate::kit::eventually(|| {
        let fut = get(viewer.clone());
        async move { fut.await.0 == 200 }
    })
    .await;
    assert!(
        recovered,
        "the gateway did not recover when PostgreSQL answered again"
    );
    // The statement the writer had sent to the stopped server ran when it resumed, after the
    // writer had given up on it: such events are in the trail after all. Each one has the
    // outcome its caller got, and is on stdout like every other event.
    let s = store(&db).await;
    let refused_ids = refused_ids
        .lock()
        .map(|ids| ids.clone())
        .unwrap_or_default();
    let mut late = 0;
    for id in &refused_ids {
        let settled = crate::kit::eventually(|| {
            let (s, id) = (s.clone(), id.clone());
            async move {
                let rows = s.audit_by_request(&id).await.unwrap_or_default();
                let events = rows
                    .iter()
                    .filter(|r| r.event.kind.as_str() != "outcome")
                    .count();
                let outcomes = rows
                    .iter()
                    .filter(|r| {
                        r.event.kind.as_str() == "outcome"
                            && r.event.status == Some(503)
                            && r.event.details["error"] == gateway::audit::LATE_COMMIT_ERROR
                    })
                    .count();
                events == outcomes
            }
        })
        .await;
        let rows = s.audit_by_request(id).await.unwrap_or_default();
        let kinds: Vec<_> = rows.iter().map(|r| r.event.kind.as_str()).collect();
        eprintln!("refused {id}: {kinds:?}");
        assert!(
            settled,
            "refused {id}: {kinds:?}, without the refusal as outcome"
        );
        if !rows.is_empty() {
            late += 1;
            let printed = crate::kit::eventually(|| async {
                gw.audit_lines()
                    .iter()
                    .filter(|l| l["request_id"] == id.as_str())
                    .count()
                    == rows.len()
            })
            .await;
            assert!(printed, "refused {id}: its late events are not on stdout");
        }
    }
    eprintln!(
        "{late} of {} refused requests' events were committed late",
        refused_ids.len()
    );
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(ok, "{out} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgres_cuts_off_every_store_call_in_seconds() {
    // Authentication and the audit write have had their own deadline; the rest of the store
    // (the JSON API's and sign-in pages' queries after authentication, the admin commands',
    // the anchor job's) must not wait on a hung database either, or a request, a command or
    // a background job hangs for as long as TCP takes to give up — forever against a stopped
    // server, whose kernel keeps accepting bytes.
    use gateway::store::{LastAdmin, StoreError};
    let Some((pg, db)) = own_postgres() else {
        return;
    };
    let (ok, _, err) = admin(
        &db,
        &["users", "add", "hung@example.com", "--role", "viewer"],
    );
    assert!(ok, "{err}");
    let s = store(&db).await;
    // One open connection to hang on (a new one is refused by the pool's 3 s wait); the
    // transaction asks first, so it is the one cut off mid-statement.
    assert!(s.list_users().await.is_ok());
    // sqlx hands a connection back to its pool in a task of its own: under load it may not be
    // idle there yet, and the transaction would wait for a new one (`PoolTimedOut`, seen once
    // in a fresh-clone CI run) instead of hanging on this one.
    tokio::time::sleep(Duration::from_millis(300)).await;

    pg.signal("STOP");
    let started = std::time::Instant::now();
    let bound = Duration::from_secs(30);
    let (lock, list, head) = tokio::join!(
        tokio::time::timeout(bound, s.lock_user("hung@example.com", LastAdmin::Keep)),
        tokio::time::timeout(bound, s.list_users()),
        tokio::time::timeout(bound, s.chain_head()),
    );
    let took = started.elapsed();
    eprintln!("lock {lock:?}\nlist {list:?}\nhead {head:?}\nafter {took:?}");
    let (Ok(lock), Ok(list), Ok(head)) = (lock, list, head) else {
        panic!("a store call was still waiting after {bound:?}");
    };
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        matches!(lock, Err(StoreError::Timeout(10))),
        "the transaction on the open connection was not cut off at the deadline: {lock:?}"
    );
    assert!(list.is_err() && head.is_err(), "{list:?} {head:?}");

    pg.signal("CONT");
    let recovered = crate::kit::eventually(|| {
        let s = s.clone();
        async move { s.list_users().await.is_ok() }
    })
    .await;
    assert!(
        recovered,
        "the store did not recover when PostgreSQL answered again"
    );
    // The lock was cut off as it began its transaction: that connection must not go back to
    // the pool inside the transaction, where later writes would join it and never commit.
    for n in 0..4 {
        let email = format!("after-{n}@example.com");
        let added = s.create_user(&email, "After", "viewer").await;
        assert!(added.is_ok(), "{added:?}");
    }
    let fresh = store(&db).await;
    for n in 0..4 {
        let email = format!("after-{n}@example.com");
        let found = fresh.find_user(&email).await;
        assert!(
            matches!(&found, Ok(Some(_))),
            "{email}, added after the hang, was never committed: {found:?}"
        );
    }
    let user = fresh.find_user("hung@example.com").await;
    assert!(matches!(&user, Ok(Some(u)) if !u.locked), "{user:?}");
}

both_backends!(
    outcomes_a_failing_store_refused_are_written_once_it_recovers,
    |db| async move {
        // A request already forwarded when the store starts failing still gets its outcome:
        // the outcome is kept and written once the store takes it, in a transaction of its
        // own, so that meanwhile it never fails the batches other requests wait on.
        let rack = TestRack::start().await;
        let admin_token = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let s = store(&db).await;
        let c = client();
        let get = || async {
            let resp = c
                .get(gw.proxy("/apps"))
                .basic_auth("convox", Some(&admin_token))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            (resp.status().as_u16(), crate::kit::request_id(&resp))
        };
        let kinds = |id: String| {
            let s = s.clone();
            async move {
                let mut kinds: Vec<String> = s
                    .audit_by_request(&id)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.event.kind.as_str().to_string())
                    .collect();
                kinds.sort();
                kinds
            }
        };

        let refusal = crate::kit::refuse_audit_events(&db, "NEW.kind = 'outcome'").await;
        let (status, first) = get().await;
        assert_eq!(status, 200);
        let failed = crate::kit::eventually(|| {
            let out = gw.all_output();
            async move { out.contains("audit write failed") }
        })
        .await;
        assert!(
            failed,
            "the outcome's batch never failed: {}",
            gw.all_output()
        );
        // Requests keep going through while the kept outcome is retried and refused.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (status, second) = get().await;
        assert_eq!(status, 200, "{}", gw.all_output());
        assert_eq!(kinds(first.clone()).await, ["request"]);

        refusal.lift().await;
        for id in [first, second] {
            let both = crate::kit::eventually(|| {
                let kinds = kinds(id.clone());
                async move { kinds.await == ["outcome", "request"] }
            })
            .await;
            assert!(
                both,
                "{id}: {:?}\n{}",
                kinds(id.clone()).await,
                gw.all_output()
            );
        }
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "{out}{err}");
        assert!(!gw.all_output().contains("given up"), "{}", gw.all_output());
    }
);

both_backends!(
    an_outcome_refused_for_its_content_does_not_hold_back_the_others,
    |db| async move {
        // An event the store refuses while it takes every other one would be retried for
        // ever: after a few such retries the kept events are tried one by one, and only the
        // refused one is given up (and said so).
        let rack = TestRack::start().await;
        let admin_token = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let s = store(&db).await;
        let c = client();
        let get = |path: &'static str| {
            let request = c
                .get(gw.proxy(path))
                .basic_auth("convox", Some(&admin_token));
            async move {
                let resp = request.send().await.unwrap_or_else(|e| panic!("{e}"));
                (resp.status().as_u16(), crate::kit::request_id(&resp))
            }
        };
        let _refusal = crate::kit::refuse_audit_events(
            &db,
            "NEW.kind = 'outcome' AND NEW.path LIKE '%poison%'",
        )
        .await;
        let (_, poisoned) = get("/apps/poison").await;
        let mut others = Vec::new();
        let started = std::time::Instant::now();
        while !gw.all_output().contains("given up") {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "never given up:\n{}",
                gw.all_output()
            );
            // Not even the request that shares a batch with the refused outcome is refused:
            // the retry leaves out events nobody waits for.
            let (status, id) = get("/apps").await;
            assert_eq!(status, 200, "{}", gw.all_output());
            others.push(id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gw.all_output().contains(&poisoned), "{}", gw.all_output());
        let events = |id: String| {
            let s = s.clone();
            async move { s.audit_by_request(&id).await.unwrap_or_default().len() }
        };
        assert_eq!(events(poisoned).await, 1, "only the request event");
        for id in others {
            let both = crate::kit::eventually(|| {
                let n = events(id.clone());
                async move { n.await == 2 }
            })
            .await;
            assert!(both, "{id} has no outcome");
        }
    }
);

// A database that answers reads but refuses the audit trail's writes (a full disk, say) leaves
// the gateway refusing every proxied request: readiness must say so, and say when the trail
// takes writes again without a request having to go through first. (It reported `ready`
// throughout before 2026-12-03: its check was a read.)
both_backends!(
    readiness_reports_an_audit_trail_that_takes_no_writes,
    |db| async move {
        let rack = TestRack::start().await;
        let admin_token = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let ready = || {
            let (c, url) = (c.clone(), format!("{}/api/v1/health/ready", gw.url));
            async move {
                let resp = c.get(url).send().await.unwrap_or_else(|e| panic!("{e}"));
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                (status, body)
            }
        };
        let get = || {
            c.get(gw.proxy("/apps"))
                .basic_auth("convox", Some(&admin_token))
                .send()
        };
        assert_eq!(ready().await.0, 200);

        let refusal = crate::kit::refuse_audit_events(&db, "1 = 1").await;
        rack.clear();
        let resp = get().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 503);
        let not_ready = crate::kit::eventually(|| async {
            let (status, body) = ready().await;
            status == 503 && body["audit"]["error"] == "audit writes failing"
        })
        .await;
        assert!(not_ready, "{:?}\n{}", ready().await, gw.all_output());
        let (_, body) = ready().await;
        assert_eq!(body["database"]["ok"], true, "{body}");
        assert_eq!(body["rack"]["ok"], true, "{body}");
        assert!(rack.seen().is_empty() || rack.seen().iter().all(|s| s.path == "/system"));

        refusal.lift().await;
        let recovered = crate::kit::eventually(|| async { ready().await.0 == 200 }).await;
        assert!(recovered, "{:?}\n{}", ready().await, gw.all_output());
        // The check that found the trail working again left its event.
        let s = store(&db).await;
        let said = crate::kit::audited(&s, |r| {
            r.event.action == "gateway:audit:recovered"
                && r.event.details["checked_by"] == "readiness"
                && r.event.details["failing_for_ms"].as_u64().is_some()
        })
        .await;
        assert!(said, "no gateway:audit:recovered event");
        let resp = get().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "{out}{err}");
    }
);

both_backends!(
    a_gateway_whose_log_pipe_is_gone_fails_closed_and_recovers,
    |db| async move {
        // The diagnostic log's reader (a log shipper) exits, then the audit store fails for a
        // while: every line the gateway logs about it fails to be written. That must change
        // nothing. It did: tracing's formatter reported its own write errors with
        // `eprintln!`, which panics when stderr fails, so the audit writer died on its first
        // warning (every request refused from then on, readiness still "ready") and the
        // request that logged its refusal lost its connection without an answer.
        let rack = TestRack::start().await;
        let deployer = role_token(&db, "deployer");
        let gw = Gateway::start_stderr_closed(&db, &rack.url, &[]).await;
        let c = client();
        let restart = |c: reqwest::Client| restart_web(c, &gw, &deployer);
        let ready = || {
            let request = c.get(format!("{}/api/v1/health/ready", gw.url));
            async move {
                match request.send().await {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                }
            }
        };
        assert_eq!(restart(c.clone()).await, 200);

        let refusal = crate::kit::refuse_audit_events(&db, "1 = 1").await;
        rack.clear();
        for n in 0..5 {
            assert_eq!(restart(c.clone()).await, 503, "request {n} while failing");
        }
        assert_eq!(ready().await.0, 503);
        assert!(rack.seen().iter().all(|s| s.method != "POST"));

        refusal.lift().await;
        let recovered = crate::kit::eventually(|| {
            let fut = restart(c.clone());
            async move { fut.await == 200 }
        })
        .await;
        assert!(recovered, "no recovery: {}", gw.all_output());
        // Readiness is checked at most every 2 s: the answer above may be reused a while.
        let ready_again = crate::kit::eventually(|| async { ready().await.0 == 200 }).await;
        assert!(ready_again, "{:?}", ready().await);
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "{out}{err}");
    }
);

/// SQLite's disk refuses every write for a while (a file-size limit of 0 on the gateway, so
/// each write to its database files fails as on a full disk) while 16 clients send mutating
/// calls: each gets the rack's answer or a 503, never a dropped connection or a 500; nothing
/// reaches the rack unaudited; the gateway recovers by itself when the disk takes writes
/// again; the chain verifies; and the failing checkpoints do not flood the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_refuses_writes_fails_closed_and_is_recovered_from() {
    let Some(db) = crate::kit::database(Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start_file_size_limitable(&db, &rack.url, &[]).await;
    let c = client();
    assert_eq!(restart_web(c.clone(), &gw, &deployer).await, 200);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, token, stop) = (
            gw.proxy("/apps/web/services/web/restart"),
            deployer.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let c = client();
            // (status, request id) of each answer; status 0: no answer.
            let mut answers: Vec<(u16, String)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = c.post(&url).basic_auth("convox", Some(&token)).send().await;
                answers.push(match sent {
                    Ok(r) => (r.status().as_u16(), crate::kit::request_id(&r)),
                    Err(_) => (0, String::new()),
                });
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.limit_file_size(Some(0));
    let ready = || status_of(c.get(format!("{}/api/v1/health/ready", gw.url)));
    let refused = crate::kit::eventually(|| async { ready().await == 503 }).await;
    assert!(refused, "never not ready: {}", gw.all_output());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.limit_file_size(None);
    let recovered =
        crate::kit::eventually(|| async { restart_web(client(), &gw, &deployer).await == 200 })
            .await;
    assert!(recovered, "no recovery: {}", gw.all_output());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for task in clients {
        answers.extend(task.await.unwrap_or_default());
    }

    let count = |status: u16| answers.iter().filter(|(s, _)| *s == status).count();
    let others: Vec<u16> = answers
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| *s != 200 && *s != 503)
        .collect();
    assert!(
        others.is_empty(),
        "answers other than 200 and 503 ({} of {}): {others:?}\n{}",
        others.len(),
        answers.len(),
        gw.all_output()
    );
    assert!(
        count(503) > 0,
        "nothing was refused: {} answers",
        answers.len()
    );
    assert!(count(200) > 0, "nothing was served");
    let eventually_ready = crate::kit::eventually(|| async { ready().await == 200 }).await;
    assert!(eventually_ready, "never ready again");

    let served = answers.iter().filter(|(status, _)| *status == 200);
    assert_all_audited(&db, &rack, served.map(|(_, id)| id.as_str())).await;

    // Up to 20 background checkpoints a second fail meanwhile: the first is logged, and that
    // they work again, not each one. (Usually some fail; but under a file-size limit only a
    // write that grows a file is refused, so a checkpoint that only overwrites pages of the
    // database file goes through, and once in a CI run none failed at all.)
    let failed_any = gw.all_output().contains("WAL checkpoint failed");
    let said_again = !failed_any
        || crate::kit::eventually(|| async {
            gw.all_output().contains("WAL checkpoints work again")
        })
        .await;
    let log = gw.all_output();
    let about_checkpoints: Vec<&str> = log.lines().filter(|l| l.contains("checkpoint")).collect();
    assert!(said_again, "{about_checkpoints:#?}");
    let failed_lines = log.matches("WAL checkpoint failed").count();
    assert!(
        failed_lines <= 2,
        "{failed_lines} lines about failed checkpoints: {about_checkpoints:#?}"
    );
}

/// Makes PostgreSQL take `N` seconds to insert a request event whose path holds `sleep=N`: a
/// slow commit that is not a lock wait (the writer's connection gives up on those after 3 s).
async fn slow_inserts(db: &crate::kit::Db) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    conn.execute(
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         PERFORM pg_sleep(substring(NEW.path FROM 'sleep=([0-9]+)')::int); RETURN NEW; END $$; \
         CREATE TRIGGER slow_insert BEFORE INSERT ON audit_events FOR EACH ROW \
         WHEN (NEW.kind = 'request' AND NEW.path ~ 'sleep=[0-9]+') EXECUTE FUNCTION slow_insert();",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A gateway on PostgreSQL whose audit inserts are slowed by `slow_inserts`, with a deployer
/// token, after one request that went through.
async fn slowed_gateway() -> Option<(crate::kit::Db, TestRack, String, Gateway)> {
    let db = crate::kit::database(Backend::Postgres).await?;
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    assert_eq!(restart_web(client(), &gw, &deployer).await, 200);
    slow_inserts(&db).await;
    rack.clear();
    Some((db, rack, deployer, gw))
}

/// A restart with `query`, as the deployer, waiting at most 30 s.
fn restart_with(
    gw: &Gateway,
    deployer: &str,
    query: &str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    client()
        .post(gw.proxy(&format!("/apps/web/services/web/restart?{query}")))
        .basic_auth("convox", Some(deployer))
        .timeout(Duration::from_secs(30))
        .send()
}

/// The refused request `refused_id` (`query`) reached no rack, and its event, committed late,
/// has the refusal as its outcome, on stdout as in the database; the chain verifies.
async fn refused_with_late_outcome(
    db: &crate::kit::Db,
    rack: &TestRack,
    gw: &Gateway,
    refused_id: &str,
    query: &str,
) {
    assert!(
        rack.seen()
            .iter()
            .all(|s| s.query.as_deref() != Some(query)),
        "the refused request reached the rack"
    );
    let s = store(db).await;
    let outcome = crate::kit::audited(&s, |r| {
        r.event.request_id == refused_id
            && r.event.kind.as_str() == "outcome"
            && r.event.status == Some(503)
            && r.event.details["completed"] == false
            && r.event.details["error"] == gateway::audit::LATE_COMMIT_ERROR
    })
    .await;
    let rows = s.audit_by_request(refused_id).await.unwrap_or_default();
    let kinds: Vec<_> = rows.iter().map(|r| r.event.kind.as_str()).collect();
    assert!(
        outcome,
        "no outcome for the late request event: {kinds:?}\n{}",
        gw.all_output()
    );
    assert_eq!(kinds, ["request", "outcome"], "one event of each");
    assert!(
        crate::kit::eventually(|| async {
            gw.audit_lines()
                .iter()
                .filter(|l| l["request_id"] == refused_id)
                .count()
                == 2
        })
        .await,
        "the late events are not on stdout"
    );
    let (ok, out, err) = admin(db, &["audit", "verify"]);
    assert!(ok, "{out} {err}");
}

/// A request waits 10 s for its event, then is refused (503, nothing forwarded); the writer's
/// batch may still go through after that. The event in the trail then gets the outcome the
/// caller was given, instead of looking like a request cut off by a crash mid-forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_event_committed_after_its_refusal_gets_its_outcome() {
    let Some((db, rack, deployer, gw)) = slowed_gateway().await else {
        return;
    };
    // The first batch takes 5 s; the second, queued meanwhile, 6 s more: it commits ~11 s
    // after its request began waiting, within the writer's own 10 s for the batch.
    let first = tokio::spawn(restart_with(&gw, &deployer, "sleep=5"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = restart_with(&gw, &deployer, "sleep=6")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 503);
    let first = first
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|r| r.status().as_u16());
    assert_eq!(first.ok(), Some(200));
    refused_with_late_outcome(
        &db,
        &rack,
        &gw,
        &crate::kit::request_id(&refused),
        "sleep=6",
    )
    .await;
}

/// The writer's own deadline cuts a batch off while PostgreSQL is still running its statement,
/// which then commits: the events turn up after the writer gave up on them. They are found at
/// its next append, printed, and the refused request gets its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_at_the_deadline_but_committed_later_is_settled() {
    let Some((db, rack, deployer, gw)) = slowed_gateway().await else {
        return;
    };
    // The insert of the marked event takes 12 s: past the writer's 10 s deadline.
    let refused = restart_with(&gw, &deployer, "sleep=12")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 503);
    // Behind the slow statement's hold on the chain head, then on from the head it moved.
    let next = restart_with(&gw, &deployer, "after=1")
        .await
        .map(|r| r.status().as_u16());
    eprintln!("next request: {next:?}");
    if next.as_ref().is_ok_and(|s| *s != 200) {
        // Refused too (the head was held past its wait): the one after settles it.
        assert_eq!(restart_web(client(), &gw, &deployer).await, 200);
    }
    refused_with_late_outcome(
        &db,
        &rack,
        &gw,
        &crate::kit::request_id(&refused),
        "sleep=12",
    )
    .await;
}

both_backends!(
    failed_records_of_token_use_are_logged_at_most_once_a_second,
    |db| async move {
        // A token's use is written at most once a minute, but a write that failed is tried
        // again by its next request: while the database takes no writes, each request would
        // log its own line. The request itself is served (its audit event is what counts).
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        // Every write of a token's `last_used_at` fails; everything else works.
        let _refusal = crate::kit::refuse_writes(
            &db,
            "test_refuse_use",
            "UPDATE OF last_used_at",
            "api_tokens",
            "1 = 1",
        )
        .await;
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let started = std::time::Instant::now();
        for i in 0..30 {
            let sent = c.get(gw.proxy("/apps")).basic_auth("convox", Some(&viewer));
            assert_eq!(
                status_of(sent).await,
                200,
                "request {i}: {}",
                gw.all_output()
            );
        }
        let elapsed = started.elapsed().as_secs();
        let log = gw.all_output();
        let lines = log.matches("could not record token use").count();
        assert!(
            lines >= 1 && lines as u64 <= elapsed + 2,
            "{lines} lines in {elapsed} s for 30 failed records:\n{log}"
        );
        assert!(log.contains("refused by the test"), "{log}");
    }
);
