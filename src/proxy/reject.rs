//! Every refusal becomes a response here, and only here: the status, the
//! RFC 6750 `WWW-Authenticate` value, the JSON body with a stable reason
//! code, and the decision label the metrics count. Internal detail goes to
//! logs, never to the client.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::decision::Decision;
use crate::forward::hasura::HasuraError;
use crate::forward::RenderError;
use crate::policy::PathError;
use crate::token::{ExtractError, TokenError};

/// Why a request was not forwarded, and whose fault it was.
#[derive(Debug)]
pub enum Rejection {
    /// The client's request cannot be read one way only (400).
    BadPath(PathError),
    BadCredentials(ExtractError),
    /// No route takes this host, method and path (404).
    NoRoute,
    /// A CORS preflight for an origin, method or header the route does not
    /// allow, or on a route without `cors:` (403).
    CorsRefused,
    /// A route takes the path, not the method (405, with `Allow`).
    MethodNotAllowed(Vec<http::Method>),
    /// The token is missing or fails verification (401; 503 while keys load).
    Token(TokenError),
    /// The policy said no (403).
    Denied,
    /// A forward-auth check from a peer that is not a configured gateway
    /// (403, SECURITY.md rule 21).
    UntrustedGateway,
    /// A forward-auth check whose original method, URI or host cannot be
    /// read one way (400).
    BadForwardAuth,
    /// A claim cannot become a header value (400).
    Render(RenderError),
    /// A header the route marks `required` rendered empty (403, rule 5).
    RequiredHeaderEmpty(http::HeaderName),
    /// The client sent a header claimgate sets, and the policy refuses
    /// such requests (400).
    Spoofed(String),
    /// Hasura role selection or session variables (403, or 400 for a
    /// malformed `X-Hasura-Role`).
    Hasura(HasuraError),
    /// A webhook's refusal: Hasura takes 401 as "deny", anything else as an
    /// error. Carries the reason of the refusal it replaces.
    WebhookDenied(&'static str),
    /// The upstream could not be reached or broke the exchange (502).
    UpstreamUnavailable,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The request deadline passed before a response head (504).
    RequestTimeout,
    /// The declared body is over `limits.max_body_bytes` (413).
    BodyTooLarge,
    /// A rate limit refused (429), with `Retry-After` and `RateLimit*`.
    RateLimited(Vec<(http::HeaderName, HeaderValue)>),
    /// A Redis-backed limit's store failed and the limit says `deny` (503).
    RateLimitUnavailable,
}

impl From<crate::quota::Refusal> for Rejection {
    fn from(r: crate::quota::Refusal) -> Self {
        match r {
            crate::quota::Refusal::Limited(h) => Rejection::RateLimited(h),
            crate::quota::Refusal::StoreUnavailable => Rejection::RateLimitUnavailable,
        }
    }
}

impl Rejection {
    /// The stable reason code in the body and the logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadPath(_) => "ambiguous_path",
            Rejection::BadCredentials(e) => e.reason(),
            Rejection::NoRoute => "no_route",
            Rejection::MethodNotAllowed(_) => "method_not_allowed",
            Rejection::CorsRefused => "cors_refused",
            Rejection::Token(e) => e.reason(),
            Rejection::Denied => "policy_denied",
            Rejection::UntrustedGateway => "untrusted_gateway",
            Rejection::BadForwardAuth => "bad_forward_auth_request",
            Rejection::Render(_) => "unrenderable_claim",
            Rejection::RequiredHeaderEmpty(_) => "required_header_empty",
            Rejection::Spoofed(_) => "spoofed_header",
            Rejection::Hasura(e) => e.reason(),
            Rejection::WebhookDenied(reason) => reason,
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::RequestTimeout => "request_timeout",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::RateLimited(_) => "rate_limited",
            Rejection::RateLimitUnavailable => "rate_limit_unavailable",
        }
    }

    /// The `decision` label of `claimgate_requests_total`.
    pub fn decision(&self) -> Decision {
        match self {
            Rejection::BadPath(_)
            | Rejection::BadCredentials(_)
            | Rejection::Render(_)
            | Rejection::Spoofed(_)
            | Rejection::BadForwardAuth
            | Rejection::BodyTooLarge => Decision::BadRequest,
            Rejection::UntrustedGateway => Decision::Denied,
            Rejection::Hasura(e) if e.is_bad_request() => Decision::BadRequest,
            Rejection::Hasura(_) | Rejection::WebhookDenied(_) => Decision::Denied,
            Rejection::NoRoute | Rejection::MethodNotAllowed(_) => Decision::NoRoute,
            Rejection::CorsRefused => Decision::Denied,
            Rejection::RequiredHeaderEmpty(_) | Rejection::Denied => Decision::Denied,
            Rejection::Token(e) if e.is_unavailable() => Decision::Unavailable,
            Rejection::Token(_) => Decision::Unauthenticated,
            Rejection::UpstreamUnavailable | Rejection::UpstreamTimeout => Decision::UpstreamError,
            Rejection::RequestTimeout => Decision::Timeout,
            Rejection::RateLimited(_) => Decision::RateLimited,
            Rejection::RateLimitUnavailable => Decision::Unavailable,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadPath(_)
            | Rejection::BadCredentials(_)
            | Rejection::Render(_)
            | Rejection::BadForwardAuth
            | Rejection::Spoofed(_) => StatusCode::BAD_REQUEST,
            Rejection::UntrustedGateway => StatusCode::FORBIDDEN,
            Rejection::Hasura(e) if e.is_bad_request() => StatusCode::BAD_REQUEST,
            Rejection::Hasura(_) => StatusCode::FORBIDDEN,
            Rejection::WebhookDenied(_) => StatusCode::UNAUTHORIZED,
            Rejection::NoRoute => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::CorsRefused => StatusCode::FORBIDDEN,
            Rejection::Token(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Token(_) => StatusCode::UNAUTHORIZED,
            Rejection::Denied | Rejection::RequiredHeaderEmpty(_) => StatusCode::FORBIDDEN,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout | Rejection::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Rejection::RateLimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// RFC 6750 §3: the challenge. A request with no token gets no error
    /// code (§3.1); every token fault is `invalid_token`; a denial is
    /// `insufficient_scope`; a malformed credential is `invalid_request`.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            Rejection::Token(TokenError::Missing) => Some(r#"Bearer realm="claimgate""#),
            Rejection::Token(e) if e.is_unavailable() => None,
            Rejection::Token(_) => Some(r#"Bearer realm="claimgate", error="invalid_token""#),
            Rejection::BadCredentials(_) => {
                Some(r#"Bearer realm="claimgate", error="invalid_request""#)
            }
            Rejection::Denied | Rejection::RequiredHeaderEmpty(_) => {
                Some(r#"Bearer realm="claimgate", error="insufficient_scope""#)
            }
            Rejection::Hasura(e) if !e.is_bad_request() => {
                Some(r#"Bearer realm="claimgate", error="insufficient_scope""#)
            }
            _ => None,
        }
    }

    /// The OAuth-style error name in the body.
    fn error(&self) -> &'static str {
        match self {
            Rejection::Token(e) if e.is_unavailable() => "temporarily_unavailable",
            Rejection::Token(_) => "invalid_token",
            Rejection::Denied | Rejection::WebhookDenied(_) | Rejection::RequiredHeaderEmpty(_) => {
                "insufficient_scope"
            }
            Rejection::Hasura(e) if !e.is_bad_request() => "insufficient_scope",
            Rejection::NoRoute => "not_found",
            Rejection::MethodNotAllowed(_) => "method_not_allowed",
            Rejection::UpstreamUnavailable
            | Rejection::UpstreamTimeout
            | Rejection::RequestTimeout => "upstream_error",
            Rejection::RateLimited(_) => "rate_limited",
            Rejection::RateLimitUnavailable => "temporarily_unavailable",
            _ => "invalid_request",
        }
    }

    /// The refusal a webhook route answers: a policy "no" becomes 401.
    pub fn for_webhook(self) -> Self {
        match self {
            Rejection::Denied => Rejection::WebhookDenied("policy_denied"),
            Rejection::RequiredHeaderEmpty(_) => Rejection::WebhookDenied("required_header_empty"),
            Rejection::Hasura(e) if !e.is_bad_request() => Rejection::WebhookDenied(e.reason()),
            other => other,
        }
    }

    /// The JSON body every refusal carries: `{"error", "reason"}`.
    pub fn body(&self) -> String {
        format!(
            r#"{{"error":"{}","reason":"{}"}}"#,
            self.error(),
            self.reason()
        )
    }

    /// The response, carrying the request's id in the body and as
    /// `X-Request-Id`, so that a client can quote it.
    pub fn response_with_id(&self, id: &HeaderValue) -> Response<Body> {
        let body = format!(
            r#"{{"error":"{}","reason":"{}","request_id":"{}"}}"#,
            self.error(),
            self.reason(),
            // Visible ASCII without quotes or backslashes: safe in JSON.
            String::from_utf8_lossy(id.as_bytes()).replace(['"', '\\'], "")
        );
        let mut resp = self.response();
        *resp.body_mut() = Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed();
        resp.headers_mut()
            .insert(crate::forward::forwarded::X_REQUEST_ID, id.clone());
        resp
    }

    /// The gRPC status code of this refusal, as Envoy's jwt_authn and
    /// ext_authz answer: UNAUTHENTICATED, PERMISSION_DENIED, ...
    pub fn grpc_status(&self) -> u8 {
        match self.status().as_u16() {
            400 => 3,        // INVALID_ARGUMENT
            401 => 16,       // UNAUTHENTICATED
            403 => 7,        // PERMISSION_DENIED
            404 => 12,       // UNIMPLEMENTED
            413 | 429 => 8,  // RESOURCE_EXHAUSTED
            504 => 4,        // DEADLINE_EXCEEDED
            502 | 503 => 14, // UNAVAILABLE
            _ => 2,          // UNKNOWN
        }
    }

    /// The refusal of a gRPC call (`content-type: application/grpc*`): a
    /// trailers-only answer, HTTP 200 with `grpc-status` and `grpc-message`
    /// (the reason code), which gRPC clients report as the call's status.
    pub fn grpc_response(&self, id: &HeaderValue) -> Response<Body> {
        let mut resp = Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        );
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        h.insert("grpc-message", HeaderValue::from_static(self.reason()));
        h.insert(crate::forward::forwarded::X_REQUEST_ID, id.clone());
        if let Rejection::RateLimited(limit) = self {
            for (name, value) in limit {
                h.insert(name.clone(), value.clone());
            }
        }
        resp
    }

    pub fn response(&self) -> Response<Body> {
        let body = self.body();
        let mut resp = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(c) = self.challenge() {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Rejection::RateLimited(limit) = self {
            for (name, value) in limit {
                h.insert(name.clone(), value.clone());
            }
        }
        if let Rejection::MethodNotAllowed(methods) = self {
            let allow = methods.iter().map(http::Method::as_str).collect::<Vec<_>>();
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                h.insert(http::header::ALLOW, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges() {
        let cases: Vec<(Rejection, u16, Option<&str>)> = vec![
            (
                Rejection::Token(TokenError::Missing),
                401,
                Some(r#"Bearer realm="claimgate""#),
            ),
            (
                Rejection::Token(TokenError::Expired),
                401,
                Some(r#"Bearer realm="claimgate", error="invalid_token""#),
            ),
            (Rejection::Token(TokenError::KeysUnavailable), 503, None),
            (
                Rejection::Denied,
                403,
                Some(r#"Bearer realm="claimgate", error="insufficient_scope""#),
            ),
            (
                Rejection::BadCredentials(ExtractError::MultipleTokens),
                400,
                Some(r#"Bearer realm="claimgate", error="invalid_request""#),
            ),
            (Rejection::BadPath(PathError::Ambiguous), 400, None),
            (Rejection::NoRoute, 404, None),
            (
                Rejection::MethodNotAllowed(vec![http::Method::GET, http::Method::HEAD]),
                405,
                None,
            ),
            (Rejection::UpstreamUnavailable, 502, None),
            (Rejection::UpstreamTimeout, 504, None),
        ];
        for (r, status, challenge) in cases {
            let resp = r.response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(
                resp.headers()
                    .get(WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap()),
                challenge
            );
        }
    }
}
