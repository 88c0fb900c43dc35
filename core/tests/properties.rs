//! Property tests of every parser in `core/` that reads untrusted input (issue #30): the
//! buyer's ids and acquisition bodies, bearer tokens and JWKS documents, the edge signature
//! and queue passes. Arbitrary and mutated inputs never panic and are refused with an
//! error; what flashgate writes, it reads back (signatures, passes, cached verdicts), and a
//! change to any byte of a signed value is refused.

use flashgate_core::queue::{PassError, sign_pass, verify_pass};
use flashgate_core::routes::{acquired_product, classify, parse_id, queued_product};
use flashgate_core::signing::{EdgeSecret, EdgeStamp, SignatureError, sign, verify};
use flashgate_core::token::{KeySet, Role, TokenPolicy, TokenVerifier, VerifiedToken};
use proptest::prelude::*;
use std::time::Duration;

fn secret() -> EdgeSecret {
    EdgeSecret::from_bytes(vec![7; 32]).unwrap()
}

const PRODUCT: &str = "0192f3a4-5b6c-7d8e-9f00-112233445566";
const USER: &str = "0192f3a4-5b6c-7d8e-9f00-aabbccddeeff";

/// Text that looks like what the parsers expect about as often as not.
fn near_id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F-]{30,40}",
        Just(PRODUCT.to_owned()),
        "\\{?(urn:uuid:)?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\\}?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn an_id_is_accepted_only_in_its_one_spelling(raw in near_id()) {
        if let Some(id) = parse_id(&raw) {
            prop_assert_eq!(raw.len(), 36);
            prop_assert_eq!(id.to_string(), raw.to_ascii_lowercase());
        }
        let path = format!("/queue/{raw}");
        prop_assert_eq!(queued_product(&path).is_some(), parse_id(&raw).is_some());
    }

    #[test]
    fn any_body_is_judged_without_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = acquired_product(&body);
    }

    #[test]
    fn an_acquisition_body_names_its_product_only_in_the_one_spelling(id in near_id()) {
        let body = serde_json::to_vec(&serde_json::json!({ "productId": id })).unwrap();
        prop_assert_eq!(acquired_product(&body).is_some(), parse_id(&id).is_some());
    }

    #[test]
    fn any_method_and_path_is_classified_without_a_panic(method in "[A-Z]{0,8}", path in any::<String>()) {
        let _ = classify(&method, &path);
    }

    #[test]
    fn a_signature_verifies_and_any_change_is_refused(
        method in "(GET|POST)",
        path in "/[a-z/?=&0-9-]{0,40}",
        arrival in any::<u64>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
    ) {
        let stamp = EdgeStamp { user_id: USER, arrival_us: arrival, traceparent: "", edge_id: "e1", idempotency_key: "" };
        let signature = sign(&secret(), &method, &path, &stamp, &body);
        prop_assert_eq!(verify(&secret(), &method, &path, &stamp, &body, &signature), Ok(()));
        // Another body, another arrival, another buyer: refused.
        let mut other = body.clone();
        other.push(b'x');
        prop_assert_eq!(verify(&secret(), &method, &path, &stamp, &other, &signature), Err(SignatureError::Mismatch));
        let later = EdgeStamp { arrival_us: arrival.wrapping_add(1), ..stamp };
        prop_assert_eq!(verify(&secret(), &method, &path, &later, &body, &signature), Err(SignatureError::Mismatch));
        // A changed character of the signature itself: refused, malformed or mismatched.
        let mut bytes = signature.into_bytes();
        let i = flip.index(bytes.len());
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(verify(&secret(), &method, &path, &stamp, &body, &mutated).is_err());
    }

    #[test]
    fn any_signature_header_is_refused_without_a_panic(header in any::<String>()) {
        let stamp = EdgeStamp { user_id: USER, arrival_us: 1, traceparent: "", edge_id: "e1", idempotency_key: "" };
        let refused = verify(&secret(), "POST", "/slots/acquire", &stamp, b"[]", &header);
        prop_assert!(refused.is_err());
    }

    #[test]
    fn a_pass_reads_back_and_any_change_is_refused(
        expires in 1u64..u64::MAX,
        flip in any::<prop::sample::Index>(),
        to in any::<char>(),
    ) {
        let pass = sign_pass(&secret(), PRODUCT, USER, expires);
        prop_assert_eq!(verify_pass(&secret(), &pass, PRODUCT, USER, expires - 1), Ok(expires));
        prop_assert_eq!(verify_pass(&secret(), &pass, PRODUCT, USER, expires), Err(PassError::Expired));
        let mut chars: Vec<char> = pass.chars().collect();
        let i = flip.index(chars.len());
        prop_assume!(chars[i] != to);
        chars[i] = to;
        let mutated: String = chars.into_iter().collect();
        // The only change a pass survives is the case of its ids (the edge compares them
        // without case); anything else is malformed, forged or foreign.
        let survived = verify_pass(&secret(), &mutated, PRODUCT, USER, 0);
        prop_assert!(survived.is_err() || mutated.eq_ignore_ascii_case(&pass), "{mutated} passed");
    }

    #[test]
    fn any_pass_text_is_refused_without_a_panic(pass in any::<String>()) {
        prop_assert!(verify_pass(&secret(), &pass, PRODUCT, USER, 0).is_err());
    }

    #[test]
    fn any_jwks_document_is_read_or_refused_without_a_panic(json in any::<String>()) {
        let _ = KeySet::from_jwks_json(&json);
    }

    #[test]
    fn any_jwk_shape_is_read_or_refused_without_a_panic(
        kty in "(OKP|EC|RSA|oct|[A-Z]{0,4})",
        crv in "(Ed25519|P-256|[a-z0-9-]{0,8})",
        x in "[A-Za-z0-9_-]{0,64}",
        y in "[A-Za-z0-9_-]{0,64}",
        kid in any::<String>(),
    ) {
        let json = serde_json::json!({"keys": [{"kty": kty, "crv": crv, "x": x, "y": y, "kid": kid}]});
        let _ = KeySet::from_jwks_json(&json.to_string());
    }

    #[test]
    fn any_bearer_token_is_refused_without_a_panic(token in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,90}",
        "eyJ[A-Za-z0-9_-]{0,40}\\.eyJ[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,90}",
    ]) {
        prop_assert!(verifier().verify(&token, 1_800_000_000).is_err());
        let _ = TokenVerifier::bearer(Some(&token));
    }

    #[test]
    fn a_cached_verdict_reads_back_and_nothing_else_does(exp in any::<u64>(), text in any::<String>()) {
        let verdict = VerifiedToken { user_id: uuid::Uuid::parse_str(USER).unwrap(), role: Role::Admin, expires_at: exp };
        prop_assert_eq!(VerifiedToken::decode(&verdict.encode()), Some(verdict));
        if let Some(read) = VerifiedToken::decode(&text) {
            prop_assert_eq!(read.encode(), text);
        }
    }
}

fn verifier() -> TokenVerifier {
    let keys = KeySet::from_jwks_json(
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .unwrap();
    let policy = TokenPolicy {
        issuer: "https://issuer.example".into(),
        audience: "flashgate".into(),
        leeway: Duration::from_secs(30),
    };
    TokenVerifier::new(keys, policy)
}
