//! An mTLS HTTP client for the API: `alliance client`, the demo and the
//! integration tests all use this one.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rustls::RootCertStore;
use serde_json::{json, Value};

use crate::config::{ClientConfig, TlsFiles};
use crate::error::{Error, Result};
use crate::identity;

/// A client bound to one node's API URL and one identity.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
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
        Self::new(
            &config.url,
            roots,
            &config.tls,
            Duration::from_millis(config.timeout_ms),
        )
    }

    pub fn new(
        url: &str,
        roots: Arc<RootCertStore>,
        own: &TlsFiles,
        timeout: Duration,
    ) -> Result<Self> {
        let tls = identity::client_config(roots, own)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends a request; `Err` only when no HTTP response came back.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        self.finish(req).await
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
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        self.finish(req).await
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
        let q = if local { "?consistency=local" } else { "" };
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
        let req = self
            .http
            .post(format!("{}/v1/transfers", self.base))
            .json(&body);
        self.finish(req).await
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
}
