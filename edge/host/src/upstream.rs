//! Several origins behind one edge host: the component forwards to its one `origin_url`, and
//! the host spreads those requests over every origin it was given (`--origin`), in turn,
//! skipping the ones its health checks (`GET /health` every second) or a refused connection
//! found down. A read (`GET`, `HEAD`) whose connection is refused is tried on the next
//! origin; anything else is not retried: the component answers it as a failed forward.

use http::uri::{Authority, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often each origin's `/health` is read, and how long one read may take.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);

struct Member {
    authority: Authority,
    healthy: AtomicBool,
}

/// The origins one component's `origin_url` stands for.
pub struct OriginPool {
    /// The scheme and authority the component addresses (its `origin_url`'s).
    scheme: String,
    name: Authority,
    members: Vec<Member>,
    next: AtomicUsize,
}

impl OriginPool {
    /// `name`: the authority of the component's `origin_url`; `members`: where its requests
    /// go. Every member starts healthy.
    pub fn new(scheme: String, name: Authority, members: Vec<Authority>) -> Arc<Self> {
        let members = members
            .into_iter()
            .map(|authority| Member { authority, healthy: AtomicBool::new(true) })
            .collect();
        Arc::new(Self { scheme, name, members, next: AtomicUsize::new(0) })
    }

    /// Whether `uri` is a request to the component's origin (its scheme and authority).
    pub fn serves(&self, uri: &Uri) -> bool {
        uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case(&self.scheme))
            && uri.authority() == Some(&self.name)
    }

    /// The members to try, in order: healthy ones round robin from the next in turn, then
    /// the others (better a try than a certain failure when all look down).
    pub fn order(&self) -> Vec<usize> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let turn = (0..n).map(|i| (start + i) % n);
        let (up, down): (Vec<usize>, Vec<usize>) =
            turn.partition(|&i| self.members[i].healthy.load(Ordering::Relaxed));
        up.into_iter().chain(down).collect()
    }

    /// `uri` sent to member `i` instead.
    pub fn target(&self, uri: &Uri, i: usize) -> Uri {
        let mut parts = uri.clone().into_parts();
        parts.authority = Some(self.members[i].authority.clone());
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }

    /// A connection to member `i` was refused: skip it until a health check finds it up.
    pub fn mark_down(&self, i: usize) {
        if self.members[i].healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(origin = %self.members[i].authority, "origin down: skipped until healthy");
        }
    }

    fn mark(&self, i: usize, healthy: bool) {
        let was = self.members[i].healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            tracing::info!(origin = %self.members[i].authority, "origin healthy again");
        }
    }

    /// Whether member `i` is currently taken as healthy.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.members[i].healthy.load(Ordering::Relaxed)
    }

    /// Reads every member's `/health` every second, for as long as the pool lives.
    /// Over TLS under `tls` when the origin is `https://`.
    pub fn check_health(self: &Arc<Self>, tls: Arc<rustls::ClientConfig>) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let connector = crate::state::connector(tls, HEALTH_TIMEOUT);
            let client: Client<_, Empty<bytes::Bytes>> =
                Client::builder(TokioExecutor::new()).build(connector);
            let mut tick = tokio::time::interval(HEALTH_EVERY);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                for (i, member) in pool.members.iter().enumerate() {
                    let uri = format!("{}://{}/health", pool.scheme, member.authority);
                    let Ok(uri) = uri.parse::<Uri>() else { continue };
                    let answered = tokio::time::timeout(HEALTH_TIMEOUT, async {
                        let response = client.get(uri).await.ok()?;
                        let ok = response.status().is_success();
                        // Read to the end so the connection goes back to the pool.
                        let _ = response.into_body().collect().await;
                        Some(ok)
                    })
                    .await;
                    pool.mark(i, matches!(answered, Ok(Some(true))));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<OriginPool> {
        OriginPool::new(
            "http".into(),
            "origin:8081".parse().unwrap(),
            vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()],
        )
    }

    #[test]
    fn requests_go_round_robin_and_skip_a_member_down() {
        let p = pool();
        assert_eq!(p.order(), [0, 1]);
        assert_eq!(p.order(), [1, 0]);
        p.mark_down(1);
        assert_eq!(p.order(), [0, 1], "the healthy one first, the other as a last resort");
        assert_eq!(p.order(), [0, 1]);
        p.mark(1, true);
        assert_eq!(p.order(), [0, 1]);
        assert_eq!(p.order(), [1, 0]);
    }

    #[test]
    fn only_the_components_origin_is_rewritten() {
        let p = pool();
        let uri: Uri = "http://origin:8081/slots/acquire?x=1".parse().unwrap();
        assert!(p.serves(&uri));
        assert_eq!(p.target(&uri, 1).to_string(), "http://127.0.0.1:2/slots/acquire?x=1");
        assert!(!p.serves(&"http://elsewhere:8081/".parse().unwrap()));
        assert!(!p.serves(&"https://origin:8081/".parse().unwrap()));
    }
}
