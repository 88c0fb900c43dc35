//! `GET /admin/audit-logs`: the audit trail the persister writes, read by an operator with
//! filters and cursor paging, against a live origin (its relay and persister running).

use flashgate_e2e::{Stack, problem};
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

async fn audit(s: &Stack, query: &str) -> reqwest::Response {
    s.http
        .get(s.origin.url(&format!("/admin/audit-logs{query}")))
        .bearer_auth(s.id.admin())
        .send()
        .await
        .unwrap()
}

async fn items(s: &Stack, query: &str) -> (Vec<Value>, Option<String>) {
    let r = audit(s, query).await;
    assert_eq!(r.status(), 200, "{query}");
    let body: Value = r.json().await.unwrap();
    let next = body["nextCursor"].as_str().map(str::to_owned);
    (body["items"].as_array().unwrap().clone(), next)
}

#[tokio::test]
async fn operators_read_the_trail_by_product_buyer_action_and_time_page_by_page() {
    let s = Stack::start().await.unwrap();
    let (a, b) = (
        s.origin.create_product(&s.id, 5).await.unwrap(),
        s.origin.create_product(&s.id, 5).await.unwrap(),
    );
    let buyers: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for buyer in &buyers {
        assert_eq!(s.acquire(&s.id.buyer(*buyer), a).await.unwrap().status(), 201);
    }
    assert_eq!(s.acquire(&s.id.buyer(buyers[0]), b).await.unwrap().status(), 201);
    // The relay delivers within its interval; wait until PostgreSQL has all four grants.
    let mut all = Vec::new();
    for _ in 0..100 {
        all = items(&s, "").await.0;
        if all.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|e| e["action"] == "slot-acquired" && e["traceId"].is_string()));

    let (of_a, _) = items(&s, &format!("?productId={a}")).await;
    assert_eq!(of_a.len(), 3);
    let (of_buyer, _) = items(&s, &format!("?buyerId={}", buyers[0])).await;
    assert_eq!(of_buyer.len(), 2);
    assert!(of_buyer.iter().all(|e| e["buyerId"] == buyers[0].to_string()));
    let (both, _) = items(&s, &format!("?productId={b}&buyerId={}", buyers[0])).await;
    assert_eq!(both.len(), 1);
    let (expired, _) = items(&s, "?action=slot-expired").await;
    assert!(expired.is_empty());
    let (future, _) = items(&s, "?from=2999-01-01T00:00:00Z").await;
    assert!(future.is_empty());
    let (past, _) = items(&s, "?to=2000-01-01T00:00:00Z").await;
    assert!(past.is_empty());

    // One entry per page, following the cursor: every entry once, oldest first.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            None => "?limit=1".to_owned(),
            Some(c) => format!("?limit=1&cursor={c}"),
        };
        let (page, next) = items(&s, &query).await;
        assert!(page.len() <= 1);
        paged.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let ids = |v: &[Value]| v.iter().map(|e| e["eventId"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&paged), ids(&all));
    let times: Vec<OffsetDateTime> = all
        .iter()
        .map(|e| OffsetDateTime::parse(e["occurredAt"].as_str().unwrap(), &Rfc3339).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[tokio::test]
async fn the_trail_is_for_admins_and_bad_filters_are_named() {
    let s = Stack::start().await.unwrap();
    let anonymous = s.http.get(s.origin.url("/admin/audit-logs")).send().await.unwrap();
    problem(anonymous, 401, "unauthorized").await;
    let buyer = s
        .http
        .get(s.origin.url("/admin/audit-logs"))
        .bearer_auth(s.id.buyer(Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    problem(buyer, 403, "forbidden").await;
    for (query, field) in [
        ("?productId=42", "productId"),
        ("?action=slot-stolen", "action"),
        ("?limit=100000", "limit"),
        ("?cursor=bogus", "cursor"),
        ("?from=yesterday", "from"),
        ("?order=desc", "order"),
    ] {
        let body = problem(audit(&s, query).await, 422, "validation").await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}
