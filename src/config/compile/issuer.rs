//! Compiling an issuer (and a route's Hasura profile, which reads secrets
//! the same way).

use super::*;
use crate::config::schema::IntrospectionDoc;
use crate::token::introspect::{
    client_assertion, Answer as IntrospectionAnswer, ClientAuth, Introspector, Settings, Which,
};

impl Compiler {
    pub(super) fn issuer(
        &mut self,
        file: &Path,
        name: String,
        doc: Spanned<IssuerDoc>,
        stores: &mut KeyStores,
    ) {
        let at = origin(file, &doc);
        if let Some(first) = self.issuer_origin.get(&name) {
            self.errs
                .push(at, format!("issuer `{name}` is already defined at {first}"));
            return;
        }
        self.issuer_origin.insert(name.clone(), at.clone());
        let doc = doc.value;
        let before = self.errs.len();
        let ca_file = doc
            .ca_file
            .as_ref()
            .map(|p| file.parent().unwrap_or(Path::new(".")).join(p));
        if let Some(path) = &ca_file {
            if let Err(e) = crate::jwks::fetch::ca_certificates(path) {
                self.errs
                    .push(at.clone(), format!("issuer `{name}`: ca_file {e}"));
            }
            if doc.jwks_file.is_some() {
                self.errs.push(
                    at.clone(),
                    format!("issuer `{name}`: ca_file goes with jwks_uri or discovery"),
                );
            }
        }
        let mut check_url = |what: &str, url: &str| {
            if url.starts_with("http://") && !doc.allow_http {
                self.errs.push(
                    at.clone(),
                    format!(
                        "issuer `{name}`: {what} is plain http; set `allow_http: true` to allow it"
                    ),
                );
            } else if !url.starts_with("https://") && !url.starts_with("http://") {
                self.errs.push(
                    at.clone(),
                    format!("issuer `{name}`: {what} must be an https URL"),
                );
            }
        };
        let iss = doc.issuer.clone().or_else(|| doc.discovery.clone());
        let secret = match doc.hmac_secret.as_ref().map(|s| secret_ref(file, s)) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                self.errs
                    .push(at.clone(), format!("issuer `{name}`: hmac_secret {e}"));
                return;
            }
        };
        let source = match (&secret, &doc.jwks_uri, &doc.jwks_file, &doc.discovery) {
            (Some(s), None, None, None) => KeySource::Secret(s.clone()),
            (Some(_), ..) => {
                self.errs.push(
                    at.clone(),
                    format!("issuer `{name}`: an hmac_secret issuer has no public keys (drop jwks_uri, jwks_file, discovery): one issuer never mixes HMAC and asymmetric keys"),
                );
                return;
            }
            (None, Some(url), None, None) => {
                check_url("jwks_uri", url);
                KeySource::Uri {
                    url: url.clone(),
                    allow_http: doc.allow_http,
                    ca_file: ca_file.clone(),
                }
            }
            (None, None, Some(path), None) => {
                KeySource::File(file.parent().unwrap_or(Path::new(".")).join(path))
            }
            (None, None, None, Some(url)) => {
                check_url("discovery", url);
                KeySource::Discovery {
                    url: url.clone(),
                    issuer: iss.clone().unwrap_or_default(),
                    allow_http: doc.allow_http,
                    ca_file: ca_file.clone(),
                }
            }
            _ => {
                self.errs.push(
                    at.clone(),
                    format!(
                        "issuer `{name}`: set exactly one of jwks_uri, jwks_file, discovery and hmac_secret"
                    ),
                );
                return;
            }
        };
        let Some(iss) = iss else {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: `issuer` (the exact `iss`) is required"),
            );
            return;
        };
        // Rule 10: HMAC only with a configured secret, and then only HMAC.
        let family: &[Algorithm] = if secret.is_some() { &HMAC } else { &ASYMMETRIC };
        let algorithms = match &doc.algorithms {
            None if secret.is_some() => vec![Algorithm::HS256],
            None => ASYMMETRIC.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for a in list {
                    match a.parse::<Algorithm>() {
                        Ok(alg) if family.contains(&alg) => out.push(alg),
                        _ if secret.is_some() => self.errs.push(at.clone(), format!("issuer `{name}`: algorithm `{a}` does not go with hmac_secret (HS256, HS384, HS512 only)")),
                        _ => self.errs.push(at.clone(), format!("issuer `{name}`: algorithm `{a}` is not supported (asymmetric only: RS*, PS*, ES256, ES384, ES512, EdDSA, Ed25519; HS* need hmac_secret)")),
                    }
                }
                out
            }
        };
        let leeway = doc.leeway.unwrap_or(DEFAULT_LEEWAY);
        if leeway > MAX_LEEWAY {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: leeway may be at most 60s"),
            );
        }
        let audiences = doc.audience.into_vec();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: audience must name at least one value"),
            );
        }
        if iss.is_empty() {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: issuer must not be empty"),
            );
        }
        if let Some(other) = self.issuers.by_iss(&iss) {
            self.errs.push(
                at.clone(),
                format!(
                    "issuer `{name}`: `{iss}` is also the issuer of `{}`",
                    other.name
                ),
            );
        }
        let untrusted = doc.untrusted_claims.unwrap_or_else(|| vec!["nsec".into()]);
        if self.errs.len() != before {
            return;
        }
        for u in &untrusted {
            if !self.untrusted.contains(u) {
                self.untrusted.push(u.clone());
            }
        }
        let interval = doc
            .refresh_interval
            .unwrap_or(DEFAULT_REFRESH)
            .max(Duration::from_secs(1));
        let refresh = Refresh {
            interval,
            min_interval: doc
                .refresh_min
                .unwrap_or(interval.min(DEFAULT_REFRESH_MIN))
                .max(Duration::from_secs(1)),
            max_interval: doc.refresh_max.unwrap_or(interval.max(DEFAULT_REFRESH_MAX)),
            max_stale: doc.max_stale.unwrap_or(DEFAULT_MAX_STALE),
            unknown_kid_cooldown: doc
                .unknown_kid_cooldown
                .unwrap_or(DEFAULT_UNKNOWN_KID_COOLDOWN),
        };
        if refresh.min_interval > refresh.max_interval {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: refresh_min is above refresh_max"),
            );
        }
        if refresh.max_stale <= refresh.max_interval.max(interval) {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: max_stale must be longer than the refresh period, or keys would expire between two refreshes"),
            );
        }
        let mut texts = doc.profile.locations();
        let c = doc.claims;
        let set = |slot: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut texts.roles, c.roles);
        set(&mut texts.permissions, c.permissions);
        set(&mut texts.tenants, c.tenants);
        set(&mut texts.tenant_roles, c.tenant_roles);
        set(&mut texts.tenant_permissions, c.tenant_permissions);
        set(&mut texts.current_tenant, c.current_tenant);
        if let Some(scope) = c.scope {
            texts.scopes = scope.into_vec();
        }
        let mut token_from = Vec::new();
        for text in doc.token_from.unwrap_or_else(|| vec!["bearer".into()]) {
            match TokenSource::parse(&text) {
                Ok(s) if !token_from.contains(&s) => token_from.push(s),
                Ok(_) => {}
                Err(e) => self.errs.push(at.clone(), format!("issuer `{name}`: {e}")),
            }
        }
        if token_from.is_empty() {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: token_from needs at least one source"),
            );
            return;
        }
        let locations = match ClaimLocations::compile(&texts, &untrusted) {
            Ok(l) => l,
            Err(e) => {
                self.errs.push(at, format!("issuer `{name}`: claims: {e}"));
                return;
            }
        };
        let introspection = match doc
            .introspection
            .map(|i| introspection_settings(file, i, doc.discovery.clone(), doc.allow_http))
        {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                self.errs
                    .push(at, format!("issuer `{name}`: introspection: {e}"));
                return;
            }
        };
        let keys = stores(&name, &source, &algorithms, refresh);
        let introspection =
            introspection.map(|s| Arc::new(Introspector::new(&name, s, keys.metrics())));
        self.issuers.insert(Issuer {
            name,
            iss,
            audiences,
            algorithms,
            leeway: leeway.as_secs(),
            untrusted_claims: untrusted,
            refuse_untrusted: doc.refuse_untrusted_claims,
            profile: doc.profile,
            token_from,
            max_lifetime: doc.max_lifetime.map(|d| d.as_secs()),
            max_sub_bytes: doc.max_sub_length.unwrap_or(DEFAULT_MAX_SUB_BYTES),
            locations,
            keys,
            introspection,
        });
    }

    /// A route's Hasura profile. The admin secret is read here, once.
    pub(super) fn hasura(&self, file: &Path, doc: &HasuraDoc) -> Result<Hasura, String> {
        let source = match (&doc.namespace, &doc.claims_map) {
            (Some(_), Some(_)) => return Err("give `namespace` or `claims_map`, not both".into()),
            (None, Some(map)) => {
                let mut entries = Vec::new();
                for (name, path) in map {
                    let name = name.to_ascii_lowercase();
                    if !name.starts_with("x-hasura-") {
                        return Err(format!("`{name}` is not an x-hasura-* session variable"));
                    }
                    entries.push((name, ClaimPath::compile(path, &self.untrusted)?));
                }
                SessionSource::Map(entries)
            }
            (ns, None) => SessionSource::Namespace(ClaimPath::compile(
                ns.as_deref().unwrap_or("$['https://hasura.io/jwt/claims']"),
                &self.untrusted,
            )?),
        };
        let admin_secret = match &doc.admin_secret {
            None => None,
            Some(s) => {
                let value = secret_ref(file, s)
                    .and_then(|r| r.read())
                    .map_err(|e| format!("admin_secret {e}"))?;
                let value = HeaderValue::from_bytes(&value)
                    .ok()
                    .filter(|_| !value.is_empty())
                    .ok_or("admin_secret is empty or not a valid header value")?;
                Some(Secret(value))
            }
        };
        Ok(Hasura {
            source,
            format: doc.claims_format,
            admin_secret,
        })
    }
}

/// An issuer's `introspection:` block, checked.
fn introspection_settings(
    file: &Path,
    doc: IntrospectionDoc,
    discovery: Option<String>,
    allow_http: bool,
) -> Result<Settings, String> {
    if doc.endpoint.is_none() && discovery.is_none() {
        return Err("give `endpoint`, or use `discovery` to find it".into());
    }
    if let Some(url) = &doc.endpoint {
        if !(url.starts_with("https://") || (url.starts_with("http://") && allow_http)) {
            return Err(format!(
                "endpoint {url:?} must be https (or http with allow_http)"
            ));
        }
    }
    let auth = match doc.auth.as_deref() {
        None | Some("client_secret_basic") => ClientAuth::Basic,
        Some("client_secret_post") => ClientAuth::Post,
        Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
        Some(other) => {
            return Err(format!(
                "auth `{other}` is not supported (client_secret_basic, client_secret_post, private_key_jwt)"
            ))
        }
    };
    let which = match doc.tokens.as_deref() {
        None | Some("opaque") => Which::Opaque,
        Some("all") => Which::All,
        Some(other) => return Err(format!("tokens `{other}` is neither `opaque` nor `all`")),
    };
    let answer = match doc.response.as_deref() {
        None | Some("json") => IntrospectionAnswer::Json,
        Some("jwt") => IntrospectionAnswer::Jwt,
        Some("phantom") => IntrospectionAnswer::Phantom,
        Some(other) => {
            return Err(format!(
                "response `{other}` is not `json`, `jwt` (RFC 9701) or `phantom`"
            ))
        }
    };
    let (what, secret) = match (auth, &doc.client_secret, &doc.private_key) {
        (ClientAuth::PrivateKeyJwt, None, Some(k)) => ("private_key", k),
        (ClientAuth::Basic | ClientAuth::Post, Some(s), None) => ("client_secret", s),
        (ClientAuth::PrivateKeyJwt, _, _) => {
            return Err("private_key_jwt takes `private_key` (and no client_secret)".into())
        }
        _ => {
            return Err(
                "client_secret_basic and _post take `client_secret` (and no private_key)".into(),
            )
        }
    };
    let client_secret = secret_ref(file, secret).map_err(|e| format!("{what} {e}"))?;
    // Read once here so that a missing secret or a bad key is a load error,
    // not a 503 at the first opaque token.
    let value = client_secret.read().map_err(|e| format!("{what}: {e}"))?;
    if auth == ClientAuth::PrivateKeyJwt {
        client_assertion(&value, &doc.client_id, None, "https://check.invalid")?;
    }
    let max_in_flight = doc.max_in_flight.unwrap_or(16);
    let max_per_second = doc.max_per_second.unwrap_or(50);
    if max_in_flight == 0 || max_per_second == 0 {
        return Err("max_in_flight and max_per_second must be at least 1".into());
    }
    Ok(Settings {
        endpoint: doc.endpoint,
        discovery,
        allow_http,
        client_id: doc.client_id,
        client_secret,
        key_id: doc.key_id,
        auth,
        which,
        answer,
        cache_ttl: doc.cache_ttl.unwrap_or(Duration::from_secs(60)),
        inactive_ttl: doc.inactive_ttl.unwrap_or(Duration::from_secs(5)),
        max_in_flight,
        max_per_second,
    })
}
