//! The limits every modelbus HTTP server applies (`ops::serve` with
//! `http.*`), against a real server on a loopback port: a client that sends
//! nothing, or stops half-way through its headers or its body, is cut off; at
//! most `max_connections` are served at once; every response says `nosniff`
//! and every page carries the Content-Security-Policy.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use modelbus_core::config::HttpConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Server {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: HttpConfig) -> Self {
        let router = Router::new()
            .route("/page", get(|| async { axum::response::Html("<p>hi</p>") }))
            .route(
                "/json",
                get(|| async { axum::Json(serde_json::json!({"a": 1})) }),
            )
            .route(
                "/upload",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task =
            tokio::spawn(
                async move { modelbus_core::ops::serve(listener, router, s, &limits).await },
            );
        Self { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the server drains within its grace time")
            .unwrap()
            .unwrap();
    }
}

fn limits(header: u64, body: u64, connections: usize) -> HttpConfig {
    HttpConfig {
        header_read_timeout: Duration::from_millis(header),
        body_idle_timeout: Duration::from_millis(body),
        max_connections: connections,
    }
}

/// Reads until the peer closes (or `within` passes); returns what arrived and
/// whether the peer closed.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

async fn get_ok(addr: std::net::SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (text, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(closed, "{text}");
    text
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_half_its_headers_is_cut_off() {
    let server = Server::start(limits(300, 5_000, 16)).await;
    // Nothing at all.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection stays open");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Half a request line, then silence (slow loris).
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed, "a half-sent header keeps the connection");
    // A keep-alive connection that goes quiet after a request is closed too.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "an idle keep-alive connection stays open");
    // A prompt client is served.
    assert!(
        get_ok(server.addr, "/json")
            .await
            .starts_with("HTTP/1.1 200")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_dropped() {
    let server = Server::start(limits(5_000, 300, 16)).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\nfirst bytes",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (text, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(closed, "a stalled upload keeps its connection: {text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        !text.contains("200 OK"),
        "a stalled upload was taken as complete: {text}"
    );
    // A body that keeps arriving, however slowly overall, is accepted.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for chunk in [b"ab", b"cd", b"ef", b"gh"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.write_all(chunk).await.unwrap();
    }
    let (text, _) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with('8'),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn no_more_than_max_connections_are_served_at_once() {
    let server = Server::start(limits(1_500, 5_000, 2)).await;
    // Two idle connections take both slots...
    let _a = TcpStream::connect(server.addr).await.unwrap();
    let _b = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a third waits (the kernel accepts it; the server does not read it)...
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "a third connection was served beside two");
    // ...until the idle ones are cut off by the header timeout.
    let (text, _) = read_until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn every_response_says_nosniff_and_pages_carry_the_csp() {
    let server = Server::start(HttpConfig::default()).await;
    let page = get_ok(server.addr, "/page").await.to_ascii_lowercase();
    assert!(page.contains("x-content-type-options: nosniff"), "{page}");
    assert!(
        page.contains(&format!(
            "content-security-policy: {}",
            modelbus_core::ops::CSP.to_ascii_lowercase()
        )),
        "{page}"
    );
    assert!(page.contains("x-frame-options: deny"), "{page}");
    let json = get_ok(server.addr, "/json").await.to_ascii_lowercase();
    assert!(json.contains("x-content-type-options: nosniff"), "{json}");
    assert!(!json.contains("content-security-policy"), "{json}");
    let missing = get_ok(server.addr, "/nothing").await.to_ascii_lowercase();
    assert!(
        missing.contains("x-content-type-options: nosniff"),
        "{missing}"
    );
    server.stop().await;
}
