//! End-to-end tests: the fake rack on a real socket, driven with reqwest and
//! tokio-tungstenite the way the convox CLI drives a rack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use mock_rack::{BenchKnobs, EXIT_MARKER, MockRackConfig, serve_with};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "test-rack-token";

struct Rack {
    addr: std::net::SocketAddr,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Rack {
    async fn start(seed: u64) -> Self {
        Self::start_with(seed, BenchKnobs::default()).await
    }

    async fn start_with(seed: u64, knobs: BenchKnobs) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = MockRackConfig {
            token: TOKEN.into(),
            seed,
        };
        tokio::spawn(serve_with(listener, config, knobs, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .basic_auth("convox", Some(TOKEN))
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .basic_auth("convox", Some(TOKEN))
    }

    fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .put(self.url(path))
            .basic_auth("convox", Some(TOKEN))
    }

    async fn json(&self, path: &str) -> Value {
        let res = self.get(path).send().await.unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.unwrap()
    }

    async fn ws(&self, path: &str, headers: &[(&str, &str)], token: &str) -> Ws {
        let mut req = format!("ws://{}{}", self.addr, path)
            .into_client_request()
            .unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("convox:{token}"));
        req.headers_mut()
            .insert("Authorization", format!("Basic {auth}").parse().unwrap());
        for (k, v) in headers {
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            req.headers_mut().insert(name, v.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads text until the empty binary end-of-stream message (or close); returns the text.
async fn read_to_eof(ws: &mut Ws) -> String {
    let mut out = String::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for the socket");
        match msg {
            Some(Ok(Message::Text(t))) => out.push_str(t.as_str()),
            Some(Ok(Message::Binary(b))) if b.is_empty() => return out,
            Some(Ok(Message::Close(_))) | None => return out,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error: {e}"),
        }
    }
}

/// Reads text until `needle` has been seen; returns everything read.
async fn read_until(ws: &mut Ws, needle: &str) -> String {
    let mut out = String::new();
    while !out.contains(needle) {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; got {out:?}"));
        match msg {
            Some(Ok(Message::Text(t))) => out.push_str(t.as_str()),
            Some(Ok(Message::Binary(b))) if b.is_empty() => {
                panic!("stream ended before {needle:?}: {out:?}")
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended before {needle:?}: {other:?} {out:?}"),
        }
    }
    out
}

fn exit_code(output: &str) -> Option<i32> {
    let i = output.find(EXIT_MARKER)?;
    output[i + EXIT_MARKER.len()..].trim().parse().ok()
}

#[tokio::test]
async fn auth_is_required() {
    let rack = Rack::start(1).await;

    let res = rack.http.get(rack.url("/apps")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get("www-authenticate").unwrap(),
        "Basic realm=\"convox\""
    );
    assert_eq!(res.text().await.unwrap(), "invalid authentication\n");

    let res = rack
        .http
        .get(rack.url("/apps"))
        .basic_auth("convox", Some("wrong"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid authentication");

    // Sockets are upgraded first and refused in-band, like the rack.
    let mut ws = rack.ws("/apps/web/logs", &[], "wrong").await;
    assert_eq!(
        read_to_eof(&mut ws).await,
        "ERROR: invalid authentication\n"
    );

    // An upgrade header does not get a plain route past the check.
    let res = rack
        .http
        .get(rack.url("/apps"))
        .basic_auth("convox", Some("wrong"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = rack.get("/auth").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok\n");
}

#[tokio::test]
async fn unknown_routes_and_bad_forms() {
    let rack = Rack::start(1).await;

    let res = rack
        .get("/no/such/route")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].is_string());

    let res = rack.get("/apps/nope").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.text().await.unwrap(), "app not found: nope\n");

    let res = rack
        .put("/apps/web/services/web")
        .form(&[("count", "lots")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("invalid syntax"));

    let res = rack
        .post("/apps")
        .form(&[("name", "web")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
}

#[tokio::test]
async fn apps_services_and_processes() {
    let rack = Rack::start(1).await;

    let apps = rack.json("/apps").await;
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, mock_rack::SEEDED_APPS);
    let web = rack.json("/apps/web").await;
    assert_eq!(web["status"], "running");
    assert_eq!(web["generation"], "3");
    let release = web["release"].as_str().unwrap().to_string();
    assert!(release.starts_with('R') && release.len() == 11);

    let services = rack.json("/apps/web/services").await;
    assert_eq!(services[0]["name"], "web");
    assert_eq!(services[0]["count"], 2);

    let res = rack
        .put("/apps/web/services/web")
        .form(&[("count", "4"), ("memory", "1024")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "ok\n");
    let ps = rack.json("/apps/web/processes?service=web").await;
    let ps = ps.as_array().unwrap();
    assert_eq!(ps.len(), 4);
    assert!(
        ps.iter()
            .all(|p| p["status"] == "running" && p["release"] == release.as_str())
    );

    let pid = ps[0]["id"].as_str().unwrap();
    assert_eq!(
        rack.json(&format!("/apps/web/processes/{pid}")).await["id"],
        pid
    );

    // Creating and deleting an app.
    let created: Value = rack
        .post("/apps")
        .form(&[("name", "fresh")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["name"], "fresh");
    let res = rack
        .http
        .delete(rack.url("/apps/fresh"))
        .basic_auth("convox", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "ok\n");
    assert_eq!(rack.get("/apps/fresh").send().await.unwrap().status(), 404);

    let system = rack.json("/system").await;
    assert_eq!(system["status"], "running");
    assert_eq!(rack.json("/instances").await.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn env_set_through_a_release() {
    let rack = Rack::start(1).await;

    let latest = &rack.json("/apps/web/releases?limit=1").await[0];
    let env = latest["env"].as_str().unwrap().to_string();
    assert!(env.contains("DATABASE_URL=postgres://"));
    assert!(env.contains("RAILS_ENV=production"));

    let new_env = format!("{env}\nFEATURE_FLAG=on");
    let created: Value = rack
        .post("/apps/web/releases")
        .form(&[("env", new_env.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["description"], "env add:FEATURE_FLAG");
    assert_eq!(created["build"], latest["build"]);

    let newest = &rack.json("/apps/web/releases?limit=1").await[0];
    assert_eq!(newest["id"], id);
    assert!(newest["env"].as_str().unwrap().contains("FEATURE_FLAG=on"));

    let res = rack
        .post(&format!("/apps/web/releases/{id}/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "ok\n");
    assert_eq!(rack.json("/apps/web").await["release"], id);
    let ps = rack.json("/apps/web/processes").await;
    assert!(ps.as_array().unwrap().iter().all(|p| p["release"] == id));

    // Rollback: promote the previous release again.
    let old = latest["id"].as_str().unwrap();
    rack.post(&format!("/apps/web/releases/{old}/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(rack.json("/apps/web").await["release"], old);
}

#[tokio::test]
async fn large_upload_then_build() {
    let rack = Rack::start(1).await;
    const SIZE: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;

    let mut hasher = Sha256::new();
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    for _ in 0..SIZE / CHUNK {
        hasher.update(&chunk);
    }
    let expected: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = futures_util::stream::iter(
        (0..SIZE / CHUNK).map(move |_| Ok::<_, std::io::Error>(bytes::Bytes::from(chunk.clone()))),
    );

    let res = rack
        .post("/apps/web/objects/tmp/source.tgz")
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let obj: Value = res.json().await.unwrap();
    assert_eq!(obj["Url"], "object://web/tmp/source.tgz");

    let res = rack
        .get("/apps/web/objects/tmp/source.tgz")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("x-object-sha256")
            .unwrap()
            .to_str()
            .unwrap(),
        expected
    );
    assert_eq!(res.content_length(), Some(SIZE as u64));

    let build: Value = rack
        .post("/apps/web/builds")
        .form(&[
            ("url", "object://web/tmp/source.tgz"),
            ("description", "test build"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = build["id"].as_str().unwrap().to_string();
    assert!(id.starts_with('B'));
    assert_eq!(build["status"], "running");

    let mut ws = rack
        .ws(&format!("/apps/web/builds/{id}/logs"), &[], TOKEN)
        .await;
    let logs = read_to_eof(&mut ws).await;
    assert!(logs.contains(&format!("Build: {id}")), "{logs}");
    assert!(logs.contains("Release: R"), "{logs}");

    let done = rack.json(&format!("/apps/web/builds/{id}")).await;
    assert_eq!(done["status"], "complete");
    let release = done["release"].as_str().unwrap();
    assert_eq!(
        rack.json(&format!("/apps/web/releases/{release}")).await["build"],
        id.as_str()
    );

    let tgz = rack
        .get(&format!("/apps/web/builds/{id}.tgz"))
        .send()
        .await
        .unwrap();
    let bytes = tgz.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);

    // A build from a source that was never uploaded fails.
    let build: Value = rack
        .post("/apps/web/builds")
        .form(&[("url", "object://web/tmp/missing.tgz")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = build["id"].as_str().unwrap();
    let mut status = String::new();
    for _ in 0..50 {
        status = rack.json(&format!("/apps/web/builds/{id}")).await["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn log_firehose_knob_streams_that_many_bytes_then_ends() {
    let total = 1_000_000;
    let rack = Rack::start_with(
        1,
        BenchKnobs {
            log_firehose_bytes: total,
        },
    )
    .await;
    // Options are ignored: even a follower gets the volume, then the end of the stream.
    let mut ws = rack
        .ws("/apps/web/logs", &[("Follow", "true")], TOKEN)
        .await;
    let out = read_to_eof(&mut ws).await;
    assert!(out.len() as u64 >= total, "{}", out.len());
    assert!(out.len() as u64 <= total + 1024, "{}", out.len());
    assert!(
        out.lines().all(|l| l.starts_with("20")),
        "prefixed log lines"
    );
    // Authentication still applies.
    let mut ws = rack.ws("/apps/web/logs", &[], "wrong").await;
    assert!(
        read_to_eof(&mut ws)
            .await
            .starts_with("ERROR: invalid authentication")
    );
}

#[tokio::test]
async fn logs_follow_and_history() {
    let rack = Rack::start(1).await;

    // History only: closes after the seeded lines.
    let mut ws = rack
        .ws(
            "/apps/web/logs",
            &[("Follow", "false"), ("Since", "1h")],
            TOKEN,
        )
        .await;
    let history = read_to_eof(&mut ws).await;
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 24, "{history}");
    assert!(history.contains("* Listening on http://0.0.0.0:3000"));
    let first: Vec<&str> = lines[0].splitn(3, ' ').collect();
    assert!(first[0].ends_with('Z'));
    assert!(first[1].starts_with("service/"));

    // Default since (2m) shows only the newest lines.
    let mut ws = rack
        .ws("/apps/web/logs", &[("Follow", "false")], TOKEN)
        .await;
    let recent = read_to_eof(&mut ws).await.lines().count();
    assert!(recent > 0 && recent < 24, "{recent}");

    // Filter and tail.
    let mut ws = rack
        .ws(
            "/apps/web/logs",
            &[
                ("Follow", "false"),
                ("Since", "1h"),
                ("Filter", "Completed"),
                ("Tail", "1"),
            ],
            TOKEN,
        )
        .await;
    let filtered = read_to_eof(&mut ws).await;
    assert_eq!(filtered.lines().count(), 1);
    assert!(filtered.contains("Completed"));

    // Following: keeps streaming until a known line shows up.
    let mut ws = rack.ws("/apps/web/logs", &[("Since", "1m")], TOKEN).await;
    let out = read_until(&mut ws, "heartbeat=2").await;
    assert!(out.contains("heartbeat=1"));
    // New lines logged by the rack while following arrive too.
    rack.post("/apps/web/services/web/restart")
        .send()
        .await
        .unwrap();
    read_until(&mut ws, "Restarted web").await;
    ws.close(None).await.unwrap();

    // Process logs and system logs.
    let pid = rack.json("/apps/api/processes").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = rack
        .ws(
            &format!("/apps/api/processes/{pid}/logs"),
            &[("Since", "1h")],
            TOKEN,
        )
        .await;
    let out = read_until(&mut ws, "heartbeat=").await;
    assert!(out.lines().all(|l| l.contains(&pid)), "{out}");
    let mut ws = rack
        .ws(
            "/system/logs",
            &[("Follow", "false"), ("Since", "1h")],
            TOKEN,
        )
        .await;
    assert!(read_to_eof(&mut ws).await.contains("system/k8s/api"));

    let mut ws = rack.ws("/apps/nope/logs", &[], TOKEN).await;
    assert_eq!(read_to_eof(&mut ws).await, "ERROR: app not found: nope\n");
}

#[tokio::test]
async fn exec_round_trips_and_exit_codes() {
    let rack = Rack::start(1).await;
    let pid = rack.json("/apps/web/processes?service=web").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/apps/web/processes/{pid}/exec");

    let mut ws = rack.ws(&path, &[("Command", "echo hello")], TOKEN).await;
    let out = read_to_eof(&mut ws).await;
    assert_eq!(out, format!("hello\n{EXIT_MARKER}0\n"));

    let mut ws = rack
        .ws(&path, &[("Command", "sh -c 'exit 3'")], TOKEN)
        .await;
    assert_eq!(exit_code(&read_to_eof(&mut ws).await), Some(3));

    // Interactive shell: echoes input lines, runs them, exits with `exit N`.
    let mut ws = rack
        .ws(&path, &[("Command", "bash"), ("Tty", "true")], TOKEN)
        .await;
    ws.send(Message::Text("echo round trip\n".into()))
        .await
        .unwrap();
    let out = read_until(&mut ws, "round trip\nround trip\n").await;
    assert_eq!(out, "echo round trip\nround trip\n");
    ws.send(Message::Text("printenv RAILS_ENV\n".into()))
        .await
        .unwrap();
    read_until(&mut ws, "production\n").await;
    ws.send(Message::Text("exit 42\n".into())).await.unwrap();
    let out = read_to_eof(&mut ws).await;
    assert_eq!(exit_code(&out), Some(42), "{out}");

    // Stdin piped to cat, ended by an empty binary message.
    let mut ws = rack
        .ws(&path, &[("Command", "cat"), ("Tty", "false")], TOKEN)
        .await;
    ws.send(Message::Text("piped data".into())).await.unwrap();
    ws.send(Message::Binary(Default::default())).await.unwrap();
    assert_eq!(
        read_to_eof(&mut ws).await,
        format!("piped data{EXIT_MARKER}0\n")
    );

    // A service name picks one of its processes.
    let mut ws = rack
        .ws(
            "/apps/web/processes/web/exec",
            &[("Command", "hostname")],
            TOKEN,
        )
        .await;
    assert!(read_to_eof(&mut ws).await.starts_with("web-"));

    // Unknown process: marker 0, then the error (the rack's order).
    let mut ws = rack
        .ws("/apps/web/processes/nope/exec", &[("Command", "ls")], TOKEN)
        .await;
    assert_eq!(
        read_to_eof(&mut ws).await,
        format!("{EXIT_MARKER}0\nERROR: process not found: nope\n")
    );
}

#[tokio::test]
async fn run_then_attach() {
    let rack = Rack::start(1).await;

    let ps: Value = rack
        .post("/apps/web/services/web/processes")
        .header("Command", "sleep 3600")
        .header("Height", "40")
        .header("Width", "120")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = ps["id"].as_str().unwrap().to_string();
    assert_eq!(ps["command"], "sleep 3600");
    assert_eq!(
        rack.json(&format!("/apps/web/processes/{pid}")).await["status"],
        "running"
    );

    let mut ws = rack
        .ws(
            &format!("/apps/web/processes/{pid}/exec"),
            &[
                ("Command", "sh -c 'echo migrating; exit 7'"),
                ("Entrypoint", "true"),
            ],
            TOKEN,
        )
        .await;
    let out = read_to_eof(&mut ws).await;
    assert!(out.starts_with("migrating\n"));
    assert_eq!(exit_code(&out), Some(7));

    let res = rack
        .http
        .delete(rack.url(&format!("/apps/web/processes/{pid}")))
        .basic_auth("convox", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "ok\n");
    assert_eq!(
        rack.get(&format!("/apps/web/processes/{pid}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let res = rack
        .post("/apps/web/services/web/processes")
        .header("Cpu", "many")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn ids_follow_the_seed() {
    let a = Rack::start(7).await;
    let b = Rack::start(7).await;
    let c = Rack::start(8).await;
    let ra = a.json("/apps/api/releases").await;
    let rb = b.json("/apps/api/releases").await;
    let rc = c.json("/apps/api/releases").await;
    assert_eq!(ra[0]["id"], rb[0]["id"]);
    assert_ne!(ra[0]["id"], rc[0]["id"]);
    assert_eq!(
        a.json("/apps/api/processes").await[0]["id"],
        b.json("/apps/api/processes").await[0]["id"]
    );
}
