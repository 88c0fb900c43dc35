//! The baseline: a bare hyper server that reads each request and answers the bytes the edge
//! answered (status, headers, body), with nothing in between.

use crate::load::Captured;
use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves `answer` to every request on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, answer: Captured) -> Result<()> {
    let mut template = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        template = template.header(name, value);
    }
    let template = Arc::new(template.body(Bytes::from(answer.body))?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let template = template.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let template = template.clone();
                async move {
                    // Read the body as the edge does, so both do the same work on input.
                    let _ = request.into_body().collect().await;
                    let mut response = Response::new(Full::new(template.body().clone()));
                    *response.status_mut() = template.status();
                    *response.headers_mut() = template.headers().clone();
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
