//! An mTLS HTTP client for the API: `alliance client`, the demo and the
//! integration tests all use this one. It signs every write with its
//! certificate's key (`crate::identity::request`), so any member's node
//! can carry it.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rustls::RootCertStore;
use serde_json::{json, Value};

use crate::config::{ClientConfig, TlsFiles};
use crate::error::{Error, Result};
use crate::identity;
use crate::identity::request::{KeySigner, SIGNATURE_HEADER};

/// A client bound to one node's API URL and one identity.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    /// Signs writes; `None` sends them unsigned.
    signer: Option<KeySigner>,
    /// The consortium's genesis hash: the client config's, or learned from
    /// `GET /v1/cluster` for the first signed write.
    genesis_hex: Arc<tokio::sync::OnceCell<String>>,
    /// The TLS settings of its connections, for [`ApiClient::explain`]'s
    /// second look at a refused one.
    tls: Arc<rustls::ClientConfig>,
}

/// A response: HTTP status and JSON body (`null` if the body was not JSON).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error code of an error response.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

impl ApiClient {
    pub fn from_config(config: &ClientConfig) -> Result<Self> {
        let roots = identity::roots_from_files(&config.ca_certs)?;
        let client = Self::new(
            &config.url,
            roots,
            &config.tls,
            Duration::from_millis(config.timeout_ms),
        )?;
        if let Some(hash) = &config.genesis_hash {
            let pinned = tokio::sync::OnceCell::new_with(Some(hash.to_ascii_lowercase()));
            return Ok(Self {
                genesis_hex: Arc::new(pinned),
                ..client
            });
        }
        Ok(client)
    }

    pub fn new(
        url: &str,
        roots: Arc<RootCertStore>,
        own: &TlsFiles,
        timeout: Duration,
    ) -> Result<Self> {
        let tls = identity::client_config(roots, own)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            signer: KeySigner::load(own).ok(),
            genesis_hex: Arc::default(),
            tls: Arc::new(tls),
        })
    }

    /// Says what to fix when a request got no answer: the address refused
    /// the connection or did not answer in time, the server's certificate
    /// is not one this client trusts, or the server refused this client's
    /// certificate (by the TLS alert it sent, by name).
    ///
    /// A server that refuses this client's certificate sends its alert
    /// after a TLS 1.3 handshake the client has already finished, and the
    /// connection may close before the alert is read. When the error says
    /// no more than that, one more connection is made here (within two
    /// seconds), and the alert it draws is named.
    pub async fn explain(&self, e: &reqwest::Error) -> String {
        if let Some(reason) = reason(e, &self.base) {
            return reason;
        }
        if e.is_request() || e.is_connect() {
            if let Some(alert) = refusal(&self.base, self.tls.clone()).await {
                return explain_tls(&alert, &self.base);
            }
        }
        chain(e)
    }

    /// The same client, sending writes unsigned: its node then takes them
    /// only from its own organization's callers.
    pub fn unsigned(&self) -> Self {
        Self {
            signer: None,
            ..self.clone()
        }
    }

    /// The node's API address, `https://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// This client's TLS config (its roots and certificate), offering
    /// only HTTP/1.1.
    pub fn http1_tls(&self) -> Arc<rustls::ClientConfig> {
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(tls)
    }

    /// The genesis hash, asked of the node once.
    async fn genesis_hex(&self) -> Option<&str> {
        let ask = || async {
            let resp = self.http.get(format!("{}/v1/cluster", self.base)).send();
            let body: Value = resp.await.ok()?.json().await.ok()?;
            body["genesis_hash"].as_str().map(str::to_owned)
        };
        let hex = self
            .genesis_hex
            .get_or_try_init(|| async { ask().await.ok_or(()) });
        hex.await.ok().map(String::as_str)
    }

    /// Sends `body` with `method` to `path`, signed if this client signs
    /// and the node told it the genesis hash (else unsigned: the node's
    /// answer then says what is wrong).
    async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Response, reqwest::Error> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), url);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        if let Some(signer) = &self.signer {
            if let Some(genesis) = self.genesis_hex().await {
                let bare_path = path.split('?').next().unwrap_or(path);
                let now = crate::api::service::write::now_ms();
                let signature =
                    signer.sign_request(genesis, method.as_str(), bare_path, now, &body);
                req = req.header(SIGNATURE_HEADER, signature.header_value());
            }
        }
        self.finish(req.body(body)).await
    }

    /// Sends a request; `Err` only when no HTTP response came back.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, reqwest::Error> {
        match body {
            None => {
                let req = self.http.request(method, format!("{}{path}", self.base));
                self.finish(req).await
            }
            Some(b) => {
                let bytes = serde_json::to_vec(b).expect("JSON values serialize");
                self.send_bytes(method, path, Some("application/json"), bytes)
                    .await
            }
        }
    }

    /// Sends raw bytes as a JSON body (for tests of malformed input).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Response, reqwest::Error> {
        self.post_typed(path, Some("application/json"), body).await
    }

    /// Sends raw bytes with the given `content-type` (None: no header).
    pub async fn post_typed(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Response, reqwest::Error> {
        self.send_bytes(Method::POST, path, content_type, body)
            .await
    }

    async fn finish(&self, req: reqwest::RequestBuilder) -> Result<Response, reqwest::Error> {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Response { status, body })
    }

    pub async fn create_account(
        &self,
        id: &str,
        asset: &str,
        allow_negative: bool,
        readers: &[String],
    ) -> Result<Response, reqwest::Error> {
        let body =
            json!({"id": id, "asset": asset, "allow_negative": allow_negative, "readers": readers});
        self.call(Method::POST, "/v1/accounts", Some(&body)).await
    }

    pub async fn transfer(
        &self,
        id: &str,
        from: &str,
        to: &str,
        amount: u64,
    ) -> Result<Response, reqwest::Error> {
        let body = json!({"id": id, "debit_account": from, "credit_account": to, "amount": amount});
        self.call(Method::POST, "/v1/transfers", Some(&body)).await
    }

    pub async fn account(&self, id: &str, local: bool) -> Result<Response, reqwest::Error> {
        self.account_at(id, None, local).await
    }

    /// Account `id` as of block `at_height` (after its transfers), or now.
    pub async fn account_at(
        &self,
        id: &str,
        at_height: Option<u64>,
        local: bool,
    ) -> Result<Response, reqwest::Error> {
        let mut q = Vec::new();
        q.extend(at_height.map(|h| format!("at_height={h}")));
        q.extend(local.then(|| "consistency=local".to_owned()));
        let q = if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        };
        self.call(Method::GET, &format!("/v1/accounts/{id}{q}"), None)
            .await
    }

    pub async fn get_transfer(&self, id: &str) -> Result<Response, reqwest::Error> {
        self.call(Method::GET, &format!("/v1/transfers/{id}"), None)
            .await
    }

    /// Posts a batch of transfers (each a JSON object as `POST /v1/transfers` takes).
    pub async fn batch(
        &self,
        transfers: Vec<Value>,
        atomic: bool,
    ) -> Result<Response, reqwest::Error> {
        let body = json!({"transfers": transfers, "atomic": atomic});
        self.call(Method::POST, "/v1/transfers", Some(&body)).await
    }

    /// Posts a batch and asks for an answer that lists only the refused
    /// items (`"answer": "refused"`); each item serializes as one transfer
    /// of `POST /v1/transfers`.
    pub async fn batch_refused_only<T: serde::Serialize>(
        &self,
        transfers: &[T],
        atomic: bool,
    ) -> Result<Response, reqwest::Error> {
        let bytes = batch_refused_only_json(transfers, atomic);
        self.send_bytes(
            Method::POST,
            "/v1/transfers",
            Some("application/json"),
            bytes,
        )
        .await
    }

    /// Posts a pending transfer, for `amount` or (None) all of it.
    pub async fn post_pending(
        &self,
        id: &str,
        amount: Option<u64>,
    ) -> Result<Response, reqwest::Error> {
        let body = match amount {
            Some(a) => json!({"amount": a.to_string()}),
            None => json!({}),
        };
        self.call(
            Method::POST,
            &format!("/v1/transfers/{id}/post"),
            Some(&body),
        )
        .await
    }

    pub async fn void_pending(&self, id: &str) -> Result<Response, reqwest::Error> {
        self.call(
            Method::POST,
            &format!("/v1/transfers/{id}/void"),
            Some(&json!({})),
        )
        .await
    }

    pub async fn close_account(&self, id: &str) -> Result<Response, reqwest::Error> {
        self.call(
            Method::POST,
            &format!("/v1/accounts/{id}/close"),
            Some(&json!({})),
        )
        .await
    }

    pub async fn set_readers(
        &self,
        id: &str,
        readers: &[String],
    ) -> Result<Response, reqwest::Error> {
        let body = json!({"readers": readers});
        self.call(
            Method::PUT,
            &format!("/v1/accounts/{id}/readers"),
            Some(&body),
        )
        .await
    }

    /// One page of an account's history, from `cursor` (None: the start).
    pub async fn history(
        &self,
        id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Response, reqwest::Error> {
        let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
        self.call(
            Method::GET,
            &format!("/v1/accounts/{id}/transfers?limit={limit}{cursor}"),
            None,
        )
        .await
    }

    pub async fn cluster(&self) -> Result<Response, reqwest::Error> {
        self.call(Method::GET, "/v1/cluster", None).await
    }

    /// Proposes an action (its JSON, as `POST /v1/gov/proposals` takes it).
    pub async fn propose(&self, action: &Value) -> Result<Response, reqwest::Error> {
        self.call(Method::POST, "/v1/gov/proposals", Some(action))
            .await
    }

    pub async fn proposal(&self, id: u64) -> Result<Response, reqwest::Error> {
        self.call(Method::GET, &format!("/v1/gov/proposals/{id}"), None)
            .await
    }

    /// Signs a ballot on proposal `id` over `digest`, as given: the caller
    /// has checked it (see [`checked_digest`]).
    pub async fn ballot(
        &self,
        id: u64,
        approve: bool,
        digest: &str,
    ) -> Result<Response, reqwest::Error> {
        let vote = if approve { "approve" } else { "reject" };
        let body = json!({"vote": vote, "digest": digest});
        self.call(
            Method::POST,
            &format!("/v1/gov/proposals/{id}/ballots"),
            Some(&body),
        )
        .await
    }

    /// The node's backup (`GET /v1/backup`), checked whole; `Err` with the
    /// node's answer when it gave none.
    pub async fn backup(
        &self,
    ) -> Result<std::result::Result<crate::backup::Backup, String>, reqwest::Error> {
        let resp = (self.http.get(format!("{}/v1/backup", self.base)))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        if status != 200 {
            return Ok(Err(format!("{status} {}", String::from_utf8_lossy(&bytes))));
        }
        Ok(crate::backup::Backup::from_bytes(&bytes))
    }

    /// The join bundle of the node that executed proposal `proposal` added:
    /// the registry as this node has it now. `Err` with why not (the
    /// answer that was not a success, or a proposal that added no node).
    pub async fn join_bundle(
        &self,
        proposal: u64,
    ) -> Result<std::result::Result<crate::config::JoinBundle, String>> {
        let get = |path: String| async move {
            let r = self
                .call(Method::GET, &path, None)
                .await
                .map_err(|e| Error::Other(e.to_string()))?;
            Ok::<_, Error>(if r.is_success() {
                Ok(r.body)
            } else {
                Err(format!("GET {path}: {} {}", r.status, r.body))
            })
        };
        let shown = match get(format!("/v1/gov/proposals/{proposal}")).await? {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let action = &shown["action"];
        let added = action["add_node"]["id"].as_u64();
        let Some(node) = added.or(action["replace_node"]["new"]["id"].as_u64()) else {
            return Ok(Err(format!(
                "proposal {proposal} does not add a node: {}",
                shown["action"]
            )));
        };
        if shown["state"] != "executed" {
            return Ok(Err(format!(
                "proposal {proposal} is {}, not executed: the node joins once the vote has passed",
                shown["state"]
            )));
        }
        let (registry, cluster) = match (
            get("/v1/gov/registry".into()).await?,
            get("/v1/cluster".into()).await?,
        ) {
            (Ok(r), Ok(c)) => (r, c),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let mut orgs = Vec::new();
        for org in registry["orgs"].as_array().into_iter().flatten() {
            if org["status"] == "removed" {
                continue;
            }
            let name = serde_json::from_value(org["name"].clone())
                .map_err(|e| Error::Other(e.to_string()))?;
            let pems = (org["cas"].as_array().into_iter().flatten())
                .filter_map(|ca| ca["pem"].as_str().map(str::to_owned))
                .collect();
            orgs.push((name, pems));
        }
        let nodes = serde_json::from_value(registry["nodes"].clone())
            .map_err(|e| Error::Other(e.to_string()))?;
        Ok(Ok(crate::config::JoinBundle {
            genesis_hash: cluster["genesis_hash"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            proposal,
            node,
            orgs,
            nodes,
        }))
    }

    /// Revokes one of the caller's own organization's certificates at once.
    pub async fn revoke(&self, org: &str, serial: &str) -> Result<Response, reqwest::Error> {
        let body = json!({"org": org, "serial": serial});
        self.call(Method::POST, "/v1/gov/revocations", Some(&body))
            .await
    }
}

/// The digest to sign for a proposal as a node showed it (`GET
/// /v1/gov/proposals/{id}`): computed here from the action shown, and
/// refused unless it equals the digest the node gave. So an admin signs
/// the action it was shown, whatever the node claims.
pub fn checked_digest(proposal: &Value) -> std::result::Result<String, String> {
    let id = proposal["id"]
        .as_u64()
        .ok_or("the answer is not a proposal (no id)")?;
    let action: crate::ledger::Action = serde_json::from_value(proposal["action"].clone())
        .map_err(|e| format!("the proposal's action is not one this client knows: {e}"))?;
    let digest = action.digest(id);
    if proposal["digest"].as_str() != Some(digest.as_str()) {
        return Err(format!(
            "the node gave digest {} for proposal {id}, but its action's digest is {digest}: \
             refusing to sign (ask another node)",
            proposal["digest"]
        ));
    }
    Ok(digest)
}

/// A certificate's organization (`O`) and serial, from its PEM file: what
/// a revocation names.
pub fn cert_ref(path: &std::path::Path) -> Result<(String, String)> {
    use x509_parser::prelude::*;
    let pem = crate::config::read_bounded(path, 1024 * 1024)?;
    let der = identity::first_cert_der(&pem)
        .ok_or_else(|| Error::Tls(format!("{}: no PEM certificate", path.display())))?;
    let bad = || Error::Tls(format!("{}: not an X.509 certificate", path.display()));
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| bad())?;
    let org = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .ok_or_else(|| Error::Tls(format!("{}: the certificate names no O", path.display())))?;
    let serial = crate::ledger::Serial::from_be_bytes(cert.raw_serial()).ok_or_else(bad)?;
    Ok((org.to_owned(), serial.to_string()))
}

/// What to fix, if the error of a request to `url` says why it got no
/// answer ([`ApiClient::explain`]).
fn reason(e: &reqwest::Error, url: &str) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(explain_tls(tls, url));
        }
        source = s.source();
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return Some(format!(
                        "{url} refused the connection: is the node running, and is `url` in the \
                         client config its api_addr?"
                    ))
                }
                std::io::ErrorKind::TimedOut => return Some(timed_out(url)),
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => {
                    return Some(format!(
                        "{url} closed the connection ({io}); if it refused this client's \
                         certificate, its log says why (\"refused a connection\")"
                    ))
                }
                // An I/O error's source skips the error it wraps.
                _ => source = io.get_ref().map(|inner| inner as _).or(source),
            }
        }
    }
    e.is_timeout().then(|| timed_out(url))
}

/// The alert a new connection to `base` draws once its handshake is done
/// and a record is read: the server's refusal of this client's
/// certificate. `None` if it draws no alert within [`PROBE_WITHIN`].
async fn refusal(base: &str, tls: Arc<rustls::ClientConfig>) -> Option<rustls::Error> {
    use tokio::io::AsyncReadExt;
    let probe = async {
        let error = match connect_tls(base, tls).await {
            Err(e) => e,
            Ok(mut stream) => stream.read(&mut [0u8; 1]).await.err()?,
        };
        match identity::rustls_error(&error)? {
            alert @ rustls::Error::AlertReceived(_) => Some(alert.clone()),
            _ => None,
        }
    };
    tokio::time::timeout(PROBE_WITHIN, probe).await.ok()?
}

/// The body of a batch of `transfers` whose answer counts the applied
/// ones and lists only the refused.
pub fn batch_refused_only_json<T: serde::Serialize>(transfers: &[T], atomic: bool) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a, T> {
        transfers: &'a [T],
        atomic: bool,
        answer: &'static str,
    }
    let body = Body {
        transfers,
        atomic,
        answer: "refused",
    };
    serde_json::to_vec(&body).expect("a batch serializes")
}

/// A TLS connection to `base` (`https://host:port`) with `tls`, without
/// Nagle's delay.
pub async fn connect_tls(
    base: &str,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let bad = |what: &str| std::io::Error::other(format!("{base}: {what}"));
    let url = reqwest::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
    let host = (url.host_str().ok_or_else(|| bad("no host"))?)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| bad(&e.to_string()))?;
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
}

/// How long [`ApiClient::explain`]'s second connection may take, all in.
const PROBE_WITHIN: Duration = Duration::from_secs(2);

fn timed_out(url: &str) -> String {
    format!("{url} did not answer within the client config's timeout_ms")
}

/// `e` and each of its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn explain_tls(e: &rustls::Error, url: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C};
    match e {
        rustls::Error::AlertReceived(alert) => {
            let why = match alert {
                A::CertificateRequired => {
                    "it requires a client certificate (set [tls] cert and key)"
                }
                A::UnknownCA => {
                    "this client's certificate is not issued by the CA of a member \
                     organization (one in genesis, or added by a governance vote)"
                }
                A::CertificateRevoked => "this client's certificate has been revoked",
                A::CertificateExpired => {
                    "this client's certificate has expired or is not yet valid; issue a new one"
                }
                A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
                    "it does not accept this client's certificate (a member's certificate is \
                     issued by its organization's CA, is not a CA itself, names its organization, \
                     role and name, and allows clientAuth)"
                }
                A::AccessDenied => "it does not let this certificate in",
                A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity => {
                    "it shares no TLS version or cipher suite with this client"
                }
                _ => "see the node's log",
            };
            format!("{url} refused the TLS handshake with alert `{alert:?}`: {why}")
        }
        rustls::Error::InvalidCertificate(C::Other(other)) => {
            format!("{url}: {}", other.0)
        }
        rustls::Error::InvalidCertificate(C::NotValidForName) => format!(
            "{url}: the server's certificate does not name this host; use the address its node \
             certificate was issued for"
        ),
        rustls::Error::InvalidCertificate(C::Expired | C::NotValidYet) => format!(
            "{url}: the server's certificate is expired or not yet valid (or this machine's clock \
             is wrong)"
        ),
        rustls::Error::InvalidCertificate(why) => {
            format!("{url}: the server's certificate is refused: {why:?}")
        }
        other => format!("{url}: TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::explain_tls;
    use rustls::AlertDescription as A;

    /// A TLS alert from the server is named, with what it means for this
    /// client.
    #[test]
    fn a_servers_alert_is_named_with_what_to_fix() {
        let url = "https://127.0.0.1:7000";
        for (alert, says) in [
            (A::UnknownCA, "not issued by the CA of a member"),
            (A::CertificateRequired, "requires a client certificate"),
            (A::CertificateRevoked, "has been revoked"),
            (A::CertificateExpired, "has expired"),
            (A::BadCertificate, "allows clientAuth"),
        ] {
            let text = explain_tls(&rustls::Error::AlertReceived(alert), url);
            assert!(text.starts_with(url), "{text}");
            assert!(text.contains(&format!("alert `{alert:?}`")), "{text}");
            assert!(text.contains(says), "{alert:?}: {text}");
        }
    }
}
