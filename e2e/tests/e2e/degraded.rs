//! A degraded start: the origin starts while Redis and PostgreSQL are down, says so on
//! `/health`, answers fast 503s, and recovers by itself when they come up.

use flashgate_e2e::{
    Identity, RedisServer, TestDatabase, TestOrigin, forward_on, free_port, problem,
};
use flashgate_origin::clock::SystemClock;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_starts_without_redis_and_postgres_and_recovers_when_they_come() {
    let mut redis = RedisServer::start().unwrap();
    redis.crash();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    // PostgreSQL, as the origin is told to find it: a port where nothing listens yet.
    let pg_port = free_port().unwrap();
    let pg_url = db.url.replace("127.0.0.1:5432", &format!("127.0.0.1:{pg_port}"));
    assert_ne!(pg_url, db.url, "the test database is on 127.0.0.1:5432");
    let started = Instant::now();
    let origin = TestOrigin::spawn_with(&redis, &db, &id, Arc::new(SystemClock), |s| {
        s.database_url = pg_url;
    })
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "started in {:?}", started.elapsed());

    let health = reqwest::get(origin.url("/health")).await.unwrap();
    let body = problem(health, 503, "unavailable").await;
    assert_eq!(body["components"]["redis"], "down", "{body}");
    assert_eq!(body["components"]["postgresql"], "down", "{body}");
    let acquire =
        origin.acquire_signed(&id, Uuid::new_v4(), Uuid::new_v4(), flashgate_e2e::now_us());
    let refused = acquire.await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    problem(refused, 503, "unavailable").await;

    // Both come up: no restart of the origin needed.
    tokio::task::block_in_place(|| redis.restart()).unwrap();
    forward_on(pg_port, "127.0.0.1:5432".parse().unwrap()).await.unwrap();
    let mut healthy = None;
    for _ in 0..100 {
        let r = reqwest::get(origin.url("/health")).await.unwrap();
        if r.status() == 200 {
            healthy = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy = healthy.expect("healthy within 10 s of its dependencies coming up");
    assert_eq!(healthy["components"]["redis"], "up");
    // Migrated in the background: the sale works.
    let mut created = Err(anyhow::anyhow!("not tried"));
    for _ in 0..50 {
        created = origin.create_product(&id, 3).await;
        if created.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let product = created.unwrap();
    let granted = origin.acquire_signed(&id, Uuid::new_v4(), product, flashgate_e2e::now_us());
    assert_eq!(granted.await.unwrap().status(), 201);
}
