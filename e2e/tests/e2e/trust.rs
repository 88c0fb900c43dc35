//! Who gets in: the edge refuses bad tokens without bothering the origin, and the origin
//! refuses anything the edge did not sign.

use flashgate_cli::TokenSpec;
use flashgate_e2e::{Stack, TestEdge, edge_headers, now_us, problem, repo_root};
use jwt_simple::prelude::*;
use std::time::Duration as StdDuration;
use uuid::Uuid;

fn b64(bytes: &[u8]) -> String {
    use jwt_simple::reexports::ct_codecs::{Base64UrlSafeNoPadding, Encoder};
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

#[derive(Serialize, Deserialize)]
struct Role {
    role: String,
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_edge_and_never_reach_the_origin() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    let user = Uuid::new_v4();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let pair = stack.id.key_pair();
    let claims = |exp: u64| {
        let mut c =
            Claims::with_custom_claims(Role { role: "buyer".into() }, Duration::from_secs(60))
                .with_subject(user)
                .with_issuer(flashgate_cli::DEV_ISSUER)
                .with_audience(flashgate_cli::DEV_AUDIENCE);
        c.expires_at = Some(Duration::from_secs(exp));
        c
    };
    let expired = pair.sign(claims(now - 300)).unwrap();
    let mut future = claims(now + 3600);
    future.invalid_before = Some(Duration::from_secs(now + 600));
    let not_yet_valid = pair.sign(future).unwrap();
    let stranger = Ed25519KeyPair::generate().with_key_id(flashgate_cli::DEV_KID);
    let wrong_key = stranger.sign(claims(now + 600)).unwrap();
    let mut spec = TokenSpec::buyer(user);
    spec.audience = "someone-else".into();
    let wrong_audience = stack.id.token(&spec);
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(format!(
            r#"{{"sub":"{user}","exp":{},"iss":"flashgate-dev","aud":"flashgate"}}"#,
            now + 600
        )
        .as_bytes())
    );
    let mut spec = TokenSpec::buyer(user);
    spec.valid_for = StdDuration::from_secs(600);
    let good = stack.id.token(&spec);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = b64(format!(
            r#"{{"sub":"{}","exp":{},"iss":"flashgate-dev","aud":"flashgate"}}"#,
            Uuid::new_v4(),
            now + 600
        )
        .as_bytes());
        parts.join(".")
    };

    let before = stack.origin.request_count().await.unwrap();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("expired", Some(format!("Bearer {expired}")), "expired"),
        ("not yet valid", Some(format!("Bearer {not_yet_valid}")), "not valid yet"),
        ("wrong key", Some(format!("Bearer {wrong_key}")), "signature"),
        ("alg none", Some(format!("Bearer {alg_none}")), "algorithm"),
        ("wrong audience", Some(format!("Bearer {wrong_audience}")), "audience"),
        ("tampered claims", Some(format!("Bearer {tampered}")), "signature"),
        ("malformed", Some("Bearer abc.def.ghi".into()), "well-formed"),
        ("garbage", Some("Bearer !!!".into()), "well-formed"),
        ("not bearer", Some(format!("Basic {good}")), "Bearer"),
        ("missing", None, "Bearer"),
    ];
    for (name, authorization, says) in cases {
        let mut request = stack
            .http
            .post(stack.edge.url("/slots/acquire"))
            .json(&serde_json::json!({ "productId": product }));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let response = request.send().await.unwrap();
        assert!(response.headers().contains_key("www-authenticate"), "{name}");
        let body = problem(response, 401, "unauthorized").await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{name}: `{detail}` should mention `{says}`");
    }
    assert_eq!(stack.origin.request_count().await.unwrap(), before, "the origin saw none of them");

    // The control: the good token passes.
    assert_eq!(stack.acquire(&good, product).await.unwrap().status(), 201);
    assert_eq!(stack.origin.request_count().await.unwrap(), before + 1);
}

#[tokio::test]
async fn the_origin_refuses_what_the_edge_did_not_sign() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    let url = stack.origin.url("/slots/acquire");
    let body = format!(r#"{{"productId":"{product}"}}"#);
    let user = Uuid::new_v4();
    let send = |headers: Vec<(&'static str, String)>, body: String| {
        let mut request =
            stack.http.post(&url).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request.send()
    };

    // Unsigned: even a valid buyer JWT is not enough at the origin.
    let unsigned = stack
        .http
        .post(&url)
        .bearer_auth(stack.id.buyer(user))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    problem(unsigned, 401, "unauthorized").await;

    let secret = stack.id.secret();
    let signed = edge_headers(&secret, "POST", "/slots/acquire", user, now_us(), body.as_bytes());
    let tampered_body = body.replace(&product.to_string(), &Uuid::new_v4().to_string());
    let r = send(signed.clone(), tampered_body).await.unwrap();
    let p = problem(r, 401, "unauthorized").await;
    assert!(p["detail"].as_str().unwrap().contains("does not match"), "{p}");

    let other_user: Vec<_> = signed
        .iter()
        .map(|(k, v)| {
            (*k, if *k == "x-flashgate-user" { Uuid::new_v4().to_string() } else { v.clone() })
        })
        .collect();
    problem(send(other_user, body.clone()).await.unwrap(), 401, "unauthorized").await;

    let stale_at = now_us() - 60_000_000;
    let stale = edge_headers(&secret, "POST", "/slots/acquire", user, stale_at, body.as_bytes());
    let p = problem(send(stale, body.clone()).await.unwrap(), 401, "unauthorized").await;
    assert!(p["detail"].as_str().unwrap().contains("away from the origin's clock"), "{p}");

    let wrong_secret = flashgate_core::signing::EdgeSecret::from_hex(&"11".repeat(32)).unwrap();
    let forged =
        edge_headers(&wrong_secret, "POST", "/slots/acquire", user, now_us(), body.as_bytes());
    problem(send(forged, body.clone()).await.unwrap(), 401, "unauthorized").await;

    // The control: a correct signature is accepted.
    let ok = edge_headers(&secret, "POST", "/slots/acquire", user, now_us(), body.as_bytes());
    assert_eq!(send(ok, body).await.unwrap().status(), 201);
}

/// Review finding 3: one signed request sent three times within its freshness window was
/// accepted three times. A signed write is decided once now: an acquisition in
/// `acquire.lua` (with its decision), a payment or a line's join before its handler; what
/// was sent again is a 409 `replayed` and changes nothing. A new signature for the same
/// buyer (as the edge makes for each forward) is decided as usual.
#[tokio::test]
async fn a_signed_write_sent_again_within_its_window_is_refused_as_a_replay() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let secret = s.id.secret();
    let user = Uuid::new_v4();
    let send = |path: &str, headers: &[(&'static str, String)], body: &str| {
        let mut request = s
            .http
            .post(s.origin.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        request.send()
    };

    let body = format!(r#"{{"productId":"{product}"}}"#);
    let signed = edge_headers(&secret, "POST", "/slots/acquire", user, now_us(), body.as_bytes());
    let slot =
        flashgate_e2e::json_of(send("/slots/acquire", &signed, &body).await.unwrap(), 201).await;
    for _ in 0..2 {
        let again = send("/slots/acquire", &signed, &body).await.unwrap();
        problem(again, 409, "replayed").await;
    }
    // Signed anew, the same buyer's attempt is decided: they hold their slot.
    let fresh = edge_headers(&secret, "POST", "/slots/acquire", user, now_us(), body.as_bytes());
    problem(send("/slots/acquire", &fresh, &body).await.unwrap(), 409, "already-holding").await;
    // A replayed acquisition took nothing: 4 of 5 left.
    let other = Uuid::new_v4();
    let theirs = edge_headers(&secret, "POST", "/slots/acquire", other, now_us(), body.as_bytes());
    let r = send("/slots/acquire", &theirs, &body).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-flashgate-remaining"], "3");

    // A payment: the same signed request again is refused before the handler runs.
    let pay = format!(r#"{{"slotId":{},"method":"card"}}"#, slot["slotId"]);
    let key = "replay-test-key";
    // Signed now, as the edge signs each forward, with the key as the request's own header.
    let signed_payment = || {
        let mut h = flashgate_e2e::edge_headers_keyed(
            &secret,
            "POST",
            "/payments",
            user,
            now_us(),
            pay.as_bytes(),
            key,
        );
        h.push(("idempotency-key", key.to_owned()));
        h
    };
    let signed = signed_payment();
    let r = send("/payments", &signed, &pay).await.unwrap();
    assert_eq!(r.status(), 202);
    problem(send("/payments", &signed, &pay).await.unwrap(), 409, "replayed").await;
    // The buyer's own retry (a new forward, the same key) gets the idempotent answer.
    let r = send("/payments", &signed_payment(), &pay).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn admin_endpoints_need_an_admin_token_and_valid_fields() {
    let stack = Stack::start().await.unwrap();
    let url = stack.origin.url("/products");
    let valid = serde_json::json!({"name": "x", "price": {"amount": 100, "currency": "EUR"},
        "stock": 2, "saleStartsAt": "2026-01-01T00:00:00Z"});
    let r = stack.http.post(&url).json(&valid).send().await.unwrap();
    problem(r, 401, "unauthorized").await;
    let r = stack
        .http
        .post(&url)
        .bearer_auth(stack.id.buyer(Uuid::new_v4()))
        .json(&valid)
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
    let mut bad = valid.clone();
    bad["stock"] = serde_json::json!(0);
    let r = stack.http.post(&url).bearer_auth(stack.id.admin()).json(&bad).send().await.unwrap();
    assert_eq!(problem(r, 422, "validation").await["field"], "stock");
    let r = stack.http.post(&url).bearer_auth(stack.id.admin()).body("{").send().await.unwrap();
    assert_eq!(problem(r, 422, "validation").await["field"], "body");
    let r = stack.http.post(&url).bearer_auth(stack.id.admin()).json(&valid).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn the_host_only_lets_the_component_call_allowed_hosts() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    // The same manifest, but the origin is not in allowed_outbound_hosts.
    let manifest = std::fs::read_to_string(repo_root().join("spin.toml"))
        .unwrap()
        .replace(
            r#"allowed_outbound_hosts = ["{{ origin_scheme }}://{{ origin_host }}", "{{ jwks_origin }}"]"#,
            r#"allowed_outbound_hosts = ["http://127.0.0.1:1"]"#,
        )
        .replace("source = \"edge/", &format!("source = \"{}/edge/", repo_root().display()));
    assert!(manifest.contains(r#"["http://127.0.0.1:1"]"#), "the manifest's rule was replaced");
    let dir = std::env::temp_dir().join(format!("fg-manifest-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    let edge = TestEdge::spawn_manifest(path, stack.origin.addr, &stack.id).await.unwrap();
    let before = stack.origin.request_count().await.unwrap();
    let r = stack
        .http
        .post(edge.url("/slots/acquire"))
        .bearer_auth(stack.id.buyer(Uuid::new_v4()))
        .json(&serde_json::json!({ "productId": product }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    problem(r, 503, "unavailable").await;
    assert_eq!(stack.origin.request_count().await.unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn health_reports_each_dependency() {
    let stack = Stack::start().await.unwrap();
    let ok: serde_json::Value =
        reqwest::get(stack.origin.url("/health")).await.unwrap().json().await.unwrap();
    assert_eq!(ok["components"]["redis"], "up");
    assert_eq!(ok["components"]["postgresql"], "up");
    drop(stack.redis);
    let r = reqwest::get(stack.origin.url("/health")).await.unwrap();
    let p = problem(r, 503, "unavailable").await;
    assert_eq!(p["components"]["redis"], "down");
    assert_eq!(p["components"]["postgresql"], "up");
}
