//! A caller's own signature over its write (`alliance-signature`), checked
//! where the request arrives and, for a forwarded one, on the leader,
//! before anything is proposed. Apply checks it again at the ledger clock
//! (`crate::identity::attest`).

use actix_web::http::header::HeaderValue;

use super::write::now_ms;
use super::Service;
use crate::api::error::ApiError;
use crate::identity::attest::{SEAL_AGE_MAX_MS, SEAL_AHEAD_MAX_MS, SEAL_CERT_BYTES_MAX};
use crate::identity::request::RequestSignature;
use crate::identity::{ForwardedPrincipal, Principal};
use crate::ledger::ClientSeal;

impl Service {
    /// The caller's seal over this request, if its signature header is
    /// well formed, recent, and verifies under the certificate of the
    /// caller's TLS session over exactly this method, path and body.
    pub fn client_seal(
        &self,
        principal: &Principal,
        header: &HeaderValue,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<ClientSeal, ApiError> {
        let invalid = |m: &str| ApiError::InvalidSignature(m.to_owned());
        let header = header
            .to_str()
            .map_err(|_| invalid("alliance-signature is not ASCII"))?;
        let signature = RequestSignature::parse(header).map_err(invalid)?;
        if principal.cert().len() > SEAL_CERT_BYTES_MAX {
            return Err(invalid(
                "the session's certificate is too large to carry in a signed write",
            ));
        }
        let seal = ClientSeal {
            cert: principal.cert().to_vec(),
            signed_at_ms: signature.signed_at_ms,
            signature: signature.signature,
            method: method.to_owned(),
            path: path.to_owned(),
            body: body.to_vec(),
        };
        self.check_client_seal(&seal, |p| p.is(principal))?;
        Ok(seal)
    }

    /// The caller a forwarded client seal proves, if it is the one the
    /// forwarding node names.
    pub(super) fn forwarded_signer(
        &self,
        seal: &ClientSeal,
        named: &ForwardedPrincipal,
    ) -> Result<Principal, ApiError> {
        self.check_client_seal(seal, |p| named.names(p))
    }

    fn check_client_seal(
        &self,
        seal: &ClientSeal,
        is_caller: impl Fn(&Principal) -> bool,
    ) -> Result<Principal, ApiError> {
        let now = now_ms();
        let (age, ahead) = (
            now.saturating_sub(seal.signed_at_ms),
            seal.signed_at_ms.saturating_sub(now),
        );
        if age > SEAL_AGE_MAX_MS || ahead > SEAL_AHEAD_MAX_MS {
            if let Some(e) = self.clock_off_refusal() {
                return Err(e);
            }
            return Err(ApiError::InvalidSignature(format!(
                "signed at t={} but this node's clock reads {now}: a signature is accepted \
                 from {} s before to {} s after it (check the signer's clock)",
                seal.signed_at_ms,
                SEAL_AGE_MAX_MS / 1000,
                SEAL_AHEAD_MAX_MS / 1000,
            )));
        }
        match self.witness.client_principal(seal, now) {
            Some(p) if is_caller(&p) => Ok(p),
            _ => Err(ApiError::InvalidSignature(
                "the signature does not verify under this session's certificate over \
                 `alliance request v1`, the genesis hash, the method, the path, t and the \
                 exact body (see README, \"Signed requests\")"
                    .to_owned(),
            )),
        }
    }
}
