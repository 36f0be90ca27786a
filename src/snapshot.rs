//! The immutable state a request runs against. Built whole by
//! `config::compile`, swapped whole behind one `ArcSwap`; a request loads it
//! once at its start and uses that one for its whole life.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::forward::OwnedHeaders;
use crate::policy::Router;
use crate::token::extract::TokenSource;
use crate::token::Issuers;

pub struct Snapshot {
    /// Increases by one with every successful load.
    pub generation: u64,
    /// What it was built from, for `/admin/config` and unchanged-file checks.
    pub source: SourceInfo,
    pub router: Router,
    pub issuers: Issuers,
    /// Client headers removed on every route, public ones included.
    pub owned_headers: OwnedHeaders,
    pub max_token_bytes: usize,
    /// Where tokens are looked for: every issuer's sources, bearer first.
    pub token_sources: Vec<TokenSource>,
    /// A client header claimgate owns gets 400 instead of being removed.
    pub refuse_spoofed: bool,
    /// Peers whose forwarding headers are extended, not replaced.
    pub trusted_proxies: Vec<crate::forward::forwarded::Cidr>,
}

/// The policy files a snapshot was built from.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// SHA-256 over the files' names and texts, hex (`config::digest`).
    pub sha256: String,
    pub loaded_at: std::time::SystemTime,
    pub files: Vec<std::path::PathBuf>,
}

/// Where a route's requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to the request path; empty or starting with `/`, no trailing `/`.
    pub base_path: String,
    /// How claimgate speaks to it; requests to upstreams with equal
    /// transports share connection pools.
    pub transport: Transport,
}

/// The HTTP version and TLS settings of an upstream connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Transport {
    pub protocol: Protocol,
    /// PEM CA certificates trusted besides the Mozilla roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// mTLS: a PEM certificate chain and its key.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The HTTP version spoken to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (over TLS for `https://`).
    #[default]
    Http1,
    /// HTTP/2 without TLS, by prior knowledge (`http://` only).
    H2c,
    /// HTTP/2 over TLS (`https://` only).
    H2,
    /// Over TLS, h2 or http/1.1 as ALPN decides (`https://` only).
    Auto,
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "http1" => Ok(Protocol::Http1),
            "h2c" => Ok(Protocol::H2c),
            "h2" => Ok(Protocol::H2),
            "auto" => Ok(Protocol::Auto),
            o => Err(format!("protocol `{o}` is not http1, h2c, h2 or auto")),
        }
    }

    /// Whether requests go out as HTTP/2 whatever the client spoke.
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }
}

impl Upstream {
    /// Parses `http(s)://host:port[/base]`.
    pub fn parse(name: &str, url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("upstream `{name}`: `{url}` is not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => {
                return Err(format!(
                    "upstream `{name}`: `{url}` must be http:// or https://"
                ))
            }
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream `{name}`: `{url}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("upstream `{name}`: `{url}` may not have a query"));
        }
        Ok(Self {
            name: name.to_string(),
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            transport: Transport::default(),
        })
    }

    /// The same upstream with `transport`, checked against the scheme.
    pub fn with_transport(mut self, transport: Transport) -> Result<Self, String> {
        let tls = self.scheme == Scheme::HTTPS;
        let name = &self.name;
        match (transport.protocol, tls) {
            (Protocol::H2c, true) => {
                return Err(format!("upstream `{name}`: h2c is HTTP/2 without TLS: use http://, or protocol h2"))
            }
            (Protocol::H2 | Protocol::Auto, false) => {
                return Err(format!("upstream `{name}`: h2 and auto are negotiated over TLS: use https://, or protocol h2c"))
            }
            _ => {}
        }
        if !tls && (transport.ca_file.is_some() || transport.client_cert.is_some()) {
            return Err(format!(
                "upstream `{name}`: ca_file and client_cert are for https:// upstreams"
            ));
        }
        self.transport = transport;
        Ok(self)
    }

    /// The upstream URI for a request's raw path and query: the request's
    /// own when there is no base path (no copy, no parse).
    pub fn uri_for(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        let path_and_query = if self.base_path.is_empty() {
            path_and_query
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, path_and_query))?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }
}
