//! Half-sent requests held open from one client address, the security review's finding 1
//! (issue #30), for the benchmark row that measures buyers' answers meanwhile: each of
//! `connections` tasks connects from `from`, writes a request head without its end, waits
//! for the server to close the connection (its head deadline, or at once past the
//! per-address cap) and connects again a second later, so that refused connections do not
//! become a connect storm of their own.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// What the holders did so far.
#[derive(Debug, Default)]
pub struct Held {
    /// Connections opened (each with its half-sent head).
    pub opened: AtomicU64,
    /// Connections the server closed.
    pub closed: AtomicU64,
}

/// Holds `connections` half-sent requests to `target` from `from`, until the task is dropped.
pub async fn hold(target: SocketAddr, from: IpAddr, connections: usize, held: Arc<Held>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let held = held.clone();
        tasks.spawn(async move {
            loop {
                if let Ok(mut stream) = open(target, from).await {
                    held.opened.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 512];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    held.closed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn open(target: SocketAddr, from: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if from.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(from, 0))?;
    let mut stream = socket.connect(target).await?;
    stream.write_all(b"POST /slots/acquire HTTP/1.1\r\nhost: edge\r\nx-slow: ").await?;
    Ok(stream)
}
