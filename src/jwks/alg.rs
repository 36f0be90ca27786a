//! The JWS algorithms claimgate knows, by their JOSE names.
//!
//! `jsonwebtoken`'s enum has neither ES512 nor the fully specified
//! `Ed25519` of RFC 9864, so claimgate names algorithms itself; signatures
//! are checked with aws-lc-rs.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature;

/// A JWS `alg` (RFC 7518 §3.1, RFC 8037 §3.1, RFC 9864 §2.2).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    /// ECDSA over P-521 with SHA-512 (RFC 7518 §3.4).
    ES512,
    /// The polymorphic EdDSA name (RFC 8037); over Ed25519 keys only here.
    EdDSA,
    /// EdDSA over Ed25519, fully specified (RFC 9864 §2.2).
    Ed25519,
}

impl Algorithm {
    /// Every algorithm, in the order of its JOSE registry entries.
    pub const ALL: [Algorithm; 14] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
        Algorithm::Ed25519,
    ];

    /// The JOSE name, as in a token's `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::Ed25519 => "Ed25519",
        }
    }

    /// The aws-lc-rs verification of an asymmetric algorithm; `None` for HMAC.
    pub(crate) fn verification(self) -> Option<&'static dyn signature::VerificationAlgorithm> {
        Some(match self {
            Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            // JWS ECDSA signatures are r || s, fixed width (RFC 7518 §3.4).
            Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
            Algorithm::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
            Algorithm::EdDSA | Algorithm::Ed25519 => &signature::ED25519,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
        })
    }

    /// The HMAC of an HS algorithm and its least secret length in bytes
    /// (RFC 7518 §3.2: at least the hash size); `None` otherwise.
    pub(crate) fn hmac(self) -> Option<(aws_lc_rs::hmac::Algorithm, usize)> {
        match self {
            Algorithm::HS256 => Some((aws_lc_rs::hmac::HMAC_SHA256, 32)),
            Algorithm::HS384 => Some((aws_lc_rs::hmac::HMAC_SHA384, 48)),
            Algorithm::HS512 => Some((aws_lc_rs::hmac::HMAC_SHA512, 64)),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one claimgate knows (names are case-sensitive, as in JOSE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm;

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or(UnknownAlgorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.name().parse::<Algorithm>(), Ok(alg));
            assert_eq!(format!("{alg:?}"), alg.name());
        }
        for bad in ["none", "es256", "ED25519", "ES521", "", "HS256 "] {
            assert_eq!(bad.parse::<Algorithm>(), Err(UnknownAlgorithm), "{bad}");
        }
    }
}
