use super::*;
use serde_json::json;

fn ec_key(kid: &str) -> Value {
    // A valid P-256 public point (the RFC 7515 A.3 example key).
    json!({"kty":"EC","crv":"P-256","kid":kid,
           "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
           "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
}

fn parse_value(v: Value) -> Result<KeySet, JwksError> {
    parse(v.to_string().as_bytes(), &ASYMMETRIC)
}

#[test]
fn keeps_a_valid_ec_key() {
    let set = parse_value(json!({"keys":[ec_key("a")]})).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.select(Some("a"), Algorithm::ES256).count(), 1);
    assert_eq!(set.select(Some("a"), Algorithm::RS256).count(), 0);
    assert_eq!(set.select(Some("b"), Algorithm::ES256).count(), 0);
}

#[test]
fn refuses_oct_enc_small_rsa_and_mismatched_alg() {
    let small_n = URL_SAFE_NO_PAD.encode([0xc1u8; 128]); // 1024 bits
    let keys = json!({"keys":[
        {"kty":"oct","k":"c2VjcmV0","kid":"h"},
        {"kty":"RSA","n":small_n,"e":"AQAB","kid":"r"},
        {"use":"enc","kty":"EC","crv":"P-256","kid":"e",
         "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"alg":"RS256","kty":"EC","crv":"P-256","kid":"m",
         "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    ]});
    assert_eq!(parse_value(keys).err(), Some(JwksError::NoUsableKey(4)));
}

#[test]
fn duplicate_kid_with_different_material_drops_both() {
    let mut other = ec_key("a");
    other["x"] = json!("gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0");
    other["y"] = json!("SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps");
    let set = parse_value(json!({"keys":[ec_key("a"), other, ec_key("b")]})).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.keys()[0].kid.as_deref(), Some("b"));
}

#[test]
fn too_many_keys_and_garbage_are_refused() {
    let many: Vec<Value> = (0..=MAX_KEYS).map(|i| ec_key(&i.to_string())).collect();
    assert_eq!(
        parse_value(json!({ "keys": many })).err(),
        Some(JwksError::TooManyKeys(MAX_KEYS + 1))
    );
    assert_eq!(
        parse(b"<html>", &ASYMMETRIC).err(),
        Some(JwksError::NotAJwks)
    );
    assert_eq!(
        parse(b"{\"keys\":{}}", &ASYMMETRIC).err(),
        Some(JwksError::NotAJwks)
    );
}

#[test]
fn issuer_allow_list_narrows_keys() {
    let r = parse(
        json!({"keys":[ec_key("a")]}).to_string().as_bytes(),
        &[Algorithm::RS256],
    );
    assert_eq!(r.err(), Some(JwksError::NoUsableKey(1)));
}

/// The pre-parsed aws-lc-rs keys agree with `jsonwebtoken`'s verify on
/// good, tampered and cross-algorithm signatures, for every algorithm
/// it knows (differential test of the DER and point encodings).
#[test]
fn parsed_keys_agree_with_jsonwebtoken() {
    use crate::testkit::keys::SigningKey;
    for alg in ASYMMETRIC {
        let signer = SigningKey::generate(alg, "k");
        let set = parse(
            json!({"keys": [signer.jwk()]}).to_string().as_bytes(),
            &ASYMMETRIC,
        )
        .unwrap();
        let key = &set.keys()[0];
        assert!(key.parsed(alg).is_some(), "{alg:?} has no parsed key");
        // jsonwebtoken knows neither ES512 nor `Ed25519`: those are
        // checked against PyJWT in tests/interop.rs.
        let reference = alg.name().parse::<jsonwebtoken::Algorithm>().ok().map(|a| {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(signer.jwk().clone()).unwrap();
            (a, jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap())
        });
        let token = signer.sign(&json!({"sub": "x"}));
        let (message, sig) = token.rsplit_once('.').unwrap();
        let mut tampered: Vec<u8> = sig.bytes().collect();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for (s, want) in [
            (sig, true),
            (tampered.as_str(), false),
            ("", false),
            ("!!", false),
        ] {
            if let Some((a, k)) = &reference {
                let theirs =
                    jsonwebtoken::crypto::verify(s, message.as_bytes(), k, *a).unwrap_or(false);
                assert_eq!(theirs, want, "{alg:?} reference");
            }
            assert_eq!(key.verify(alg, message.as_bytes(), s), want, "{alg:?}");
        }
        // The same signature under another algorithm of the key's family.
        for other in &key.algorithms {
            if *other != alg {
                assert!(
                    !key.verify(*other, message.as_bytes(), sig),
                    "{alg:?} as {other:?}"
                );
            }
        }
    }
}

#[test]
fn rsa_der_encodes_lengths_and_sign_bits() {
    // A 1-byte modulus with its high bit set gets a 0x00 pad; e = 65537.
    assert_eq!(
        rsa_public_key_der(&[0x80], &[0x01, 0x00, 0x01]),
        vec![0x30, 0x09, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 0x01, 0x00, 0x01]
    );
    // Leading zeros are dropped; long lengths use the 0x82 form.
    let n = [vec![0, 0], vec![0x7f; 300]].concat();
    let der = rsa_public_key_der(&n, &[3]);
    // 304 bytes of n (tag, 3 length bytes, 300) + 3 of e = 0x133.
    assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x33]);
    assert_eq!(&der[4..8], &[0x02, 0x82, 0x01, 0x2c]);
}
