//! The load benchmark's kit (`benches/load.sh` runs it): a fresh RS256 key
//! published as `jwks.json`, and the tokens wrk sends, one per line:
//!
//! - `token`: one valid token (the cached case);
//! - `forged`: the same token with its signature's last bytes changed;
//! - `pool.txt`: `pool` distinct valid tokens (no cache help on first use);
//! - `unknown.txt`: 10,000 tokens naming kids the JWKS does not have.
//!
//! It also measures the bare RSA-2048 verification in this process (aws-lc-rs
//! on a pre-parsed key, as claimgate does), so the load script can state the
//! goals "nginx + 1.3 × bare verify" from the same run.
//!
//!     cargo run --release --example loadkit -- <dir> <pool> [--verify-only]

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use claimgate::jwks::Algorithm;
use claimgate::testkit::keys::{jwks, SigningKey};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.bench.local";
const AUDIENCE: &str = "bench-api";

fn claims(sub: &str, exp: u64) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": exp, "iat": exp - 86_400,
        "roles": ["reader", "orders"], "tenant": "acme", "plan": "gold",
        "email": format!("{sub}@bench.local"),
    })
}

fn write(path: &std::path::Path, lines: &[String]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
}

/// µs per bare RS256 verification of a token-sized message with a fresh
/// RSA-2048 key: the key parsed once, only `verify_sig` timed.
fn bare_verify_us(message: &[u8]) -> f64 {
    use aws_lc_rs::signature::KeyPair;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message,
        &mut sig,
    )
    .unwrap();
    let parsed = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref())
        .parse()
        .expect("public key");
    let runs = 4_000;
    let started = Instant::now();
    for _ in 0..runs {
        parsed.verify_sig(message, &sig).expect("verify");
    }
    started.elapsed().as_secs_f64() * 1e6 / runs as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.first().expect("usage: loadkit <dir> <pool>"));
    let pool: usize = args
        .get(1)
        .map_or(100_000, |s| s.parse().expect("pool size"));
    let verify_only = args.iter().any(|a| a == "--verify-only");
    std::fs::create_dir_all(&dir).expect("dir");
    let key = SigningKey::generate(Algorithm::RS256, "bench-1");
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    let token = key.sign(&claims("user-0", exp));
    let message = token.rsplit_once('.').map_or("", |(m, _)| m);
    println!("bare_verify_us {:.2}", bare_verify_us(message.as_bytes()));
    if verify_only {
        return;
    }
    std::fs::write(dir.join("jwks.json"), jwks([&key]).to_string()).expect("jwks");
    std::fs::write(dir.join("token"), &token).expect("token");
    // The same header and payload, the signature's last characters changed:
    // it parses, names a known kid, and fails only the RSA check.
    let forged = format!("{}AAAA", &token[..token.len() - 4]);
    std::fs::write(dir.join("forged"), forged).expect("forged");

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let minted: Vec<String> = std::thread::scope(|s| {
        let key = &key;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..pool)
                        .step_by(threads)
                        .map(|i| key.sign(&claims(&format!("user-{}", i + 1), exp)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    });
    write(&dir.join("pool.txt"), &minted);

    // Unknown kids, a different one each: refused at the key lookup, before
    // any signature check, so the signature is just 256 bytes of filler.
    let payload = URL_SAFE_NO_PAD.encode(claims("user-x", exp).to_string());
    let filler = URL_SAFE_NO_PAD.encode([7u8; 256]);
    let unknown: Vec<String> = (0..10_000)
        .map(|i| {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("rotated-{i}")});
            let header = URL_SAFE_NO_PAD.encode(header.to_string());
            format!("{header}.{payload}.{filler}")
        })
        .collect();
    write(&dir.join("unknown.txt"), &unknown);
    println!("minted {} pool tokens in {}", minted.len(), dir.display());
}
