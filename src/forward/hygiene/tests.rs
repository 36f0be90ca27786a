use super::*;
use http::HeaderValue;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            k.parse::<HeaderName>().unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

proptest::proptest! {
    /// The first-byte filter never changes an answer: owned names and
    /// prefixes in any spelling, near misses and random names.
    #[test]
    fn the_first_byte_filter_agrees_with_the_full_match(
        base in proptest::sample::select(vec![
            "x-user-id", "accept-tenant", "-odd", "x-hasura-role", "hx.a", "forwarded",
            "x-forwarded-for", "x-real-ip", "x-envoy-path", "x-original-url", "accept", "host",
        ]),
        upper in proptest::collection::vec(proptest::bool::ANY, 16),
        sep in proptest::sample::select(vec!['-', '_', '.']),
        suffix in "[a-z_.-]{0,3}",
        random in "[A-Za-z0-9_.-]{1,12}",
        use_random in proptest::bool::ANY,
    ) {
        let name: String = if use_random {
            random
        } else {
            let spelled = base.chars().zip(upper.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &u)| match c {
                    '-' => sep,
                    c if u => c.to_ascii_uppercase(),
                    c => c,
                });
            spelled.chain(suffix.chars()).collect()
        };
        let owned = OwnedHeaders::new(["X-User-Id", "Accept-Tenant", "_odd"], ["x-hasura-", "Hx."]);
        let full = |exact: &[String], prefixes: &[String]| {
            with_canonical(&name, |c| matches(exact, prefixes, c))
        };
        proptest::prop_assert_eq!(owned.owns(&name), full(&owned.exact, &owned.prefixes));
        proptest::prop_assert_eq!(
            owned.claims(&name),
            full(&owned.claimed_exact, &owned.claimed_prefixes)
        );
    }
}

#[test]
fn every_spelling_of_an_owned_header_is_removed() {
    let owned = OwnedHeaders::new(["X-User-Id"], ["x-hasura-"]);
    let mut h = map(&[
        ("x-user-id", "1"),
        ("X_User_Id", "2"),
        ("x.user.id", "3"),
        ("X-HASURA-ROLE", "admin"),
        ("x_hasura_user_id", "9"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x-original-url", "/admin"),
        ("accept", "*/*"),
        ("x-user-idx", "kept"),
    ]);
    clean_request(&mut h, &owned);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort();
    assert_eq!(left, vec!["accept", "x-user-idx"]);
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut h = map(&[
        ("connection", "close, X-Secret-Flag"),
        ("x-secret-flag", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic x"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut h);
    let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, vec!["x-kept"]);
    // Each of the nine alone (twice), and a name only `Connection` could
    // doom, which stays when no `Connection` names it.
    for hop in &HOP_BY_HOP_NAMES {
        let mut h = map(&[
            (hop.as_str(), "a"),
            (hop.as_str(), "b"),
            ("x-secret-flag", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-secret-flag"], "{hop}");
    }
}

#[test]
fn connection_naming_one_of_the_nine_still_removes_the_rest_it_names() {
    // `Keep-Alive` is skipped as a name to parse (it goes anyway); the
    // names after it still go.
    let mut h = map(&[
        ("connection", "Keep-Alive, TE, x-after"),
        ("keep-alive", "timeout=5"),
        ("x-after", "1"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut h);
    let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, vec!["x-kept"]);
}
