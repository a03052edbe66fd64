//! The public window (`public_addr`, off by default): what outsiders may see
//! of the chain. Ordinary server-only TLS, no client certificate; only the
//! chain head and block headers (hashes, heights, times), never a leaf or
//! any ledger data. Every request spends a token from its client address's
//! bucket; past the budget the answer is 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::query::parse_height;
use super::service::Service;
use super::views::BlockView;

/// The public window's routes; every one spends from `limiter`.
pub fn configure(cfg: &mut web::ServiceConfig, limiter: web::Data<RateLimiter>) {
    cfg.app_data(limiter)
        .route("/public/v1/head", web::get().to(head))
        .route("/public/v1/blocks/{height}", web::get().to(block))
        .default_service(web::to(not_here));
}

/// A token bucket per client address, with a bounded table.
pub struct RateLimiter {
    per_minute: u32,
    clients_max: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_minute: u32, clients_max: usize) -> Self {
        Self {
            per_minute,
            clients_max,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one token of `ip`'s budget, or says how long until one is back.
    pub fn spend(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&ip) && buckets.len() >= self.clients_max {
            // Forget the longest-idle client: the table stays bounded.
            if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip) {
                buckets.remove(&oldest);
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }
}

/// The 429 to send if `req`'s client has spent its budget (counted in the
/// node's stats), else None.
fn limited(req: &HttpRequest, limiter: &RateLimiter, svc: &Service) -> Option<HttpResponse> {
    let ip = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    limiter.spend(ip).err().map(|wait| {
        (svc.stats().public_limited).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let secs = wait.as_secs() + 1;
        let mut resp: HttpResponse = ApiError::RateLimited(secs).render().into();
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, v);
        }
        resp
    })
}

async fn head(
    req: HttpRequest,
    svc: web::Data<Service>,
    limiter: web::Data<RateLimiter>,
) -> HttpResponse {
    if let Some(resp) = limited(&req, &limiter, &svc) {
        return resp;
    }
    match svc.head_view() {
        Ok(head) => HttpResponse::Ok().json(head),
        Err(e) => e.render().into(),
    }
}

async fn block(
    req: HttpRequest,
    svc: web::Data<Service>,
    limiter: web::Data<RateLimiter>,
    height: web::Path<String>,
) -> HttpResponse {
    if let Some(resp) = limited(&req, &limiter, &svc) {
        return resp;
    }
    let header = parse_height(&height).and_then(|h| svc.block_header(h));
    match header {
        Ok(Some(h)) => HttpResponse::Ok().json(BlockView::from(&h)),
        Ok(None) => ApiError::NotFound("block_not_found").render().into(),
        Err(e) => e.render().into(),
    }
}

async fn not_here(
    req: HttpRequest,
    svc: web::Data<Service>,
    limiter: web::Data<RateLimiter>,
) -> HttpResponse {
    if let Some(resp) = limited(&req, &limiter, &svc) {
        return resp;
    }
    ApiError::NotFound("route_not_found").render().into()
}
