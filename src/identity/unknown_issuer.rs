//! A client's check of a server's certificate that, when the certificate's
//! issuer is not among the client's CAs, names that issuer: the operator
//! then knows which organization's CA certificate `ca_certs` lacks.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Why a server's certificate was refused: issued by a CA the client does
/// not trust, named by its subject.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server's certificate was issued by \"{issuer}\", which is not one of the CAs in \
     ca_certs: add that organization's CA certificate to ca_certs"
)]
pub struct UnknownIssuer {
    pub issuer: String,
}

/// Checks servers with `inner`; an unknown issuer comes back as an
/// [`UnknownIssuer`] that names it.
#[derive(Debug)]
pub struct NamingVerifier {
    pub inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verified {
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                let issuer = issuer_of(end_entity).unwrap_or_else(|| "an unreadable name".into());
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(UnknownIssuer { issuer })),
                )))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The issuer's distinguished name, as text.
fn issuer_of(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(cert.issuer().to_string())
}
