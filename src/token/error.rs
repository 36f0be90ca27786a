//! Why a token was refused. Each variant has a stable reason code: it is what
//! the client sees in the JSON body and what the metrics count.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("no token in the request")]
    Missing,
    #[error("token longer than {max} bytes")]
    TooLarge { max: usize },
    #[error("token is not a compact JWS: {0}")]
    Malformed(&'static str),
    #[error("token header carries `{0}`, which is refused")]
    UnsupportedHeader(&'static str),
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("no issuer is configured for this `iss`")]
    UnknownIssuer,
    #[error("this route does not accept tokens of issuer {0}")]
    IssuerNotAccepted(String),
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    #[error("the issuer's keys are not loaded yet")]
    KeysUnavailable,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("required claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("claim `{0}` has the wrong type")]
    InvalidClaim(&'static str),
    /// Not the kind of token the issuer's profile accepts (`typ`, `drn`).
    #[error("not an accepted kind of token (`{0}`)")]
    WrongType(&'static str),
    /// The token came from a source its issuer does not list.
    #[error("the issuer does not accept tokens from {0}")]
    SourceNotAllowed(String),
    #[error("token lifetime (exp - iat) is longer than the issuer allows")]
    LifetimeTooLong,
    /// The issuer refuses tokens carrying claims a client could have set.
    #[error(
        "token carries `{claim}`, which issuer `{issuer}` lists in untrusted_claims and \
         refuses (refuse_untrusted_claims: true): a client could have set it"
    )]
    UntrustedClaim { claim: String, issuer: String },
    /// Introspection said `active: false` (revoked, expired, unknown).
    #[error("the issuer says the token is not active")]
    Inactive,
    /// Too many introspection calls in flight or per second (503).
    #[error("too many introspection calls: try again")]
    IntrospectionBusy,
    /// The introspection endpoint failed or could not be reached (503).
    #[error("the introspection endpoint did not answer")]
    IntrospectionUnavailable,
}

impl TokenError {
    /// The stable reason code (bounded set: safe as a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing_token",
            TokenError::TooLarge { .. } => "token_too_large",
            TokenError::Malformed(_) => "malformed_token",
            TokenError::UnsupportedHeader(_) => "unsupported_header",
            TokenError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::IssuerNotAccepted(_) => "issuer_not_accepted",
            TokenError::UnknownKey => "unknown_key",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::InvalidClaim(_) => "invalid_claim",
            TokenError::WrongType(_) => "wrong_token_type",
            TokenError::SourceNotAllowed(_) => "token_source_not_allowed",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::UntrustedClaim { .. } => "untrusted_claim",
            TokenError::Inactive => "token_inactive",
            TokenError::IntrospectionBusy => "introspection_busy",
            TokenError::IntrospectionUnavailable => "introspection_unavailable",
        }
    }

    /// Not the token's fault: the keys or the introspection endpoint are not
    /// there yet or now (503, no challenge).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            TokenError::KeysUnavailable
                | TokenError::IntrospectionBusy
                | TokenError::IntrospectionUnavailable
        )
    }
}
