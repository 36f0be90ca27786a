//! Where an issuer keeps roles, permissions, scopes and tenants: the
//! locations the rule shorthands read, set by the issuer's profile.

use super::ClaimPath;

/// Where an issuer keeps what the shorthands read. Set by its profile,
/// overridable per issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimLocations {
    pub roles: ClaimPath,
    pub permissions: ClaimPath,
    /// Every one is read; a string there is a space-separated list.
    pub scopes: Vec<ClaimPath>,
    /// A map of tenant id → `{roles: [...], permissions: [...]}`.
    pub tenants: ClaimPath,
    pub tenant_roles: String,
    pub tenant_permissions: String,
    /// The tenant the session is working in (Descope's `dct`).
    pub current_tenant: ClaimPath,
}

impl ClaimLocations {
    /// Compiles locations from JSONPath texts.
    pub fn compile(texts: &LocationTexts, untrusted: &[String]) -> Result<Self, String> {
        let path = |t: &str| ClaimPath::compile(t, untrusted);
        Ok(Self {
            roles: path(&texts.roles)?,
            permissions: path(&texts.permissions)?,
            scopes: texts
                .scopes
                .iter()
                .map(|s| path(s))
                .collect::<Result<_, _>>()?,
            tenants: path(&texts.tenants)?,
            tenant_roles: texts.tenant_roles.clone(),
            tenant_permissions: texts.tenant_permissions.clone(),
            current_tenant: path(&texts.current_tenant)?,
        })
    }
}

/// [`ClaimLocations`] before compiling: what profiles and the config give.
#[derive(Debug, Clone)]
pub struct LocationTexts {
    pub roles: String,
    pub permissions: String,
    pub scopes: Vec<String>,
    pub tenants: String,
    pub tenant_roles: String,
    pub tenant_permissions: String,
    pub current_tenant: String,
}
