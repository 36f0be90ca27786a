//! The floor under claimgate's request path: a bare hyper 1 reverse proxy
//! built the way claimgate's proxy door is, with nothing else. One
//! current-thread runtime per core with its own `SO_REUSEPORT` listener;
//! hyper's HTTP/1 server with a timer and a header-read timeout; HTTP/1.1
//! upstream connections kept per thread and polled in the request's own
//! task (as `src/proxy/upstream/in_task.rs`). No routing, no token, no
//! policy, no header hygiene, no log, no metrics.
//!
//! `benches/load.sh` runs it beside nginx and claimgate: what claimgate
//! costs above it is claimgate's own; what it costs above nginx is the
//! stack's (hyper, tokio, the allocator).
//!
//!   hyperfloor LISTEN UPSTREAM [SHARDS]    e.g. 127.0.0.1:8080 127.0.0.1:9000

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

// claimgate's allocator, so that the two differ only in what they do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Io = TokioIo<TcpStream>;

struct Conn {
    send: SendRequest<Incoming>,
    conn: Connection<Io, Incoming>,
}

thread_local! {
    // Boxed as claimgate's are: a connection moves into the response body
    // and back, a pointer rather than its ~700 bytes.
    #[allow(clippy::vec_box)]
    static IDLE: RefCell<Vec<Box<Conn>>> = const { RefCell::new(Vec::new()) };
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: hyperfloor LISTEN UPSTREAM [SHARDS]");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN: host:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM: host:port");
    let shards = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads: Vec<_> = (0..shards)
        .map(|_| {
            let listener = bind(listen);
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(serve(listener, upstream))
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn bind(addr: SocketAddr) -> std::net::TcpListener {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket.set_nonblocking(true).expect("nonblocking");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(1024).expect("listen");
    socket.into()
}

async fn serve(listener: std::net::TcpListener, upstream: SocketAddr) {
    let listener = TcpListener::from_std(listener).expect("listener");
    let mut h1 = hyper::server::conn::http1::Builder::new();
    if std::env::var_os("FLOOR_NO_TIMER").is_none() {
        h1.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let h1 = h1.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| proxy(req, upstream));
            let _ = h1.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

type Out = http_body_util::Either<Driven, Empty<Bytes>>;

async fn proxy(req: Request<Incoming>, upstream: SocketAddr) -> Result<Response<Out>, Infallible> {
    let bad_gateway = || {
        let mut r = Response::new(Out::Right(Empty::new()));
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        Ok(r)
    };
    let mut conn = match IDLE.with(|i| i.borrow_mut().pop()) {
        Some(c) => c,
        None => match connect(upstream).await {
            Some(c) => c,
            None => return bad_gateway(),
        },
    };
    let response = conn.send.try_send_request(req);
    let mut response = std::pin::pin!(response);
    let mut open = true;
    let head = std::future::poll_fn(|cx| {
        if open && Pin::new(&mut conn.conn).poll(cx).is_ready() {
            open = false;
        }
        response.as_mut().poll(cx)
    })
    .await;
    match head {
        Ok(resp) => Ok(resp.map(|body| {
            Out::Left(Driven {
                body,
                conn: Some(conn),
            })
        })),
        Err(_) => bad_gateway(),
    }
}

async fn connect(upstream: SocketAddr) -> Option<Box<Conn>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    Some(Box::new(Conn { send, conn }))
}

/// The upstream's body, polling its connection; the connection goes back
/// to the idle list at the body's end.
struct Driven {
    body: Incoming,
    conn: Option<Box<Conn>>,
}

impl Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending() {
            if let Some(c) = &mut this.conn {
                if Pin::new(&mut c.conn).poll(cx).is_ready() {
                    this.conn = None;
                }
                frame = Pin::new(&mut this.body).poll_frame(cx);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            if let Some(conn) = self.conn.take() {
                IDLE.with(|i| i.borrow_mut().push(conn));
            }
        }
    }
}
