//! This node's own certificate and key, as its listeners present them and
//! its peer clients show them: replaced whole when the operator renews the
//! certificate and sends the node SIGHUP, with no restart.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::{load_identity, provider};
use crate::config::TlsFiles;
use crate::error::{Error, Result};

/// The certificate chain and key this node presents now.
#[derive(Debug)]
pub struct OwnIdentity(RwLock<Arc<CertifiedKey>>);

impl OwnIdentity {
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>> {
        Ok(Arc::new(Self(RwLock::new(certified(files)?))))
    }

    /// Presents the chain and key in `files` from the next handshake on.
    pub fn reload(&self, files: &TlsFiles) -> Result<()> {
        let key = certified(files)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn certified(files: &TlsFiles) -> Result<Arc<CertifiedKey>> {
    let (chain, key) = load_identity(files)?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

impl ResolvesServerCert for OwnIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for OwnIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
