//! Finding the one token of a request (SECURITY.md rule 1).

use http::header::AUTHORIZATION;
use http::HeaderMap;
use thiserror::Error;

/// A request whose credentials cannot be read one way only: a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ExtractError {
    #[error("more than one token in the request")]
    MultipleTokens,
    #[error("the Authorization header is not a valid Bearer credential")]
    MalformedAuthorization,
}

impl ExtractError {
    pub fn reason(&self) -> &'static str {
        match self {
            ExtractError::MultipleTokens => "multiple_tokens",
            ExtractError::MalformedAuthorization => "malformed_authorization",
        }
    }
}

/// The bearer token of `headers`, if any.
///
/// RFC 6750 §2.1: the scheme is case-insensitive and one space separates it
/// from the token. Two `Authorization` headers are refused rather than
/// choosing one, so that claimgate and the upstream can never disagree about
/// who is calling. Another scheme (`Basic ...`) counts as no token.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ExtractError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExtractError::MultipleTokens);
    }
    let value = value
        .to_str()
        .map_err(|_| ExtractError::MalformedAuthorization)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return Err(ExtractError::MalformedAuthorization);
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_bearer_in_any_case() {
        for v in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER a.b.c",
            "Bearer  a.b.c",
        ] {
            assert_eq!(bearer(&headers(&[v])), Ok(Some("a.b.c")), "{v}");
        }
    }

    #[test]
    fn table() {
        type Case<'a> = (&'a [&'a str], Result<Option<&'a str>, ExtractError>);
        let cases: &[Case] = &[
            (&[], Ok(None)),
            (&["Basic dXNlcjpwdw=="], Ok(None)),
            (&["Bearer"], Err(ExtractError::MalformedAuthorization)),
            (&["Bearer "], Err(ExtractError::MalformedAuthorization)),
            (&["Bearer a b"], Err(ExtractError::MalformedAuthorization)),
            (
                &["Bearer a.b.c", "Bearer d.e.f"],
                Err(ExtractError::MultipleTokens),
            ),
            (
                &["Bearer a.b.c", "Basic x"],
                Err(ExtractError::MultipleTokens),
            ),
        ];
        for (values, want) in cases {
            assert_eq!(&bearer(&headers(values)), want, "{values:?}");
        }
    }
}
