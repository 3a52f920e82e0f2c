//! `ordo serve` settings: one typed, nested tree ([`Settings`]), layered built-in
//! defaults < the `--config` TOML file < `ORDO_*` environment variables < command-line
//! flags.
//!
//! The three sources spell the same flat keys (`--reservation-ttl`,
//! `ORDO_RESERVATION_TTL`, `reservation_ttl = "5m"`), so they share one flat layer type,
//! [`ServeArgs`]: clap fills it from flags and environment (a flag over its variable),
//! serde from the file (unknown keys refused), and the two are stacked key by key. The
//! stack is then resolved once into the tree — defaults filled in, values clamped into
//! range or refused — so the server never starts on a half-valid configuration. Values
//! are typed from the moment they are read: durations are [`Duration`]s (humantime:
//! `15m`, `500ms`), durability and log format enums, the address a [`SocketAddr`]; a bad
//! one is refused naming its flag or key.
//!
//! Each part of the server takes its subtree: the engine's [`EngineConfig`] and the
//! webhooks' [`WebhookConfig`] are conversions of `engine` and `webhooks`; the request
//! handlers see `requests` and nothing else.

mod layer;
#[cfg(test)]
mod tests;
mod values;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ordo_engine::EngineConfig;
use ordo_storage::Durability;

use crate::webhooks::{retry, Resolver, WebhookConfig};

pub use layer::ServeArgs;
pub use values::{
    parse_allowed_hosts, parse_tokens, ConfigError, Durations, HostPort, LogFormat, Role,
};

/// Everything `ordo serve` runs with, checked. Built by [`Settings::load`].
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub server: ServerSettings,
    pub requests: RequestSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub engine: EngineSettings,
    pub webhooks: WebhookSettings,
    pub feed: FeedSettings,
}

/// The HTTP server: where it listens, its workers, its logs, how long it may take to stop.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `listen`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `http_workers`, clamped to 1..=256.
    pub http_workers: usize,
    /// `shutdown_timeout`: the longest wait, on shutdown, for in-flight requests and for
    /// the live feeds and webhook deliveries to let go.
    pub shutdown_timeout: Duration,
    /// `log_format`.
    pub log_format: LogFormat,
}

/// What every request is held to. The request handlers see this subtree (as
/// `AppState::settings`) and nothing else of the settings.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// `max_body_bytes`, at least 1024; larger bodies get 413.
    pub max_body_bytes: usize,
    /// `idempotency_ttl`: how long an `Idempotency-Key` answer is kept.
    pub idempotency_ttl: Duration,
}

/// Bearer tokens (`auth_tokens`). None: every request is allowed, loopback binds only,
/// and requests are held to the loopback checks (`Host`, `Origin`; see
/// `http::loopback`).
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// token → role.
    pub tokens: HashMap<String, Role>,
    /// `allowed_hosts`: names a browser may use for this server in loopback mode, besides
    /// localhost, 127.0.0.1, [::1] and the listen address. Without a port, the listen port.
    pub allowed_hosts: Vec<HostPort>,
}

impl AuthSettings {
    /// No tokens: authentication is off.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl std::fmt::Debug for AuthSettings {
    // Never the tokens themselves: settings may be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut roles: Vec<&str> = self.tokens.values().map(|r| r.as_str()).collect();
        roles.sort_unstable();
        f.debug_struct("AuthSettings")
            .field(
                "tokens",
                &format_args!("<{} redacted: {roles:?}>", roles.len()),
            )
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// Per-caller rate limiting (`rate_limit`, `rate_burst`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimitSettings {
    /// Requests per second per caller; 0 = off.
    pub per_second: u32,
    /// Token-bucket size: defaults to the rate, at least 1 when limiting is on.
    pub burst: u32,
}

/// The engine: its store and its actors.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// `data_dir`.
    pub data_dir: PathBuf,
    /// `durability`.
    pub durability: Durability,
    /// `reservation_ttl`, longer than zero.
    pub reservation_ttl: Duration,
    /// `sku_mailbox`, at least 16.
    pub sku_mailbox: usize,
    /// `actor_threads`, clamped to 1..=256.
    pub actor_threads: usize,
}

/// Webhook delivery (`webhook_*`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The waits before each retry; an event gets one attempt more. From
    /// `webhook_retry_schedule`, or `webhook_backoff` doubling up to
    /// `webhook_backoff_max`; cut or extended (its last wait repeated) to
    /// `webhook_max_attempts` (clamped to 1..=100) when that is given.
    pub retry_schedule: Vec<Duration>,
    /// `webhook_timeout`, longer than zero.
    pub timeout: Duration,
    /// `webhook_ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `webhook_allow_private`: deliver to loopback, private and link-local targets.
    pub allow_private: bool,
}

/// The live feed, Server-Sent Events (`sse_*`).
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// `sse_buffer`: events buffered per reader, clamped to 1..=2^20.
    pub buffer: usize,
    /// `sse_heartbeat`, longer than zero.
    pub heartbeat: Duration,
    /// `sse_slow_timeout`: a reader whose buffer stays full this long is cut off.
    pub slow_timeout: Duration,
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_workers: cores(),
            shutdown_timeout: Duration::from_secs(30),
            log_format: LogFormat::Human,
        }
    }
}

impl Default for RequestSettings {
    fn default() -> Self {
        RequestSettings {
            max_body_bytes: 64 * 1024,
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            data_dir: PathBuf::from("./data"),
            durability: Durability::Sync,
            reservation_ttl: Duration::from_secs(15 * 60),
            sku_mailbox: 16_384,
            actor_threads: cores(),
        }
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry_schedule: retry::DEFAULT_SCHEDULE.to_vec(),
            timeout: Duration::from_secs(10),
            ca_file: None,
            allow_private: false,
        }
    }
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            buffer: 1024,
            heartbeat: Duration::from_secs(15),
            slow_timeout: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// Flags and environment (`args`, as clap resolved them) over the `--config` file over
    /// the defaults, resolved into the tree and checked.
    pub fn load(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => ServeArgs::from_file(path)?,
            None => ServeArgs::default(),
        };
        let settings = Settings::resolve(args.clone().over(file))?;
        settings.validate()?;
        Ok(settings)
    }

    /// One layer over the defaults; out-of-range counts are clamped, as documented on
    /// each field.
    fn resolve(layer: ServeArgs) -> Result<Settings, ConfigError> {
        let d = Settings::default();
        let retry_schedule = retry_schedule(&layer)?;
        Ok(Settings {
            server: ServerSettings {
                listen: layer.listen.unwrap_or(d.server.listen),
                http_workers: layer
                    .http_workers
                    .unwrap_or(d.server.http_workers)
                    .clamp(1, 256),
                shutdown_timeout: layer.shutdown_timeout.unwrap_or(d.server.shutdown_timeout),
                log_format: layer.log_format.unwrap_or(d.server.log_format),
            },
            requests: RequestSettings {
                max_body_bytes: layer.max_body_bytes.unwrap_or(d.requests.max_body_bytes),
                idempotency_ttl: layer.idempotency_ttl.unwrap_or(d.requests.idempotency_ttl),
            },
            auth: AuthSettings {
                tokens: match layer.auth_tokens.as_deref() {
                    Some(s) => parse_tokens(s)?,
                    None => HashMap::new(),
                },
                allowed_hosts: match layer.allowed_hosts.as_deref() {
                    Some(s) => parse_allowed_hosts(s)?,
                    None => Vec::new(),
                },
            },
            rate_limit: RateLimitSettings::resolve(layer.rate_limit, layer.rate_burst),
            engine: EngineSettings {
                data_dir: layer.data_dir.unwrap_or(d.engine.data_dir),
                durability: layer.durability.unwrap_or(d.engine.durability),
                reservation_ttl: layer.reservation_ttl.unwrap_or(d.engine.reservation_ttl),
                sku_mailbox: layer.sku_mailbox.unwrap_or(d.engine.sku_mailbox).max(16),
                actor_threads: layer
                    .actor_threads
                    .unwrap_or(d.engine.actor_threads)
                    .clamp(1, 256),
            },
            webhooks: WebhookSettings {
                retry_schedule,
                timeout: layer.webhook_timeout.unwrap_or(d.webhooks.timeout),
                ca_file: layer.webhook_ca_file,
                allow_private: layer.webhook_allow_private.unwrap_or(false),
            },
            feed: FeedSettings {
                buffer: layer.sse_buffer.unwrap_or(d.feed.buffer).clamp(1, 1 << 20),
                heartbeat: layer.sse_heartbeat.unwrap_or(d.feed.heartbeat),
                slow_timeout: layer.sse_slow_timeout.unwrap_or(d.feed.slow_timeout),
            },
        })
    }

    /// The checks no single value can make alone: lower bounds, and no open server on
    /// a public address.
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("reservation_ttl", self.engine.reservation_ttl),
            ("webhook_timeout", self.webhooks.timeout),
            ("sse_heartbeat", self.feed.heartbeat),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    detail: "must be longer than zero".into(),
                });
            }
        }
        if self.requests.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                detail: "must be at least 1024".into(),
            });
        }
        self.check_bind()
    }

    /// Without tokens every request is allowed, so only loopback may be bound.
    pub fn check_bind(&self) -> Result<(), ConfigError> {
        let listen = self.server.listen;
        if self.auth.is_open() && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "listen",
                detail: format!(
                    "no auth tokens are configured, so every request would be allowed; \
                     refusing to listen on {listen} (a non-loopback address). Set \
                     --auth-tokens (ORDO_AUTH_TOKENS) or listen on 127.0.0.1"
                ),
            });
        }
        Ok(())
    }
}

/// The webhook retry schedule a layer asks for (see [`WebhookSettings::retry_schedule`]).
fn retry_schedule(layer: &ServeArgs) -> Result<Vec<Duration>, ConfigError> {
    let doubling = layer.webhook_backoff.is_some() || layer.webhook_backoff_max.is_some();
    let attempts = layer.webhook_max_attempts.map(|n| n.clamp(1, 100));
    let mut schedule = match (&layer.webhook_retry_schedule, doubling) {
        (Some(_), true) => {
            return Err(ConfigError::Invalid {
                key: "webhook_retry_schedule",
                detail: "give a retry schedule or webhook_backoff (and _max), not both".into(),
            })
        }
        (Some(Durations(waits)), false) => waits.clone(),
        (None, true) => {
            let first = layer.webhook_backoff.unwrap_or(Duration::from_millis(500));
            let max = layer
                .webhook_backoff_max
                .unwrap_or(Duration::from_secs(300));
            let retries = attempts.unwrap_or(8) - 1;
            (0..retries)
                .map(|i| first.saturating_mul(1u32 << i.min(20)).min(max))
                .collect()
        }
        (None, false) => retry::DEFAULT_SCHEDULE.to_vec(),
    };
    if schedule.len() > 99 {
        return Err(ConfigError::Invalid {
            key: "webhook_retry_schedule",
            detail: "at most 99 waits (100 attempts)".into(),
        });
    }
    if let Some(n) = attempts {
        let retries = (n - 1) as usize;
        let Some(&last) = schedule.last() else {
            if retries > 0 {
                return Err(ConfigError::Invalid {
                    key: "webhook_max_attempts",
                    detail: "an empty retry schedule allows one attempt only".into(),
                });
            }
            return Ok(schedule);
        };
        schedule.resize(retries, last);
    }
    Ok(schedule)
}

impl RateLimitSettings {
    fn resolve(per_second: Option<u32>, burst: Option<u32>) -> RateLimitSettings {
        let per_second = per_second.unwrap_or(0);
        let floor = if per_second > 0 { 1 } else { 0 };
        RateLimitSettings {
            per_second,
            burst: burst.unwrap_or(per_second).max(floor),
        }
    }
}

impl From<&EngineSettings> for EngineConfig {
    fn from(s: &EngineSettings) -> EngineConfig {
        EngineConfig {
            data_dir: s.data_dir.clone(),
            durability: s.durability,
            reservation_ttl: s.reservation_ttl,
            sku_mailbox: s.sku_mailbox,
            workers: s.actor_threads,
            ..EngineConfig::default()
        }
    }
}

impl From<&WebhookSettings> for WebhookConfig {
    fn from(s: &WebhookSettings) -> WebhookConfig {
        WebhookConfig {
            retry_schedule: s.retry_schedule.clone(),
            timeout: s.timeout,
            ca_file: s.ca_file.clone(),
            allow_private: s.allow_private,
            resolver: Resolver::system(),
        }
    }
}
