//! Shared builders for the integration tests: a real JWKS server, a real
//! echo upstream that counts what it received, and claimgate itself, all on
//! 127.0.0.1:0.
#![allow(dead_code)]

pub mod idp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use claimgate::app::{self, App, Running};
use claimgate::config::{Limits, LogFormat, PolicySource, ProcessConfig, ReloadSettings};
use claimgate::jwks::Algorithm;
use claimgate::testkit::keys::{jwks, SigningKey};
use claimgate::testkit::servers::{EchoServer, JwksServer};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "api";

/// A policy with one issuer and a few routes, using `${JWKS_URI}` and
/// `${UPSTREAM}`.
pub const POLICY: &str = r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
    refresh_interval: 1s

upstreams:
  app: ${UPSTREAM}

forward:
  X-User-Id: "{{ $.sub }}"

routes:
  - name: orders
    match: { path: "/orders/{id}", methods: [GET] }
    upstream: app
    allow:
      any:
        - claim: $.user_role
          equals: admin
        - all:
            - scope: order
            - claim: $.subscription_level
              in: [gold, platinum]
    forward:
      X-Region: "{{ $.metadata.region || 'global' }}"
      X-Name: "{{ $.given_name }} {{ $.family_name }}"
  - name: slow
    match: { path: "/slow/**" }
    upstream: app
  - name: any-user
    match: { path: "/me" }
    upstream: app
    forward:
      X-Display: "{{ $.display }}"
  - name: health
    match: { path: /healthz }
    upstream: app
    public: true
"#;

pub struct Stack {
    pub running: Option<Running>,
    pub upstream: EchoServer,
    pub idp: JwksServer,
    pub key: SigningKey,
    /// Keys published besides `key` (see `Builder::with_keys`).
    pub extra_keys: Vec<SigningKey>,
    pub dir: tempfile::TempDir,
    pub vars: HashMap<String, String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
}

pub struct Builder {
    policy: String,
    limits: Limits,
    wait_keys: bool,
    idp_status: Option<StatusCode>,
    keys: Vec<SigningKey>,
    tls: Option<claimgate::config::TlsFiles>,
    reload: ReloadSettings,
    configmap: bool,
    vars: Vec<(String, String)>,
    forward_auth: Option<claimgate::config::ForwardAuthConfig>,
    ext_authz: Option<claimgate::config::ExtAuthzConfig>,
}

/// A started stack with the default policy, keys loaded.
pub async fn stack() -> Stack {
    Builder::new().start().await
}

impl Builder {
    pub fn new() -> Self {
        Self {
            policy: POLICY.to_string(),
            limits: Limits::default(),
            wait_keys: true,
            idp_status: None,
            keys: Vec::new(),
            tls: None,
            // Off unless a test turns it on, so that reload counts are the
            // test's own.
            reload: ReloadSettings {
                watch: false,
                debounce: Duration::from_millis(100),
                poll_interval: Duration::ZERO,
            },
            configmap: false,
            vars: Vec::new(),
            forward_auth: None,
            ext_authz: None,
        }
    }

    /// Also serves Envoy ext_authz over gRPC on a loopback port, answering
    /// `gateways` (CIDRs).
    pub fn ext_authz(mut self, gateways: &[&str]) -> Self {
        self.ext_authz = Some(claimgate::config::ExtAuthzConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            gateways: gateways
                .iter()
                .map(|g| claimgate::forward::forwarded::Cidr::parse(g).unwrap())
                .collect(),
        });
        self
    }

    /// Also serves the forward-auth door on a loopback port, answering
    /// `gateways` (CIDRs), with Envoy's `path_prefix`.
    pub fn forward_auth(mut self, gateways: &[&str], path_prefix: &str) -> Self {
        self.forward_auth = Some(claimgate::config::ForwardAuthConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            gateways: gateways
                .iter()
                .map(|g| claimgate::forward::forwarded::Cidr::parse(g).unwrap())
                .collect(),
            path_prefix: path_prefix.to_string(),
        });
        self
    }

    /// Sets `${name}` in the policy, beside `UPSTREAM`, `JWKS_URI` and
    /// `IDP_ORIGIN`.
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// Automatic reloads as `settings` say.
    pub fn reload(mut self, settings: ReloadSettings) -> Self {
        self.reload = settings;
        self
    }

    /// Lay the policy directory out as a Kubernetes ConfigMap volume does:
    /// `policy.yaml -> ..data/policy.yaml`, `..data -> ..<timestamp>/`.
    pub fn configmap(mut self) -> Self {
        self.configmap = true;
        self
    }

    pub fn policy(mut self, policy: &str) -> Self {
        self.policy = policy.to_string();
        self
    }

    pub fn limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.limits);
        self
    }

    /// The IdP answers this status (with no JWKS) from the start.
    pub fn idp_down(mut self, status: StatusCode) -> Self {
        self.idp_status = Some(status);
        self.wait_keys = false;
        self
    }

    /// Start without waiting for the first key load.
    pub fn no_wait(mut self) -> Self {
        self.wait_keys = false;
        self
    }

    /// Extra keys published in the JWKS besides the default ES256 one.
    pub fn with_keys(mut self, keys: Vec<SigningKey>) -> Self {
        self.keys = keys;
        self
    }

    /// Serve HTTPS with this certificate and key.
    pub fn tls(mut self, files: claimgate::config::TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    pub async fn start(self) -> Stack {
        self.start_with(|_| {}).await
    }

    /// Starts, letting `idp` be set up before claimgate's first fetch.
    pub async fn start_with(self, idp_setup: impl FnOnce(&JwksServer)) -> Stack {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let upstream = EchoServer::start(loopback).await.unwrap();
        let key = SigningKey::generate(Algorithm::ES256, "k1");
        let published = jwks(std::iter::once(&key).chain(self.keys.iter()));
        let idp = JwksServer::start(loopback, &published).await.unwrap();
        idp_setup(&idp);
        if let Some(status) = self.idp_status {
            idp.set_raw(status, "down");
        }
        let dir = tempfile::tempdir().unwrap();
        if self.configmap {
            configmap_write(dir.path(), &self.policy);
            std::os::unix::fs::symlink("..data/policy.yaml", dir.path().join("policy.yaml"))
                .unwrap();
        } else {
            std::fs::write(dir.path().join("policy.yaml"), &self.policy).unwrap();
        }
        let mut vars: HashMap<String, String> = [
            ("UPSTREAM".to_string(), upstream.url()),
            ("JWKS_URI".to_string(), idp.url()),
            ("IDP_ORIGIN".to_string(), idp.origin()),
        ]
        .into();
        vars.extend(self.vars.iter().cloned());
        let sources = PolicySource::read_dir(dir.path()).unwrap();
        let app = App::new(
            self.limits.clone(),
            Some(dir.path().to_path_buf()),
            &sources,
            Box::new(vars.clone()),
        )
        .unwrap_or_else(|e| panic!("policy does not compile:\n{e}"));
        let config = ProcessConfig {
            listen: loopback,
            admin_listen: loopback,
            policies: PathBuf::from(dir.path()),
            tls: self.tls,
            limits: self.limits,
            log_format: LogFormat::Text,
            // Two shards whatever the machine: connections spread over two
            // listeners and two upstream pools, as on the CI machine.
            workers: 2,
            reload: self.reload,
            forward_auth: self.forward_auth,
            ext_authz: self.ext_authz,
        };
        let running = app::start(&config, app).await.unwrap();
        if self.wait_keys {
            tokio::time::timeout(Duration::from_secs(10), running.app.wait_keys_loaded())
                .await
                .expect("keys load");
        }
        Stack {
            running: Some(running),
            upstream,
            idp,
            key,
            extra_keys: self.keys,
            dir,
            vars,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn www_authenticate(&self) -> Option<&str> {
        self.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
    }

    pub fn reason(&self) -> String {
        self.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Header `name` of the last request the upstream received, as text.
pub fn last_header(s: &Stack, name: &str) -> Option<String> {
    s.upstream
        .last()
        .expect("the upstream received a request")
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Standard valid claims plus `extra` (which may override them).
pub fn claims(extra: Value) -> Value {
    let now = claimgate::jwks::unix_now();
    let mut c =
        json!({"iss": ISS, "aud": AUD, "sub": "user-1", "iat": now, "nbf": now, "exp": now + 600});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    c
}

/// Standard valid claims without `name`.
pub fn without(name: &str) -> Value {
    let mut c = claims(json!({}));
    if let Some(map) = c.as_object_mut() {
        map.remove(name);
    }
    c
}

impl Stack {
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    /// A token from the default key with `claims(extra)`.
    pub fn token(&self, extra: Value) -> String {
        self.key.sign(&claims(extra))
    }

    /// A gold customer allowed on `/orders/{id}`.
    pub fn gold_token(&self) -> String {
        self.token(json!({"scope": "order", "subscription_level": "gold", "given_name": "Ada", "family_name": "L"}))
    }

    /// Sends `method path` (path sent exactly as given) with `headers`.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.client, self.addr(), method, path, headers).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", path, headers).await
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", &auth)]).await
    }

    /// Sends a check request to the forward-auth door.
    pub async fn check(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let addr = self
            .running()
            .forward_auth_addr
            .expect("forward_auth configured");
        send(&self.client, addr, method, path, headers).await
    }

    pub async fn admin(&self, method: &str, path: &str) -> Resp {
        send(&self.client, self.running().admin_addr, method, path, &[]).await
    }

    /// GETs `http://{addr}{path}` with the stack's client: the body of a
    /// 200, or `None` on any failure (for polling servers that are starting).
    pub async fn client_get(&self, addr: SocketAddr, path: &str) -> Option<String> {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Empty::new())
            .ok()?;
        let resp = self.client.request(req).await.ok()?;
        if resp.status() != StatusCode::OK {
            return None;
        }
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits (up to 10 s) until the IdP has served `n` JWKS fetches.
    pub async fn wait_for_fetches(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.idp.fetches() < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("JWKS fetch");
    }

    /// Replaces the policy file.
    pub fn write_policy(&self, text: &str) {
        std::fs::write(self.dir.path().join("policy.yaml"), text).unwrap();
    }

    /// Updates a ConfigMap-style directory (see `Builder::configmap`) the
    /// way the kubelet does.
    pub fn configmap_update(&self, text: &str) {
        configmap_write(self.dir.path(), text);
    }
}

/// The kubelet's atomic update: the files go into a new hidden timestamped
/// folder, a `..data_tmp` symlink to it is renamed over `..data` (one atomic
/// rename), and the old folder is removed. The visible `policy.yaml` is a
/// symlink through `..data` and never changes itself.
fn configmap_write(dir: &std::path::Path, text: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!("..2026_11_22_{:06}", SEQ.fetch_add(1, Ordering::Relaxed));
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::create_dir(dir.join(&name)).unwrap();
    std::fs::write(dir.join(&name).join("policy.yaml"), text).unwrap();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(&name, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

pub async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Runs `tests/interop/<script>` with `args` in the project's Python (the
/// virtualenv `scripts/test.sh` puts first on PATH) and returns the JSON it
/// prints; panics with its stderr when it fails.
pub fn python_json<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Value {
    let out = std::process::Command::new("python3")
        .arg(format!(
            "{}/tests/interop/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .output()
        .expect("python3 is needed: run the tests with `bash scripts/test.sh`");
    assert!(
        out.status.success(),
        "{script} failed (run `bash scripts/test.sh`, which installs what it needs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} printed no JSON ({e})"))
}

/// Runs the Python client against the stack's ext_authz listener.
/// (`tests/interop/ext_authz_client.py`: grpcio with Envoy's own stubs.)
pub fn envoy_checks(s: &Stack, cases: &Value) -> Value {
    let addr = s.running().ext_authz_addr.expect("ext_authz configured");
    python_json(
        "ext_authz_client.py",
        &[addr.to_string(), cases.to_string()],
    )
}

/// The load error of `policy` (its variables filled with placeholders), for
/// tests of config mistakes. Call it inside a Tokio runtime.
pub fn compile_error(policy: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let vars: HashMap<String, String> = [
        ("UPSTREAM".to_string(), "http://127.0.0.1:9".to_string()),
        (
            "JWKS_URI".to_string(),
            "http://127.0.0.1:9/jwks".to_string(),
        ),
    ]
    .into();
    let sources = PolicySource::read_dir(dir.path()).unwrap();
    match App::new(Limits::default(), None, &sources, Box::new(vars)) {
        Ok(_) => panic!("the policy compiled"),
        Err(e) => e.to_string(),
    }
}
