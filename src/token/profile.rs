//! Issuer profiles: what claimgate knows of an IdP's tokens. A profile
//! gives the default claim locations that the `role`, `permission`, `scope`
//! and `tenant_*` shorthands read, and the token checks the IdP's own
//! documentation asks for.

use serde::Deserialize;

use crate::claims::LocationTexts;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Every location configurable; defaults `$.roles`, `$.permissions`,
    /// `$.scope` + `$.scp`, `$.tenants.<id>.roles|permissions`, `$.dct`.
    #[default]
    Generic,
    /// Descope session tokens: `drn` must be `DS` (a refresh token, `DSR`,
    /// is refused); roles and permissions at the root and per tenant in
    /// `tenants`; `dct` the current tenant; `nsec` untrusted.
    Descope,
    /// RFC 9068 JWT access tokens (Curity and others): header `typ` must be
    /// `at+jwt`; `scope` space-separated; permissions in `entitlements`
    /// (RFC 9068 §2.2.3.1).
    Rfc9068,
}

impl Profile {
    /// The claim locations this profile starts from.
    pub fn locations(self) -> LocationTexts {
        let generic = LocationTexts {
            roles: "$.roles".into(),
            permissions: "$.permissions".into(),
            scopes: vec!["$.scope".into(), "$.scp".into()],
            tenants: "$.tenants".into(),
            tenant_roles: "roles".into(),
            tenant_permissions: "permissions".into(),
            current_tenant: "$.dct".into(),
        };
        match self {
            Profile::Generic | Profile::Descope => generic,
            Profile::Rfc9068 => LocationTexts {
                permissions: "$.entitlements".into(),
                scopes: vec!["$.scope".into()],
                ..generic
            },
        }
    }

    /// The `typ` header value a token must carry, if any (compared without
    /// case, with or without the `application/` prefix, RFC 9068 §4).
    pub fn required_typ(self) -> Option<&'static str> {
        match self {
            Profile::Rfc9068 => Some("at+jwt"),
            _ => None,
        }
    }

    /// String claims that must hold exactly this value.
    pub fn required_claims(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Profile::Descope => &[("drn", "DS")],
            _ => &[],
        }
    }
}
