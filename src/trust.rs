//! The roots claimgate trusts for its own outbound TLS (JWKS, discovery,
//! introspection, upstreams): the Mozilla roots (`webpki-roots`) and the
//! system trust store, so a company CA installed there is trusted without a
//! `ca_file`. `SSL_CERT_FILE` / `SSL_CERT_DIR` point at another store, as
//! for OpenSSL. A `ca_file` adds to these.

use std::sync::OnceLock;

/// The Mozilla roots plus the system store, read once per process.
pub fn roots() -> rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system trust store: {e}");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system trust store read");
            roots
        })
        .clone()
}
