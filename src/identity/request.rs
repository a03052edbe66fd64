//! Signed requests: a client signs a write with the private key of its own
//! certificate, so that any member's node can carry it and every replica
//! can check that the caller sent exactly this.
//!
//! The signature travels in one header:
//!
//! ```text
//! alliance-signature: t=<signed_at_ms>, sig=<hex of the signature>
//! ```
//!
//! `t` is the client's clock in milliseconds since the Unix epoch; `sig` is
//! ECDSA P-256 with SHA-256 (ASN.1 DER, as OpenSSL writes it) made with the
//! key of the client certificate presented in the TLS handshake, over these
//! bytes:
//!
//! ```text
//! alliance request v1\n
//! <genesis hash, 64 lowercase hex digits>\n
//! <method, e.g. POST>\n
//! <path, e.g. /v1/transfers, without the query>\n
//! <t, decimal>\n
//! <the exact body bytes>
//! ```
//!
//! The genesis hash is `genesis_hash` of `GET /v1/cluster`. A shell can sign
//! with `openssl dgst -sha256 -sign app.key` (see the README, "Signed
//! requests").

use std::sync::Arc;

use rustls::pki_types::{alg_id, SignatureVerificationAlgorithm};
use rustls::sign::Signer;
use rustls::SignatureScheme;

use super::{load_identity, provider};
use crate::config::TlsFiles;
use crate::error::{Error, Result};

/// The header that carries a request's signature.
pub const SIGNATURE_HEADER: &str = "alliance-signature";

/// Longest signature header value accepted (an ECDSA P-256 signature is at
/// most 72 bytes, 144 hex digits).
const HEADER_BYTES_MAX: usize = 256;

/// A request's signature, as its header gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSignature {
    pub signed_at_ms: u64,
    pub signature: Vec<u8>,
}

impl RequestSignature {
    /// Parses `t=<ms>, sig=<hex>`.
    pub fn parse(header: &str) -> Result<Self, &'static str> {
        const FORMAT: &str = "alliance-signature must be `t=<ms since the epoch>, sig=<hex>`";
        if header.len() > HEADER_BYTES_MAX {
            return Err(FORMAT);
        }
        let (t, sig) = header.split_once(',').ok_or(FORMAT)?;
        let t = t.trim().strip_prefix("t=").ok_or(FORMAT)?;
        let sig = sig.trim().strip_prefix("sig=").ok_or(FORMAT)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(t) {
            return Err(FORMAT);
        }
        Ok(Self {
            signed_at_ms: t.parse().map_err(|_| FORMAT)?,
            signature: hex::decode(sig).map_err(|_| FORMAT)?,
        })
    }

    pub fn header_value(&self) -> String {
        format!(
            "t={}, sig={}",
            self.signed_at_ms,
            hex::encode(&self.signature)
        )
    }
}

/// The bytes a request's signature covers.
pub fn request_message(
    genesis_hex: &str,
    method: &str,
    path: &str,
    signed_at_ms: u64,
    body: &[u8],
) -> Vec<u8> {
    let head = format!("alliance request v1\n{genesis_hex}\n{method}\n{path}\n{signed_at_ms}\n");
    let mut m = Vec::with_capacity(head.len() + body.len());
    m.extend_from_slice(head.as_bytes());
    m.extend_from_slice(body);
    m
}

/// ECDSA P-256 with SHA-256, as the ring provider verifies it.
pub(super) fn ecdsa_p256() -> &'static dyn SignatureVerificationAlgorithm {
    provider()
        .signature_verification_algorithms
        .all
        .iter()
        .find(|a| {
            a.public_key_alg_id() == alg_id::ECDSA_P256
                && a.signature_alg_id() == alg_id::ECDSA_SHA256
        })
        .copied()
        .expect("the ring provider verifies ECDSA P-256 with SHA-256")
}

/// The subject public key of a DER certificate.
pub(super) fn public_key(cert_der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// Signs with the key of a TLS identity (ECDSA P-256, the certificate
/// profile's).
#[derive(Clone)]
pub struct KeySigner {
    signer: Arc<dyn Signer>,
}

impl KeySigner {
    pub fn load(tls: &TlsFiles) -> Result<Self> {
        let (_, key) = load_identity(tls)?;
        let key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| Error::Tls(format!("{}: {e}", tls.key.display())))?;
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .ok_or_else(|| {
                Error::Tls(format!(
                    "{}: keys must be ECDSA P-256 (issue them with scripts/issue-cert.sh)",
                    tls.key.display()
                ))
            })?;
        Ok(Self {
            signer: Arc::from(signer),
        })
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signer
            .sign(message)
            .expect("an ECDSA signature with a loaded key cannot fail")
    }

    /// The signature header of a request.
    pub fn sign_request(
        &self,
        genesis_hex: &str,
        method: &str,
        path: &str,
        signed_at_ms: u64,
        body: &[u8],
    ) -> RequestSignature {
        let m = request_message(genesis_hex, method, path, signed_at_ms, body);
        RequestSignature {
            signed_at_ms,
            signature: self.sign(&m),
        }
    }
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySigner")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_header_is_parsed_strictly() {
        let ok = RequestSignature::parse("t=17, sig=0a0B").unwrap();
        assert_eq!((ok.signed_at_ms, ok.signature), (17, vec![10, 11]));
        assert_eq!(
            RequestSignature::parse(&ok_header())
                .unwrap()
                .header_value(),
            ok_header()
        );
        for bad in [
            "",
            "t=1",
            "sig=00, t=1",
            "t=-1, sig=00",
            "t=1, sig=0",
            "t=1, sig=zz",
            "t=99999999999999999999999, sig=00",
            &format!("t=1, sig={}", "0".repeat(400)),
        ] {
            assert!(RequestSignature::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn ok_header() -> String {
        "t=1733330000000, sig=3045".to_owned()
    }
}
