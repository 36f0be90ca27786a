//! Forwarding headers (SECURITY.md rule 15). From an untrusted peer they are
//! replaced with what the connection says. From a peer listed in
//! `trusted_proxies` (a load balancer or ingress in front), its
//! `X-Forwarded-For` is extended with the peer's address and its
//! `X-Forwarded-Proto` / `-Host` are kept, as Envoy does with trusted hops.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::hygiene::is_rewrite_class;

/// Header names used on every request, parsed once (a `&str` name is
/// parsed on each insert or lookup).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An address block, `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an address or address block (10.0.0.0/8)");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u32::from(v) as u128,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        let width: u32 = if self.addr.is_ipv4() { 32 } else { 128 };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        let (a, b) = (bits(self.addr), bits(ip));
        shift >= 128 || (a >> shift) == (b >> shift)
    }
}

/// What a trusted peer said, taken before hygiene removes it.
#[derive(Debug, Default)]
pub struct FromProxy {
    pub forwarded_for: Option<String>,
    pub proto: Option<HeaderValue>,
    pub host: Option<HeaderValue>,
    /// Its rewrite-class headers, where the route trusts them.
    pub rewrite: Vec<(HeaderName, HeaderValue)>,
}

/// The forwarding headers of a trusted peer, and its rewrite-class headers
/// when `keep_rewrite`; nothing for any other peer.
pub fn from_trusted(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: &[Cidr],
    keep_rewrite: bool,
) -> FromProxy {
    if !trusted.iter().any(|c| c.contains(peer)) {
        return FromProxy::default();
    }
    let rewrite = match keep_rewrite {
        true => headers
            .iter()
            .filter(|(name, _)| is_rewrite_class(name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        false => Vec::new(),
    };
    let chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    FromProxy {
        forwarded_for: (!chain.is_empty()).then(|| chain.join(", ")),
        proto: headers.get(X_FORWARDED_PROTO).cloned(),
        host: headers.get(X_FORWARDED_HOST).cloned(),
        rewrite,
    }
}

/// The request's id: a trusted proxy's `X-Request-Id` (visible ASCII, at
/// most 128 bytes), else a new one (128 random bits, hex). A client's own
/// id is never taken: it would let a client forge log correlation.
/// The client's address: `peer`, or when `peer` is trusted, the right-most
/// address of `X-Forwarded-For` that is not (as nginx's realip module walks
/// it): entries left of it were written by whoever the client is, so they
/// are never taken.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in chain.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

pub fn request_id(headers: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> HeaderValue {
    if trusted.iter().any(|c| c.contains(peer)) {
        let theirs = headers.get(X_REQUEST_ID).filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic)
        });
        if let Some(v) = theirs {
            return v.clone();
        }
    }
    let bytes = fresh_id();
    // Hex without an allocation per byte: this runs on every request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        text[2 * i] = HEX[usize::from(b >> 4)];
        text[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// 128 bits no client can predict, without the system's random source per
/// request (RDRAND is slow on some CPUs): a per-thread counter under a
/// per-thread random SipHash key, twice. Unique per thread (the counter)
/// and across threads (their keys).
fn fresh_id() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static IDS: (std::hash::RandomState, std::cell::Cell<u64>) =
            (std::hash::RandomState::new(), std::cell::Cell::new(0));
    }
    IDS.with(|(key, counter)| {
        let n = counter.get().wrapping_add(1);
        counter.set(n);
        let mut out = [0u8; 16];
        for (half, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = key.build_hasher();
            h.write_u64(n);
            h.write_u8(half as u8);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        out
    })
}

/// `ip` as text in `buf`, without the formatting machinery for IPv4 (the
/// common case: three times per request, into `X-Forwarded-For`, the access
/// line and `{client}`).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut w = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(w, "{v6}");
            w.position() as usize
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.7"),
        );
        // Through two trusted hops: 1.2.3.4; what the client wrote (6.6.6.6) is not taken.
        assert_eq!(client_ip(&h, ip("10.0.0.9"), &trusted), ip("1.2.3.4"));
        // From an untrusted peer the header is ignored.
        assert_eq!(client_ip(&h, ip("8.8.8.8"), &trusted), ip("8.8.8.8"));
        assert_eq!(
            client_ip(&HeaderMap::new(), ip("10.0.0.9"), &trusted),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn blocks_contain_what_they_should() {
        let c = |t| Cidr::parse(t).unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(!c("fd00::/8").contains(ip("fe80::1")));
        assert!(
            c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped"
        );
        assert!(!c("::/0").contains(ip("10.1.2.3")), "families never mix");
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::1/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_text_matches_display() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.9.99",
            "255.255.255.255",
            "192.168.100.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
        for a in 0..=255u8 {
            let ip = IpAddr::from([a, 255 - a, a / 3, 7]);
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }

    #[test]
    fn generated_request_ids_are_unique_hex() {
        let mine = || {
            (0..5_000)
                .map(|_| request_id(&HeaderMap::new(), IpAddr::from([10, 0, 0, 1]), &[]))
                .collect::<Vec<_>>()
        };
        let mut all = mine();
        all.extend(std::thread::spawn(mine).join().unwrap());
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert!(all
            .iter()
            .all(|v| v.len() == 32 && v.as_bytes().iter().all(u8::is_ascii_hexdigit)));
    }
}
