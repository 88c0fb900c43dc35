//! Real identity providers: the origin and the edge take their token keys from a JWKS URL
//! (`jwt_jwks_url`), keep them for the provider's `Cache-Control` max-age, fetch again at
//! most once a minute for a `kid` they do not know (a rotation), keep the last good keys
//! while the provider is down, and answer 503 + `Retry-After` while they have none.
//! The provider here is a real HTTP server on loopback whose keys, status and headers each
//! test changes.

use flashgate_cli::TokenSpec;
use flashgate_core::token::{Jwk, Jwks};
use flashgate_e2e::{DrivenOrigin, Stack, problem};
use flashgate_origin::settings::JwtKeys;
use jwt_simple::algorithms::EdDSAKeyPairLike;
use jwt_simple::prelude::Ed25519KeyPair;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// What the provider answers, and how often it was asked.
struct Published {
    jwks: Jwks,
    /// `None`: down (503).
    cache_control: Option<&'static str>,
    down: bool,
    fetches: usize,
    /// When each fetch was answered: a test waits from these, not from its own clock.
    answered: Vec<std::time::Instant>,
}

#[derive(Clone)]
struct Provider {
    addr: SocketAddr,
    state: Arc<Mutex<Published>>,
}

impl Provider {
    async fn start(keys: &[&Ed25519KeyPair]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Published {
            jwks: jwks_of(keys),
            cache_control: Some("max-age=300"),
            down: false,
            fetches: 0,
            answered: Vec::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = {
                        let mut p = state.lock().unwrap();
                        p.fetches += 1;
                        if p.down {
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                        } else {
                            let body = serde_json::to_string(&p.jwks).unwrap();
                            let cache = p
                                .cache_control
                                .map(|c| format!("cache-control: {c}\r\n"))
                                .unwrap_or_default();
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{cache}\
                                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                        }
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    state.lock().unwrap().answered.push(std::time::Instant::now());
                });
            }
        });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn fetches(&self) -> usize {
        self.state.lock().unwrap().fetches
    }

    /// When the last fetch was answered.
    fn last_answered(&self) -> std::time::Instant {
        *self.state.lock().unwrap().answered.last().expect("fetched at least once")
    }

    fn publish(&self, keys: &[&Ed25519KeyPair]) {
        self.state.lock().unwrap().jwks = jwks_of(keys);
    }

    fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
}

fn key(kid: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::generate().with_key_id(kid)
}

fn jwks_of(keys: &[&Ed25519KeyPair]) -> Jwks {
    let kid = |k: &Ed25519KeyPair| k.key_id().clone().unwrap_or_default();
    Jwks { keys: keys.iter().map(|k| Jwk::ed25519(&kid(k), &k.public_key().to_bytes())).collect() }
}

fn admin_token(pair: &Ed25519KeyPair) -> String {
    flashgate_cli::mint(pair, &TokenSpec::admin(Uuid::new_v4())).unwrap()
}

async fn audit_status(origin: &DrivenOrigin, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(origin.origin.url("/admin/audit-logs"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_origin_follows_a_rotation_at_most_once_a_minute_and_survives_a_provider_outage() {
    let (k1, k2) = (key("k1"), key("k2"));
    let provider = Provider::start(&[&k1]).await;
    let url = provider.url();
    let t = DrivenOrigin::start_with(|s| s.jwt_keys = JwtKeys::Url(url)).await.unwrap();

    // Fetched on first use, then kept for its max-age.
    assert_eq!(audit_status(&t, &admin_token(&k1)).await.status(), 200);
    assert_eq!(audit_status(&t, &admin_token(&k1)).await.status(), 200);
    assert_eq!(provider.fetches(), 1);

    // A rotation: k2 published. A token signed with it is refused until a fetch is allowed
    // again (a minute after the last), however many such tokens arrive.
    provider.publish(&[&k1, &k2]);
    for _ in 0..3 {
        problem(audit_status(&t, &admin_token(&k2)).await, 401, "unauthorized").await;
    }
    assert_eq!(provider.fetches(), 1, "an unknown kid fetches at most once a minute");
    t.clock.advance(Duration::from_secs(60));
    assert_eq!(audit_status(&t, &admin_token(&k2)).await.status(), 200);
    assert_eq!(provider.fetches(), 2);

    // The provider goes down and the keys go stale: the last good keys stay in use, and
    // the provider is asked again only a minute later.
    provider.set_down(true);
    t.clock.advance(Duration::from_secs(301));
    assert_eq!(audit_status(&t, &admin_token(&k2)).await.status(), 200);
    assert_eq!(audit_status(&t, &admin_token(&k1)).await.status(), 200);
    assert_eq!(provider.fetches(), 3, "one failed attempt, not one per request");
    t.clock.advance(Duration::from_secs(60));
    assert_eq!(audit_status(&t, &admin_token(&k1)).await.status(), 200);
    assert_eq!(provider.fetches(), 4);
}

#[tokio::test]
async fn an_origin_without_any_keys_yet_answers_503_until_the_provider_answers() {
    let k1 = key("k1");
    let provider = Provider::start(&[&k1]).await;
    provider.set_down(true);
    let url = provider.url();
    let t = DrivenOrigin::start_with(|s| s.jwt_keys = JwtKeys::Url(url)).await.unwrap();
    let refused = audit_status(&t, &admin_token(&k1)).await;
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    let body = problem(refused, 503, "unavailable").await;
    assert_eq!(body["component"], "identity provider", "{body}");
    provider.set_down(false);
    // Attempts without keys are a second apart.
    problem(audit_status(&t, &admin_token(&k1)).await, 503, "unavailable").await;
    t.clock.advance(Duration::from_secs(1));
    assert_eq!(audit_status(&t, &admin_token(&k1)).await.status(), 200);
}

/// The edge, on the real clock: one fetch shared by every instance, the provider's outage
/// at start answered 503, and a rotation followed once a minute has passed.
#[tokio::test]
async fn the_edge_fetches_keys_through_its_allowed_hosts_and_follows_a_rotation() {
    let (k1, k2) = (key("k1"), key("k2"));
    let provider = Provider::start(&[&k1]).await;
    provider.set_down(true);
    let (url, origin_rule) = (provider.url(), format!("http://{}", provider.addr));
    let s = Stack::start_configured(
        |_| {},
        |edge| {
            edge.variables.insert("jwt_jwks".into(), String::new());
            edge.variables.insert("jwt_jwks_url".into(), url);
            edge.variables.insert("jwks_origin".into(), origin_rule);
        },
    )
    .await
    .unwrap();
    let product = s.origin.create_product(&s.id, 10).await.unwrap();
    let buyer = |pair: &Ed25519KeyPair| {
        flashgate_cli::mint(pair, &TokenSpec::buyer(Uuid::new_v4())).unwrap()
    };

    // No keys yet: 503 naming why, with Retry-After.
    let refused = s.acquire(&buyer(&k1), product).await.unwrap();
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    problem(refused, 503, "unavailable").await;
    provider.set_down(false);
    // The edge waits a second after a failed fetch before it tries again.
    sleep_until(provider.last_answered() + Duration::from_millis(1_100)).await;
    for _ in 0..5 {
        assert_eq!(s.acquire(&buyer(&k1), product).await.unwrap().status(), 201);
    }
    assert_eq!(provider.fetches(), 2, "one failed attempt, then one fetch for every request");
    let fetched = provider.last_answered();

    // Rotation: refused until a minute after the last fetch, then accepted. The edge's minute
    // starts when it read the answer, a moment after the provider sent it: past the minute
    // the test tries until the new key is taken (a refused try does not fetch), and checks
    // from the provider's own times that the fetch came no sooner than a minute after.
    provider.publish(&[&k1, &k2]);
    problem(s.acquire(&buyer(&k2), product).await.unwrap(), 401, "unauthorized").await;
    assert_eq!(provider.fetches(), 2);
    sleep_until(fetched + Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = s.acquire(&buyer(&k2), product).await.unwrap().status();
        if status == 201 {
            break;
        }
        assert_eq!(status, 401);
        assert!(std::time::Instant::now() < deadline, "k2 still refused a minute after its time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(provider.fetches(), 3);
    let again = provider.last_answered().duration_since(fetched);
    assert!(again >= Duration::from_secs(60), "fetched again after {again:?}");
}

async fn sleep_until(at: std::time::Instant) {
    tokio::time::sleep_until(at.into()).await;
}

#[tokio::test]
async fn an_edge_whose_jwks_url_is_not_an_allowed_host_does_not_start() {
    let s = Stack::start().await.unwrap();
    let refused = flashgate_e2e::TestEdge::spawn_configured(
        flashgate_e2e::repo_root().join("spin.toml"),
        s.origin.addr,
        &s.id,
        |edge| {
            edge.variables.insert("jwt_jwks".into(), String::new());
            edge.variables.insert("jwt_jwks_url".into(), "https://idp.example/jwks.json".into());
        },
    )
    .await;
    let error = format!("{:#}", refused.err().expect("the host refuses to start"));
    assert!(error.contains("allowed_outbound_hosts"), "{error}");
}
