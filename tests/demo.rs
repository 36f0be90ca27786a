//! `claimgate demo` as a user runs it: the embedded policy, echo upstream
//! and JWKS, and the walkthrough's tokens behaving as it says.

mod common;

use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn demo_allows_denies_and_forwards_as_its_walkthrough_says() {
    let loopback = ([127, 0, 0, 1], 0).into();
    let demo = claimgate::demo::start(loopback, loopback).await.unwrap();
    let text = demo.walkthrough();
    let token = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let addr = demo.running.addr;
    let get = |t: String, extra: Vec<(&'static str, &'static str)>| {
        let client = client.clone();
        async move {
            let auth = format!("Bearer {t}");
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend(extra);
            common::send(&client, addr, "GET", "/orders/7", &headers).await
        }
    };

    let r = get(
        token("GOLD"),
        vec![("x-user-id", "alice"), ("X_User_Id", "alice")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let echo = r.json();
    assert_eq!(echo["headers"]["x-user-id"], "bob");
    assert_eq!(echo["headers"]["x-subscription"], "gold");
    assert_eq!(echo["headers"]["x-full-name"], "Bob Gold");
    assert_eq!(echo["headers"]["x-region"], "eu-west");
    assert!(echo["headers"].get("x_user_id").is_none());

    assert_eq!(get(token("ADMIN"), vec![]).await.status, StatusCode::OK);
    let r = get(token("FREE"), vec![]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut tampered = token("GOLD");
    tampered.pop();
    tampered.push('x');
    // The last character may only change unused bits; flip a middle one too.
    let mid = tampered.len() - 10;
    let c = if &tampered[mid..mid + 1] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(mid..mid + 1, c);
    assert_eq!(get(tampered, vec![]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(demo.upstream.count(), 2);

    // A token the demo mints with nsec claims gets no admin rights.
    let spoof = demo.token("mallory", json!({"nsec": {"user_role": "admin"}}));
    assert_eq!(get(spoof, vec![]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(demo.upstream.count(), 2);
}
