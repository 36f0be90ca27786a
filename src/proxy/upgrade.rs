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
//! it) unless the route sets `websocket_outlives_token: true`. Each
//! direction follows the WebSocket frame headers as bytes pass (nothing is
//! buffered), so that at expiry it can finish the frame in flight and send
//! a close frame, 1008 "token expired", to each side: unmasked to the
//! client, masked to the upstream (RFC 6455 §5.3), before both connections
//! are closed.

use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
        let (cr, cw) = tokio::io::split(TokioIo::new(c));
        let (ur, uw) = tokio::io::split(TokioIo::new(u));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let expiry = async {
            match lifetime {
                Lifetime::Until(left) => tokio::time::sleep(left).await,
                Lifetime::Unbounded => std::future::pending().await,
            }
        };
        let both = async {
            tokio::join!(
                relay(cr, uw, stop.clone(), close_frame(true)),
                relay(ur, cw, stop.clone(), close_frame(false)),
            )
        };
        tokio::pin!(both);
        let reason = tokio::select! {
            (a, b) = &mut both => if a.is_ok() && b.is_ok() { "closed" } else { "error" },
            () = expiry => {
                let _ = stop_tx.send(true);
                // Each side gets its close frame once its frame in flight is
                // through; a side that stalls longer is cut off.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut both).await;
                "token_expired"
            }
        };
        open.dec();
        metrics
            .upgraded_closed
            .with_label_values(&[&route, reason])
            .inc();
        // Dropping both streams closes both connections.
    });
}

/// The close frame claimgate sends at expiry: 1008 (policy violation),
/// "token expired"; masked when it goes to the upstream (a client's frame).
fn close_frame(masked: bool) -> Vec<u8> {
    let mut payload = vec![0x03, 0xF0];
    payload.extend_from_slice(b"token expired");
    let mut frame = vec![0x88];
    if masked {
        let mut mask = [0u8; 4];
        let _ = aws_lc_rs::rand::fill(&mut mask);
        frame.push(0x80 | payload.len() as u8);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        frame.push(payload.len() as u8);
        frame.extend_from_slice(&payload);
    }
    frame
}

/// Where a byte stream stands among WebSocket frames.
#[derive(Default)]
struct Frames {
    /// Payload bytes left in the current frame.
    left: u64,
    /// A frame header read so far (2 to 14 bytes).
    header: Vec<u8>,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.left == 0 && self.header.is_empty()
    }

    /// How many bytes of `data` take the stream to the next frame boundary
    /// (all of them if none is reached), following the headers on the way.
    fn advance(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            if self.left > 0 {
                let n = (self.left.min((data.len() - i) as u64)) as usize;
                self.left -= n as u64;
                i += n;
            } else {
                self.header.push(data[i]);
                i += 1;
                if let Some(len) = header_complete(&self.header) {
                    self.header.clear();
                    self.left = len;
                }
            }
            if self.at_boundary() {
                return i;
            }
        }
        i
    }
}

/// The payload length once `h` holds a whole frame header.
fn header_complete(h: &[u8]) -> Option<u64> {
    if h.len() < 2 {
        return None;
    }
    let len7 = h[1] & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
    if h.len() < 2 + ext + mask {
        return None;
    }
    Some(match ext {
        0 => u64::from(len7),
        2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        _ => u64::from_be_bytes(h[2..10].try_into().unwrap_or([0; 8])),
    })
}

/// Copies `from` to `to` until end of stream, or until `stop` turns true:
/// then at the next frame boundary it sends `close` and shuts `to` down.
async fn relay<R, W>(
    mut from: R,
    mut to: W,
    mut stop: tokio::sync::watch::Receiver<bool>,
    close: Vec<u8>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = Frames::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stopping = false;
    loop {
        if stopping && frames.at_boundary() {
            to.write_all(&close).await?;
            return to.shutdown().await;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => r?,
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                continue;
            }
        };
        if n == 0 {
            return to.shutdown().await;
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            let upto = frames.advance(data);
            to.write_all(&data[..upto]).await?;
            data = &data[upto..];
            if stopping && frames.at_boundary() {
                to.write_all(&close).await?;
                return to.shutdown().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_followed_across_reads() {
        // A masked 5-byte text frame, a 300-byte frame (16-bit length), then
        // a frame whose header arrives split.
        let mut stream = vec![0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        stream.extend([0x82, 126, 0x01, 0x2C]);
        stream.extend(vec![7u8; 300]);
        stream.extend([0x81, 0x02, b'o', b'k']);
        let mut f = Frames::default();
        let mut boundaries = Vec::new();
        let mut pos = 0;
        for chunk in stream.chunks(7) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let n = f.advance(rest);
                pos += n;
                if f.at_boundary() {
                    boundaries.push(pos);
                }
                rest = &rest[n..];
            }
        }
        assert_eq!(boundaries, vec![11, 11 + 4 + 300, stream.len()]);
    }

    #[test]
    fn close_frames_carry_1008_masked_only_upstream() {
        let plain = close_frame(false);
        assert_eq!(&plain[..4], &[0x88, 15, 0x03, 0xF0]);
        let masked = close_frame(true);
        assert_eq!(masked[1], 0x80 | 15);
        let mask = &masked[2..6];
        let payload: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(payload, plain[2..]);
    }
}
