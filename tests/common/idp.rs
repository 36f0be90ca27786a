//! npm's `oidc-provider` (OpenID Certified) on loopback: `tests/idp/provider.mjs`,
//! installed by `scripts/install-deps.sh`. Tokens come from its token
//! endpoint (client_credentials); its signing key is rotated live.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The audience of the provider's access tokens.
pub const AUDIENCE: &str = "https://api.test";

/// A running provider, stopped on drop.
pub struct OidcProvider {
    pub issuer: String,
    child: Child,
    _stdin: ChildStdin,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl OidcProvider {
    /// Starts the provider signing JWT access tokens with `alg`.
    pub fn start(alg: &str) -> Self {
        Self::start_with(alg, "jwt")
    }

    /// Starts the provider with `format` access tokens (`jwt` or `opaque`).
    pub fn start_with(alg: &str, format: &str) -> Self {
        Self::start_env(alg, format, &[])
    }

    /// As [`start_with`](Self::start_with), with more of the script's
    /// environment (`IDP_CLIENT_JWK`).
    pub fn start_env(alg: &str, format: &str, env: &[(&str, &str)]) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/idp");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "oidc-provider is not installed: run the tests with `bash scripts/test.sh`"
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(dir)
            .env("IDP_ALG", alg)
            .env("IDP_FORMAT", format)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is needed: run the tests with `bash scripts/test.sh`");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("provider output");
        // Keep reading what it prints: a closed pipe would kill it (EPIPE)
        // the first time oidc-provider logs something.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let ready: Value = serde_json::from_str(&line).expect("the provider's ready line");
        Self {
            issuer: ready["issuer"].as_str().expect("issuer").to_string(),
            child,
            _stdin: stdin,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(&self, method: &str, path: &str, form: Option<&str>) -> Value {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.issuer));
        if form.is_some() {
            // client_secret_basic: claimgate-test / test-secret.
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .header(
                    "authorization",
                    "Basic Y2xhaW1nYXRlLXRlc3Q6dGVzdC1zZWNyZXQ=",
                );
        }
        let body = Full::new(Bytes::from(form.unwrap_or("").to_string()));
        let resp = self
            .client
            .request(req.body(body).unwrap())
            .await
            .expect("provider");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap_or_else(|_| panic!("provider said {body:?}"))
    }

    /// A fresh access token (an RFC 9068 JWT) from the token endpoint.
    pub async fn token(&self) -> String {
        let answer = self
            .call(
                "POST",
                "/token",
                Some("grant_type=client_credentials&scope=orders%3Aread"),
            )
            .await;
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {answer}"))
            .to_string()
    }

    /// Rotates the signing key live: `soft` keeps publishing the old keys,
    /// `hard` drops them. Returns the new key's kid.
    pub async fn rotate(&self, mode: &str) -> String {
        let answer = self
            .call("POST", &format!("/_test/rotate?mode={mode}"), None)
            .await;
        answer["kid"].as_str().expect("kid").to_string()
    }

    /// Revokes `token` at the provider (RFC 7009).
    pub async fn revoke(&self, token: &str) {
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("{}/token/revocation", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                "Basic Y2xhaW1nYXRlLXRlc3Q6dGVzdC1zZWNyZXQ=",
            );
        req = req.header("accept", "application/json");
        let body = Full::new(Bytes::from(format!("token={token}")));
        let resp = self
            .client
            .request(req.body(body).unwrap())
            .await
            .expect("provider");
        assert_eq!(resp.status(), 200, "revocation");
    }

    /// GETs of the JWKS endpoint so far.
    pub async fn jwks_fetches(&self) -> u64 {
        self.call("GET", "/_test/stats", None).await["jwks_fetches"]
            .as_u64()
            .expect("count")
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
