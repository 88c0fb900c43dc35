//! On a Redis Cluster (three masters, three replicas, six `redis-server` processes on
//! loopback): products spread over the shards and sell on each; a master killed mid-storm
//! is replaced by its replica and no buyer answered `201` loses the slot (issue #18).

use flashgate_e2e::cluster::RedisCluster;
use flashgate_e2e::{Identity, RedisServer, TestDatabase, TestOrigin, checked_when_drained};
use flashgate_origin::clock::SystemClock;
use flashgate_origin::store::commit::{GroupCommit, Witness};
use flashgate_origin::store::fairness::Fairness;
use flashgate_origin::store::keys::ProductKeys;
use flashgate_origin::store::redis::{RedisTarget, ReplicaAcks};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

struct OnCluster {
    cluster: RedisCluster,
    origin: TestOrigin,
    id: Identity,
    _db: TestDatabase,
    _processor: RedisServer,
}

async fn on_cluster() -> OnCluster {
    let cluster = RedisCluster::start(3).await.unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    // The simulated processor keeps its charges in a Redis of its own.
    let processor = RedisServer::start().unwrap();
    let nodes = cluster.nodes();
    let origin = TestOrigin::spawn_with(&processor, &db, &id, Arc::new(SystemClock), |s| {
        s.redis_cluster_nodes = nodes;
        s.fairness = Fairness::Fixed(Duration::ZERO);
        // Six Redis servers, the origin and the test share two cores: a replica's
        // acknowledgement can take longer here than the production default allows.
        s.redis_replica_ack_timeout = Duration::from_secs(2);
    })
    .await
    .unwrap();
    OnCluster { cluster, origin, id, _db: db, _processor: processor }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_spread_over_the_shards_and_sell_on_each() {
    let t = on_cluster().await;
    let mut masters = HashSet::new();
    let mut products = Vec::new();
    for _ in 0..12 {
        let product = t.origin.create_product(&t.id, 2).await.unwrap();
        masters.insert(t.cluster.master_of(&ProductKeys::new(product).product()).await.unwrap());
        products.push(product);
    }
    assert!(masters.len() >= 2, "12 products on {} master(s)", masters.len());
    let now = flashgate_e2e::now_us();
    for &product in &products {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let r = t.origin.acquire_signed(&t.id, Uuid::new_v4(), product, now).await.unwrap();
            let status = r.status().as_u16();
            if status == 503 {
                eprintln!("503: {}", r.text().await.unwrap());
            }
            statuses.push(status);
        }
        assert_eq!(statuses, [201, 201, 409], "product {product}");
    }
    // Every worker sweep and checker read works shard by shard: the relay delivers all 24
    // grants, and the checker finds every invariant holding over all three masters.
    let report = checked_when_drained(&t.origin.state, 24, Duration::from_secs(30)).await;
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!((report.products, report.slots_in_postgres, report.undelivered), (12, 24, 0));
    // The edges' availability re-check reads every partition's change log.
    let available: Value = t
        .origin
        .get_signed(&t.id, Uuid::new_v4(), "/internal/availability?since=1", now)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sold_out =
        available["products"].as_array().unwrap().iter().filter(|p| p["remaining"] == 0).count();
    assert_eq!(sold_out, 12, "{available}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_share_replica_waits_and_each_is_on_the_replica_when_answered() {
    let t = on_cluster().await;
    let stock = 40;
    let product = t.origin.create_product(&t.id, stock).await.unwrap();
    let keys = ProductKeys::new(product);
    let master = t.cluster.master_of(&keys.product()).await.unwrap();
    let replica = t.cluster.replica_of(master).await.unwrap();
    // Reads from the replica itself: a replica connection serves its master's slots only
    // after READONLY.
    let mut on_replica = redis::Client::open(t.cluster.url(replica))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("READONLY").query_async::<()>(&mut on_replica).await.unwrap();
    let waits_before = t.cluster.calls(master, "wait").await.unwrap();
    let commits_metric = "flashgate_replica_commit_duration_seconds_count";
    let acked_before = t.origin.metric_with(commits_metric, r#"outcome="acked""#).await.unwrap();
    let covered_before = t.origin.metric("flashgate_replica_commit_writes_sum").await.unwrap();
    let now = flashgate_e2e::now_us();
    let answers = futures::future::join_all((0..stock).map(|_| {
        let (t, keys, on_replica) = (&t, &keys, on_replica.clone());
        async move {
            let r = t.origin.acquire_signed(&t.id, Uuid::new_v4(), product, now).await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 201, "{body}");
            // Answered 201: the replica has the slot already, not a moment later.
            let slot = Uuid::parse_str(body["slotId"].as_str().unwrap()).unwrap();
            let on_replica: bool = redis::cmd("EXISTS")
                .arg(keys.slot(slot))
                .query_async(&mut on_replica.clone())
                .await
                .unwrap();
            (slot, on_replica)
        }
    }))
    .await;
    let missing: Vec<_> = answers.iter().filter(|(_, there)| !there).collect();
    assert!(missing.is_empty(), "answered 201 but not on the replica: {missing:?}");
    let distinct: HashSet<_> = answers.iter().map(|(slot, _)| slot).collect();
    assert_eq!(distinct.len(), stock as usize);
    // Grants that wait at once share a WAIT (the relay's reads take part too): one per
    // grant would be at least 40.
    let waits = t.cluster.calls(master, "wait").await.unwrap() - waits_before;
    eprintln!("{stock} concurrent grants, {waits} WAIT(s) on their master");
    assert!(waits > 0 && waits < stock as u64, "{waits} WAITs for {stock} grants");
    // The origin's metrics tell the same: commits acknowledged, fewer than the grants, which
    // they all covered; none short or failed.
    let acked = t.origin.metric_with(commits_metric, r#"outcome="acked""#).await.unwrap();
    let covered = t.origin.metric("flashgate_replica_commit_writes_sum").await.unwrap();
    let (acked, covered) = (acked - acked_before, covered - covered_before);
    assert!(acked >= 1.0 && acked < stock as f64, "{acked} commits acked");
    assert!(covered >= stock as f64, "the commits covered {covered} writes");
    for outcome in [r#"outcome="short""#, r#"outcome="failed""#] {
        assert_eq!(t.origin.metric_with(commits_metric, outcome).await.unwrap(), 0.0, "{outcome}");
    }

    // A commit is acknowledged only on a master that has what it covers: a replica promoted
    // before it had a grant (here, a slot never granted) or a relay's read is refused, so its
    // replicas' acknowledgement is never taken for the lost write's.
    let commits = GroupCommit::connect(
        &RedisTarget::Cluster(t.cluster.nodes()),
        Duration::from_secs(3),
        ReplicaAcks { replicas: 1, timeout: Duration::from_secs(2) },
    )
    .unwrap();
    let (granted, _) = answers[0];
    commits.replicated(product, Witness::Slot(granted)).await.unwrap();
    let lost = commits.replicated(product, Witness::Slot(Uuid::new_v4())).await.unwrap_err();
    assert!(lost.to_string().contains("lacks a write"), "{lost}");
    let never_read = commits.replicated(product, Witness::Entry("1-1".into())).await.unwrap_err();
    assert!(never_read.to_string().contains("lacks a write"), "{never_read}");
}

/// What one buyer was told, after retrying 503s.
#[derive(Debug, Clone)]
enum Told {
    Granted(Uuid),
    /// 409 already-holding: an earlier attempt was granted but answered 503 (its replica
    /// did not confirm in time) or lost; the retry learns the slot.
    Holding(Uuid),
    Refused(u16),
}

/// One buyer asking until answered; `answered` counts the 201s.
async fn buy(
    origin: Arc<TestOrigin>,
    id: Arc<Identity>,
    user: Uuid,
    product: Uuid,
    answered: Arc<AtomicI64>,
) -> Told {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let now = flashgate_e2e::now_us();
        if let Ok(r) = origin.acquire_signed(&id, user, product, now).await {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let slot = || Uuid::parse_str(body["slotId"].as_str().unwrap()).unwrap();
            match status {
                201 => {
                    answered.fetch_add(1, Ordering::Relaxed);
                    return Told::Granted(slot());
                }
                409 if body["type"].as_str().is_some_and(|t| t.ends_with("already-holding")) => {
                    return Told::Holding(slot());
                }
                503 | 500 => {}
                other => return Told::Refused(other),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("buyer {user} was never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_storm_fails_over_and_no_201_is_lost() {
    let OnCluster { mut cluster, origin, id, _db, _processor } = on_cluster().await;
    let stock = 60;
    let product = origin.create_product(&id, stock).await.unwrap();
    let product_key = ProductKeys::new(product).product();
    let master = cluster.master_of(&product_key).await.unwrap();
    let (origin, id) = (Arc::new(origin), Arc::new(id));
    let buyers: Vec<Uuid> = (0..stock * 3).map(|_| Uuid::new_v4()).collect();
    let answered = Arc::new(AtomicI64::new(0));
    let storm: Vec<_> = buyers
        .iter()
        .map(|&user| tokio::spawn(buy(origin.clone(), id.clone(), user, product, answered.clone())))
        .collect();

    // Kill the product's master once about a third is answered 201. (Grants run ahead of
    // their replica acknowledgements, which are shared: counted in Redis, a third could be
    // granted before the first reached the replica.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.load(Ordering::Relaxed) < stock / 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill(master);
    let killed_at = Instant::now();
    // Its replica is promoted (the other masters agree it failed) ...
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.master_of(&product_key).await.ok() == Some(master) {
        assert!(Instant::now() < deadline, "no replica took over the product's slots");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_healthy(Duration::from_secs(30)).await.unwrap();
    eprintln!("failover after {:?}", killed_at.elapsed());
    // ... and grants wait for a replica again once the old master is back as one.
    cluster.restart(master).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.is_replica(master).await {
        assert!(Instant::now() < deadline, "the old master did not rejoin as a replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_replicated(Duration::from_secs(30)).await.unwrap();

    let mut told = HashMap::new();
    for (user, answer) in buyers.iter().zip(storm) {
        told.insert(*user, answer.await.unwrap());
    }
    let granted: HashMap<Uuid, Uuid> = told
        .iter()
        .filter_map(|(u, t)| match t {
            Told::Granted(slot) | Told::Holding(slot) => Some((*u, *slot)),
            Told::Refused(_) => None,
        })
        .collect();
    let answered_201 = told.values().filter(|t| matches!(t, Told::Granted(_))).count();
    eprintln!("{answered_201} answered 201, {} holding after a 503", granted.len() - answered_201);
    for t in told.values() {
        if let Told::Refused(status) = t {
            assert_eq!(*status, 409, "the others are told sold out");
        }
    }
    let distinct: HashSet<&Uuid> = granted.values().collect();
    assert_eq!(distinct.len(), granted.len(), "no slot answered twice");
    assert_eq!(granted.len() as i64, stock, "every unit sold, once");

    // Every buyer answered 201 holds that very slot on the promoted master.
    let mut conn = cluster.connection().await.unwrap();
    for (user, t) in &told {
        let Told::Granted(slot) = t else { continue };
        let (owner, status): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(ProductKeys::new(product).slot(*slot))
            .arg("userId")
            .arg("status")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            (owner.as_deref(), status.as_deref()),
            (Some(user.to_string().as_str()), Some("ACTIVE")),
            "buyer {user} was answered 201 for slot {slot}"
        );
    }
    // Nothing oversold, nothing lost on the way to PostgreSQL.
    let report = checked_when_drained(&origin.state, stock as u64, Duration::from_secs(30)).await;
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!((report.undelivered, report.slots_in_postgres), (0, stock as u64));
}
