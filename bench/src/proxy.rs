//! Edge→origin delay jitter: a TCP proxy that holds each new connection for a random time in
//! `[0, max]` before connecting it onwards. flashgate's edge host opens one origin connection
//! per forwarded request, so this delays each request independently and reorders requests
//! whose delays differ — what a real network between edges and the origin does.

use anyhow::Result;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(listener: TcpListener, upstream: SocketAddr, max: Duration) -> Result<()> {
    loop {
        let (mut inbound, _) = listener.accept().await?;
        let delay = max.mul_f64(rand::random::<f64>());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                let _ = outbound.set_nodelay(true);
                let _ = inbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
