//! Durable before `201` (invariant 3): the origin runs only on a Redis that fsyncs what it
//! answers, and a Redis killed mid-storm comes back with every grant it answered.

use flashgate_e2e::{
    Identity, RedisServer, Stack, TestDatabase, TestEdge, TestOrigin, checked_when_drained, problem,
};
use flashgate_origin::clock::SystemClock;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test]
async fn the_origin_refuses_a_redis_that_forgets_unless_told_to_accept_it() {
    let redis = RedisServer::start_volatile().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    let refused = TestOrigin::spawn(&redis, &db, &id, Arc::new(SystemClock)).await;
    let message = format!("{:#}", refused.err().expect("a volatile Redis is refused"));
    assert!(message.contains("appendonly"), "{message}");
    assert!(message.contains("--allow-volatile-redis"), "{message}");

    let allowed = TestOrigin::spawn_with(&redis, &db, &id, Arc::new(SystemClock), |s| {
        s.allow_volatile_redis = true;
    })
    .await
    .unwrap();
    let health: Value = reqwest::get(allowed.url("/health")).await.unwrap().json().await.unwrap();
    assert_eq!(health["components"]["redis"], "up", "{health}");
}

#[tokio::test]
async fn a_redis_that_turns_volatile_is_unhealthy_and_grants_nothing() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    let health = reqwest::get(stack.origin.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let mut c = stack.redis.connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query_async(&mut c)
        .await
        .unwrap();
    let health = reqwest::get(stack.origin.url("/health")).await.unwrap();
    let body = problem(health, 503, "unavailable").await;
    assert_eq!(body["components"]["redis"], "not-durable", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("does not persist"), "{body}");
    let refused = stack.acquire(&stack.id.buyer(Uuid::new_v4()), product).await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(problem(refused, 503, "unavailable").await["component"], "redis");
    assert_eq!(stack.redis.counts(product).await.unwrap().remaining, 5, "nothing granted");
}

/// What one buyer was told, after retrying 503s and dropped connections.
#[derive(Debug, Clone)]
enum Told {
    Granted(String),
    /// 409 already-holding: a grant whose 201 was lost (the connection died with a killed
    /// process after the grant was durable); the retry learns the slot.
    Holding(String),
    Refused(u16),
}

/// A buyer acquiring through the edge, retrying with the same token until answered.
async fn buy(http: reqwest::Client, url: String, token: String, product: Uuid) -> Told {
    for _ in 0..300 {
        let sent =
            http.post(&url).bearer_auth(&token).json(&json!({ "productId": product })).send().await;
        if let Ok(r) = sent {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                201 => return Told::Granted(body["slotId"].as_str().unwrap().to_owned()),
                409 if body["type"].as_str().is_some_and(|t| t.ends_with("already-holding")) => {
                    return Told::Holding(body["slotId"].as_str().unwrap().to_owned());
                }
                503 | 500 | 502 => {}
                other => return Told::Refused(other),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a buyer was never answered");
}

/// Every buyer answered 201 holds that very slot, read through the edge.
async fn assert_each_201_holds(
    edge: &TestEdge,
    buyers: &[(Uuid, String)],
    granted: &HashMap<Uuid, String>,
) {
    let http = reqwest::Client::new();
    for (user, token) in buyers {
        let Some(slot) = granted.get(user) else { continue };
        let mine: Value = http
            .get(edge.url("/slots/my-slots"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = mine["items"].as_array().unwrap();
        assert!(
            items.iter().any(|s| s["slotId"] == slot.as_str() && s["status"] == "ACTIVE"),
            "buyer {user} was answered 201 for {slot} and holds {mine}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_mid_storm_keeps_every_grant_it_answered() {
    let mut stack = Stack::start().await.unwrap();
    let stock = 30;
    let product = stack.origin.create_product(&stack.id, stock).await.unwrap();
    let buyers: Vec<(Uuid, String)> =
        (0..90).map(|_| Uuid::new_v4()).map(|u| (u, stack.id.buyer(u))).collect();
    let url = stack.edge.url("/slots/acquire");
    let storm: Vec<_> = buyers
        .iter()
        .map(|(_, token)| {
            tokio::spawn(buy(stack.http.clone(), url.clone(), token.clone(), product))
        })
        .collect();
    // Kill Redis once about a third is sold, then bring it back from its AOF.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.redis.counts(product).await.map(|c| c.remaining).unwrap_or(stock) > stock * 2 / 3
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::task::block_in_place(|| stack.redis.restart()).unwrap();
    let mut told = HashMap::new();
    for ((user, _), answer) in buyers.iter().zip(storm) {
        told.insert(*user, answer.await.unwrap());
    }

    let granted: HashMap<Uuid, String> = told
        .iter()
        .filter_map(|(u, t)| match t {
            Told::Granted(slot) | Told::Holding(slot) => Some((*u, slot.clone())),
            Told::Refused(_) => None,
        })
        .collect();
    // Granted: told 201, or already-holding when the 201 died with Redis's connection (the
    // edge sends a buyer whose attempt failed to the origin, not to its sold-out hint).
    assert_eq!(granted.len() as i64, stock, "demand exceeded stock: every unit sold, once");
    let distinct: HashSet<&String> = granted.values().collect();
    assert_eq!(distinct.len(), granted.len(), "no slot answered twice");
    for t in told.values() {
        if let Told::Refused(status) = t {
            assert_eq!(*status, 409, "the others are told sold out");
        }
    }
    // Once the outbox is relayed, every buyer answered 201 still holds that very slot.
    let report =
        checked_when_drained(&stack.origin.state, stock as u64, Duration::from_secs(20)).await;
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!((report.undelivered, report.slots_in_postgres), (0, stock as u64));
    assert_each_201_holds(&stack.edge, &buyers, &granted).await;
    let counts = stack.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!((counts.held, counts.remaining), (stock, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_mid_storm_loses_no_grant() {
    let redis = RedisServer::start().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    let port = flashgate_e2e::free_port().unwrap();
    let at_port = move |s: &mut flashgate_origin::settings::Settings| {
        s.listen = format!("127.0.0.1:{port}").parse().unwrap();
    };
    let clock = Arc::new(SystemClock);
    let first = TestOrigin::spawn_with(&redis, &db, &id, clock.clone(), at_port).await.unwrap();
    let edge = TestEdge::spawn(first.addr, &id).await.unwrap();
    let stock = 30;
    let product = first.create_product(&id, stock).await.unwrap();
    let buyers: Vec<(Uuid, String)> =
        (0..90).map(|_| Uuid::new_v4()).map(|u| (u, id.buyer(u))).collect();
    let http = reqwest::Client::new();
    let url = edge.url("/slots/acquire");
    let storm: Vec<_> = buyers
        .iter()
        .map(|(_, token)| tokio::spawn(buy(http.clone(), url.clone(), token.clone(), product)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.counts(product).await.map(|c| c.remaining).unwrap_or(stock) > stock * 2 / 3
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = TestOrigin::spawn_with(&redis, &db, &id, clock, at_port).await.unwrap();
    let mut granted = HashMap::new();
    for ((user, _), answer) in buyers.iter().zip(storm) {
        if let Told::Granted(slot) | Told::Holding(slot) = answer.await.unwrap() {
            granted.insert(*user, slot);
        }
    }
    // Every unit is sold once: to a buyer told 201, or to one whose 201 died with the origin
    // (the retry says already-holding).
    let counts = redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!((counts.held, counts.remaining), (stock, 0));
    assert_eq!(granted.len() as i64, stock, "told 201 or already-holding: one per unit");
    let distinct: HashSet<&String> = granted.values().collect();
    assert_eq!(distinct.len(), granted.len());
    // The second origin's relay takes over the first one's unacknowledged entries.
    let report = checked_when_drained(&second.state, stock as u64, Duration::from_secs(20)).await;
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.slots_in_postgres, stock as u64);
    assert_each_201_holds(&edge, &buyers, &granted).await;
}
