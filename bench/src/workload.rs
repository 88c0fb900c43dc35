//! What the load generator sends: `POST /slots/acquire` for a buyer and a product, either as
//! a buyer sends it to the edge (bearer JWT) or as the edge forwards it to the origin (the
//! signed envelope of DESIGN.md).

use anyhow::{Context, Result};
use bytes::Bytes;
use flashgate_cli::{DevIdentity, TokenSpec, mint};
use flashgate_core::signing::{self, EdgeSecret, EdgeStamp};
use http::{Method, Request, header};
use http_body_util::Full;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

pub const ACQUIRE_PATH: &str = "/slots/acquire";

/// How requests are authenticated.
pub enum Auth {
    /// A buyer's bearer token per buyer (the edge, or the bare server answering for it).
    Tokens(Vec<String>),
    /// Signed as the edge signs forwarded requests (the origin).
    Edge { secret: EdgeSecret, edge_id: String },
}

/// The buyers and products of one run. Request `i` comes from buyer `i mod buyers`, so
/// every buyer appears once before any appears twice.
pub struct Workload {
    pub auth: Auth,
    pub users: Vec<Uuid>,
    pub products: Vec<Uuid>,
    bodies: Vec<Bytes>,
}

impl Workload {
    pub fn new(auth: Auth, users: Vec<Uuid>, products: Vec<Uuid>) -> Result<Self> {
        anyhow::ensure!(!users.is_empty(), "a workload needs at least one buyer");
        anyhow::ensure!(!products.is_empty(), "a workload needs at least one product");
        if let Auth::Tokens(tokens) = &auth {
            anyhow::ensure!(tokens.len() == users.len(), "one token per buyer");
        }
        let bodies =
            products.iter().map(|p| Bytes::from(format!("{{\"productId\":\"{p}\"}}"))).collect();
        Ok(Self { auth, users, products, bodies })
    }

    /// Request number `i`, for `product_pick` (any number; reduced modulo the products).
    pub fn request(&self, i: u64, product_pick: u64, authority: &str) -> Request<Full<Bytes>> {
        let buyer = (i % self.users.len() as u64) as usize;
        let body = self.bodies[(product_pick % self.bodies.len() as u64) as usize].clone();
        let builder = Request::builder()
            .method(Method::POST)
            .uri(ACQUIRE_PATH)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json");
        let builder = match &self.auth {
            Auth::Tokens(tokens) => {
                builder.header(header::AUTHORIZATION, format!("Bearer {}", tokens[buyer]))
            }
            Auth::Edge { secret, edge_id } => {
                let user = self.users[buyer].to_string();
                let traceparent = format!(
                    "00-{:032x}-{:016x}-01",
                    rand::random::<u128>() | 1,
                    rand::random::<u64>() | 1
                );
                let stamp = EdgeStamp {
                    user_id: &user,
                    arrival_us: now_us(),
                    traceparent: &traceparent,
                    edge_id,
                    idempotency_key: "",
                };
                signing::signed_headers(secret, "POST", ACQUIRE_PATH, &stamp, &body)
                    .into_iter()
                    .fold(builder, |b, (name, value)| b.header(name, value))
            }
        };
        builder.body(Full::new(body)).expect("a request from valid parts")
    }
}

/// `count` buyer ids derived from `seed`: the same seed and index give the same buyer, so
/// runs that must not share buyers use disjoint seeds.
pub fn buyers(seed: u64, count: usize) -> Vec<Uuid> {
    (0..count as u64)
        .map(|i| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&seed.to_be_bytes());
            bytes[8..].copy_from_slice(&i.to_be_bytes());
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        })
        .collect()
}

/// Buyers that get a token when a run draws from `buyers` but mints at most `mint_limit`,
/// and the request cap that keeps request i's buyer the i-th (none repeats): the run stops
/// when the minted buyers are used up instead of cycling through them.
pub fn minted_buyers(
    buyers: usize,
    mint_limit: usize,
    max_requests: Option<u64>,
) -> (usize, Option<u64>) {
    if buyers <= mint_limit {
        return (buyers, max_requests);
    }
    let cap = mint_limit as u64;
    (mint_limit, Some(max_requests.map_or(cap, |m| m.min(cap))))
}

/// One token per buyer from the development issuer in `dev_dir`, minted up front on every
/// core (minting is not part of what is measured).
pub fn mint_tokens(dev_dir: &Path, users: &[Uuid], ttl: Duration) -> Result<Vec<String>> {
    let (identity, _) = DevIdentity::ensure(dev_dir)?;
    let pair = identity.key_pair()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = users.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                let pair = &pair;
                s.spawn(move || {
                    part.iter()
                        .map(|u| {
                            let mut spec = TokenSpec::buyer(*u);
                            spec.valid_for = ttl;
                            mint(pair, &spec)
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut tokens = Vec::with_capacity(users.len());
        for h in handles {
            tokens.extend(h.join().expect("a minting thread panicked")?);
        }
        Ok(tokens)
    })
}

/// The edge secret of the development identity in `dev_dir`.
pub fn dev_edge_secret(dev_dir: &Path) -> Result<EdgeSecret> {
    let (identity, _) = DevIdentity::ensure(dev_dir)?;
    EdgeSecret::from_hex(identity.edge_secret()?.trim()).context("reading the edge secret")
}

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mint_limit_caps_the_requests_instead_of_repeating_buyers() {
        assert_eq!(minted_buyers(1_000, 150_000, None), (1_000, None));
        assert_eq!(minted_buyers(1_000, 150_000, Some(7)), (1_000, Some(7)));
        assert_eq!(minted_buyers(1_000_000, 150_000, None), (150_000, Some(150_000)));
        assert_eq!(minted_buyers(1_000_000, 150_000, Some(10)), (150_000, Some(10)));
        assert_eq!(minted_buyers(1_000_000, 150_000, Some(200_000)), (150_000, Some(150_000)));
    }

    #[test]
    fn buyers_are_distinct_and_reproducible() {
        let a = buyers(1, 1000);
        let set: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), 1000);
        assert_eq!(a, buyers(1, 1000));
        assert!(buyers(2, 10).iter().all(|u| !set.contains(u)));
    }

    #[test]
    fn origin_requests_carry_a_verifiable_signature() {
        let secret = EdgeSecret::from_bytes(vec![7; 32]).unwrap();
        let users = buyers(3, 2);
        let products = vec![Uuid::new_v4()];
        let auth = Auth::Edge {
            secret: EdgeSecret::from_bytes(vec![7; 32]).unwrap(),
            edge_id: "b".into(),
        };
        let w = Workload::new(auth, users.clone(), products.clone()).unwrap();
        let r = w.request(1, 0, "o");
        let h = |n: &str| r.headers()[n].to_str().unwrap().to_owned();
        assert_eq!(h(signing::HEADER_USER), users[1].to_string());
        let body = format!("{{\"productId\":\"{}\"}}", products[0]);
        let stamp = EdgeStamp {
            user_id: &h(signing::HEADER_USER),
            arrival_us: h(signing::HEADER_ARRIVAL).parse().unwrap(),
            traceparent: &h(signing::HEADER_TRACEPARENT),
            edge_id: "b",
            idempotency_key: "",
        };
        let sig = h(signing::HEADER_SIGNATURE);
        assert!(
            signing::verify(&secret, "POST", ACQUIRE_PATH, &stamp, body.as_bytes(), &sig).is_ok()
        );
    }
}
