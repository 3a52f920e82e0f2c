//! `ordo serve`: the v1 HTTP API (SPEC §4) on actix-web, in front of the engine.
//!
//! The server binds first and reports `/readyz` 503 while the engine recovers on a
//! blocking thread; handlers reach the engine through a `OnceLock` that is filled when
//! recovery ends. Errors are mapped to problem+json in one place ([`error`]).
//!
//! Shutdown (SIGTERM/SIGINT): stop accepting, let in-flight requests finish (up to the
//! shutdown timeout), then the engine's own shutdown: checkpoint (snapshots + log
//! position), flush the journal, stop the actors; exit 0.

pub mod answer;
pub mod bodies;
pub mod caller;
pub mod commands;
pub mod dto;
pub mod error;
pub mod feed;
pub mod handlers;
pub mod idempotency;
pub mod input;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage, HttpServer};
use dashmap::DashMap;
use ordo_engine::{Engine, EngineConfig};

use crate::config::Settings;
use caller::{Tokens, TraceId};
use error::{ApiError, ProblemType};

/// What every handler shares.
pub struct AppState {
    /// Set once recovery has finished.
    pub engine: OnceLock<Engine>,
    /// Set once the webhook deliveries have started (right after recovery).
    pub webhooks: OnceLock<Arc<webhooks::Webhooks>>,
    pub settings: Settings,
    pub tokens: Tokens,
    pub limiter: Option<ratelimit::RateLimiter>,
    /// The edge's metrics and its registry (see [`metrics`]).
    pub metrics: metrics::HttpMetrics,
    /// One async mutex per Idempotency-Key being worked on (see [`idempotency`]).
    pub idem_locks: DashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>,
    /// Set when shutdown begins: writes are refused from then on.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Wakes long-lived streams (the live feed) so they end when shutdown begins.
    pub shutdown: tokio::sync::Notify,
}

impl AppState {
    /// Fails only if the edge's metrics cannot be declared (see [`metrics::HttpMetrics::new`]).
    pub fn new(settings: Settings) -> prometheus::Result<AppState> {
        Ok(AppState {
            engine: OnceLock::new(),
            webhooks: OnceLock::new(),
            tokens: Tokens::new(&settings.tokens),
            limiter: ratelimit::RateLimiter::new(settings.rate_limit, settings.rate_burst),
            metrics: metrics::HttpMetrics::new()?,
            idem_locks: DashMap::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            shutdown: tokio::sync::Notify::new(),
            settings,
        })
    }

    /// The engine, or 503 while it recovers (or after it stopped).
    pub fn engine(&self) -> Result<Engine, ApiError> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ApiError::new(ProblemType::Unavailable, "shutting down").retry_after(1));
        }
        match self.engine.get() {
            Some(e) => match e.stopped_reason() {
                None => Ok(e.clone()),
                Some(why) => Err(ApiError::new(
                    ProblemType::Unavailable,
                    format!("the engine is stopped: {why}"),
                )),
            },
            None => Err(ApiError::new(
                ProblemType::Unavailable,
                "recovering the event log; not ready yet",
            )
            .retry_after(1)),
        }
    }
}

fn engine_config(s: &Settings) -> EngineConfig {
    EngineConfig {
        data_dir: s.data_dir.clone(),
        durability: s.durability,
        reservation_ttl: s.reservation_ttl,
        sku_mailbox: s.sku_mailbox,
        workers: s.actor_threads,
        ..EngineConfig::default()
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// Builds the actix-web server on an already bound listener.
fn build_server(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let workers = state.settings.http_workers;
    let shutdown = state.settings.shutdown_timeout.as_secs().max(1);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                ApiError::invalid(format!("bad path: {e}")).into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::invalid(format!("bad query: {e}")).into()
            }))
            .configure(routes::register)
            .default_service(web::to(routes::fallback))
            .wrap_fn(|req, srv| {
                let start = Instant::now();
                let trace = caller::trace_id(req.headers());
                req.extensions_mut().insert(TraceId(trace.clone()));
                let fut = srv.call(req);
                async move {
                    // Handlers and extractors answer their errors as responses; an `Err`
                    // here is actix's own and is answered by it.
                    let mut res = fut.await?;
                    let took = start.elapsed();
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    let status = res.status();
                    let mut closing = false;
                    if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
                        state
                            .metrics
                            .record(&route, res.request().method(), status, took);
                        closing = state.stopping.load(std::sync::atomic::Ordering::Acquire);
                    }
                    if closing {
                        // Shutting down: tell keep-alive clients to go away.
                        res.response_mut()
                            .head_mut()
                            .set_connection_type(actix_web::http::ConnectionType::Close);
                    }
                    if status.is_server_error() {
                        tracing::warn!(trace_id = %trace, method = %res.request().method(), path = res.request().path(), status = status.as_u16(), took_us = took.as_micros() as u64, "request failed");
                    } else {
                        tracing::debug!(trace_id = %trace, method = %res.request().method(), path = res.request().path(), status = status.as_u16(), took_us = took.as_micros() as u64, "request");
                    }
                    let span: u64 = rand::random::<u64>() | 1;
                    let h = res.headers_mut();
                    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace}-{span:016x}-01")) {
                        h.insert(TRACEPARENT, v);
                    }
                    if let Ok(v) = HeaderValue::from_str(&trace) {
                        h.insert(TRACE_ID, v);
                    }
                    Ok::<_, actix_web::Error>(res)
                }
            })
    })
    .workers(workers)
    .backlog(4096)
    .max_connections(25_000)
    .shutdown_timeout(shutdown)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// Binds, recovers, serves until SIGTERM/SIGINT, shuts down cleanly.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    settings.check_bind()?;
    let listener = std::net::TcpListener::bind(settings.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    if settings.tokens.is_empty() {
        tracing::warn!(
            "no auth tokens configured: every request is allowed (loopback only); set --auth-tokens to require tokens"
        );
    }
    let state = web::Data::new(AppState::new(settings)?);
    let server = build_server(state.clone(), listener)?;
    let handle = server.handle();
    tracing::info!(%addr, durability = %state.settings.durability, data_dir = %state.settings.data_dir.display(), "listening; recovering the event log");
    let server_task = actix_web::rt::spawn(server);

    // Recovery on a blocking thread, so /readyz answers 503 meanwhile.
    let cfg = engine_config(&state.settings);
    let started = Instant::now();
    let engine = match web::block(move || Engine::open(cfg)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            handle.stop(false).await;
            return Err(anyhow::anyhow!("cannot open the engine: {e}"));
        }
        Err(e) => {
            handle.stop(false).await;
            return Err(anyhow::anyhow!("recovery thread failed: {e}"));
        }
    };
    let hooks = webhooks::Webhooks::start(
        engine.clone(),
        webhooks::WebhookConfig {
            max_attempts: state.settings.webhook_max_attempts,
            timeout: state.settings.webhook_timeout,
            backoff_base: state.settings.webhook_backoff,
            backoff_max: state.settings.webhook_backoff_max,
            ca_file: state.settings.webhook_ca_file.clone(),
        },
        state.metrics.registry(),
    )?;
    let _ = state.webhooks.set(hooks);
    let _ = state.engine.set(engine.clone());
    tracing::info!(%addr, recovered_in_ms = started.elapsed().as_millis() as u64, "ready");

    spawn_housekeeping(state.clone());

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    state
        .stopping
        .store(true, std::sync::atomic::Ordering::Release);
    state.shutdown.notify_waiters();
    handle.stop(true).await;
    let _ = server_task.await;
    tracing::info!("requests finished; checkpointing and flushing the journal");
    engine.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Sweeps expired idempotency records and idle rate-limit buckets.
fn spawn_housekeeping(state: web::Data<AppState>) {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(Duration::from_secs(60));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            if let Some(l) = &state.limiter {
                l.sweep();
            }
            if n.is_multiple_of(10) {
                if let Some(engine) = state.engine.get().cloned() {
                    let scan = engine.clone();
                    let swept = match web::block(move || scan.expired_idempotency(100_000)).await {
                        Ok(Ok(keys)) => {
                            let n = keys.len();
                            engine.expire_idempotency(keys).await.map(|()| n)
                        }
                        Ok(Err(e)) => Err(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "idempotency sweep did not run");
                            Ok(0)
                        }
                    };
                    match swept {
                        Ok(n) if n > 0 => tracing::debug!(n, "expired idempotency keys removed"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
                    }
                }
            }
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; waiting for Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
