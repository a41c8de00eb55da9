//! The agent's HTTP server: read-only (GET and HEAD only), on loopback unless configured
//! otherwise, with an optional bearer token that every request must present.
//!
//! - `/metrics`: Prometheus text format;
//! - `/api/v1/query?from=T&to=T[&function=GLOB]`: the archive's histograms over a range (JSON);
//! - `/api/v1/diff?base=FROM..TO&compare=FROM..TO[&function=GLOB]`: how they moved (JSON);
//! - `/api/v1/status`: the archive's extent and size (JSON);
//! - `/api/v1/profile?from=T&to=T[&pid=N]`: the archived CPU profiles of a range, merged
//!   (gzipped pprof); with `base=FROM..TO&compare=FROM..TO`, compare minus base;
//! - `/debug/pprof/profile?pid=N[&seconds=S][&hz=F]`: a fresh eBPF CPU profile of process N
//!   (gzipped pprof, Go's defaults: 30 s at 100 Hz), so `go tool pprof` works against services
//!   that expose no pprof of their own;
//! - `/debug/pprof/block?pid=N[&seconds=S]`: where process N's goroutines wait, and why, traced
//!   for S seconds (30 by default) as `goprobe offcpu` does (gzipped pprof);
//! - `/healthz`: `ok`.
//!
//! Times are those of `goprobe query` (`now`, `-1h`, `@UNIX_SECONDS`, RFC 3339).
use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{
    outputs::{
        http as http_client,
        prometheus::{self, Health},
    },
    pipeline::{
        archive::Archive,
        history::{self, Range},
        series::Cumulative,
    },
    plan::Pattern,
};

/// What the server reads; the agent's loop writes it.
pub struct Shared {
    pub metrics: Mutex<(Cumulative, Health)>,
    pub archive: Arc<Archive>,
    pub token: Option<String>,
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(request, shared).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        "application/json",
        serde_json::json!({ "error": message }).to_string(),
    )
}

/// Compare without leaking the token's length-prefix match through timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(request: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some(token) = &shared.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())) {
            let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let params: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                http_client::percent_decode(k),
                http_client::percent_decode(v),
            )
        })
        .collect();
    match request.uri().path() {
        "/metrics" => {
            let text = {
                let guard = shared.metrics.lock().expect("metrics lock");
                prometheus::render(&guard.0, &guard.1)
            };
            reply(StatusCode::OK, prometheus::CONTENT_TYPE, text)
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/api/v1/status" => {
            let archive = match shared.archive.extent() {
                Ok((range, bytes)) => serde_json::json!({
                    "first_interval_end_ms": range.map(|r| r.0),
                    "last_interval_end_ms": range.map(|r| r.1),
                    "bytes": bytes,
                }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
            let json = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "archive": archive,
            });
            reply(StatusCode::OK, "application/json", json.to_string())
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "goprobe agent: /metrics, /api/v1/query?from=-1h&to=now[&function=GLOB], \
             /api/v1/diff?base=FROM..TO&compare=FROM..TO[&function=GLOB], \
             /api/v1/profile?from=-1h&to=now[&pid=N], \
             /debug/pprof/profile?pid=N[&seconds=30][&hz=100], \
             /debug/pprof/block?pid=N[&seconds=30], /healthz\n",
        ),
        "/debug/pprof/profile" => pprof_profile(&params).await,
        "/debug/pprof/block" => pprof_block(&params).await,
        "/api/v1/profile" => archived_profile(params, shared).await,
        "/api/v1/query" => api(params, shared, false).await,
        "/api/v1/diff" => api(params, shared, true).await,
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// A fresh CPU profile of one process, sampled with eBPF while the request waits, as Go's
/// `/debug/pprof/profile` serves one.
async fn pprof_profile(params: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let (pid, duration, hz) = match crate::engine::profiler::profile_request(params) {
        Ok(request) => request,
        Err((_, message)) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match crate::engine::profiler::profile_pid(pid, duration, hz).await {
        Ok(profile) => match crate::outputs::pprof::to_gzip(&profile) {
            Ok(bytes) => {
                let mut r = reply(StatusCode::OK, "application/octet-stream", bytes);
                r.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    header::HeaderValue::from_static("attachment; filename=\"profile\""),
                );
                r
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Err(e) => {
            let message = crate::one_line(&e);
            let status = if e
                .downcast_ref::<crate::targets::TargetError>()
                .is_some_and(|t| matches!(t, crate::targets::TargetError::NoSuchProcess(_)))
            {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            error(status, &message)
        }
    }
}

/// Where one process's goroutines wait, traced while the request waits (`goprobe offcpu`).
async fn pprof_block(params: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let (pid, duration, _) = match crate::engine::profiler::profile_request(params) {
        Ok(request) => request,
        Err((_, message)) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let profile = match crate::engine::offcpu::block_pid(pid, duration).await {
        Ok(profile) => profile,
        Err(e) => {
            let gone = e
                .downcast_ref::<crate::targets::TargetError>()
                .is_some_and(|t| matches!(t, crate::targets::TargetError::NoSuchProcess(_)));
            let status = if gone {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            return error(status, &crate::one_line(&e));
        }
    };
    match crate::outputs::pprof::to_gzip(&profile) {
        Ok(bytes) => reply(StatusCode::OK, "application/octet-stream", bytes),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The archive's CPU profiles of a range (or the difference of two), gzipped pprof.
async fn archived_profile(
    params: HashMap<String, String>,
    shared: Arc<Shared>,
) -> Response<Full<Bytes>> {
    let now = history::now_ms();
    let get = |name: &str, default: &str| params.get(name).cloned().unwrap_or(default.into());
    let ranges: Result<Vec<Range>, String> = match (params.get("base"), params.get("compare")) {
        (Some(a), Some(b)) => {
            history::parse_range(a, now).and_then(|a| Ok(vec![a, history::parse_range(b, now)?]))
        }
        (None, None) => history::parse_time(&get("from", "-1h"), now).and_then(|from_ms| {
            let range = Range {
                from_ms,
                to_ms: history::parse_time(&get("to", "now"), now)?,
            };
            history::check_range(range)?;
            Ok(vec![range])
        }),
        _ => Err("give from=&to=, or both base=FROM..TO and compare=FROM..TO".into()),
    };
    let ranges = match ranges {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let pid = match params.get("pid").map(|p| p.parse::<u32>()) {
        Some(Ok(pid)) => Some(pid),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "pid= is not a process id"),
        None => None,
    };
    let result = tokio::task::spawn_blocking(move || {
        crate::outputs::pprof::answer_profile(&shared.archive, &ranges, pid)
    })
    .await;
    match result {
        Ok(Ok(bytes)) => reply(StatusCode::OK, "application/octet-stream", bytes),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn api(
    params: HashMap<String, String>,
    shared: Arc<Shared>,
    diff: bool,
) -> Response<Full<Bytes>> {
    let now = history::now_ms();
    let function = match params.get("function").map(|f| Pattern::name_only(f, false)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        None => None,
    };
    let get = |name: &str, default: &str| params.get(name).cloned().unwrap_or(default.into());
    let ranges: Result<Vec<Range>, String> = if diff {
        match (params.get("base"), params.get("compare")) {
            (Some(a), Some(b)) => history::parse_range(a, now)
                .and_then(|a| Ok(vec![a, history::parse_range(b, now)?])),
            _ => Err("give base=FROM..TO and compare=FROM..TO".into()),
        }
    } else {
        history::parse_time(&get("from", "-1h"), now).and_then(|from_ms| {
            let range = Range {
                from_ms,
                to_ms: history::parse_time(&get("to", "now"), now)?,
            };
            history::check_range(range)?;
            Ok(vec![range])
        })
    };
    let ranges = match ranges {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    // Reading a long range can take a while: off the agent's thread.
    let result = tokio::task::spawn_blocking(move || {
        let records: Result<Vec<_>, _> = ranges
            .iter()
            .map(|r| shared.archive.read(r.from_ms, r.to_ms))
            .collect();
        records.map(|records| {
            if diff {
                serde_json::to_string(&history::answer_diff(
                    &records[0],
                    &records[1],
                    ranges[0],
                    ranges[1],
                    function.as_ref(),
                ))
            } else {
                serde_json::to_string(&history::answer_query(
                    &records[0],
                    ranges[0],
                    function.as_ref(),
                ))
            }
        })
    })
    .await;
    match result {
        Ok(Ok(Ok(json))) => reply(StatusCode::OK, "application/json", json),
        Ok(Ok(Err(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
