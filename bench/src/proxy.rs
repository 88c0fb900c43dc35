//! Edge→origin network delay: an HTTP/1.1 proxy that holds each request for a random time in
//! `[min, max]` before passing it on over pooled keep-alive connections. Each request is
//! delayed independently, so requests whose delays differ are reordered — what a real
//! network between edges and the origin does — however the edge reuses its connections.

use anyhow::Result;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// A delay drawn uniformly from `[min, max]`.
#[derive(Debug, Clone, Copy)]
pub struct Delay {
    pub min: Duration,
    pub max: Duration,
}

impl Delay {
    pub fn fixed(delay: Duration) -> Self {
        Self { min: delay, max: delay }
    }

    fn draw(self) -> Duration {
        let spread = self.max.saturating_sub(self.min);
        self.min + spread.mul_f64(rand::random::<f64>())
    }
}

/// Serves until the listener fails; answers 502 when the upstream cannot be reached.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, delay: Delay) -> Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let client = client.clone();
            async move {
                tokio::time::sleep(delay.draw()).await;
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let uri = format!("http://{upstream}{path}");
                *req.uri_mut() = uri.parse().expect("a path on a socket address is a URI");
                let answer = match client.request(req).await {
                    Ok(response) => response.map(http_body_util::Either::Left),
                    Err(e) => hyper::Response::builder()
                        .status(502)
                        .body(http_body_util::Either::Right(http_body_util::Full::new(
                            bytes::Bytes::from(format!("upstream: {e}")),
                        )))
                        .expect("a static response is valid"),
                };
                Ok::<_, Infallible>(answer)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
