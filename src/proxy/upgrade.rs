//! WebSocket (and any HTTP/1.1 `Upgrade`) through the reverse proxy.
//!
//! The decision happens once, on the upgrade request, exactly as for any
//! request: a refusal is an ordinary 401/403 before any upgrade, and an
//! allowed request goes upstream with the route's claim headers (Hasura's
//! session variables for a subscription). When the upstream answers `101`,
//! both connections are taken over from hyper and spliced: bytes are copied
//! both ways as they come, no message is buffered whole.
//!
//! SECURITY.md rule 23: the spliced connection is closed when the token
//! expires (its `exp` plus the issuer's leeway, as the token cache counts
//! it) unless the route sets `websocket_outlives_token: true`. Closing is a
//! TCP close of both sides; claimgate does not parse frames, so it sends no
//! close frame.

use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::metrics::Metrics;

/// What the client asked to upgrade to, read before hygiene removes the
/// hop-by-hop headers: `Some(protocol)` for a GET with `Connection: upgrade`
/// and one `Upgrade` value.
pub fn requested(head: &Parts) -> Option<HeaderValue> {
    if head.method != http::Method::GET || head.version != http::Version::HTTP_11 {
        return None;
    }
    let wants = head
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let mut values = head.headers.get_all(UPGRADE).iter();
    match (wants, values.next(), values.next()) {
        (true, Some(v), None) => Some(v.clone()),
        _ => None,
    }
}

/// Puts the upgrade back on the request going upstream.
pub fn restore(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol.clone());
}

/// How long a spliced connection may live: until the token's expiry, or
/// without end.
#[derive(Debug, Clone, Copy)]
pub enum Lifetime {
    Until(Duration),
    Unbounded,
}

/// Splices the client's connection to the upstream's once both upgrades
/// complete, on a task of its own; `resp` is the upstream's `101`, whose
/// upgrade headers the client gets back.
pub fn splice<B>(
    client: OnUpgrade,
    upstream: &mut Response<B>,
    protocol: &HeaderValue,
    lifetime: Lifetime,
    metrics: &std::sync::Arc<Metrics>,
    route: &str,
) {
    let upstream_upgrade = hyper::upgrade::on(&mut *upstream);
    restore(upstream.headers_mut(), protocol);
    let metrics = metrics.clone();
    let route = route.to_string();
    tokio::spawn(async move {
        let (c, u) = match tokio::join!(client, upstream_upgrade) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                tracing::warn!(route, client = ?c.err(), upstream = ?u.err(), "upgrade failed");
                return;
            }
        };
        let open = metrics.upgraded_open.with_label_values(&[&route]);
        open.inc();
        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
        let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
        let reason = match lifetime {
            Lifetime::Unbounded => copy.await.map_or("error", |_| "closed"),
            Lifetime::Until(left) => match tokio::time::timeout(left, copy).await {
                Ok(r) => r.map_or("error", |_| "closed"),
                Err(_) => "token_expired",
            },
        };
        open.dec();
        metrics
            .upgraded_closed
            .with_label_values(&[&route, reason])
            .inc();
        // Dropping both streams closes both connections.
    });
}
