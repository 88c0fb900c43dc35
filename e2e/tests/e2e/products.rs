//! Operators manage products; every rule has its answer (409 or 422), and buyers read
//! products through the edge with a computed status and live `remaining`.

use flashgate_e2e::{Stack, problem};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

fn at(offset: time::Duration) -> String {
    (OffsetDateTime::now_utc() + offset).format(&Rfc3339).unwrap()
}

fn body(stock: i64, starts: &str) -> Value {
    json!({"name": "Drop", "price": {"amount": 5000, "currency": "EUR"}, "stock": stock,
           "saleStartsAt": starts})
}

async fn put(s: &Stack, id: Uuid, b: &Value) -> reqwest::Response {
    s.http
        .put(s.origin.url(&format!("/products/{id}")))
        .bearer_auth(s.id.admin())
        .json(b)
        .send()
        .await
        .unwrap()
}

async fn delete(s: &Stack, id: Uuid) -> reqwest::Response {
    s.http
        .delete(s.origin.url(&format!("/products/{id}")))
        .bearer_auth(s.id.admin())
        .send()
        .await
        .unwrap()
}

async fn read(s: &Stack, path: &str) -> reqwest::Response {
    s.http.get(s.edge.url(path)).bearer_auth(s.id.buyer(Uuid::new_v4())).send().await.unwrap()
}

/// A little more than the edge's availability re-check interval (250 ms in spin.toml).
const HINT_REFRESH: std::time::Duration = std::time::Duration::from_millis(300);

/// The status of a new buyer's acquisition once the edge has re-checked a refusing hint:
/// the request that finds the re-check due is answered from the hint (the re-check runs
/// after its answer), so buyers are refused with `refused` until the edge has learned,
/// within a second.
async fn acquire_after_re_check(s: &Stack, product: Uuid, refused: &str) -> u16 {
    tokio::time::sleep(HINT_REFRESH).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let r = s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap();
        if r.status() != 409 || std::time::Instant::now() > deadline {
            return r.status().as_u16();
        }
        problem(r, 409, refused).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stock_may_only_grow_and_growth_goes_on_sale() {
    let s = Stack::start().await.unwrap();
    let starts = at(-time::Duration::minutes(5));
    let product = s
        .origin
        .create_product_starting(&s.id, 1, OffsetDateTime::parse(&starts, &Rfc3339).unwrap())
        .await
        .unwrap();
    assert_eq!(s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap().status(), 201);
    problem(s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap(), 409, "sold-out").await;

    let shrink = problem(put(&s, product, &body(0, &starts)).await, 422, "validation").await;
    assert_eq!(shrink["field"], "stock");

    let grown = put(&s, product, &body(3, &starts)).await;
    assert_eq!(grown.status(), 200);
    let grown: Value = grown.json().await.unwrap();
    assert_eq!((grown["stock"].as_i64(), grown["remaining"].as_i64()), (Some(3), Some(2)));
    // The edge learned "sold out"; it re-checks that hint every 250 ms (spin.toml).
    assert_eq!(acquire_after_re_check(&s, product, "sold-out").await, 201);
    assert_eq!(s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap().status(), 201);
    let c = s.redis.counts(product).await.unwrap();
    c.assert_conserved();
    assert_eq!((c.total, c.remaining), (3, 0));
}

#[tokio::test]
async fn the_sale_start_is_locked_once_a_slot_exists() {
    let s = Stack::start().await.unwrap();
    let later = at(time::Duration::hours(2));
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    // Before any slot: the start may move, and Redis follows (the sale is now closed).
    assert_eq!(put(&s, product, &body(5, &later)).await.status(), 200);
    problem(s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap(), 409, "not-on-sale")
        .await;
    let earlier = at(-time::Duration::minutes(1));
    assert_eq!(put(&s, product, &body(5, &earlier)).await.status(), 200);
    assert_eq!(acquire_after_re_check(&s, product, "not-on-sale").await, 201);
    // After a slot: locked. The same start (an update of other fields) is still fine.
    let locked = problem(put(&s, product, &body(5, &later)).await, 409, "sale-start-locked").await;
    assert_eq!(locked["grantedSlots"], 1);
    let same = put(
        &s,
        product,
        &json!({"name": "Renamed", "price": {"amount": 6000, "currency": "EUR"},
        "stock": 5, "saleStartsAt": earlier}),
    )
    .await;
    assert_eq!(same.status(), 200);
    assert_eq!(same.json::<Value>().await.unwrap()["name"], "Renamed");
    // A sale end in the past closes the sale.
    let mut ended = body(5, &earlier);
    ended["saleEndsAt"] = json!(at(-time::Duration::seconds(1)));
    assert_eq!(put(&s, product, &ended).await.status(), 200);
    problem(s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap(), 409, "sale-ended")
        .await;
}

#[tokio::test]
async fn delete_is_refused_while_slots_are_active() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 2).await.unwrap();
    assert_eq!(s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap().status(), 201);
    let refused = problem(delete(&s, product).await, 409, "has-active-slots").await;
    assert_eq!(refused["activeSlots"], 1);

    let unsold = s.origin.create_product(&s.id, 2).await.unwrap();
    assert_eq!(delete(&s, unsold).await.status(), 204);
    problem(delete(&s, unsold).await, 404, "not-found").await;
    problem(read(&s, &format!("/products/{unsold}")).await, 404, "not-found").await;
    problem(s.acquire(&s.id.buyer(Uuid::new_v4()), unsold).await.unwrap(), 404, "not-found").await;
    problem(put(&s, unsold, &body(3, &at(time::Duration::ZERO))).await, 404, "not-found").await;
    // Operator endpoints need an admin.
    let r = s
        .http
        .delete(s.origin.url(&format!("/products/{product}")))
        .bearer_auth(s.id.buyer(Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
}

#[tokio::test]
async fn buyers_list_and_read_products_with_status_through_the_edge() {
    let s = Stack::start().await.unwrap();
    let on_sale = s.origin.create_product(&s.id, 2).await.unwrap();
    let sold_out = s.origin.create_product(&s.id, 1).await.unwrap();
    let upcoming = s
        .origin
        .create_product_starting(&s.id, 1, OffsetDateTime::now_utc() + time::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(s.acquire(&s.id.buyer(Uuid::new_v4()), sold_out).await.unwrap().status(), 201);

    let one: Value = read(&s, &format!("/products/{on_sale}")).await.json().await.unwrap();
    assert_eq!((one["status"].as_str(), one["remaining"].as_i64()), (Some("ON_SALE"), Some(2)));
    assert_eq!(one["price"]["currency"], "EUR");

    let all: Value = read(&s, "/products").await.json().await.unwrap();
    assert_eq!(
        (all["total"].as_u64(), all["page"].as_u64(), all["size"].as_u64()),
        (Some(3), Some(1), Some(20))
    );
    for (status, id) in [("ON_SALE", on_sale), ("SOLD_OUT", sold_out), ("UPCOMING", upcoming)] {
        let page: Value =
            read(&s, &format!("/products?status={status}")).await.json().await.unwrap();
        assert_eq!(page["total"], 1, "{status}: {page}");
        assert_eq!(page["items"][0]["productId"], id.to_string(), "{status}");
        assert_eq!(page["items"][0]["status"], status);
    }
    let ended = read(&s, "/products?status=ENDED").await;
    assert_eq!(ended.status(), 200);
    let ended: Value = ended.json().await.unwrap();
    assert_eq!(ended["total"], 0);

    let p1: Value = read(&s, "/products?size=2&page=1").await.json().await.unwrap();
    let p2: Value = read(&s, "/products?size=2&page=2").await.json().await.unwrap();
    assert_eq!(
        (p1["items"].as_array().unwrap().len(), p2["items"].as_array().unwrap().len()),
        (2, 1)
    );
    assert_ne!(p1["items"][0]["productId"], p2["items"][0]["productId"]);

    for (query, field) in
        [("status=GONE", "status"), ("page=0", "page"), ("size=500", "size"), ("size=x", "size")]
    {
        let body = problem(read(&s, &format!("/products?{query}")).await, 422, "validation").await;
        assert_eq!(body["field"], field, "{query}");
    }
    problem(read(&s, "/products/not-a-uuid").await, 404, "not-found").await;
}
