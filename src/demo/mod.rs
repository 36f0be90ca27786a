//! `claimgate demo`: claimgate on its embedded demo policy, with a built-in
//! echo upstream, a freshly generated signing key served as a JWKS over
//! loopback HTTP, and tokens for three users.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::jwks::Algorithm;
use serde_json::json;

use crate::app::{self, App, Running};
use crate::config::{ForwardAuthConfig, Limits, LogFormat, PolicySource, ProcessConfig};
use crate::forward::forwarded::Cidr;
use crate::testkit::keys::SigningKey;
use crate::testkit::servers::{EchoServer, JwksServer};

/// The demo policy, as shipped in `policies/demo/demo.yaml`.
pub const POLICY: &str = include_str!("../../policies/demo/demo.yaml");
/// The `iss` of the demo tokens.
pub const ISSUER: &str = "https://idp.claimgate.demo";
/// The `aud` of the demo tokens.
pub const AUDIENCE: &str = "orders-api";

/// A running demo.
pub struct Demo {
    pub running: Running,
    pub upstream: EchoServer,
    pub idp: JwksServer,
    pub key: SigningKey,
}

/// Starts the echo upstream, the JWKS server and claimgate, and waits until
/// claimgate has loaded the keys.
pub async fn start(listen: SocketAddr, admin_listen: SocketAddr) -> Result<Demo, String> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let upstream = EchoServer::start(loopback)
        .await
        .map_err(|e| e.to_string())?;
    let key = SigningKey::generate(Algorithm::ES256, "demo-key-1");
    let idp = JwksServer::start(loopback, &crate::testkit::keys::jwks([&key]))
        .await
        .map_err(|e| e.to_string())?;
    let vars: HashMap<String, String> = [
        ("DEMO_UPSTREAM".to_string(), upstream.url()),
        ("DEMO_JWKS_URI".to_string(), idp.url()),
    ]
    .into();
    let sources = [PolicySource {
        path: PathBuf::from("policies/demo/demo.yaml"),
        text: POLICY.to_string(),
    }];
    let limits = Limits::default();
    let app =
        App::new(limits.clone(), None, &sources, Box::new(vars)).map_err(|e| e.to_string())?;
    let config = ProcessConfig {
        listen,
        admin_listen,
        policies: PathBuf::from("(embedded)"),
        tls: None,
        limits,
        log_format: LogFormat::Text,
        workers: 0,
        reload: Default::default(),
        // The forward-auth door on a loopback port, for gateways on this
        // machine (and the load script's side-by-side run).
        forward_auth: Some(ForwardAuthConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            gateways: vec![Cidr::parse("127.0.0.0/8")?],
            path_prefix: String::new(),
        }),
        ext_authz: None,
    };
    let running = app::start(&config, app).await?;
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        running.app.wait_keys_loaded(),
    )
    .await
    .map_err(|_| "the demo JWKS did not load".to_string())?;
    Ok(Demo {
        running,
        upstream,
        idp,
        key,
    })
}

impl Demo {
    /// A token for `sub` with `extra` claims, valid for an hour.
    pub fn token(&self, sub: &str, extra: serde_json::Value) -> String {
        let now = crate::jwks::unix_now();
        let mut claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub,
            "iat": now, "nbf": now, "exp": now + 3600,
        });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        self.key.sign(&claims)
    }

    /// The ready-to-paste walkthrough printed by `claimgate demo`.
    pub fn walkthrough(&self) -> String {
        let admin = self.token(
            "alice",
            json!({"user_role": "admin", "given_name": "Alice", "family_name": "Admin"}),
        );
        let gold = self.token(
            "bob",
            json!({"scope": "order profile", "subscription_level": "gold", "given_name": "Bob",
                   "family_name": "Gold", "metadata": {"region": "eu-west"}}),
        );
        let free = self.token(
            "carol",
            json!({"scope": "order", "subscription_level": "free"}),
        );
        let base = format!("http://{}", self.running.addr);
        let admin_url = format!("http://{}", self.running.admin_addr);
        let forward_auth = self
            .running
            .forward_auth_addr
            .map_or(String::new(), |a| format!("http://{a}/auth"));
        format!(
            r#"claimgate demo is running.
  proxy      {base}
  admin      {admin_url}  (/metrics, /readyz)
  upstream   {up} (echoes what it receives)
  forward_auth {forward_auth}  (nginx auth_request / Traefik ForwardAuth; loopback gateways)
  JWKS       {jwks}

Tokens (ES256, valid for one hour):
  ADMIN={admin}
  GOLD={gold}
  FREE={free}

Try:
  # 200: a gold customer with the `order` scope; see the X-User-Id, X-Subscription,
  # X-Full-Name and X-Region headers the upstream received
  curl -s -H "Authorization: Bearer $GOLD" {base}/orders/7

  # 200: an admin reads any order
  curl -s -H "Authorization: Bearer $ADMIN" {base}/orders/7

  # 403 insufficient_scope: a free-plan customer
  curl -si -H "Authorization: Bearer $FREE" {base}/orders/7

  # 401 invalid_token: a tampered token; 401 without a token
  curl -si -H "Authorization: Bearer ${{GOLD%?}}x" {base}/orders/7
  curl -si {base}/orders/7

  # a spoofed identity header never reaches the upstream (it sees claimgate's X-User-Id)
  curl -s -H "Authorization: Bearer $GOLD" -H "X-User-Id: alice" -H "X_User_Id: alice" {base}/orders/7

  # 400: a path that could be read two ways
  curl -si --path-as-is -H "Authorization: Bearer $ADMIN" {base}/orders/%2e%2e/admin

  # public route, no token needed; metrics
  curl -s {base}/healthz
  curl -s {admin_url}/metrics | grep claimgate_requests_total

Press Ctrl-C to stop.
"#,
            up = self.upstream.url(),
            jwks = self.idp.url(),
        )
    }
}
