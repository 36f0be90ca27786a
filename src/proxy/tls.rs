//! The server certificate: read at start, and re-read every
//! `tls.reload_interval` so that a rotated pair (cert-manager, a Kubernetes
//! Secret mount swapping its `..data` link) is served on the next connection
//! without a restart. A pair that does not load — unreadable, not PEM, a key
//! that does not match the certificate — is logged and counted, and the
//! old pair keeps serving.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::metrics::Metrics;

/// The current pair, swapped whole.
#[derive(Debug)]
pub struct ServerCert {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// The files' bytes behind `current`, to notice a change.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// A certified key from PEM bytes; the key must match the certificate.
fn certified(files: &TlsFiles, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", files.cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("{}: {e}", files.key.display()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} and {} are not a pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(ck)
}

impl ServerCert {
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, String> {
        let (cert, key) = (read(&files.cert)?, read(&files.key)?);
        let ck = certified(files, &cert, &key)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: ArcSwap::from_pointee(ck),
            loaded: Mutex::new((cert, key)),
        }))
    }

    /// Re-reads the files; `Ok(true)` when a new pair now serves.
    pub fn reload(&self) -> Result<bool, String> {
        let (cert, key) = (read(&self.files.cert)?, read(&self.files.key)?);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 == cert && loaded.1 == key {
            return Ok(false);
        }
        let ck = certified(&self.files, &cert, &key)?;
        self.current.store(Arc::new(ck));
        *loaded = (cert, key);
        Ok(true)
    }

    /// Checks the files every `reload_interval` until the task is dropped.
    pub fn watch(self: Arc<Self>, metrics: Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.files.reload_interval;
        if every.is_zero() {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            // The error of a file left broken is logged once, not every tick.
            let mut last_error = None;
            loop {
                tick.tick().await;
                match self.reload() {
                    Ok(true) => {
                        last_error = None;
                        metrics.tls_reloads.with_label_values(&["success"]).inc();
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    }
                    Ok(false) => {}
                    Err(e) if last_error.as_ref() != Some(&e) => {
                        metrics.tls_reloads.with_label_values(&["failure"]).inc();
                        tracing::error!(
                            "TLS certificate not reloaded, the old one keeps serving: {e}"
                        );
                        last_error = Some(e);
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}

/// A TLS acceptor serving `cert`, offering h2 and http/1.1 by ALPN.
pub fn acceptor(cert: Arc<ServerCert>) -> Result<TlsAcceptor, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
