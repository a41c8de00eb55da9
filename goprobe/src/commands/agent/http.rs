//! The agent's HTTP server: read-only (GET and HEAD only), on loopback unless configured
//! otherwise, with an optional bearer token that every request must present.
//!
//! - `/metrics`: Prometheus text format;
//! - `/api/v1/query?from=T&to=T[&function=GLOB]`: the archive's histograms over a range (JSON);
//! - `/api/v1/diff?base=FROM..TO&compare=FROM..TO[&function=GLOB]`: how they moved (JSON);
//! - `/api/v1/status`: the archive's extent and size, and the processes the agent could not
//!   inspect by the permission missing (JSON);
//! - `/api/v1/profile?from=T&to=T[&pid=N]`: the archived CPU profiles of a range, merged
//!   (gzipped pprof); with `base=FROM..TO&compare=FROM..TO`, compare minus base;
//! - `/debug/pprof/profile?pid=N[&seconds=S][&hz=F]`: a fresh eBPF CPU profile of process N
//!   (gzipped pprof, Go's defaults: 30 s at 100 Hz), so `go tool pprof` works against services
//!   that expose no pprof of their own. Each profile holds perf events and maps for its length:
//!   one at a time per PID, [`MAX_PROFILES`] at once in all (429 beyond), at most
//!   [`MAX_PROFILE_SECONDS`] long (400 beyond), and none at all (403) when the server listens
//!   beyond localhost without a bearer token;
//! - `/debug/pprof/block?pid=N[&seconds=S]`: where process N's goroutines wait, and why, traced
//!   for S seconds (30 by default) as `goprobe offcpu` does (gzipped pprof), within the same
//!   limits as `/debug/pprof/profile`;
//! - `/healthz`: `ok`.
//!
//! Times are those of `goprobe query` (`now`, `-1h`, `@UNIX_SECONDS`, RFC 3339).
use std::{
    collections::{HashMap, HashSet},
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
        prometheus::{self, Health},
        query_string::query_params,
    },
    pipeline::{
        history::{self, Range},
        series::Cumulative,
    },
    plan::Pattern,
};

use super::store::Store;
use crate::pipeline::archive::ArchiveError;

/// What the server reads; the agent's loop writes it.
pub struct Shared {
    pub metrics: Mutex<(Cumulative, Health)>,
    pub archive: Arc<Store>,
    pub token: Option<String>,
    pub profiling: Profiling,
}

/// Profiles served at once, over all PIDs.
pub const MAX_PROFILES: usize = 2;
/// The longest profile served.
pub const MAX_PROFILE_SECONDS: u64 = 60;

/// `/debug/pprof/profile`'s admission: whether it is on, and the PIDs being profiled now.
#[derive(Debug)]
pub struct Profiling {
    enabled: bool,
    active: Mutex<HashSet<u32>>,
}

impl Profiling {
    /// Off when anyone beyond localhost could ask for profiles without a token: each one costs
    /// the host perf events, BPF maps and memory for its whole length.
    pub fn new(listen: std::net::SocketAddr, token: bool) -> Self {
        Profiling {
            enabled: listen.ip().is_loopback() || token,
            active: Mutex::new(HashSet::new()),
        }
    }

    /// A slot for profiling `pid`, freed when dropped (also when the client goes away).
    fn admit(&self, pid: u32) -> Result<ProfileSlot<'_>, String> {
        let mut active = self.active.lock().expect("profiling lock");
        if active.contains(&pid) {
            return Err(format!(
                "PID {pid} is being profiled already: one profile per process at a time"
            ));
        }
        if active.len() >= MAX_PROFILES {
            return Err(format!(
                "{MAX_PROFILES} profiles are being taken already: retry when one ends"
            ));
        }
        active.insert(pid);
        Ok(ProfileSlot {
            profiling: self,
            pid,
        })
    }
}

#[derive(Debug)]
struct ProfileSlot<'a> {
    profiling: &'a Profiling,
    pid: u32,
}

impl Drop for ProfileSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut active) = self.profiling.active.lock() {
            active.remove(&self.pid);
        }
    }
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

/// The credentials of an `Authorization: Bearer TOKEN` header. The scheme is case-insensitive
/// (RFC 9110, section 11.1): `bearer`, `BEARER` are the same scheme.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
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
            .and_then(bearer_credentials);
        if !given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())) {
            let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let params = query_params(request.uri().query().unwrap_or(""));
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
            let health = shared.archive.status();
            let mut archive = match shared.archive.read(|a| Ok(a.extent()?)) {
                Ok((range, bytes)) => serde_json::json!({
                    "first_interval_end_ms": range.map(|r| r.0),
                    "last_interval_end_ms": range.map(|r| r.1),
                    "bytes": bytes,
                }),
                Err(e) => serde_json::json!({ "error": crate::one_line(&e) }),
            };
            archive["corrupt_total"] = health.corrupt_total.into();
            if let Some(failing) = health.failing {
                archive["failing"] = failing.into();
            }
            // Processes left out for want of a permission, by the permission: all zero means
            // the agent could look at every process.
            let (not_inspectable, overhead) = {
                let guard = shared.metrics.lock().expect("metrics lock");
                let not_inspectable: serde_json::Map<String, serde_json::Value> = guard
                    .1
                    .not_inspectable
                    .iter()
                    .map(|(reason, n)| (reason.to_string(), (*n).into()))
                    .collect();
                // What the overhead budget shed: the functions whose histograms stop there.
                let overhead = serde_json::json!({
                    "budget": guard.1.overhead_budget,
                    "functions_shed_total": guard.1.functions_shed,
                    "shed": guard.1.shed,
                });
                (not_inspectable, overhead)
            };
            let json = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "archive": archive,
                "processes_not_inspectable": not_inspectable,
                "overhead": overhead,
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
        "/debug/pprof/profile" => pprof_profile(&params, &shared.profiling).await,
        "/debug/pprof/block" => pprof_block(&params, &shared.profiling).await,
        "/api/v1/profile" => archived_profile(params, shared).await,
        "/api/v1/query" => api(params, shared, false).await,
        "/api/v1/diff" => api(params, shared, true).await,
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// A fresh CPU profile of one process, sampled with eBPF while the request waits, as Go's
/// `/debug/pprof/profile` serves one.
async fn pprof_profile(
    params: &HashMap<String, String>,
    profiling: &Profiling,
) -> Response<Full<Bytes>> {
    let ((pid, duration, hz), _slot) = match admit_live_profile(params, profiling) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let profile = crate::engine::profiler::profile_pid(pid, duration, hz).await;
    let mut r = live_profile_reply(profile);
    if r.status() == StatusCode::OK {
        r.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            header::HeaderValue::from_static("attachment; filename=\"profile\""),
        );
    }
    r
}

/// Where one process's goroutines wait, traced while the request waits (`goprobe offcpu`).
/// It attaches probes to the process as a CPU profile does, so it shares the CPU profiles'
/// limits (and their slots: one profile of either kind per PID at a time).
async fn pprof_block(
    params: &HashMap<String, String>,
    profiling: &Profiling,
) -> Response<Full<Bytes>> {
    let ((pid, duration, _), _slot) = match admit_live_profile(params, profiling) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    live_profile_reply(crate::engine::offcpu::block_pid(pid, duration).await)
}

/// A live profile's request (PID, duration, frequency) and the slot it holds while it runs.
type Admitted<'a> = ((u32, Duration, u64), ProfileSlot<'a>);

/// What both live profiles check first: profiling is on, the request is valid, and a slot is
/// free for its PID (held until the profile is served).
#[allow(clippy::result_large_err)]
fn admit_live_profile<'a>(
    params: &HashMap<String, String>,
    profiling: &'a Profiling,
) -> Result<Admitted<'a>, Response<Full<Bytes>>> {
    if !profiling.enabled {
        return Err(error(
            StatusCode::FORBIDDEN,
            "profiling is off: the agent listens beyond localhost without a bearer token (set http.bearer_token_file)",
        ));
    }
    let request = crate::engine::profiler::profile_request(params, MAX_PROFILE_SECONDS)
        .map_err(|(_, message)| error(StatusCode::BAD_REQUEST, &message))?;
    let slot = profiling
        .admit(request.0)
        .map_err(|message| error(StatusCode::TOO_MANY_REQUESTS, &message))?;
    Ok((request, slot))
}

/// A live profile as gzipped pprof; a process that is gone is 404, other failures 400.
fn live_profile_reply(
    profile: anyhow::Result<crate::outputs::pprof::Profile>,
) -> Response<Full<Bytes>> {
    let profile = match profile {
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
        shared
            .archive
            .read(|archive| crate::outputs::pprof::answer_profile(archive, &ranges, pid))
    })
    .await;
    match result {
        Ok(Ok(bytes)) => reply(StatusCode::OK, "application/octet-stream", bytes),
        Ok(Err(e)) => archive_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the request failed"),
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
        let records = shared.archive.read(|archive| {
            let records: Result<Vec<_>, _> = ranges
                .iter()
                .map(|r| archive.read(r.from_ms, r.to_ms))
                .collect();
            Ok(records?)
        });
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
        Ok(Err(e)) => archive_error(&e),
        // A panic of the reading thread: its message is no answer for the user.
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the request failed"),
    }
}

/// The archive could not answer: 503 while it is corrupt (it was just replaced) or
/// unavailable (a full disk), 500 for anything else.
fn archive_error(e: &anyhow::Error) -> Response<Full<Bytes>> {
    let status = match e.downcast_ref::<ArchiveError>() {
        Some(ArchiveError::Io { .. } | ArchiveError::Corrupt { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &crate::one_line(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_admitted_one_per_pid_and_two_in_all() {
        let local = Profiling::new("127.0.0.1:9476".parse().unwrap(), false);
        assert!(local.enabled);
        let a = local.admit(1).unwrap();
        assert!(local.admit(1).unwrap_err().contains("PID 1"));
        let b = local.admit(2).unwrap();
        assert!(local.admit(3).unwrap_err().contains("2 profiles"));
        drop(a);
        let _c = local.admit(1).unwrap();
        drop(b);
        assert!(!Profiling::new("0.0.0.0:9476".parse().unwrap(), false).enabled);
        assert!(Profiling::new("0.0.0.0:9476".parse().unwrap(), true).enabled);
    }

    /// `Authorization: bearer TOKEN` was refused: only `Bearer` was recognised.
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER abc", "  bEaReR abc"] {
            assert_eq!(bearer_credentials(header), Some("abc"), "{header:?}");
        }
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials("Bearerabc"), None);
        assert_eq!(bearer_credentials("Bearer"), None);
    }
}
