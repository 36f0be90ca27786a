//! Opaque tokens: OAuth 2.0 token introspection (RFC 7662), JWT
//! introspection responses (RFC 9701), and Curity's phantom-token pattern
//! (the endpoint answers `application/jwt`: the token's JWT).
//!
//! SECURITY.md rule 22: an answer is cached no longer than its `exp` and
//! `cache_ttl`; `active: false` is a 401 (cached briefly); an unreachable or
//! failing endpoint fails closed (503); the client secret comes from env or
//! a file and is never logged, counted or shown. One call per token at a
//! time (single flight), a bounded number of calls in flight and a rate cap
//! per issuer: past them a new token gets 503 `introspection_busy` at once
//! rather than a queue, so a flood of random tokens never becomes a flood of
//! calls to the IdP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use dashmap::DashMap;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::{OnceCell, Semaphore};

use super::error::TokenError;
use super::issuer::{Issuer, Issuers};
use super::json::parse_strict;
use super::verify::{verify, verify_signed};
use crate::claims::Claims;
use crate::jwks::SecretRef;
use crate::metrics::Metrics;

/// Largest introspection answer read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest time one call may take, connect included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of the answer cache; when full, expired answers are swept and new
/// ones are not kept until there is room (they are still answered).
const MAX_CACHED: usize = 100_000;

/// How claimgate authenticates to the endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
    /// A client assertion JWT signed with the client's private key
    /// (RFC 7523 §2.2, OIDC Core §9 `private_key_jwt`).
    PrivateKeyJwt,
}

/// Which tokens are introspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Only tokens that are not JWTs (the default).
    Opaque,
    /// Every token: a JWT is verified and then introspected too, so a
    /// revocation takes effect within `cache_ttl`.
    All,
}

/// What the endpoint is asked for and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// RFC 7662 JSON.
    Json,
    /// RFC 9701 `application/token-introspection+jwt`, signed with the
    /// issuer's keys.
    Jwt,
    /// The phantom token: `application/jwt`, the token's JWT, verified like
    /// a bearer JWT.
    Phantom,
}

/// An issuer's introspection settings, as compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The endpoint; `None`: the discovery document's `introspection_endpoint`.
    pub endpoint: Option<String>,
    /// Where discovery lives (the issuer's `discovery`), when `endpoint` is
    /// not given.
    pub discovery: Option<String>,
    pub allow_http: bool,
    pub client_id: String,
    /// The client secret (`client_secret_basic` / `_post`), or the PKCS#8
    /// PEM private key (`private_key_jwt`): read on every call, so a
    /// rotated file is picked up.
    pub client_secret: SecretRef,
    /// The `kid` of the private key, sent in the assertion's header.
    pub key_id: Option<String>,
    pub auth: ClientAuth,
    pub which: Which,
    pub answer: Answer,
    pub cache_ttl: Duration,
    pub inactive_ttl: Duration,
    pub max_in_flight: usize,
    pub max_per_second: u32,
}

#[derive(Clone)]
struct Cached {
    result: Result<Arc<Claims>, TokenError>,
    until: Instant,
}

type Flight = Arc<OnceCell<Result<Arc<Claims>, TokenError>>>;

/// One issuer's introspection client, its answer cache and its limits.
pub struct Introspector {
    pub settings: Settings,
    issuer_name: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    cache: DashMap<[u8; 32], Cached>,
    in_flight: DashMap<[u8; 32], Flight>,
    permits: Arc<Semaphore>,
    bucket: std::sync::Mutex<Bucket>,
    endpoint: OnceCell<String>,
    metrics: Arc<Metrics>,
}

/// A token bucket: `max_per_second` calls a second, bursts up to one
/// second's worth.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Introspector {
    pub fn new(issuer_name: &str, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .with_root_certificates(crate::trust::roots())
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Self {
            permits: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            bucket: std::sync::Mutex::new(Bucket {
                tokens: f64::from(settings.max_per_second),
                at: Instant::now(),
            }),
            settings,
            issuer_name: issuer_name.to_string(),
            client,
            cache: DashMap::new(),
            in_flight: DashMap::new(),
            endpoint: OnceCell::new(),
            metrics,
        }
    }

    /// The claims of `token` as the issuer's endpoint says, cached, at Unix
    /// time `now`. `issuers` verifies a phantom token's JWT.
    pub async fn introspect(
        &self,
        issuer: &Arc<Issuer>,
        issuers: &Issuers,
        token: &str,
        now: u64,
    ) -> Result<Arc<Claims>, TokenError> {
        let key = key(token);
        if let Some(hit) = self.cache.get(&key).map(|c| c.clone()) {
            if hit.until > Instant::now() {
                self.count_cache("hit");
                return hit.result;
            }
            self.cache.remove(&key);
        }
        self.count_cache("miss");
        // Single flight: one call per token; the others await its answer.
        let flight = self.in_flight.entry(key).or_default().clone();
        let result = flight
            .get_or_init(|| self.call_and_cache(issuer, issuers, token, now, key))
            .await
            .clone();
        self.in_flight.remove(&key);
        result
    }

    async fn call_and_cache(
        &self,
        issuer: &Arc<Issuer>,
        issuers: &Issuers,
        token: &str,
        now: u64,
        key: [u8; 32],
    ) -> Result<Arc<Claims>, TokenError> {
        let started = Instant::now();
        let result = self.call(issuer, issuers, token, now).await;
        let label = match &result {
            Ok(_) => "active",
            Err(TokenError::Inactive) => "inactive",
            Err(TokenError::IntrospectionBusy) => "throttled",
            Err(TokenError::IntrospectionUnavailable) => "error",
            Err(_) => "refused",
        };
        self.metrics
            .introspection_calls
            .with_label_values(&[&self.issuer_name, label])
            .inc();
        if label != "throttled" {
            self.metrics
                .introspection_duration
                .with_label_values(&[&self.issuer_name])
                .observe(started.elapsed().as_secs_f64());
        }
        // Failures and throttling are never cached: the next request asks
        // again (within the limits).
        let ttl = match &result {
            Ok(claims) => {
                let exp = claims.root().get("exp").and_then(Value::as_f64);
                let left = exp.map_or(self.settings.cache_ttl, |e| {
                    Duration::from_secs_f64((e - now as f64).max(0.0))
                });
                Some(left.min(self.settings.cache_ttl))
            }
            Err(TokenError::Inactive) => Some(self.settings.inactive_ttl),
            Err(_) => None,
        };
        if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
            self.remember(key, result.clone(), ttl);
        }
        result
    }

    fn remember(&self, key: [u8; 32], result: Result<Arc<Claims>, TokenError>, ttl: Duration) {
        if self.cache.len() >= MAX_CACHED {
            let now = Instant::now();
            self.cache.retain(|_, c| c.until > now);
            if self.cache.len() >= MAX_CACHED {
                return;
            }
        }
        let until = Instant::now() + ttl;
        self.cache.insert(key, Cached { result, until });
    }

    fn count_cache(&self, result: &str) {
        self.metrics
            .introspection_cache_lookups
            .with_label_values(&[&self.issuer_name, result])
            .inc();
    }

    /// Takes one call from the rate cap and one in-flight slot, or says busy.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, TokenError> {
        {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let rate = f64::from(self.settings.max_per_second);
            let now = Instant::now();
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
            b.at = now;
            if b.tokens < 1.0 {
                return Err(TokenError::IntrospectionBusy);
            }
            b.tokens -= 1.0;
        }
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| TokenError::IntrospectionBusy)
    }

    async fn call(
        &self,
        issuer: &Arc<Issuer>,
        issuers: &Issuers,
        token: &str,
        now: u64,
    ) -> Result<Arc<Claims>, TokenError> {
        let _permit = self.admit()?;
        let fail = |why: String| {
            tracing::warn!(issuer = self.issuer_name, "introspection failed: {why}");
            TokenError::IntrospectionUnavailable
        };
        let body = tokio::time::timeout(CALL_TIMEOUT, self.post(token))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(fail)?;
        let answer = match self.settings.answer {
            Answer::Json => parse_strict(&body).map_err(|_| fail("not JSON".into()))?,
            Answer::Jwt => {
                // RFC 9701 §5: signed by the issuer, for this client.
                let text = std::str::from_utf8(&body).map_err(|_| fail("not text".into()))?;
                let payload = verify_signed(text.trim(), issuer)?;
                let aud_ok = match payload.get("aud") {
                    Some(Value::String(a)) => *a == self.settings.client_id,
                    Some(Value::Array(l)) => l.iter().any(|a| *a == *self.settings.client_id),
                    _ => false,
                };
                if !aud_ok {
                    return Err(TokenError::WrongAudience);
                }
                payload
                    .get("token_introspection")
                    .cloned()
                    .ok_or(TokenError::MissingClaim("token_introspection"))?
            }
            Answer::Phantom => {
                let text = std::str::from_utf8(&body).map_err(|_| fail("not text".into()))?;
                let names = [issuer.name.clone()];
                let v = verify(text.trim(), issuers, Some(&names), 16 * 1024, now)
                    .map_err(|r| r.error)?;
                return Ok(v.claims);
            }
        };
        let Value::Object(answer) = answer else {
            return Err(fail("not a JSON object".into()));
        };
        checked(answer, issuer, now).map(Arc::new)
    }

    /// POSTs the token and returns the 200 answer's body.
    async fn post(&self, token: &str) -> Result<Bytes, String> {
        let endpoint = self.endpoint().await?;
        let secret = self.settings.client_secret.read()?;
        let assertion = match self.settings.auth {
            ClientAuth::PrivateKeyJwt => Some(client_assertion(
                &secret,
                &self.settings.client_id,
                self.settings.key_id.as_deref(),
                &endpoint,
            )?),
            _ => None,
        };
        let secret = String::from_utf8(secret).map_err(|_| "client secret is not UTF-8")?;
        let mut form = format!("token={}&token_type_hint=access_token", form_encode(token));
        let mut req = Request::post(endpoint.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(
                header::ACCEPT,
                match self.settings.answer {
                    Answer::Json => "application/json",
                    Answer::Jwt => "application/token-introspection+jwt",
                    Answer::Phantom => "application/jwt",
                },
            );
        match self.settings.auth {
            ClientAuth::Basic => {
                let pair = format!(
                    "{}:{}",
                    form_encode(&self.settings.client_id),
                    form_encode(&secret)
                );
                req = req.header(
                    header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(pair)),
                );
            }
            ClientAuth::Post => {
                form.push_str(&format!(
                    "&client_id={}&client_secret={}",
                    form_encode(&self.settings.client_id),
                    form_encode(&secret)
                ));
            }
            ClientAuth::PrivateKeyJwt => {
                form.push_str(&format!(
                    "&client_id={}&client_assertion_type={}&client_assertion={}",
                    form_encode(&self.settings.client_id),
                    form_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    assertion.unwrap_or_default()
                ));
            }
        }
        let req = req
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| crate::jwks::fetch::cause(&e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            // The IdP's own error text (RFC 6749 §5.2: `error`,
            // `error_description`), bounded, for the log.
            let body = Limited::new(resp.into_body(), 512).collect().await;
            let text = body.map(|b| b.to_bytes()).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            return Err(format!("status {status}: {}", text.escape_debug()));
        }
        Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("body: {e}"))
    }

    /// The endpoint: configured, or the discovery document's (read once).
    async fn endpoint(&self) -> Result<String, String> {
        let s = &self.settings;
        let check = |url: &str| match url.split(':').next() {
            Some("https") => Ok(url.to_string()),
            Some("http") if s.allow_http => Ok(url.to_string()),
            _ => Err(format!("introspection endpoint {url:?} is not https")),
        };
        if let Some(url) = &s.endpoint {
            return check(url);
        }
        let discovery = s
            .discovery
            .as_deref()
            .ok_or("no endpoint and no discovery")?;
        let url = self
            .endpoint
            .get_or_try_init(|| async {
                let fetcher = crate::jwks::Fetcher::default();
                let doc_url = format!(
                    "{}/.well-known/openid-configuration",
                    discovery.trim_end_matches('/')
                );
                let doc = fetcher
                    .get(&doc_url, s.allow_http)
                    .await
                    .map_err(|e| e.to_string())?;
                let doc: Value =
                    serde_json::from_slice(&doc.body).map_err(|_| "discovery is not JSON")?;
                doc.get("introspection_endpoint")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| "discovery names no introspection_endpoint".to_string())
            })
            .await?;
        check(url)
    }
}

fn key(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// Whether a token is shaped like a compact JWS (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    // memchr's SIMD scan: counting the dots byte by byte cost ~1,600
    // instructions per request for an RS256 token.
    memchr::memchr_iter(b'.', token.as_bytes()).take(3).count() == 2
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("issuer", &self.issuer_name)
            .field("endpoint", &self.settings.endpoint)
            .finish()
    }
}

mod answer;
mod client_auth;

pub use answer::checked;
pub use client_auth::client_assertion;
use client_auth::form_encode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_and_shapes() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(form_encode("AZaz09-._*"), "AZaz09-._*");
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("4-xE2CNYPy6fyCCxn9s46"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b"));
        // Longer than one SIMD block, dots far apart and near the end.
        let long = |parts: &[usize]| {
            parts
                .iter()
                .map(|n| "x".repeat(*n))
                .collect::<Vec<_>>()
                .join(".")
        };
        assert!(looks_like_jwt(&long(&[40, 300, 342])));
        assert!(!looks_like_jwt(&long(&[40, 300, 342, 1])));
        assert!(!looks_like_jwt(&long(&[700, 1])));
    }
}
