//! Upstream connections of a shard (plain HTTP/1.1, driven in the request's
//! task): reused while they are good, never reused when they are not.
//! The upstream is a scripted raw HTTP/1.1 server on loopback that numbers
//! its connections and the requests on each.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Builder;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const POLICY: &str = r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
upstreams:
  raw: ${RAW}
routes:
  - name: raw
    match: { path: "/raw/**" }
    upstream: raw
    public: true
"#;

/// Answers by the request's path: `/raw/close-after` answers and closes
/// without saying so (as an upstream whose idle timeout fires), `/raw/
/// close-later` the same 200 ms later, `/raw/conn-close` answers with
/// `Connection: close`, `/raw/stall` sends half
/// a body and waits, `/raw/race` answers the first request of a connection
/// and closes under any later one without answering (an upstream whose
/// idle timeout fires as the request comes); anything else answers `conn C
/// req R`.
struct RawUpstream {
    url: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let conn = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, conn));
            }
        });
        Self {
            url,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, conn: usize) {
    let mut buf = Vec::new();
    for req in 0.. {
        let path = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                break head.split(' ').nth(1).unwrap_or("").to_string();
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body = format!("conn {conn} req {req}");
        let reply = |extra: &str| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n{body}",
                body.len()
            )
        };
        match path.as_str() {
            "/raw/close-after" => {
                let _ = stream.write_all(reply("").as_bytes()).await;
                return;
            }
            "/raw/close-later" => {
                let _ = stream.write_all(reply("").as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            "/raw/conn-close" => {
                let _ = stream
                    .write_all(reply("connection: close\r\n").as_bytes())
                    .await;
                return;
            }
            "/raw/race" if req > 0 => return,
            "/raw/stall" => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial";
                let _ = stream.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            _ => {
                if stream.write_all(reply("").as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn stack(raw: &RawUpstream) -> common::Stack {
    Builder::new()
        .policy(POLICY)
        .var("RAW", &raw.url)
        .start()
        .await
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let raw = RawUpstream::start().await;
    let s = stack(&raw).await;
    for i in 0..5 {
        let r = s.get("/raw/x", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, format!("conn 0 req {i}"));
    }
    assert_eq!(raw.accepted(), 1);
}

#[tokio::test]
async fn an_upstream_that_closed_an_idle_connection_costs_no_request() {
    let raw = RawUpstream::start().await;
    let s = stack(&raw).await;
    // Closed just now and a while ago: found dead at checkout (or refusing
    // the request before anything was sent), it is replaced by a new one.
    for (i, pause) in [20, 200].into_iter().enumerate() {
        let r = s.get("/raw/close-after", &[]).await;
        assert_eq!(r.body, format!("conn {i} req {i}"));
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let r = s.get("/raw/x", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body, format!("conn {} req 0", i + 1));
    }
    assert_eq!(raw.accepted(), 3);
}

#[tokio::test]
async fn connection_close_from_the_upstream_is_honoured() {
    let raw = RawUpstream::start().await;
    let s = stack(&raw).await;
    let r = s.get("/raw/conn-close", &[]).await;
    assert_eq!(r.body, "conn 0 req 0");
    let r = s.get("/raw/x", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "conn 1 req 0");
}

#[tokio::test]
async fn a_response_its_client_abandoned_does_not_leave_its_connection_for_reuse() {
    let raw = RawUpstream::start().await;
    let s = stack(&raw).await;
    // A client that reads the head and half a body, then goes away.
    let mut client = TcpStream::connect(s.addr()).await.unwrap();
    client
        .write_all(b"GET /raw/stall HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("partial") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("the head and half a body")
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Reused, that connection would answer with the rest of the old body.
    for _ in 0..4 {
        let r = s.get("/raw/x", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.starts_with("conn 1 req "), "{}", r.body);
    }
    assert_eq!(raw.accepted(), 2);
}

/// Sockets to `port` on 127.0.0.1 in CLOSE_WAIT (the peer closed, this
/// side did not), from /proc/net/tcp.
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && f[3] == "08"
        })
        .count()
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_closed_without_a_request() {
    let raw = RawUpstream::start().await;
    let port: u16 = raw.url.rsplit(':').next().unwrap().parse().unwrap();
    let s = stack(&raw).await;
    let r = s.get("/raw/close-later", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    // Closed once idle, and no request follows: only the shard's sweep can
    // notice.
    let mut left = usize::MAX;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = close_wait_to(port);
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "still half-closed after 3 s");
}

/// An upstream that closes an idle connection just as a request is written
/// on it: an idempotent request without a body is sent again on a new
/// connection (200); any other gets its 502, and the upstream saw it once.
#[tokio::test]
async fn a_request_lost_with_an_aged_idle_connection_is_sent_again_if_idempotent() {
    let raw = RawUpstream::start().await;
    let s = stack(&raw).await;
    let r = s.get("/raw/race", &[]).await;
    assert_eq!(r.body, "conn 0 req 0");
    // Aged: idle for more than a sweep period (1 s), as the sweep sees it.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let r = s.get("/raw/race", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "conn 1 req 0");
    assert_eq!(raw.accepted(), 2);

    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let r = s.send("POST", "/raw/race", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert_eq!(raw.accepted(), 2, "a POST is never sent twice");
}
