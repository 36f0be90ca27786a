//! The admin plane, on its own listener: `/metrics`, `/livez`, `/readyz`,
//! and, for loopback clients only, `GET /admin/config`, `POST
//! /admin/reload`, `GET /admin/keys` and `POST /admin/keys/reload`.

pub mod cli;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::app::App;
use crate::proxy::conn::{Builders, Linger, Version};
use crate::proxy::server::stopped;

pub async fn serve(listener: TcpListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let builders = Arc::new(Builders::new(&app.limits));
    let within = app.limits.header_read_timeout;
    // Every connection task holds a sender; `recv` answers `None` when the
    // last one has finished.
    let (live, mut drained) = mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = stopped(&mut shutdown) => break,
        };
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(&app, req, peer).await) }
        });
        let (builders, mut shutdown, live) = (builders.clone(), shutdown.clone(), live.clone());
        tokio::spawn(async move {
            if let Some(version) = Version::sniff(&stream, within, &mut shutdown).await {
                builders
                    .serve(stream, version, svc, shutdown, Linger::default())
                    .await;
            }
            drop(live);
        });
    }
    drop((listener, live));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drained.recv()).await;
}

/// What `/admin/config` shows: where the serving snapshot came from and the
/// state of each issuer's keys. Names, hashes, counts and times only; no
/// policy text, no key material, no error text (errors go to the log).
fn config_report(app: &App) -> serde_json::Value {
    let rfc3339 = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let snapshot = app.snapshot();
    let loaded = &snapshot.source;
    let mut issuers: Vec<_> = snapshot
        .issuers
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i.name,
                "iss": i.iss,
                "keys_loaded": i.keys.is_loaded(),
                "keys": i.keys.current().map_or(0, |k| k.len()),
            })
        })
        .collect();
    issuers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let failure = app.last_failure().map(|f| {
        serde_json::json!({
            "sha256": f.sha256,
            "at": rfc3339(f.at),
            "errors": f.errors,
        })
    });
    serde_json::json!({
        "generation": snapshot.generation,
        "sha256": loaded.sha256,
        "loaded_at": rfc3339(loaded.loaded_at),
        "files": loaded.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "routes": snapshot.router.len(),
        "issuers": issuers,
        "last_failed_reload": failure,
        "ready": app.is_ready(),
    })
}

/// Each issuer's keys as the operator sees them, sorted by issuer.
fn keys_report(app: &App) -> serde_json::Value {
    let snapshot = app.snapshot();
    let mut stores: Vec<_> = snapshot.issuers.iter().map(|i| i.keys.info()).collect();
    stores.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    serde_json::json!({ "issuers": stores })
}

/// Loads the keys of the issuer named in `?issuer=NAME`, or of every
/// issuer, now: bypassing the kid-miss cooldown, unconditionally. `None`
/// when no issuer has that name.
async fn reload_keys(app: &App, query: Option<&str>) -> Option<serde_json::Value> {
    let wanted = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("issuer="))
            .map(str::to_string)
    });
    let snapshot = app.snapshot();
    let mut stores: Vec<_> = snapshot
        .issuers
        .iter()
        .filter(|i| wanted.as_ref().is_none_or(|w| *w == i.name))
        .map(|i| i.keys.clone())
        .collect();
    if stores.is_empty() && wanted.is_some() {
        return None;
    }
    stores.sort_by(|a, b| a.issuer().cmp(b.issuer()));
    let mut changes = Vec::with_capacity(stores.len());
    for store in stores {
        changes.push(store.reload_now().await);
    }
    Some(serde_json::json!({ "issuers": changes }))
}

async fn handle(app: &App, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let json = |status: StatusCode, body: serde_json::Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_default()
    };
    let path = req.uri().path();
    if path.starts_with("/admin/") && !peer.ip().is_loopback() {
        return text(
            StatusCode::FORBIDDEN,
            "the admin API answers loopback only\n".into(),
        );
    }
    match (req.method(), path) {
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from({
                let entries = i64::try_from(app.token_cache.len()).unwrap_or(i64::MAX);
                app.metrics.token_cache_entries.set(entries);
                app.metrics.render()
            })))
            .unwrap_or_default(),
        (&Method::GET, "/livez") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => match app.not_ready() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        (&Method::GET, "/admin/config") => json(StatusCode::OK, config_report(app)),
        (&Method::GET, "/admin/keys") => json(StatusCode::OK, keys_report(app)),
        (&Method::POST, "/admin/keys/reload") => match reload_keys(app, req.uri().query()).await {
            Some(changes) => json(StatusCode::OK, changes),
            None => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no issuer of that name"}),
            ),
        },
        (&Method::POST, "/admin/reload") => match app.reload().await {
            Ok(g) => text(StatusCode::OK, format!("reloaded: generation {g}\n")),
            Err(errs) => text(StatusCode::UNPROCESSABLE_ENTITY, format!("{errs}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}
