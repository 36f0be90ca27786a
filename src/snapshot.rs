//! The immutable state a request runs against. Built whole by
//! `config::compile`, swapped whole behind one `ArcSwap`; a request loads it
//! once at its start and uses that one for its whole life.

use http::uri::{Authority, Scheme};
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
        })
    }

    /// The upstream URI for a request's raw path and query.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, path_and_query))
            .build()
    }
}
