//! The rack over TLS: a pinned certificate, a private CA, and refusal of anything else.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest;

use crate::kit::{Backend, Gateway, client, database, role_token, scratch_dir};
use crate::upstream::TestRack;

struct Pki {
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap_or_else(|e| panic!("{e}"));
    let leaf_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap_or_else(|e| panic!("{e}"))
        .signed_by(&leaf_key, &ca)
        .unwrap_or_else(|e| panic!("{e}"));
    let leaf_der = leaf.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf_der.clone(), ca.der().clone()], key)
        .unwrap_or_else(|e| panic!("{e}"));
    Pki {
        ca_pem: ca.pem(),
        leaf_der,
        server: Arc::new(server),
    }
}

async fn status(gw: &Gateway, token: &str) -> (u16, String) {
    let resp = client()
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(token))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_certificate_and_private_ca() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    let pki = pki();
    let rack = TestRack::start_tls(pki.server.clone()).await;
    let viewer = role_token(&db, "viewer");

    // Pinned: exactly this certificate.
    let pin = hex::encode(sha2::Sha256::digest(pki.leaf_der.as_ref()));
    let gw = Gateway::start(&db, &rack.url, &[("RACK_TLS_PIN_SHA256", &pin)]).await;
    assert_eq!(
        status(&gw, &viewer).await.0,
        200,
        "pinned certificate accepted"
    );
    drop(gw);

    // Another pin: refused, as a clear 502.
    let wrong = "00".repeat(32);
    let gw = Gateway::start(&db, &rack.url, &[("RACK_TLS_PIN_SHA256", &wrong)]).await;
    let (code, body) = status(&gw, &viewer).await;
    assert_eq!(code, 502, "{body}");
    drop(gw);

    // Private CA file.
    let dir = scratch_dir();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap_or_else(|e| panic!("{e}"));
    let ca = ca_file.display().to_string();
    let gw = Gateway::start(&db, &rack.url, &[("RACK_CA_FILE", &ca)]).await;
    assert_eq!(status(&gw, &viewer).await.0, 200, "private CA accepted");
    drop(gw);

    // Default (public roots): a private certificate is refused.
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    assert_eq!(status(&gw, &viewer).await.0, 502);
    let _ = std::fs::remove_dir_all(dir);
}

/// A rack that accepts the connection but never answers the TLS handshake: the handshake is
/// part of connecting, so the request ends after `RACK_CONNECT_TIMEOUT_SECS` with 504, not after
/// the far longer read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_silent_in_the_handshake_times_out_as_a_connect() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    // The kernel completes TCP connections on a listening socket nobody accepts from.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let admin = role_token(&db, "admin");
    let gw = Gateway::start(
        &db,
        &format!("https://{addr}"),
        &[
            ("RACK_CONNECT_TIMEOUT_SECS", "1"),
            ("RACK_READ_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = status(&gw, &admin).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("rack_timeout"), "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
}
