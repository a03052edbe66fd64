//! One bench client's keep-alive HTTP/1.1 connection over mutual TLS.
//!
//! The bench measures the nodes, and on a small machine its own CPU is
//! taken from them. The API client ([`ApiClient`]) goes through reqwest's
//! pool and parses each URL and each answer into JSON; here a request is
//! written on the connection as it is, through hyper's connection API, and
//! an answer's body is kept as bytes for the caller to read if it needs to.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;

use crate::client::{connect_tls, ApiClient};

/// An answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer as the API client reads it: the body as JSON.
    pub fn read(&self) -> crate::client::Response {
        crate::client::Response {
            status: self.status,
            body: serde_json::from_slice(&self.body).unwrap_or_default(),
        }
    }
}

/// A connection made when first needed, and made again after a request
/// that got no answer.
pub struct Conn {
    base: String,
    authority: String,
    tls: std::sync::Arc<rustls::ClientConfig>,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `client`'s node with its identity; a request gets
    /// `timeout` for everything, connecting included.
    pub fn new(client: &ApiClient, timeout: Duration) -> Self {
        let base = client.base().to_owned();
        let authority = base
            .split_once("://")
            .map_or(base.as_str(), |(_, rest)| rest)
            .to_owned();
        Self {
            base,
            authority,
            tls: client.http1_tls(),
            timeout,
            sender: None,
        }
    }

    /// POSTs `json` to `path`; `None` if no answer came (the connection
    /// failed, or nothing came within the timeout), and the connection is
    /// then dropped.
    pub async fn post_json(&mut self, path: &str, json: Bytes) -> Option<Answer> {
        let answer = tokio::time::timeout(self.timeout, self.exchange(path, json)).await;
        let answer = answer.ok().and_then(Result::ok);
        if answer.is_none() {
            self.sender = None;
        }
        answer
    }

    async fn exchange(
        &mut self,
        path: &str,
        json: Bytes,
    ) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
        // The node may have closed a connection left idle.
        if self.sender.as_ref().is_some_and(SendRequest::is_closed) {
            self.sender = None;
        }
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => {
                let tls = connect_tls(&self.base, self.tls.clone()).await?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                self.sender.insert(sender)
            }
        };
        sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(json))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}
