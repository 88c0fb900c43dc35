//! The `flashgate-origin` binary as operators run it: it refuses a Redis that forgets what
//! it answered, and on SIGTERM it answers what is in flight, stops its workers and exits 0.

use flashgate_core::signing::{self, EdgeSecret, EdgeStamp};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// RFC 8037's example Ed25519 public key: the origin only needs a well-formed key set here.
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A private redis-server (killed and removed on drop).
struct Redis {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Redis {
    fn start(durable: bool) -> Self {
        let base =
            if Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
        let dir = base.join(format!("fg-proc-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let persistence: &[&str] = if durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", ""])
            .args(persistence)
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        for _ in 0..500 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, dir, url: format!("redis+unix://{}", socket.display()) }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A database of this test's own, dropped with it.
struct Database {
    name: String,
    url: String,
}

fn pg_base() -> String {
    std::env::var("FLASHGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn admin(sql: String) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let url = format!("{}/postgres", pg_base());
            let mut c =
                sqlx::PgConnection::connect(&url).await.expect("PostgreSQL (scripts/setup.sh)");
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        });
    })
    .join()
    .unwrap();
}

impl Database {
    fn create() -> Self {
        let name = format!("fg_proc_{}", Uuid::new_v4().simple());
        admin(format!("CREATE DATABASE {name}"));
        Self { url: format!("{}/{name}", pg_base()), name }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        admin(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn origin(redis: &Redis, db: &Database, port: u16, extra: &[&str]) -> Command {
    let dir = std::env::temp_dir().join(format!("fg-proc-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, JWKS).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashgate-origin"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FLASHGATE_ORIGIN_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &db.url)
        .env("FLASHGATE_REDIS_URL", &redis.url)
        .env("FLASHGATE_EDGE_SECRET", SECRET)
        .env("FLASHGATE_JWT_JWKS_FILE", &jwks)
        .env("FLASHGATE_EXPIRY_INTERVAL_MS", "0")
        .env("FLASHGATE_RELAY_INTERVAL_MS", "0")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits up to 5 s for the origin at `base` to answer.
async fn listening(http: &reqwest::Client, base: &str) -> bool {
    for _ in 0..200 {
        if http.get(format!("{base}/metrics")).send().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn it_refuses_a_volatile_redis_and_names_the_way_out() {
    let redis = Redis::start(false);
    let db = Database::create();
    let output = origin(&redis, &db, free_port(), &[]).output().unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("--allow-volatile-redis") && said.contains("appendfsync"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_what_is_in_flight_then_exits_zero() {
    let redis = Redis::start(true);
    let db = Database::create();
    let port = free_port();
    // A 1.5 s fairness window keeps an acquisition in flight long enough to signal under it.
    let mut child = origin(&redis, &db, port, &["--fairness-window-ms", "1500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    assert!(listening(&http, &base).await, "the origin did not listen");

    let user = Uuid::new_v4().to_string();
    let body = format!(r#"{{"productId":"{}"}}"#, Uuid::new_v4());
    let arrival_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as u64;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let stamp =
        EdgeStamp { user_id: &user, arrival_us, traceparent, edge_id: "e", idempotency_key: "" };
    let secret = EdgeSecret::from_hex(SECRET).unwrap();
    let signed =
        signing::signed_headers(&secret, "POST", "/slots/acquire", &stamp, body.as_bytes());
    let in_flight = signed
        .into_iter()
        .fold(http.post(format!("{base}/slots/acquire")), |r, (name, value)| r.header(name, value))
        .header("content-type", "application/json")
        .body(body)
        .send();
    let in_flight = tokio::spawn(in_flight);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());

    let answer = in_flight.await.unwrap().expect("the request in flight is answered");
    // Decided after the window (an unknown product here): answered, not dropped.
    assert_eq!(answer.status(), 404);
    let status = tokio::task::block_in_place(|| wait_for(&mut child, Duration::from_secs(15)))
        .expect("the origin exits within its drain limit");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(12), "took {:?}", signalled.elapsed());
    // Nothing listens any more.
    assert!(http.get(format!("{base}/metrics")).send().await.is_err());
}

/// An OTLP/HTTP collector on loopback: it answers every request 200 and keeps what it got.
fn collector() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            // Headers, then as many body bytes as content-length says.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            kept.lock().unwrap().push(request);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_the_otlp_endpoint_the_standard_variables_name() {
    let redis = Redis::start(true);
    let db = Database::create();
    let port = free_port();
    let (collector_port, received) = collector();
    let mut child = origin(&redis, &db, port, &[])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{collector_port}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    assert!(listening(&http, &base).await, "the origin did not listen");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    http.get(format!("{base}/health"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("the origin answers");
    // SIGTERM: the origin flushes what it has not exported yet, then exits 0.
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::block_in_place(|| wait_for(&mut child, Duration::from_secs(15)))
        .expect("the origin exits");
    assert!(status.success(), "exit status {status:?}");
    let requests = received.lock().unwrap().clone();
    let trace_bytes = hex::decode(trace_id).unwrap();
    let exported = requests.iter().any(|r| {
        let head = String::from_utf8_lossy(r).to_ascii_lowercase();
        head.starts_with("post /v1/traces")
            && head.contains("application/x-protobuf")
            && r.windows(trace_bytes.len()).any(|w| w == trace_bytes.as_slice())
    });
    assert!(
        exported,
        "no span of trace {trace_id} reached the collector ({} requests)",
        requests.len()
    );
}
