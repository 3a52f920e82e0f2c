//! `ordo serve`: the v1 HTTP API (SPEC §4) on actix-web, in front of the engine.
//!
//! The server binds first and reports `/readyz` 503 while the engine recovers on a
//! blocking thread; handlers reach the engine through a `OnceLock` that is filled when
//! recovery ends. Errors are mapped to problem+json in one place ([`error`]).
//!
//! Shutdown (SIGTERM/SIGINT), in order ([`Running::shutdown`]):
//! 1. stop accepting connections; writes are refused (503) from now on;
//! 2. live feeds (SSE) and webhook deliveries end — each finishes the step it is in —
//!    and are waited for;
//! 3. in-flight requests finish (up to the shutdown timeout);
//! 4. housekeeping stops and is waited for;
//! 5. the engine's own shutdown: checkpoint (snapshots + log position), flush the
//!    journal, stop the actors; exit 0.
//!
//! The background tasks of steps 2 and 4 are tracked by [`crate::shutdown::Shutdown`] stages,
//! so nothing still reads or writes the store when the engine stops.

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
pub mod loopback;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;

use std::future::ready;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage, HttpServer};
use dashmap::DashMap;
use futures::future::Either;
use ordo_engine::Engine;

use crate::config::{EngineSettings, FeedSettings, RequestSettings, ServerSettings, Settings};
use crate::shutdown::Shutdown;
use caller::{Tokens, TraceId};
use error::{ApiError, ProblemType};

/// What every handler shares.
pub struct AppState {
    /// Set once recovery has finished.
    pub engine: OnceLock<Engine>,
    /// Set once the webhook deliveries have started (right after recovery).
    pub webhooks: OnceLock<Arc<crate::webhooks::Webhooks>>,
    /// What every request is held to (body size, idempotency retention): the
    /// `requests` subtree of the settings, all the handlers read of them.
    pub settings: RequestSettings,
    /// The live feed's buffer, heartbeat and slow-reader timeout.
    pub feed: FeedSettings,
    pub tokens: Tokens,
    /// Loopback mode (no tokens): the hosts a browser may name (see [`loopback`]); `None`
    /// with tokens, when those checks are off.
    pub loopback: Option<loopback::AllowedHosts>,
    pub limiter: Option<ratelimit::RateLimiter>,
    /// The edge's metrics and its registry (see [`metrics`]).
    pub metrics: metrics::HttpMetrics,
    /// One async mutex per Idempotency-Key being worked on (see [`idempotency`]).
    pub idem_locks: DashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>,
    /// The first shutdown stage. Once triggered, writes are refused and keep-alive
    /// connections closed; the live feeds and webhook deliveries it tracks end, and
    /// shutdown waits for them before the engine stops.
    pub shutdown: Shutdown,
}

impl AppState {
    /// `addr` is the address bound (port 0 resolved). Fails only if the edge's metrics
    /// cannot be declared (see [`metrics::HttpMetrics::new`]).
    pub fn new(settings: &Settings, addr: SocketAddr) -> prometheus::Result<AppState> {
        Ok(AppState {
            engine: OnceLock::new(),
            webhooks: OnceLock::new(),
            settings: settings.requests.clone(),
            feed: settings.feed.clone(),
            tokens: Tokens::new(&settings.auth.tokens),
            loopback: settings
                .auth
                .is_open()
                .then(|| loopback::AllowedHosts::new(addr, &settings.auth.allowed_hosts)),
            limiter: ratelimit::RateLimiter::new(
                settings.rate_limit.per_second,
                settings.rate_limit.burst,
            ),
            metrics: metrics::HttpMetrics::new()?,
            idem_locks: DashMap::new(),
            shutdown: Shutdown::new(),
        })
    }

    /// The engine, or 503 while it recovers (or after it stopped).
    pub fn engine(&self) -> Result<Engine, ApiError> {
        if self.shutdown.is_triggered() {
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

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// Builds the actix-web server on an already bound listener.
fn build_server(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
    server: &ServerSettings,
) -> std::io::Result<actix_web::dev::Server> {
    let shutdown = server.shutdown_timeout.as_secs().max(1);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::invalid(format!("bad path: {e}")).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::invalid(format!("bad query: {e}")).into()),
            )
            .configure(routes::register)
            .default_service(web::to(routes::fallback))
            .wrap_fn(|req, srv| {
                // Loopback mode: no web page may drive the server (see [`loopback`]).
                // Inside the metrics and logging below, so refusals are counted.
                let refused = req
                    .app_data::<web::Data<AppState>>()
                    .and_then(|s| s.loopback.as_ref())
                    .and_then(|hosts| hosts.check(req.headers(), req.uri()).err());
                match refused {
                    Some(e) => Either::Left(ready(Ok(req.error_response(e)))),
                    None => Either::Right(srv.call(req)),
                }
            })
            .wrap_fn(|req, srv| {
                let start = Instant::now();
                let trace = caller::trace_id(req.headers());
                req.extensions_mut().insert(TraceId(trace.clone()));
                let fut = srv.call(req);
                async move {
                    // Handlers and extractors answer their errors as responses; an `Err`
                    // here is actix's own and is answered by it.
                    let mut res = fut.await?;
                    observe(&mut res, &trace, start.elapsed());
                    Ok::<_, actix_web::Error>(res)
                }
            })
    })
    .workers(server.http_workers)
    .backlog(4096)
    .max_connections(25_000)
    .shutdown_timeout(shutdown)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// Every response: counted in the metrics, logged, given its trace headers; and told to
/// close its connection once shutdown has begun.
fn observe<B>(res: &mut ServiceResponse<B>, trace: &str, took: Duration) {
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
        closing = state.shutdown.is_triggered();
    }
    if closing {
        // Shutting down: tell keep-alive clients to go away.
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    let (method, path) = (res.request().method(), res.request().path());
    let took_us = took.as_micros() as u64;
    if status.is_server_error() {
        tracing::warn!(trace_id = %trace, %method, path, status = status.as_u16(), took_us, "request failed");
    } else {
        tracing::debug!(trace_id = %trace, %method, path, status = status.as_u16(), took_us, "request");
    }
    let span: u64 = rand::random::<u64>() | 1;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace}-{span:016x}-01")) {
        h.insert(TRACEPARENT, v);
    }
    if let Ok(v) = HeaderValue::from_str(trace) {
        h.insert(TRACE_ID, v);
    }
}

/// Binds, recovers, serves until SIGTERM/SIGINT, shuts down cleanly.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    settings.check_bind()?;
    let listen = settings.server.listen;
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    if settings.auth.is_open() {
        tracing::warn!(
            "no auth tokens configured: every request is allowed (loopback only; Host and Origin must name this server, see --allowed-hosts); set --auth-tokens to require tokens"
        );
    }
    let state = web::Data::new(AppState::new(&settings, addr)?);
    let server = build_server(state.clone(), listener, &settings.server)?;
    let handle = server.handle();
    tracing::info!(%addr, durability = %settings.engine.durability, data_dir = %settings.engine.data_dir.display(), "listening; recovering the event log");
    let server_task = actix_web::rt::spawn(server);

    let started = Instant::now();
    let engine = match recover(&settings.engine).await {
        Ok(engine) => engine,
        Err(e) => {
            handle.stop(false).await;
            return Err(e);
        }
    };
    // The webhooks keep their records beside the log, in the store the engine opened:
    // the one place outside the engine that holds the store.
    let hook_store = crate::webhooks::WebhookStore::new(engine.store().clone());
    let hooks = crate::webhooks::Webhooks::start(
        engine.clone(),
        hook_store,
        (&settings.webhooks).into(),
        state.shutdown.clone(),
        state.metrics.registry(),
    )?;
    let _ = state.webhooks.set(hooks);
    let _ = state.engine.set(engine.clone());
    let housekeeping = Shutdown::new();
    spawn_housekeeping(state.clone(), &housekeeping);
    // Listening from before `ready`, so a signal sent as soon as that line is seen is
    // not lost.
    let stop = StopSignal::listen();
    tracing::info!(%addr, recovered_in_ms = started.elapsed().as_millis() as u64, "ready");

    stop.received().await;
    Running {
        state,
        engine,
        handle,
        server_task,
        housekeeping,
        limit: settings.server.shutdown_timeout,
    }
    .shutdown()
    .await
}

/// Opens the engine (recovery) on a blocking thread, so `/readyz` answers 503 meanwhile.
async fn recover(settings: &EngineSettings) -> anyhow::Result<Engine> {
    let cfg = settings.into();
    match web::block(move || Engine::open(cfg)).await {
        Ok(Ok(engine)) => Ok(engine),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot open the engine: {e}")),
        Err(e) => Err(anyhow::anyhow!("recovery thread failed: {e}")),
    }
}

/// A server that is up, with everything its shutdown must stop.
struct Running {
    state: web::Data<AppState>,
    engine: Engine,
    handle: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The second stage: housekeeping, stopped once no request can need it.
    housekeeping: Shutdown,
    /// `shutdown_timeout`: the bound of each wait below.
    limit: Duration,
}

impl Running {
    /// The shutdown sequence of the module docs, in order.
    async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!(
            "shutting down: no new connections; ending live feeds and webhook deliveries"
        );
        // 1. Writes refused from here on; no new connections. The server's stop
        //    command goes out now; its future resolves when in-flight requests are done.
        self.state.shutdown.trigger();
        let requests_done = self.handle.stop(true);
        // 2. Live feeds and webhook deliveries (open feeds are in-flight requests: they
        //    must end before step 3 can).
        if !self.state.shutdown.drain(self.limit).await {
            tracing::warn!(
                still_running = self.state.shutdown.running(),
                "live feeds or webhook deliveries did not stop in time; going on"
            );
        }
        // 3. In-flight requests (actix bounds the wait by the shutdown timeout).
        tracing::info!("finishing in-flight requests");
        requests_done.await;
        match self.server_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "the HTTP server task failed"),
        }
        // 4. Housekeeping.
        if !self.housekeeping.drain(self.limit).await {
            tracing::warn!("housekeeping did not stop in time; going on");
        }
        // 5. The engine.
        tracing::info!("requests finished; checkpointing and flushing the journal");
        self.engine.shutdown().await?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Sweeps idle rate-limit buckets every minute and expired idempotency records every
/// ten, until `stage` is triggered; a sweep under way is finished first.
fn spawn_housekeeping(state: web::Data<AppState>, stage: &Shutdown) {
    let stop = stage.clone();
    actix_web::rt::spawn(stage.track(async move {
        let mut tick = actix_web::rt::time::interval(Duration::from_secs(60));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.triggered() => return,
            }
            n += 1;
            if let Some(l) = &state.limiter {
                l.sweep();
            }
            if n.is_multiple_of(10) {
                if let Some(engine) = state.engine.get().cloned() {
                    sweep_idempotency(engine).await;
                }
            }
        }
    }));
}

async fn sweep_idempotency(engine: Engine) {
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

/// SIGTERM or SIGINT (Ctrl-C where there are no Unix signals).
struct StopSignal {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

#[cfg(unix)]
impl StopSignal {
    /// Starts listening: a signal that arrives from now on is kept until
    /// [`StopSignal::received`].
    fn listen() -> StopSignal {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignal {
                unix: Some((term, int)),
            },
            _ => {
                tracing::warn!("cannot install signal handlers; waiting for Ctrl-C");
                StopSignal { unix: None }
            }
        }
    }

    async fn received(self) {
        match self.unix {
            Some((mut term, mut int)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            },
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
impl StopSignal {
    fn listen() -> StopSignal {
        StopSignal {}
    }

    async fn received(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
