//! Several origins on one Redis and one PostgreSQL (issue #18): their workers divide the
//! work partitions by lease, so each event is relayed once and each slot expired once, and
//! an origin killed with `kill -9` has its share taken over within a lease period.

use flashgate_cli::check::check;
use flashgate_e2e::cluster::OriginProcess;
use flashgate_e2e::{Identity, RedisServer, TestDatabase, TestOrigin, edge_headers};
use flashgate_origin::clock::SystemClock;
use flashgate_origin::store::keys::{PARTITIONS, PartitionKeys};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Each partition's owner (`None`: free).
async fn owners(redis: &RedisServer) -> Vec<Option<String>> {
    let mut conn = redis.connection().await.unwrap();
    let mut owners = Vec::new();
    for p in 0..PARTITIONS {
        let owner: Option<String> = redis::cmd("GET")
            .arg(PartitionKeys::new(p).owner())
            .query_async(&mut conn)
            .await
            .unwrap();
        owners.push(owner);
    }
    owners
}

/// Waits until every partition has an owner and `origins` origins hold equal shares;
/// returns the owners' ids.
async fn shared_by(redis: &RedisServer, origins: usize, limit: Duration) -> HashSet<String> {
    let deadline = Instant::now() + limit;
    loop {
        let owners = owners(redis).await;
        let mut shares: HashMap<&str, usize> = HashMap::new();
        for owner in owners.iter().flatten() {
            *shares.entry(owner).or_default() += 1;
        }
        let even = usize::from(PARTITIONS) / origins;
        if owners.iter().all(Option::is_some)
            && shares.len() == origins
            && shares.values().all(|&n| n == even)
        {
            return shares.keys().map(|s| (*s).to_owned()).collect();
        }
        assert!(Instant::now() < deadline, "partitions not shared by {origins}: {owners:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What origin processes share: Redis, PostgreSQL, the identity provider, and the simulated
/// processor's own Redis.
struct Services {
    redis: RedisServer,
    db: TestDatabase,
    id: Identity,
    processor: RedisServer,
}

impl Services {
    async fn start() -> Self {
        Self {
            redis: RedisServer::start().unwrap(),
            db: TestDatabase::create().await.unwrap(),
            id: Identity::generate().unwrap(),
            processor: RedisServer::start().unwrap(),
        }
    }
}

/// `POST /slots/acquire` to any origin at `base`, signed as an edge would.
async fn acquire(base: &str, id: &Identity, user: Uuid, product: Uuid) -> reqwest::Response {
    let body = json!({ "productId": product }).to_string();
    let now = flashgate_e2e::now_us();
    let headers = edge_headers(&id.secret(), "POST", "/slots/acquire", user, now, body.as_bytes());
    let mut request = reqwest::Client::new()
        .post(format!("{base}/slots/acquire"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    request.send().await.unwrap()
}

async fn create_product(base: &str, id: &Identity, stock: i64) -> Uuid {
    let starts = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let body = json!({
        "name": "Limited sneaker",
        "price": {"amount": 12900, "currency": "EUR"},
        "stock": stock,
        "saleStartsAt": starts.format(&time::format_description::well_known::Rfc3339).unwrap(),
    });
    let r = reqwest::Client::new()
        .post(format!("{base}/products"))
        .bearer_auth(id.admin())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    Uuid::parse_str(body["productId"].as_str().unwrap()).unwrap()
}

async fn pg_count(db: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(db).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origins_divide_the_work_and_do_each_piece_once() {
    let redis = RedisServer::start().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    let configure = |s: &mut flashgate_origin::settings::Settings| {
        s.work_lease = Duration::from_millis(600);
        s.lifecycle.hold = Duration::from_secs(2);
        s.lifecycle.remind_before = Duration::from_secs(1);
        s.expiry_interval = Some(Duration::from_millis(100));
    };
    let clock = Arc::new(SystemClock);
    let a = TestOrigin::spawn_with(&redis, &db, &id, clock.clone(), configure).await.unwrap();
    let b = TestOrigin::spawn_with(&redis, &db, &id, clock, configure).await.unwrap();
    shared_by(&redis, 2, Duration::from_secs(10)).await;

    // 24 products over the partitions, two grants each, through both origins.
    let mut grants = 0;
    for i in 0..24 {
        let product = create_product(&a.url(""), &id, 3).await;
        for origin in [&a, &b] {
            let r = acquire(&origin.url(""), &id, Uuid::new_v4(), product).await;
            assert_eq!(r.status(), 201, "product {i}");
            grants += 1;
        }
    }
    // Every slot is reminded and expired once, by one origin or the other, both working.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (expired_a, expired_b) = loop {
        let expired_a = a.metric("flashgate_slots_expired_total").await.unwrap() as i64;
        let expired_b = b.metric("flashgate_slots_expired_total").await.unwrap() as i64;
        if expired_a + expired_b >= grants || Instant::now() > deadline {
            break (expired_a, expired_b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(expired_a + expired_b, grants, "each slot expired exactly once");
    assert!(expired_a > 0 && expired_b > 0, "both expired some: {expired_a} and {expired_b}");
    let reminded = a.metric("flashgate_slot_reminders_total").await.unwrap()
        + b.metric("flashgate_slot_reminders_total").await.unwrap();
    assert_eq!(reminded as i64, grants, "each reminder emitted exactly once");

    // Every event reaches PostgreSQL, relayed exactly once between the two relays.
    let events = grants * 3; // acquired, expiring soon, expired
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recorded = pg_count(&a.state.db, "SELECT count(*) FROM slot_audit_log").await;
        if recorded >= events || Instant::now() > deadline {
            assert_eq!(recorded, events);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let relayed_a = a.metric("flashgate_outbox_relayed_total").await.unwrap() as i64;
    let relayed_b = b.metric("flashgate_outbox_relayed_total").await.unwrap() as i64;
    assert_eq!(relayed_a + relayed_b, events, "no event relayed twice");
    assert!(relayed_a > 0 && relayed_b > 0, "both relayed: {relayed_a} and {relayed_b}");
    let report = check(&a.state.db, &a.state.inventory.connection(), Duration::ZERO).await.unwrap();
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.slots_in_postgres, grants as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_origins_share_is_taken_over_within_a_lease_and_nothing_is_lost() {
    let Services { redis, db, id, processor } = Services::start().await;
    let binary = env!("CARGO_BIN_EXE_origin");
    let args = [
        "--work-lease-ms",
        "1000",
        // Long enough that no slot is due before A is killed, however slowly a loaded
        // machine makes the 32 grants (with 4 s, A had expired some itself first).
        "--slot-hold-secs",
        "15",
        "--remind-before-secs",
        "1",
        "--expiry-interval-ms",
        "100",
        "--gateway-store-url",
        &processor.url,
    ];
    let mut a = OriginProcess::spawn(binary, &redis.url, &db, &id, &args).await.unwrap();
    let b = OriginProcess::spawn(binary, &redis.url, &db, &id, &args).await.unwrap();
    let both = shared_by(&redis, 2, Duration::from_secs(10)).await;

    let mut grants = 0;
    for _ in 0..16 {
        let product = create_product(&b.url(""), &id, 3).await;
        for origin in [&a, &b] {
            let r = acquire(&origin.url(""), &id, Uuid::new_v4(), product).await;
            assert_eq!(r.status(), 201);
            grants += 1;
        }
    }
    // A dies mid-work: its slots not yet due, its outbox entries perhaps read, not acked.
    a.kill();
    let killed = Instant::now();
    let survivors = shared_by(&redis, 1, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    assert!(survivors.is_subset(&both));
    // Within the lease (1 s) plus the survivor's next step (a third of a lease) on a quiet
    // machine (the figure printed below; scripts/faults.sh measures it too). The bound only
    // says it happened by lease expiry, not by a restart: a loaded machine delays the step.
    assert!(took < Duration::from_secs(8), "taken over after {took:?}");
    eprintln!("B took A's partitions over {took:?} after kill -9");

    // B reminds, expires and relays A's share too: nothing lost, nothing done twice.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let events = grants * 3;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let recorded = pg_count(&pool, "SELECT count(*) FROM slot_audit_log").await;
        let expired =
            pg_count(&pool, "SELECT count(*) FROM purchase_slots WHERE status = 'EXPIRED'").await;
        if (recorded >= events && expired >= grants) || Instant::now() > deadline {
            assert_eq!((recorded, expired), (events, grants));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = reqwest::get(b.url("/metrics")).await.unwrap().text().await.unwrap();
    let expired_by_b: f64 = metrics
        .lines()
        .find(|l| l.starts_with("flashgate_slots_expired_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(expired_by_b as i64, grants, "B expired every slot, A's share too, once each");
    let conn = flashgate_origin::store::redis::Redis::connect(
        &flashgate_origin::store::redis::RedisTarget::Single(redis.url.clone()),
        Duration::from_secs(2),
    )
    .unwrap();
    let report = check(&pool, &conn, Duration::ZERO).await.unwrap();
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!((report.slots_in_postgres, report.undelivered), (grants as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_restarted_under_its_instance_id_takes_its_work_back_at_once() {
    let Services { redis, db, id, processor } = Services::start().await;
    let binary = env!("CARGO_BIN_EXE_origin");
    // A lease far longer than the test: a restarted origin under a new id would wait it out
    // before relaying anything.
    let args = [
        "--instance-id",
        "origin-a",
        "--work-lease-ms",
        "60000",
        "--gateway-store-url",
        &processor.url,
    ];
    let mut a = OriginProcess::spawn(binary, &redis.url, &db, &id, &args).await.unwrap();
    let owner = shared_by(&redis, 1, Duration::from_secs(10)).await;
    assert_eq!(owner, HashSet::from(["origin-a".to_owned()]));
    a.kill();
    let a = OriginProcess::spawn(binary, &redis.url, &db, &id, &args).await.unwrap();
    let restarted = Instant::now();
    let product = create_product(&a.url(""), &id, 3).await;
    assert_eq!(acquire(&a.url(""), &id, Uuid::new_v4(), product).await.status(), 201);
    // Its relay works its partitions at once: the grant is in PostgreSQL within seconds.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    while pg_count(&pool, "SELECT count(*) FROM purchase_slots").await < 1 {
        let waited = restarted.elapsed();
        assert!(waited < Duration::from_secs(15), "not relayed after {waited:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("relayed {:?} after the restart (lease 60 s)", restarted.elapsed());
}
