//! Prometheus metrics on `METRICS_LISTEN_ADDR`: every answer counted under its area and
//! status, every audit event under its permission and decision, commits and their failures,
//! readiness as it changes — on a port of its own that serves nothing else and shows no
//! secret, person or address.

use std::collections::BTreeMap;

use crate::both_backends;
use crate::kit::{Db, Gateway, RACK_TOKEN, client, eventually, list_apps, role_token};
use crate::upstream::TestRack;

/// Starts a gateway with metrics on a port of its own; returns it and the metrics URL.
async fn start_with_metrics(db: &Db, rack_url: &str) -> (Gateway, String) {
    let gw = Gateway::start(db, rack_url, &[("METRICS_LISTEN_ADDR", "127.0.0.1:0")]).await;
    let addr = gw
        .stderr
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|v| v["fields"]["metrics_addr"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no metrics_addr in the log:\n{}", gw.all_output()));
    (gw, format!("http://{addr}/metrics"))
}

/// One scrape: each sample's name with its labels, and its value.
async fn scrape(url: &str) -> BTreeMap<String, f64> {
    let resp = client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {l}"));
            let value = value.parse::<f64>().unwrap_or_else(|e| panic!("{l}: {e}"));
            (name.to_string(), value)
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// The sum of every sample whose name starts with `prefix`.
fn sum(samples: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Waits (bounded) until a scrape of `url` satisfies `holds`; the last scrape either way.
async fn scrape_until(
    url: &str,
    holds: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let holds = &holds;
    eventually(|| async move { holds(&scrape(url).await) }).await;
    scrape(url).await
}

const PROXY_200: &str = "rack_gateway_http_requests_total{area=\"proxy\",code=\"200\"}";

both_backends!(
    answers_and_audit_events_are_counted_on_a_port_of_their_own,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let (gw, metrics) = start_with_metrics(&db, &rack.url).await;

        for _ in 0..3 {
            assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        }
        let denied = client()
            .delete(gw.proxy("/apps/web"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(denied.status(), 403);
        assert_eq!(list_apps(&gw, "rgw_not-a-real-token").await, Some(401));
        let health = client()
            .get(format!("{}/api/v1/health", gw.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(health.status(), 200);

        // Outcomes are queued as each response ends: wait for the third.
        let outcome = "rack_gateway_audit_events_total{kind=\"outcome\",\
                       action=\"convox:apps:list\",decision=\"allow\",status=\"2xx\"}";
        let s = scrape_until(&metrics, |s| value(s, outcome) == 3.0).await;
        assert_eq!(value(&s, outcome), 3.0, "{s:#?}");
        assert_eq!(value(&s, PROXY_200), 3.0, "{s:#?}");
        assert_eq!(
            value(
                &s,
                "rack_gateway_http_requests_total{area=\"proxy\",code=\"403\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rack_gateway_http_requests_total{area=\"proxy\",code=\"401\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rack_gateway_http_requests_total{area=\"health\",code=\"200\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rack_gateway_http_request_duration_seconds_count{area=\"proxy\"}"
            ),
            5.0
        );
        assert_eq!(
            value(
                &s,
                "rack_gateway_audit_events_total{kind=\"request\",action=\"convox:apps:list\",\
                 decision=\"allow\",status=\"none\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &s,
                "rack_gateway_audit_events_total{kind=\"request\",action=\"convox:apps:delete\",\
                 decision=\"deny\",status=\"4xx\"}"
            ),
            1.0,
            "{s:#?}"
        );
        assert_eq!(value(&s, "rack_gateway_ready"), 1.0);
        for dependency in ["database", "audit", "rack"] {
            let name = format!("rack_gateway_dependency_up{{dependency=\"{dependency}\"}}");
            assert_eq!(value(&s, &name), 1.0, "{name}");
        }
        assert_eq!(value(&s, "rack_gateway_websocket_sessions_open"), 0.0);
        assert_eq!(
            value(&s, "rack_gateway_audit_commit_failures_total"),
            0.0,
            "{s:#?}"
        );
        // Every event this gateway produced is committed, and counted as written.
        let s = scrape_until(&metrics, |s| {
            sum(s, "rack_gateway_audit_events_total{")
                == value(s, "rack_gateway_audit_events_written_total")
        })
        .await;
        let produced = sum(&s, "rack_gateway_audit_events_total{");
        assert!(produced >= 8.0, "{s:#?}");
        assert_eq!(
            value(&s, "rack_gateway_audit_events_written_total"),
            produced,
            "{s:#?}"
        );
        assert!(value(&s, "rack_gateway_audit_commit_duration_seconds_count") >= 1.0);

        // A connection that is open shows, and stops showing once closed.
        let addr = gw.url.trim_start_matches("http://").to_string();
        let idle = tokio::net::TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let s = scrape_until(&metrics, |s| {
            value(s, "rack_gateway_connections_open") >= 1.0
        })
        .await;
        assert!(value(&s, "rack_gateway_connections_open") >= 1.0, "{s:#?}");
        drop(idle);
        let s = scrape_until(&metrics, |s| {
            value(s, "rack_gateway_connections_open") == 0.0
        })
        .await;
        assert_eq!(value(&s, "rack_gateway_connections_open"), 0.0, "{s:#?}");

        // Nothing that names a person, a credential or an address.
        let text = client()
            .get(&metrics)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for secret in [
            viewer.as_str(),
            RACK_TOKEN,
            "127.0.0.1",
            "@example.com",
            "/apps",
        ] {
            assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
        }

        // OpenMetrics to a scraper that asks for it.
        let open = client()
            .get(&metrics)
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            open.headers()["content-type"]
                .to_str()
                .unwrap_or_default()
                .starts_with("application/openmetrics-text")
        );
        assert!(open.text().await.unwrap_or_default().ends_with("# EOF\n"));

        // The metrics port serves nothing else, and the gateway's port no metrics.
        rack.clear();
        let elsewhere = client()
            .get(metrics.replace("/metrics", "/api/v1/rack-proxy/apps"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(elsewhere.status(), 404);
        assert!(
            rack.seen().is_empty(),
            "the metrics port forwarded a request"
        );
        let posted = client()
            .post(&metrics)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(posted.status(), 405);
        let on_gateway = client()
            .get(format!("{}/metrics", gw.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(on_gateway.status(), 404);
        assert!(
            !on_gateway
                .text()
                .await
                .unwrap_or_default()
                .contains("rack_gateway_")
        );
    }
);

both_backends!(
    failing_audit_writes_and_a_dead_rack_show_in_the_metrics,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let (gw, metrics) = start_with_metrics(&db, &rack.url).await;
        assert_eq!(list_apps(&gw, &viewer).await, Some(200));

        // The store refuses every audit event: requests are refused, commits counted failed.
        let refusal = crate::kit::refuse_audit_events(&db, "1 = 1").await;
        assert_eq!(list_apps(&gw, &viewer).await, Some(503));
        let s = scrape_until(&metrics, |s| value(s, "rack_gateway_ready") == 0.0).await;
        assert!(
            value(&s, "rack_gateway_audit_commit_failures_total") >= 1.0,
            "{s:#?}"
        );
        assert_eq!(
            value(
                &s,
                "rack_gateway_http_requests_total{area=\"proxy\",code=\"503\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&s, "rack_gateway_dependency_up{dependency=\"audit\"}"),
            0.0,
            "{s:#?}"
        );
        assert_eq!(value(&s, PROXY_200), 1.0);

        // Writes taken again: ready once more (readiness tries the trail itself).
        refusal.lift().await;
        let s = scrape_until(&metrics, |s| value(s, "rack_gateway_ready") == 1.0).await;
        assert_eq!(
            value(&s, "rack_gateway_dependency_up{dependency=\"audit\"}"),
            1.0
        );

        // A rack that is gone shows as its dependency down.
        rack.stop();
        let s = scrape_until(&metrics, |s| {
            value(s, "rack_gateway_dependency_up{dependency=\"rack\"}") == 0.0
        })
        .await;
        assert_eq!(value(&s, "rack_gateway_ready"), 0.0, "{s:#?}");
        assert_eq!(
            value(&s, "rack_gateway_dependency_up{dependency=\"database\"}"),
            1.0
        );
        drop(gw);
    }
);

both_backends!(
    a_metrics_port_in_use_stops_the_start_and_says_so,
    |db: Db| async move {
        let rack = TestRack::start().await;
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let out = std::process::Command::new(crate::kit::BIN)
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("AUDIT_HMAC_KEY", crate::kit::AUDIT_KEY)
            .env("RACK_HOST", &rack.url)
            .env("RACK_TOKEN", RACK_TOKEN)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_LISTEN_ADDR", addr.to_string())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.status.success(), "started with its metrics port taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("cannot listen on {addr} (METRICS_LISTEN_ADDR)")),
            "{err}"
        );
        assert!(!err.contains(RACK_TOKEN), "{err}");
        drop(taken);
    }
);
