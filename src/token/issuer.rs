//! Issuer settings as compiled from the policy files. Keys live in the
//! issuer's [`JwksStore`], which outlives snapshots.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::jwks::Algorithm;

use super::error::TokenError;
use super::extract::TokenSource;
use super::Profile;
use crate::claims::ClaimLocations;
use crate::jwks::JwksStore;

/// One trusted token issuer.
pub struct Issuer {
    /// The configuration name (metric label, route `issuers:` lists).
    pub name: String,
    /// The exact `iss` value.
    pub iss: String,
    /// A token's `aud` must name one of these.
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (≤ 60).
    pub leeway: u64,
    /// Top-level claims a client could have set; removed before policy.
    pub untrusted_claims: Vec<String>,
    /// Refuse tokens that carry one, instead of removing it.
    pub refuse_untrusted: bool,
    pub profile: Profile,
    /// Where its tokens may come from.
    pub token_from: Vec<TokenSource>,
    /// Longest `exp - iat` accepted, in seconds.
    pub max_lifetime: Option<u64>,
    /// Longest `sub` accepted, in bytes.
    pub max_sub_bytes: usize,
    /// Where the shorthands (`role`, `tenant_role`, ...) read.
    pub locations: ClaimLocations,
    pub keys: Arc<JwksStore>,
    /// Opaque tokens (and, if configured, every token) are introspected.
    pub introspection: Option<Arc<super::introspect::Introspector>>,
}

impl Issuer {
    /// Rule 8: claims a client could have set never reach policy or
    /// headers: removed, or the token refused where the issuer says so.
    pub fn strip_untrusted(&self, claims: &mut Map<String, Value>) -> Result<(), TokenError> {
        for name in &self.untrusted_claims {
            if claims.remove(name).is_some() && self.refuse_untrusted {
                return Err(TokenError::UntrustedClaim {
                    claim: name.clone(),
                    issuer: self.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Same settings and the same key store: a token verified by one is
    /// verified by the other, so a reload may keep the old one (and its
    /// cached tokens).
    pub fn same_as(&self, other: &Issuer) -> bool {
        self.name == other.name
            && self.iss == other.iss
            && self.audiences == other.audiences
            && self.algorithms == other.algorithms
            && self.leeway == other.leeway
            && self.untrusted_claims == other.untrusted_claims
            && self.refuse_untrusted == other.refuse_untrusted
            && self.profile == other.profile
            && self.token_from == other.token_from
            && self.max_lifetime == other.max_lifetime
            && self.max_sub_bytes == other.max_sub_bytes
            && self.locations == other.locations
            && Arc::ptr_eq(&self.keys, &other.keys)
            && self.introspection.as_ref().map(|i| &i.settings)
                == other.introspection.as_ref().map(|i| &i.settings)
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("iss", &self.iss)
            .finish()
    }
}

/// The issuers of a snapshot, found by `iss`.
#[derive(Default)]
pub struct Issuers {
    by_iss: crate::FastMap<String, Arc<Issuer>>,
    by_name: crate::FastMap<String, Arc<Issuer>>,
}

impl Issuers {
    /// The issuers of one issuer (to verify what only it may have signed).
    pub fn single(issuer: Arc<Issuer>) -> Self {
        let mut all = Self::default();
        all.by_iss.insert(issuer.iss.clone(), issuer.clone());
        all.by_name.insert(issuer.name.clone(), issuer);
        all
    }

    pub fn insert(&mut self, issuer: Issuer) {
        let issuer = Arc::new(issuer);
        self.by_iss.insert(issuer.iss.clone(), issuer.clone());
        self.by_name.insert(issuer.name.clone(), issuer);
    }

    /// Replaces every issuer that is [`Issuer::same_as`] one of `previous`
    /// with that previous one, so that verified tokens it holds stay valid
    /// across a reload.
    pub fn adopt_unchanged(&mut self, previous: &Issuers) {
        for (name, issuer) in self.by_name.iter_mut() {
            if let Some(old) = previous.by_name.get(name) {
                if old.same_as(issuer) {
                    *issuer = old.clone();
                    self.by_iss.insert(old.iss.clone(), old.clone());
                }
            }
        }
    }

    /// Whether `issuer` is this very issuer (not an equal copy).
    pub fn holds(&self, issuer: &Arc<Issuer>) -> bool {
        self.by_name
            .get(&issuer.name)
            .is_some_and(|c| Arc::ptr_eq(c, issuer))
    }

    pub fn by_iss(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.by_iss.get(iss)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.by_name.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
