//! The HTTP server: read-only pages rendered from the current [`View`], which a refresher may
//! replace at any time (a live dashboard following a coordinator).

use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::html::{self, LedgerQuery};
use crate::view::View;

/// The view the pages render, shared with whatever refreshes it.
#[derive(Clone)]
pub struct Shared(Arc<RwLock<Arc<View>>>);

impl Shared {
    /// Shares `view`.
    pub fn new(view: View) -> Shared {
        Shared(Arc::new(RwLock::new(Arc::new(view))))
    }

    /// The current view.
    pub fn get(&self) -> Arc<View> {
        // A poisoned lock only means a refresher panicked mid-swap; the Arc inside is whole.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the view; pages rendered from now on show `view`.
    pub fn set(&self, view: View) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
    }
}

const STYLE: &str = include_str!("../assets/style.css");

/// A page, with headers that keep it inert: no script runs, nothing loads from elsewhere.
fn page(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn jobs(State(s): State<Shared>) -> Response {
    page(StatusCode::OK, html::jobs(&s.get()))
}

async fn job(State(s): State<Shared>, Path(id): Path<u64>) -> Response {
    let v = s.get();
    match html::job(&v, id) {
        Some(body) => page(StatusCode::OK, body),
        None => page(
            StatusCode::NOT_FOUND,
            html::not_found(&v, &format!("Job {id}")),
        ),
    }
}

async fn ledger(State(s): State<Shared>, Query(q): Query<LedgerQuery>) -> Response {
    page(StatusCode::OK, html::ledger(&s.get(), &q))
}

async fn record(State(s): State<Shared>, Path(index): Path<u64>) -> Response {
    let v = s.get();
    match html::record(&v, index) {
        Some(body) => page(StatusCode::OK, body),
        None => page(
            StatusCode::NOT_FOUND,
            html::not_found(&v, &format!("Record {index}")),
        ),
    }
}

/// A round's model file, as the ledger folder holds it.
async fn model(State(s): State<Shared>, Path((job, round)): Path<(u64, u64)>) -> Response {
    let v = s.get();
    let file = v
        .jobs
        .get(&job)
        .and_then(|j| j.rounds.iter().find(|r| r.round == round && round > 0))
        .and_then(|r| r.model_file.clone());
    let Some(file) = file else {
        return page(
            StatusCode::NOT_FOUND,
            html::not_found(&v, &format!("A model file of job {job} round {round}")),
        );
    };
    let mut r = file.as_ref().clone().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"job-{job}-round-{round}.safetensors\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

async fn checkpoints(State(s): State<Shared>) -> Response {
    page(StatusCode::OK, html::checkpoints(&s.get()))
}

async fn credits(State(s): State<Shared>) -> Response {
    page(StatusCode::OK, html::credits(&s.get()))
}

async fn parties(State(s): State<Shared>) -> Response {
    page(StatusCode::OK, html::parties(&s.get()))
}

/// The verdicts as `fedchain audit replay --json` prints them, for scripts.
async fn replay_json(State(s): State<Shared>) -> Response {
    let v = s.get();
    let body = serde_json::json!({
        "ok": v.ok(),
        "seconds": v.check_seconds,
        "verify": v.verify,
        "replay": v.replay,
    });
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn style() -> Response {
    let mut r = STYLE.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

/// The dashboard's routes over `view`.
pub fn router(view: Shared) -> Router {
    Router::new()
        .route("/", get(jobs))
        .route("/job/{id}", get(job))
        .route("/ledger", get(ledger))
        .route("/record/{index}", get(record))
        .route("/checkpoints", get(checkpoints))
        .route("/model/{job}/{round}", get(model))
        .route("/credits", get(credits))
        .route("/parties", get(parties))
        .route("/api/replay.json", get(replay_json))
        .route("/style.css", get(style))
        .with_state(view)
}

/// Serves the dashboard on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(view))
        .with_graceful_shutdown(shutdown)
        .await
}
