//! The operations listener (`ops_addr`, off by default): health probes for
//! a load balancer or an orchestrator. Plain HTTP, no client certificate:
//! the answers hold no ledger data, only whether this node serves.
//!
//! - `GET /livez`: 200 while the process serves requests at all.
//! - `GET /readyz`: 200 when this node can serve reads and writes now (see
//!   [`Service::readiness`]), else 503; both with a short JSON reason.
//! - `GET /metrics`: the Prometheus text format (see [`super::metrics`]).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::service::Service;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/livez", web::get().to(livez))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(not_here));
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(json!({"live": true}))
}

async fn readyz(svc: web::Data<Service>) -> HttpResponse {
    let view = svc.readiness().await;
    if view.ready {
        HttpResponse::Ok().json(view)
    } else {
        HttpResponse::ServiceUnavailable().json(view)
    }
}

async fn metrics(svc: web::Data<Service>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(super::metrics::render(
            &svc.cluster(),
            svc.stats(),
            &svc.certificate_gauges(),
        ))
}

async fn not_here() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": {
        "code": "route_not_found",
        "message": "the operations listener serves GET /livez, /readyz and /metrics",
    }}))
}
