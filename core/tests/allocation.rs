//! Parsers of untrusted input allocate within a bound of their input (issue #30, item 4): a
//! megabyte of hostile token, pass, signature or body makes each parser allocate at most a
//! small multiple of it, never a size the input merely claims. Measured with a counting
//! global allocator, in its own test binary (one test, so nothing else allocates meanwhile).

use flashgate_core::queue::verify_pass;
use flashgate_core::routes::acquired_product;
use flashgate_core::signing::{EdgeSecret, EdgeStamp, verify};
use flashgate_core::token::{KeySet, TokenPolicy, TokenVerifier};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: a pointer this allocator gave out, with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// One parser run over its hostile input.
type Parse<'a> = Box<dyn Fn() + 'a>;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most `f` had allocated at once beyond what was live before it.
fn peak_of(f: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - before
}

#[test]
fn a_megabyte_of_hostile_input_costs_each_parser_a_few_megabytes_at_most() {
    const MIB: usize = 1 << 20;
    let bound = 4 * MIB;
    let secret = EdgeSecret::from_bytes(vec![7; 32]).unwrap();
    let keys = KeySet::from_jwks_json(
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .unwrap();
    let policy =
        TokenPolicy { issuer: "i".into(), audience: "a".into(), leeway: Duration::from_secs(30) };
    let verifier = TokenVerifier::new(keys, policy);
    // Inputs made before measuring: what arrives, already in memory.
    let dots = "a.".repeat(MIB / 2);
    let b64 = format!("{}.{}.{}", "e".repeat(MIB / 3), "e".repeat(MIB / 3), "e".repeat(MIB / 3));
    let nested = format!("{}{}", "[".repeat(MIB / 2), "]".repeat(MIB / 2));
    let wide = format!(r#"{{"productId":"{}"}}"#, "x".repeat(MIB));
    let pass = format!("v1.{}.u.1.tag", "p".repeat(MIB));
    let signature = format!("v1={}", "ab".repeat(MIB / 2));

    let stamp = EdgeStamp {
        user_id: "u",
        arrival_us: 1,
        traceparent: "t",
        edge_id: "e",
        idempotency_key: "",
    };
    let cases: [(&str, Parse<'_>); 7] = [
        ("token of dots", Box::new(|| assert!(verifier.verify(&dots, 0).is_err()))),
        ("token of base64", Box::new(|| assert!(verifier.verify(&b64, 0).is_err()))),
        ("nested JSON body", Box::new(|| assert!(acquired_product(nested.as_bytes()).is_none()))),
        ("wide JSON body", Box::new(|| assert!(acquired_product(wide.as_bytes()).is_none()))),
        ("queue pass", Box::new(|| assert!(verify_pass(&secret, &pass, "p", "u", 0).is_err()))),
        (
            "edge signature",
            Box::new(|| assert!(verify(&secret, "POST", "/", &stamp, b"{}", &signature).is_err())),
        ),
        ("JWKS document", Box::new(|| assert!(KeySet::from_jwks_json(&nested).is_err()))),
    ];
    // The control: the counter sees an allocation past the bound.
    assert!(peak_of(|| drop(std::hint::black_box(vec![1u8; 2 * bound]))) > bound);
    for (what, parse) in cases {
        let peak = peak_of(parse);
        assert!(peak <= bound, "{what}: {peak} bytes allocated for a 1 MiB input (bound {bound})");
    }
}
