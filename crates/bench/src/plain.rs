//! A plain reverse proxy on tokio and hyper, the runtime and HTTP stack the gateway is built
//! on, doing nothing but forwarding: no authentication, no audit, no header rules. Measured
//! beside nginx, it shows what the stack itself costs on this machine; the gateway's distance
//! from it is the gateway's own work.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;

/// Forwards every request on `listener` to `upstream` (plain HTTP/1.1, pooled connections)
/// until the process ends.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
    let authority = upstream.to_string();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: the next accept may work, after a pause rather
            // than in a tight loop.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (client, authority) = (client.clone(), authority.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), authority.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Upstream,
    authority: String,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, anyhow::Error> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()?;
    *req.uri_mut() = uri;
    Ok(client.request(req).await?)
}
