//! The grant lease: Redis grants only what PostgreSQL already bounds. With PostgreSQL gone,
//! grants go on for at most the rest of the lease, then answer 503; they resume by
//! themselves when it is back, and PostgreSQL's lease never falls behind Redis's grants.

use flashgate_e2e::{
    Identity, RedisServer, TestDatabase, TestOrigin, forward_on, free_port, problem,
};
use flashgate_origin::clock::SystemClock;
use flashgate_origin::store::keys::ProductKeys;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn pg_lease(db: &sqlx::PgPool, product: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT leased FROM grant_leases WHERE product_id = $1), 0)",
    )
    .bind(product)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn redis_granted(redis: &RedisServer, product: Uuid) -> i64 {
    let mut c = redis.connection().await.unwrap();
    let granted: Option<i64> = redis::cmd("HGET")
        .arg(ProductKeys::new(product).product())
        .arg("granted")
        .query_async(&mut c)
        .await
        .unwrap();
    granted.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_gone_grants_stop_within_one_lease_and_resume_when_it_is_back() {
    let redis = RedisServer::start().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    // The origin reaches PostgreSQL through a forwarder this test can cut.
    let pg_port = free_port().unwrap();
    let forwarding = forward_on(pg_port, "127.0.0.1:5432".parse().unwrap()).await.unwrap();
    let pg_url = db.url.replace("127.0.0.1:5432", &format!("127.0.0.1:{pg_port}"));
    assert_ne!(pg_url, db.url, "the test database is on 127.0.0.1:5432");
    let origin = TestOrigin::spawn_with(&redis, &db, &id, Arc::new(SystemClock), |s| {
        s.database_url = pg_url;
        s.grant_lease = 4;
        // Grants go on while the relay cannot deliver: this is about the lease alone.
        s.relay_interval = None;
    })
    .await
    .unwrap();
    let product = origin.create_product(&id, 50).await.unwrap();
    let acquire = |user| origin.acquire_signed(&id, user, product, flashgate_e2e::now_us());
    for _ in 0..2 {
        assert_eq!(acquire(Uuid::new_v4()).await.unwrap().status(), 201);
    }
    let direct = sqlx::PgPool::connect(&db.url).await.unwrap();
    assert_eq!(pg_lease(&direct, product).await, 4, "the first grant leased 4");

    forwarding.cut();
    let mut granted = 0;
    let mut refused = None;
    for _ in 0..10 {
        let answer = acquire(Uuid::new_v4()).await.unwrap();
        if answer.status() == 201 {
            granted += 1;
            continue;
        }
        refused = Some(answer);
        break;
    }
    assert_eq!(granted, 2, "the rest of the lease, and not one grant more");
    let refused = refused.expect("refused once the lease is used up");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = problem(refused, 503, "unavailable").await;
    assert_eq!(body["component"], "postgresql", "{body}");
    assert_eq!(redis_granted(&redis, product).await, 4);
    assert_eq!(pg_lease(&direct, product).await, 4);
    // Many at once: one tries PostgreSQL, the others behind it are answered as soon as it
    // failed, not each after its own attempt (20 × the 2 s pool timeout).
    let started = std::time::Instant::now();
    let burst = futures::future::join_all((0..20).map(|_| acquire(Uuid::new_v4()))).await;
    for answer in burst {
        assert_eq!(answer.unwrap().status(), 503);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    // Back: grants resume without a restart, and the lease stays ahead of them.
    let _back = forward_on(pg_port, "127.0.0.1:5432".parse().unwrap()).await.unwrap();
    let mut status = 503;
    for _ in 0..100 {
        status = acquire(Uuid::new_v4()).await.unwrap().status().as_u16();
        if status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 201);
    for _ in 0..20 {
        assert_eq!(acquire(Uuid::new_v4()).await.unwrap().status(), 201);
        assert!(pg_lease(&direct, product).await >= redis_granted(&redis, product).await);
    }
    assert_eq!(redis_granted(&redis, product).await, 25);
}

/// A burst that outruns the lease (one grant per extension here) is still decided, every
/// request: a used-up lease is extended by the request that finds it so, twice as far each
/// round, never answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_outruns_the_lease_is_granted_without_a_503() {
    let t = flashgate_e2e::DrivenOrigin::start_with(|s| s.grant_lease = 1).await.unwrap();
    let product = t.origin.create_product(&t.id, 100).await.unwrap();
    let answers =
        futures::future::join_all((0..60).map(|_| t.acquire(Uuid::new_v4(), product))).await;
    for answer in answers {
        assert_eq!(answer.unwrap().status(), 201);
    }
    assert_eq!(redis_granted(&t.redis, product).await, 60);
    assert!(pg_lease(&t.origin.state.db, product).await >= 60);
}
