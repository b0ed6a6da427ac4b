//! Streaming: big uploads and downloads pass through with bounded memory; WebSockets both ways.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::kit::{Backend, Gateway, RACK_TOKEN, admin, client, database, role_token, store};
use crate::upstream::{EXIT_MARKER, TestRack};

const MIB: u64 = 1024 * 1024;

fn body_of(size: u64) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![7u8; 256 * 1024]);
    let n = size / chunk.len() as u64;
    reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_200_mib_streams_with_bounded_memory() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let before = gw.peak_rss_kib();
    let size = 200 * MIB;
    let resp = client()
        .post(gw.proxy("/apps/web/objects/tmp/build.tgz"))
        .basic_auth("convox", Some(&deployer))
        .header("content-type", "application/octet-stream")
        .body(body_of(size))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["bytes"], size, "the rack got every byte");
    let peak = gw.peak_rss_kib();
    eprintln!("gateway peak RSS: {before} KiB before, {peak} KiB after a 200 MiB upload");
    assert!(
        peak < 96 * 1024,
        "gateway peak RSS {peak} KiB: the body was buffered"
    );

    // The outcome records the bytes.
    let s = store(&db).await;
    let ok = crate::kit::audited(&s, |r| {
        r.event.kind.as_str() == "outcome" && r.event.details["bytes_in"] == size
    })
    .await;
    assert!(ok, "outcome with bytes_in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_streams_with_bounded_memory() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let size = 100 * MIB;
    let resp = client()
        .get(gw.proxy(&format!("/apps/web/builds/B123.tgz?download={size}")))
        .basic_auth("convox", Some(&deployer))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        total += chunk.map(|c| c.len() as u64).unwrap_or(0);
    }
    assert_eq!(total, size);
    let peak = gw.peak_rss_kib();
    assert!(
        peak < 96 * 1024,
        "gateway peak RSS {peak} KiB during download"
    );
}

crate::both_backends!(
    a_client_that_reads_nothing_of_its_response_is_let_go,
    |db| async move {
        // A client that asks for a large download and never reads held its connection, and
        // the gateway's connection to the rack, for as long as it liked: hyper bounds the
        // request's headers, not the response's writes.
        use tokio::io::AsyncWriteExt;
        let rack = TestRack::start().await;
        let deployer = role_token(&db, "deployer");
        let gw = Gateway::start(&db, &rack.url, &[("CLIENT_TIMEOUT_SECS", "2")]).await;
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("convox:{deployer}"),
        );
        let mut conn = tokio::net::TcpStream::connect(gw.url.trim_start_matches("http://"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let size = 512 * MIB;
        let request = format!(
            "GET /api/v1/rack-proxy/apps/web/builds/B123.tgz?download={size} HTTP/1.1\r\n\
             Host: gw\r\nAuthorization: Basic {auth}\r\n\r\n"
        );
        conn.write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Never read. The socket buffers fill, the gateway's writes stop, and after the
        // client timeout it gives up: the outcome says the download did not complete.
        let s = store(&db).await;
        let let_go = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event
                    .path
                    .as_deref()
                    .is_some_and(|p| p.contains("B123.tgz"))
                && r.event.details["completed"] == false
        })
        .await;
        assert!(let_go, "the unread download is still being served");
        drop(conn);
    }
);

/// A WebSocket handshake request to the gateway's proxy, authenticated with `token`.
pub(crate) fn ws_request(
    gw: &Gateway,
    path: &str,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = gw.proxy(path).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("convox:{token}"),
    );
    request.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_str(&format!("Basic {auth}")).unwrap_or_else(|e| panic!("{e}")),
    );
    request
}

pub(crate) type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket through the gateway, authenticated with `token`.
pub(crate) async fn ws_connect(gw: &Gateway, path: &str, token: &str) -> WsClient {
    let (socket, _) = tokio_tungstenite::connect_async(ws_request(gw, path, token))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    socket
}

crate::both_backends!(
    a_client_that_resets_its_websocket_is_recorded_as_the_closer,
    |db| async move {
        // A client that goes away with a reset (a killed process, a dropped network) while
        // the rack streams: the gateway's write to it fails first as often as its read, and
        // the outcome named the rack as the closer about one time in five.
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        const SESSIONS: usize = 20;
        for _ in 0..SESSIONS {
            let mut socket = ws_connect(&gw, "/apps/burst/logs?follow=true", &viewer).await;
            let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
            assert!(matches!(first, Ok(Some(Ok(_)))), "{first:?}");
            if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
                tcp.set_zero_linger().unwrap_or_else(|e| panic!("{e}"));
            }
            drop(socket);
        }
        let s = store(&db).await;
        let closers = || async {
            s.audit_rows(0, 10_000)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|r| {
                    r.event.kind.as_str() == "outcome" && r.event.action == "convox:logs:read"
                })
                .map(|r| {
                    r.event.details["closed_by"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        let all = crate::kit::eventually(|| async { closers().await.len() == SESSIONS }).await;
        assert!(all, "{:?}", closers().await);
        let closers = closers().await;
        assert!(closers.iter().all(|c| c == "client"), "{closers:?}");
    }
);

crate::both_backends!(
    a_websocket_client_that_reads_nothing_is_let_go_and_named,
    |db| async move {
        // A `logs -f` whose client stopped reading: cut at the client timeout, and the
        // outcome names the client (it named the rack, whose direction failed first).
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[("CLIENT_TIMEOUT_SECS", "2")]).await;
        let socket = ws_connect(&gw, "/apps/burst/logs?follow=true", &viewer).await;
        let s = store(&db).await;
        let outcome = || async {
            s.audit_rows(0, 10_000)
                .await
                .unwrap_or_default()
                .into_iter()
                .find(|r| {
                    r.event.kind.as_str() == "outcome" && r.event.action == "convox:logs:read"
                })
        };
        let ended = crate::kit::eventually(|| async { outcome().await.is_some() }).await;
        assert!(ended, "the session is still open");
        let details = outcome().await.map(|r| r.event.details).unwrap_or_default();
        assert_eq!(details["closed_by"], "client", "{details}");
        assert!(
            details["error"]
                .as_str()
                .is_some_and(|e| e.contains("read nothing for 2 s")),
            "{details}"
        );
        drop(socket);
    }
);

crate::both_backends!(websocket_log_stream_until_a_known_line, |db| async move {
    let rack = TestRack::start().await;
    let viewer = role_token(&db, "viewer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(ws_request(&gw, "/apps/web/logs?follow=true", &viewer))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = 0;
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(t) = message {
                seen += 1;
                if t.contains("log line 50") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "known line not seen after {seen} lines");
    let _ = socket.close(None).await;
    let header = rack.seen().into_iter().find(|s| s.path == "/apps/web/logs");
    assert_eq!(header.and_then(|s| s.query), Some("follow=true".into()));

    // The session's end is audited with its duration.
    let s = store(&db).await;
    let ok = crate::kit::audited(&s, |r| {
        r.event.kind.as_str() == "outcome"
            && r.event.action == "convox:logs:read"
            && r.event.details["websocket"] == true
            && r.event.latency_ms.is_some()
    })
    .await;
    assert!(ok, "websocket outcome audited");
});

crate::both_backends!(websocket_exec_round_trip_with_exit_code, |db| async move {
    let rack = TestRack::start().await;
    let ops = role_token(&db, "ops");
    let viewer = role_token(&db, "viewer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;

    // A viewer may not exec: refused before any upgrade.
    let refused = tokio_tungstenite::connect_async(ws_request(
        &gw,
        "/apps/web/processes/web-1/exec",
        &viewer,
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("viewer exec not refused: {other:?}"),
    }

    let (mut socket, _) =
        tokio_tungstenite::connect_async(ws_request(&gw, "/apps/web/processes/web-1/exec", &ops))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    socket
        .send(Message::Binary(b"echo hello\n".to_vec().into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The rack echoing its own token (an env dump, say) reaches the client masked.
    socket
        .send(Message::Text(format!("env RACK={RACK_TOKEN}\n").into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .send(Message::Binary(b"exit 3\n".to_vec().into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut output = String::new();
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(b) => output.push_str(&String::from_utf8_lossy(&b)),
                Message::Text(t) => output.push_str(&t),
                Message::Close(_) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(done.is_ok(), "exec session did not end");
    assert!(output.contains("echo hello"), "{output}");
    assert!(!output.contains(RACK_TOKEN), "{output}");
    assert!(
        output.contains(&format!("env RACK={}", "*".repeat(RACK_TOKEN.len()))),
        "{output}"
    );
    assert!(
        exec_outcome_masked(&db, 1).await,
        "exec outcome records the masking"
    );
    assert!(output.ends_with(&format!("{EXIT_MARKER}3")), "{output}");

    // The rack's own refusal of an upgrade is relayed.
    let missing =
        tokio_tungstenite::connect_async(ws_request(&gw, "/apps/nosuchapp/processes/p/exec", &ops))
            .await;
    match missing {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert_eq!(body, "{\"error\":\"app not found\"}");
            assert_eq!(
                resp.headers()
                    .get("content-security-policy")
                    .map(|v| v.as_bytes()),
                Some(b"sandbox".as_slice())
            );
        }
        other => panic!("rack refusal not relayed: {other:?}"),
    }
    // A refusal sent in chunks: the upgrade's handshake reads it undecoded, its framing
    // splitting the rack token past the mask. Its status goes back, with a message of ours.
    // So is a whole refusal the rack compressed: the token inside bytes no scan reads.
    for app in ["chunkedrefusal", "gzippedrefusal"] {
        let refused = tokio_tungstenite::connect_async(ws_request(
            &gw,
            &format!("/apps/{app}/processes/p/exec"),
            &ops,
        ))
        .await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{app}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
                let half = RACK_TOKEN.len() / 2;
                assert!(
                    !body.contains(&RACK_TOKEN[..half]) && !body.contains(&RACK_TOKEN[half..]),
                    "{app}: {body}"
                );
                assert!(body.contains("rack_refused_websocket"), "{app}: {body}");
            }
            other => panic!("{app}: rack refusal not answered: {other:?}"),
        }
    }
});

/// Reads messages into `output` until it holds `want` (at most 5 s).
pub(crate) async fn read_until(socket: &mut WsClient, output: &mut String, want: &str) {
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !output.contains(want) {
            match socket.next().await {
                Some(Ok(Message::Binary(b))) => output.push_str(&String::from_utf8_lossy(&b)),
                Some(Ok(Message::Text(t))) => output.push_str(&t),
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    })
    .await;
    assert!(
        read.is_ok() && output.contains(want),
        "waited for {want:?}: {output:?}"
    );
}

/// The text messages read until the session ends (or is silent for 10 s), joined.
async fn texts_until_the_end(socket: &mut WsClient) -> String {
    let mut said = String::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        if let Message::Text(t) = message {
            said.push_str(t.as_str());
        }
    }
    said
}

/// Sends each of `parts` as a binary message of its own.
async fn send_binary(socket: &mut WsClient, parts: &[String]) {
    for part in parts {
        socket
            .send(Message::Binary(part.clone().into_bytes().into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Whether an exec session's outcome event records `count` masked copies of the rack token.
async fn exec_outcome_masked(db: &crate::kit::Db, count: u64) -> bool {
    let s = store(db).await;
    crate::kit::audited(&s, |r| {
        r.event.kind.as_str() == "outcome"
            && r.event.action == "convox:processes:exec"
            && r.event.details["rack_token_masked_count"] == count
    })
    .await
}

/// `LOG_LEVEL=trace` logs everything the libraries say, and tungstenite's trace lines hold the
/// handshake to the rack (its `Authorization`: the rack token) and every message as the rack
/// sent it: they stay out of the log (found by a black-box pass on 2026-12-03).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_never_prints_the_rack_token() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let ops = role_token(&db, "ops");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("convox:{RACK_TOKEN}"),
    );
    for level in ["trace,tungstenite=trace", "debug"] {
        let gw = Gateway::start(&db, &rack.url, &[("LOG_LEVEL", level)]).await;
        let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        socket
            .send(Message::Text(format!("env RACK={RACK_TOKEN}\n").into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The test rack pings, then closes, with the token in the payload and the reason.
        send_binary(&mut socket, &["ping-token".into(), "close-token".into()]).await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "{level}: the session did not end");
        let logged = crate::kit::eventually(|| {
            let out = gw.all_output();
            async move { out.contains("\"level\":\"DEBUG\"") }
        })
        .await;
        let out = gw.all_output();
        assert!(logged, "{level}: LOG_LEVEL not followed: {out}");
        assert!(
            !out.contains(RACK_TOKEN),
            "{level}: the rack token in the log"
        );
        assert!(
            !out.contains(&basic[..basic.len() - 4]),
            "{level}: the rack's Authorization in the log"
        );
    }
}

/// The rack's token split across WebSocket messages (one write sent as several frames) is
/// masked all the same, and the tail of a message that only might begin it is not held for
/// long: a shell's output must not hang waiting for a secret's rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_token_split_across_websocket_messages_is_masked() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let ops = role_token(&db, "ops");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let (head, rest) = RACK_TOKEN.split_at(10);
    let prefix = &RACK_TOKEN[..6];
    let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
    // The test rack echoes each message as a message of its own.
    send_binary(
        &mut socket,
        &[
            format!("RACK={head}"),
            format!("{rest}\n"),
            format!("x{prefix}"),
        ],
    )
    .await;
    let mut output = String::new();
    // `x` and the token's first characters, which might have begun it, come out although
    // nothing follows them yet.
    read_until(&mut socket, &mut output, &format!("x{prefix}")).await;
    // An empty message right behind a held tail still arrives, after the tail.
    send_binary(&mut socket, &[format!("y{prefix}"), String::new()]).await;
    let mut before_empty = String::new();
    let empty_arrived = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(b) if b.is_empty() => return true,
                Message::Binary(b) => before_empty.push_str(&String::from_utf8_lossy(&b)),
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(empty_arrived.ok(), Some(true), "the empty message was lost");
    assert_eq!(before_empty, format!("y{prefix}"));
    socket
        .send(Message::Binary(b"exit 0".to_vec().into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    read_until(&mut socket, &mut output, EXIT_MARKER).await;
    let _ = socket.close(None).await;
    assert_eq!(
        output,
        format!(
            "RACK={}\nx{prefix}{EXIT_MARKER}0",
            "*".repeat(RACK_TOKEN.len())
        )
    );

    assert!(
        exec_outcome_masked(&db, 1).await,
        "exec outcome records the masking"
    );
}

/// The rack's token in a control frame (a ping's payload, a close's reason) is masked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_token_in_websocket_control_frames_is_masked() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let ops = role_token(&db, "ops");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
    let stars = "*".repeat(RACK_TOKEN.len());
    send_binary(&mut socket, &["ping-token".into(), "close-token".into()]).await;
    let (mut ping, mut close) = (None, None);
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Ping(data) => ping = Some(String::from_utf8_lossy(&data).into_owned()),
                Message::Close(frame) => {
                    close = frame.map(|f| f.reason.to_string());
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the session did not end");
    assert_eq!(ping.as_deref(), Some(stars.as_str()));
    assert_eq!(close, Some(format!("bye {stars}")));
    assert!(exec_outcome_masked(&db, 2).await, "the outcome counts both");
}

crate::both_backends!(
    shutdown_closes_websocket_sessions_and_records_them,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[("SHUTDOWN_TIMEOUT_SECS", "1")]).await;
        let mut socket = ws_connect(&gw, "/apps/web/logs?follow=true", &viewer).await;
        let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
        assert!(
            matches!(first, Ok(Some(Ok(Message::Text(_))))),
            "no log line: {first:?}"
        );
        let stopping = tokio::spawn(gw.stop());
        // The test rack streams for ~10 s; the gateway gives the session 1 s, then says
        // goodbye with "going away" instead of dropping the connection.
        let close = tokio::time::timeout(Duration::from_secs(8), async {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Close(frame) = message {
                    return frame;
                }
            }
            None
        })
        .await;
        let frame = close.ok().flatten();
        assert_eq!(
            frame.as_ref().map(|f| u16::from(f.code)),
            Some(1001),
            "{frame:?}"
        );
        let (exit, gw) = stopping.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exit.and_then(|s| s.code()), Some(0), "{}", gw.all_output());
        let s = store(&db).await;
        let ok = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.action == "convox:logs:read"
                && r.event.details["closed_by"] == "gateway"
                && r.event.details["completed"] == false
        })
        .await;
        assert!(ok, "the session's outcome was not recorded before exit");
    }
);

crate::both_backends!(
    shutdown_cuts_off_requests_still_running_and_records_them,
    |db| async move {
        // A plain request still running at the shutdown timeout is ended with its connection
        // (it ran on to its end before, for as long as the rack took, and its outcome said
        // the client had left), and its outcome says the gateway cut it off.
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[("SHUTDOWN_TIMEOUT_SECS", "1")]).await;
        rack.set_slow(true);
        let request = client()
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&viewer))
            .send();
        let answer = tokio::spawn(request);
        // Its event is committed before it is forwarded; the rack then takes 3 s to answer.
        let s = store(&db).await;
        let forwarding = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "request" && r.event.action == "convox:apps:list"
        })
        .await;
        assert!(forwarding, "the request was never recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let (exit, gw) = gw.stop().await;
        assert_eq!(exit.and_then(|s| s.code()), Some(0), "{}", gw.all_output());
        let answer = answer.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            answer.as_ref().map_or(true, |r| r.status() != 200),
            "answered in full after the shutdown timeout: {answer:?}\n{}",
            gw.all_output()
        );
        eprintln!("stopped in {:?}", started.elapsed());
        let ok = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.action == "convox:apps:list"
                && r.event.details["completed"] == false
                && r.event.details["error"]
                    == "the gateway shut down before the end (SHUTDOWN_TIMEOUT_SECS)"
        })
        .await;
        assert!(ok, "the cut-off request's outcome was not recorded as such");
    }
);

crate::both_backends!(
    a_shutdown_is_not_held_by_a_stdout_nobody_reads,
    |db| async move {
        // A log shipper that stopped reading fills the pipe; requests go on (lines beyond
        // the backlog are dropped), and SIGTERM still stops the gateway (it waited for ever
        // to print its last lines).
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start_unread(&db, &rack.url, &[("SHUTDOWN_TIMEOUT_SECS", "1")]).await;
        let c = client();
        for _ in 0..400 {
            let status = c
                .get(gw.proxy("/apps"))
                .basic_auth("convox", Some(&viewer))
                .send()
                .await
                .map(|r| r.status().as_u16());
            assert_eq!(status.ok(), Some(200));
        }
        let (exit, gw) = gw.stop().await;
        assert_eq!(exit.and_then(|s| s.code()), Some(0), "{}", gw.all_output());
        let err = gw.all_output();
        assert!(err.contains("audit stdout is not being read"), "{err}");
        // Every event is in the database all the same.
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok && out.contains("audit chain OK"), "{out} {err}");
        // The next start says on stdout which events the last run could not print, once.
        let last = last_seq(&db).await;
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let line = said_gap(&gw).await;
        assert_eq!(line["to_seq"].as_i64(), last, "{line}");
        let from = line["from_seq"].as_i64().unwrap_or(1);
        assert!(from > 1 && Some(from) <= last, "{line}");
        let _ = gw.stop().await;
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(gap_line(&gw).is_none(), "said twice: {}", gw.all_output());
    }
);

/// The newest audit event's number.
async fn last_seq(db: &crate::kit::Db) -> Option<i64> {
    store(db)
        .await
        .audit_rows(0, 100_000)
        .await
        .unwrap_or_default()
        .last()
        .map(|r| r.seq)
}

/// Stdout is a file whose disk stops taking writes for a while, while the store (PostgreSQL,
/// another server) goes on: when stdout works again, a gap line names what it missed. Before,
/// those lines were gone without a word (the sequence numbers jumped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_that_fails_for_a_while_names_the_lines_it_missed() {
    let Some(db) = database(Backend::Postgres).await else {
        return;
    };
    let rack = TestRack::start().await;
    let viewer = role_token(&db, "viewer");
    let dir = crate::kit::scratch_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("stdout.jsonl");
    let gw = Gateway::start_stdout_to_limitable_file(&db, &rack.url, &[], &path).await;
    let get = || async {
        let status = client()
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200));
    };
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    get().await;
    let printed = crate::kit::eventually(|| async { size() > 0 }).await;
    assert!(printed, "nothing on stdout");
    // The file may grow by 100 bytes: the next line is cut short, and every further one fails.
    gw.limit_file_size(Some(size() + 100));
    for _ in 0..5 {
        get().await;
    }
    let said = crate::kit::eventually(|| async {
        gw.all_output()
            .contains("audit stdout is closed or failing")
    })
    .await;
    assert!(said, "{}", gw.all_output());
    gw.limit_file_size(None);
    get().await;
    let text = || std::fs::read_to_string(&path).unwrap_or_default();
    let json_lines = || -> Vec<serde_json::Value> {
        text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let gap = || json_lines().into_iter().find(|l| l["type"] == "audit_gap");
    let resumed = crate::kit::eventually(|| async { gap().is_some() }).await;
    assert!(resumed, "no gap line: {}", text());
    // Every event committed is printed or named by the gap line.
    let gap = gap().unwrap_or_default();
    let (from, to) = (
        gap["from_seq"].as_i64().unwrap_or(0),
        gap["to_seq"].as_i64().unwrap_or(0),
    );
    assert!(from > 0 && to >= from, "{gap}");
    let printed: std::collections::HashSet<i64> = json_lines()
        .iter()
        .filter_map(|l| l["seq"].as_i64())
        .collect();
    let rows = store(&db)
        .await
        .audit_rows(0, 100_000)
        .await
        .unwrap_or_default();
    let last_printed = printed.iter().max().copied().unwrap_or(0);
    let unaccounted: Vec<i64> = rows
        .iter()
        .map(|r| r.seq)
        .filter(|seq| *seq <= last_printed && !printed.contains(seq) && !(from..=to).contains(seq))
        .collect();
    assert!(
        unaccounted.is_empty(),
        "{unaccounted:?} neither printed nor named: {}",
        text()
    );
    // A line cut short (when the pipe filled in the middle of one; none when it filled
    // between two) stands alone, right before the gap line.
    let text = text();
    let lines: Vec<&str> = text.lines().collect();
    let cut: Vec<usize> = (0..lines.len())
        .filter(|i| serde_json::from_str::<serde_json::Value>(lines[*i]).is_err())
        .collect();
    assert!(cut.len() <= 1, "{text}");
    for at in cut {
        assert!(
            lines
                .get(at + 1)
                .is_some_and(|l| l.contains("\"audit_gap\"")),
            "{text}"
        );
    }
    assert!(
        gw.all_output().contains("audit stdout works again"),
        "{}",
        gw.all_output()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `audit_gap` line `gw` printed, if any.
fn gap_line(gw: &Gateway) -> Option<serde_json::Value> {
    gw.audit_lines()
        .into_iter()
        .find(|l| l["type"] == "audit_gap")
}

/// The `audit_gap` line `gw` prints (waited for).
async fn said_gap(gw: &Gateway) -> serde_json::Value {
    let said = crate::kit::eventually(|| async { gap_line(gw).is_some() }).await;
    assert!(said, "{}", gw.all_output());
    gap_line(gw).unwrap_or_default()
}

crate::both_backends!(
    a_stdout_whose_reader_exited_is_said_and_its_lost_lines_named_at_the_next_start,
    |db| async move {
        // The log shipper exited: every write to stdout fails. Said on stderr, and the next
        // start names the lines lost (they were taken for printed).
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start_stdout_closed(&db, &rack.url, &[]).await;
        for _ in 0..20 {
            let status = client()
                .get(gw.proxy("/apps"))
                .basic_auth("convox", Some(&viewer))
                .send()
                .await
                .map(|r| r.status().as_u16());
            assert_eq!(status.ok(), Some(200));
        }
        let (exit, gw) = gw.stop().await;
        assert_eq!(exit.and_then(|s| s.code()), Some(0), "{}", gw.all_output());
        let err = gw.all_output();
        // Said once, not for every batch that fails.
        assert_eq!(err.matches("audit stdout is closed").count(), 1, "{err}");
        let last = last_seq(&db).await;
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        assert_eq!(said_gap(&gw).await["to_seq"].as_i64(), last);
    }
);

crate::both_backends!(
    oversized_websocket_messages_end_the_session,
    |db| async move {
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        // A message is held whole before it is relayed, so its size is capped (4 MiB).
        let huge = "x".repeat(5 << 20);
        let _ = socket.send(Message::Text(huge.into())).await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            let mut close_code = None;
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Close(frame) = message {
                    close_code = frame.map(|f| u16::from(f.code));
                }
            }
            close_code
        })
        .await;
        // Relayed, the test rack would echo it and the session would go on.
        assert!(ended.is_ok(), "the session went on after a 5 MiB message");
        // The client is told why, rather than seeing the rack hang up.
        assert_eq!(
            ended,
            Ok(Some(1009)),
            "close code for a message over the limit"
        );
        let s = store(&db).await;
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.details["websocket"] == true
                && r.event.details["completed"] == false
                && r.event.details["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("client WebSocket error"))
        })
        .await;
        assert!(recorded, "the outcome does not say why the session ended");
        // Messages within the limit still go through.
        let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        let _ = socket.send(Message::Text("x".repeat(1 << 20).into())).await;
        let echoed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut n = 0;
            while let Some(Ok(message)) = socket.next().await {
                n += message.len();
                if n >= 1 << 20 {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(echoed, Ok(true), "a 1 MiB message was not relayed");
    }
);

crate::both_backends!(
    revoking_a_token_ends_its_open_websocket_sessions,
    |db| async move {
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        let mut output = String::new();
        let _ = socket.send(Message::Text("before\n".into())).await;
        read_until(&mut socket, &mut output, "before").await;

        // A departed person's token is revoked while their shell is open: the shell must not
        // stay usable until they close it.
        let (ok, _, err) = crate::kit::admin(&db, &["tokens", "revoke", "ops-token"]);
        assert!(ok, "{err}");
        let (code, reason) = closed_by_gateway(&mut socket, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("the session was not closed after the revoke"));
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("revoked"), "{reason}");
        let s = store(&db).await;
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.action == "convox:processes:exec"
                && r.event.details["closed_by"] == "gateway"
                && r.event.details["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("token revoked"))
        })
        .await;
        assert!(
            recorded,
            "the outcome does not say the credentials ended it"
        );
    }
);

crate::both_backends!(
    exec_and_run_commands_are_audited_without_their_secrets,
    |db| async move {
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let mut request = ws_request(&gw, "/apps/web/processes/web-1/exec", &ops);
        request.headers_mut().insert(
            "command",
            http::HeaderValue::from_static("env DB_PASSWORD=hunter2 bin/job --verbose"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = socket.send(Message::Text("exit 0".into())).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
        let s = store(&db).await;
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "request"
                && r.event.action == "convox:processes:exec"
                && r.event.details["command"] == "env DB_PASSWORD=[redacted] bin/job --verbose"
        })
        .await;
        assert!(recorded, "the exec's command is not in its audit event");
        // `run` sends its command the same way, on a plain POST.
        let resp = client()
            .post(gw.proxy("/apps/web/services/web/processes"))
            .basic_auth("convox", Some(&ops))
            .header("command", "bin/migrate --password=hunter2")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "request"
                && r.event.action == "convox:processes:start"
                && r.event.details["command"] == "bin/migrate --password=[redacted]"
        })
        .await;
        assert!(recorded, "the run's command is not in its audit event");
        // A command header the client marks as hop-by-hop is not forwarded, so not recorded
        // as what ran.
        rack.clear();
        let resp = client()
            .post(gw.proxy("/apps/web/services/worker/processes"))
            .basic_auth("convox", Some(&ops))
            .header("connection", "command")
            .header("command", "echo not-forwarded")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        assert!(
            rack.seen().iter().all(|r| r.header("command").is_none()),
            "{:?}",
            rack.seen()
        );
        let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
        assert!(
            rows.iter()
                .all(|r| !r.event.details.to_string().contains("not-forwarded")),
            "an unforwarded command was recorded"
        );
        let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
        assert!(
            rows.iter()
                .all(|r| !r.event.details.to_string().contains("hunter2")),
            "a secret in the command reached the audit trail"
        );
    }
);

crate::both_backends!(
    a_broken_websocket_upgrade_is_a_400_and_its_outcome_says_so,
    |db| async move {
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("convox:{ops}"),
        );
        // `Upgrade: websocket` without the handshake's other headers.
        let request = format!(
            "GET /api/v1/rack-proxy/apps/web/processes/web-1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"
        );
        let (status, text) = crate::hostile::raw(&gw, request.as_bytes()).await;
        assert_eq!(status, 400, "{text}");
        let s = store(&db).await;
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.action == "convox:processes:exec"
                && r.event.status == Some(400)
                && r.event.details["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("bad WebSocket upgrade"))
        })
        .await;
        assert!(recorded, "the outcome does not say the upgrade was refused");
        // A key that is not 16 bytes in base64 (RFC 6455, 4.2.1).
        for key in ["not base64!", "c2hvcnQ=", ""] {
            let request = format!(
                "GET /api/v1/rack-proxy/apps/web/processes/web-1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            );
            let (status, text) = crate::hostile::raw(&gw, request.as_bytes()).await;
            assert_eq!(status, 400, "{key:?}: {text}");
            assert!(
                text.contains("Sec-WebSocket-Key must be 16 bytes"),
                "{key:?}: {text}"
            );
        }
        assert!(rack.seen().is_empty(), "{:?}", rack.seen());
    }
);

/// Reads `socket` until the gateway closes it; the close code and reason.
pub(crate) async fn closed_by_gateway(
    socket: &mut WsClient,
    within: Duration,
) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

crate::both_backends!(
    a_role_change_or_an_idle_session_ends_open_websocket_sessions,
    |db| async move {
        let rack = TestRack::start().await;
        let (_st, _, ops) =
            crate::credentials::user_with_session(&db, "ops@example.com", "ops").await;
        let gw = Gateway::start(&db, &rack.url, &[("SESSION_IDLE_TIMEOUT_SECS", "8")]).await;

        // The user loses the permission while a shell is open.
        let mut shell = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        let mut output = String::new();
        let _ = shell.send(Message::Text("before\n".into())).await;
        read_until(&mut shell, &mut output, "before").await;
        let (ok, _, err) =
            crate::kit::admin(&db, &["users", "set-role", "ops@example.com", "viewer"]);
        assert!(ok, "{err}");
        let (code, reason) = closed_by_gateway(&mut shell, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("the shell stayed open after the role change"));
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("no longer granted"), "{reason}");

        // An open session is not use: a session that makes no requests idles out (8 s here)
        // although a shell is open (re-checked every 5 s: it ends at the second check).
        let (ok, _, err) = crate::kit::admin(&db, &["users", "set-role", "ops@example.com", "ops"]);
        assert!(ok, "{err}");
        let started = std::time::Instant::now();
        let mut idle = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        let (code, reason) = closed_by_gateway(&mut idle, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the open shell kept the session alive"));
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("expired"), "{reason}");
        assert!(
            started.elapsed() >= Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
);

crate::both_backends!(
    websocket_sessions_are_limited_per_credential_and_in_all,
    |db| async move {
        // Every session holds two sockets and a rack connection for as long as it lasts: one
        // viewer token opened 2 000 log streams and took the gateway to 6 000 open files.
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(
            &db,
            &rack.url,
            &[
                ("MAX_WEBSOCKETS_PER_CREDENTIAL", "2"),
                ("MAX_WEBSOCKETS", "3"),
            ],
        )
        .await;
        let logs = "/apps/web/logs?follow=true";
        let refused = |token: String| {
            let request = ws_request(&gw, logs, &token);
            async move {
                match tokio_tungstenite::connect_async(request).await {
                    Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                        let body = response
                            .body()
                            .as_deref()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default();
                        (response.status().as_u16(), body)
                    }
                    Err(e) => panic!("{e}"),
                    Ok(_) => (101, String::new()),
                }
            }
        };
        let first = ws_connect(&gw, logs, &viewer).await;
        let _second = ws_connect(&gw, logs, &viewer).await;
        let (status, body) = refused(viewer.clone()).await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("too_many_websockets"), "{body}");
        assert!(body.contains("with this credential"), "{body}");
        // Another credential still gets one, up to the gateway's limit.
        let _third = ws_connect(&gw, logs, &ops).await;
        let (status, body) = refused(ops.clone()).await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("try again later"), "{body}");
        // A session that ends gives its place back.
        drop(first);
        let mut reopened = false;
        for _ in 0..50 {
            if refused(viewer.clone()).await.0 == 101 {
                reopened = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reopened, "the place of a closed session was not given back");
        let s = store(&db).await;
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.status == Some(429)
                && r.event.action == "convox:logs:read"
        })
        .await;
        assert!(recorded, "a refused session has no outcome");
    }
);

crate::both_backends!(
    a_users_sessions_share_their_websocket_places,
    |db| async move {
        // Signing in again must not give a person another set of places.
        let rack = TestRack::start().await;
        let (st, _, first) =
            crate::credentials::user_with_session(&db, "ws@example.com", "viewer").await;
        let user = crate::credentials::existing_user(&st, "ws@example.com").await;
        let (_, second) = crate::credentials::another_session(&st, "web", &user)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let gw = Gateway::start(&db, &rack.url, &[("MAX_WEBSOCKETS_PER_CREDENTIAL", "2")]).await;
        let logs = "/apps/web/logs?follow=true";
        let _a = ws_connect(&gw, logs, &first).await;
        let _b = ws_connect(&gw, logs, &second).await;
        match tokio_tungstenite::connect_async(ws_request(&gw, logs, &second)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429);
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                assert!(body.contains("signed-in sessions together"), "{body}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second session gave the user a third place"),
        }
        // Another person is not counted with them.
        let viewer = role_token(&db, "viewer");
        let _c = ws_connect(&gw, logs, &viewer).await;
    }
);

crate::both_backends!(
    a_client_that_pings_and_never_reads_holds_bounded_memory,
    |db| async move {
        // The WebSocket library answers every ping itself, queueing the pong behind what the
        // client has not read: without a bound on what waits to be written, 300 000 pings
        // from a client that never reads grew the gateway by 62 MiB (and on, without end).
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        // An exec session stays open as long as the client wants.
        let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        let before = gw.peak_rss_kib();
        let payload = bytes::Bytes::from(vec![b'p'; 125]);
        let mut sent = 0u32;
        let flood = tokio::time::timeout(Duration::from_secs(120), async {
            while sent < 300_000 {
                if socket.send(Message::Ping(payload.clone())).await.is_err() {
                    break;
                }
                sent += 1;
            }
        })
        .await;
        assert!(
            flood.is_ok(),
            "the flood did not end in two minutes ({sent} pings)"
        );
        let grown_mib = gw.peak_rss_kib().saturating_sub(before) / 1024;
        eprintln!("{sent} pings sent; the gateway grew by {grown_mib} MiB");
        assert!(
            grown_mib < 32,
            "{sent} unread pongs grew the gateway by {grown_mib} MiB"
        );
        drop(socket);
        let s = store(&db).await;
        let ended = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome" && r.event.action == "convox:processes:exec"
        })
        .await;
        assert!(ended, "the session's end is not recorded");
    }
);

crate::both_backends!(
    a_rack_message_over_the_limit_ends_the_session_and_says_so,
    |db| async move {
        // The rack's messages are relayed whole, so they are bounded too (its pieces of logs
        // and output are 32 KiB); one past the bound ends the session, and its outcome says
        // why rather than "completed".
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
        let _ = socket.send(Message::Text("big".into())).await;
        // The client is told that the rack's side failed (1011), not left with a close frame
        // without a code; and the rack, not the client, ended the session.
        let closed = closed_by_gateway(&mut socket, Duration::from_secs(10)).await;
        assert_eq!(closed.map(|(c, _)| c), Some(1011));
        let s = store(&db).await;
        let said = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.action == "convox:processes:exec"
                && r.event.details["completed"] == false
                && r.event.details["closed_by"] == "rack"
                && r.event.details["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("rack WebSocket error"))
        })
        .await;
        assert!(
            said,
            "the outcome does not say the rack's message was refused"
        );
    }
);

crate::both_backends!(
    a_broken_client_frame_is_answered_with_its_close_code,
    |db| async move {
        // RFC 6455: text that is not UTF-8 is closed with 1007, another broken frame with
        // 1002; the client is told which, not left with a close frame without a code.
        use tokio::io::AsyncWriteExt;
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        for (frame, code) in [
            // A text frame (masked, key 0) holding 0xFF 0xFE.
            (vec![0x81u8, 0x82, 0, 0, 0, 0, 0xff, 0xfe], 1007u16),
            // Opcode 3: reserved.
            (vec![0x83u8, 0x80, 0, 0, 0, 0], 1002),
        ] {
            let mut socket = ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await;
            let raw = match socket.get_mut() {
                tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
                _ => panic!("a plain connection was expected"),
            };
            raw.write_all(&frame)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let closed = closed_by_gateway(&mut socket, Duration::from_secs(10)).await;
            assert_eq!(closed.map(|(c, _)| c), Some(code), "{frame:?}");
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_session_costs_little_memory() {
    // Each side's read buffer is allocated whole when a session opens: at the library's
    // 128 KiB an idle session cost the gateway ~256 KiB, 256 MiB at MAX_WEBSOCKETS.
    let Some(db) = crate::kit::database(crate::kit::Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let ops = role_token(&db, "ops");
    let gw = Gateway::start(&db, &rack.url, &[("MAX_WEBSOCKETS_PER_CREDENTIAL", "200")]).await;
    // One first, so that what every session shares is counted before.
    let mut sockets = vec![ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = gw.peak_rss_kib();
    let sessions = 128;
    for _ in 0..sessions {
        sockets.push(ws_connect(&gw, "/apps/web/processes/web-1/exec", &ops).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_session = gw.peak_rss_kib().saturating_sub(before) / sessions;
    eprintln!("{sessions} idle sessions: {per_session} KiB each");
    assert!(
        per_session < 128,
        "an idle WebSocket session costs the gateway {per_session} KiB"
    );
    drop(sockets);
}

// The rack upgrades a WebSocket before it authenticates, so a wrong RACK_TOKEN shows as an
// in-band `ERROR: invalid authentication`: relayed as it was, `logs` told its user that their
// own sign-in was bad (found by a docs-against-behaviour pass). Against the fake rack that
// speaks the rack's protocol.
crate::both_backends!(
    a_rack_refusing_the_gateways_token_inside_a_websocket_says_whose_it_is,
    |db| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(mock_rack::serve(
            listener,
            mock_rack::MockRackConfig {
                token: "the-racks-current-token".into(),
                seed: 1,
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(
            &db,
            &format!("http://{addr}"),
            &[("RACK_TOKEN", "an-old-rack-token")],
        )
        .await;
        let mut socket = ws_connect(&gw, "/apps/web/logs", &viewer).await;
        let said = texts_until_the_end(&mut socket).await;
        assert!(
            said.contains("the rack refuses the gateway's own credentials (its RACK_TOKEN)")
                && !said.contains("invalid authentication")
                && !said.contains("an-old"),
            "{said}"
        );
        let s = store(&db).await;
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.details["error"] == "the rack refused RACK_TOKEN (in the WebSocket)"
        })
        .await;
        assert!(recorded, "the outcome says so");
        assert!(
            crate::kit::eventually(|| async {
                gw.all_output()
                    .contains("the rack refused the gateway's credentials")
            })
            .await,
            "the operator is told: {}",
            gw.all_output()
        );
        let _ = stop.send(());
    }
);

// Found by review: an app whose only log line is the rack's refusal line (`logs` without
// following, over a quiet minute) looked exactly like the rack refusing RACK_TOKEN, since
// the stream ends right after it: the line was rewritten and the operator told the token was
// wrong. The gateway now asks the rack over HTTP, which takes the token.
crate::both_backends!(
    a_stream_of_only_the_racks_refusal_line_is_relayed_when_the_rack_takes_the_token,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let mut socket = ws_connect(&gw, "/apps/onlyrefusalline/logs", &viewer).await;
        let said = texts_until_the_end(&mut socket).await;
        assert_eq!(said, "ERROR: invalid authentication\n");
        let s = store(&db).await;
        let completed = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.path.as_deref() == Some("/apps/onlyrefusalline/logs")
                && r.event.details["error"].is_null()
        })
        .await;
        assert!(completed, "the outcome records no refusal");
        assert!(
            !gw.all_output()
                .contains("refused the gateway's credentials"),
            "{}",
            gw.all_output()
        );
    }
);

// Found by review: a stream whose first message is the rack's refusal line (an app may log
// it; any ops user can print it) was taken for the rack refusing RACK_TOKEN, rewritten, and
// reported to the operator. The rack ends the session after refusing; a stream goes on.
crate::both_backends!(
    a_stream_starting_with_the_racks_refusal_line_is_relayed_as_it_is,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let mut socket = ws_connect(&gw, "/apps/refusalline/logs", &viewer).await;
        let mut texts = Vec::new();
        while texts.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
                Ok(Some(Ok(_))) => {}
                other => panic!("{other:?} after {texts:?}"),
            }
        }
        assert_eq!(texts[0], "ERROR: invalid authentication\n", "{texts:?}");
        assert!(texts[1].contains("log line 0"), "{texts:?}");
        assert!(
            !gw.all_output()
                .contains("refused the gateway's credentials"),
            "{}",
            gw.all_output()
        );
    }
);
