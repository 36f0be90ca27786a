//! `claimgate keys`: a running instance's keys, through its admin API.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// `claimgate keys`: the admin API's `/admin/keys` (or `/admin/keys/reload`)
/// of a running instance, as text or JSON.
pub async fn keys(admin: SocketAddr, reload: bool, issuer: Option<String>, json: bool) -> ExitCode {
    use http_body_util::BodyExt;
    let (method, path) = if reload {
        ("POST", "/admin/keys/reload")
    } else {
        ("GET", "/admin/keys")
    };
    let query = match (&issuer, reload) {
        (Some(name), true) => format!("?issuer={name}"),
        _ => String::new(),
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = match http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}{query}"))
        .body(http_body_util::Empty::new())
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("claimgate keys: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| format!("{status}: {}", String::from_utf8_lossy(&body).trim()))?;
        if !status.is_success() {
            return Err(format!("{status}: {doc}"));
        }
        Ok(doc)
    };
    let doc = match tokio::time::timeout(Duration::from_secs(30), answer).await {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) => {
            eprintln!("claimgate keys: {admin}: {e}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("claimgate keys: {admin}: no answer in 30 s");
            return ExitCode::FAILURE;
        }
    };
    let mut issuers: Vec<serde_json::Value> =
        doc["issuers"].as_array().cloned().unwrap_or_default();
    if let Some(name) = &issuer {
        issuers.retain(|i| i["issuer"] == name.as_str());
        if issuers.is_empty() {
            eprintln!("claimgate keys: no issuer named {name:?}");
            return ExitCode::FAILURE;
        }
    }
    if json {
        println!("{}", serde_json::json!({ "issuers": issuers }));
        return ExitCode::SUCCESS;
    }
    let list = |v: &serde_json::Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut failed = false;
    for i in &issuers {
        let name = i["issuer"].as_str().unwrap_or("?");
        if reload {
            match i["error"].as_str() {
                Some(e) => {
                    failed = true;
                    println!("{name}: load failed, the previous keys stay: {e}");
                }
                None => println!(
                    "{name}: {} keys; added: [{}]; removed: [{}]",
                    i["keys"],
                    list(&i["added"]),
                    list(&i["removed"])
                ),
            }
            continue;
        }
        let secs = |v: &serde_json::Value| v.as_u64().map_or("-".into(), |s| format!("{s}s"));
        println!(
            "{name}  source: {}  loaded: {}  age: {}  next refresh: {}{}",
            i["source"].as_str().unwrap_or("?"),
            i["loaded"],
            secs(&i["age_seconds"]),
            secs(&i["next_refresh_seconds"]),
            i["last_error"]
                .as_str()
                .map_or(String::new(), |e| format!("  last error: {e}")),
        );
        for k in i["keys"].as_array().into_iter().flatten() {
            println!(
                "  kid {}  {}  {}",
                k["kid"].as_str().unwrap_or("(none)"),
                k["kty"].as_str().unwrap_or("?"),
                list(&k["algorithms"])
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
