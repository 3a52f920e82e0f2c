//! [`ServeArgs`]: one layer of settings as its source gives them — flat, every key
//! optional, already typed. Flags and environment fill it through clap, the config file
//! through serde; [`ServeArgs::over`] stacks two layers.
//!
//! One type for both sources keeps a key's three spellings (`--sku-mailbox`,
//! `ORDO_SKU_MAILBOX`, `sku_mailbox`) and its type in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use ordo_storage::Durability;
use serde::Deserialize;

use super::values::{self, de, ConfigError, Durations, LogFormat};

/// The flags of `ordo serve`. Each is also `ORDO_<NAME>` in the environment and
/// `<name>` (snake_case) in the config file.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "ORDO_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where RocksDB keeps the event log [default: ./data].
    #[arg(long, env = "ORDO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "ORDO_LISTEN", value_parser = values::socket_addr)]
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: Option<SocketAddr>,
    /// sync (fsync every batch), buffered (no fsync) or memory (no disk) [default: sync].
    #[arg(long, env = "ORDO_DURABILITY", value_parser = values::durability_parser())]
    #[serde(deserialize_with = "de::durability")]
    pub durability: Option<Durability>,
    /// How long a PENDING order holds its stock, e.g. 15m, 90s [default: 15m].
    #[arg(long, env = "ORDO_RESERVATION_TTL", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub reservation_ttl: Option<Duration>,
    /// Bearer tokens as `role:token,...` with roles admin, client, payment. Without any,
    /// every request is allowed and the server binds loopback addresses only.
    // Kept as text until the settings are resolved: a clap value parser would quote a
    // refused value, token and all, in its error.
    #[arg(long, env = "ORDO_AUTH_TOKENS", hide_env_values = true)]
    pub auth_tokens: Option<String>,
    /// Without tokens (loopback mode): more `Host` names a browser may use for this
    /// server, as `name[:port],...` (no port: the listen port). localhost, 127.0.0.1,
    /// [::1] and the listen address are always allowed [default: none].
    #[arg(long, env = "ORDO_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,
    /// human or json [default: human].
    #[arg(long, env = "ORDO_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest request body in bytes; larger ones get 413 [default: 65536].
    #[arg(long, env = "ORDO_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Requests per second allowed per token (or per peer address without auth); 0
    /// turns rate limiting off [default: 0].
    #[arg(long, env = "ORDO_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Burst size of the rate limiter's token bucket [default: the rate limit].
    #[arg(long, env = "ORDO_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// How long `Idempotency-Key` answers are kept, e.g. 24h [default: 24h].
    #[arg(long, env = "ORDO_IDEMPOTENCY_TTL", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub idempotency_ttl: Option<Duration>,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "ORDO_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Longest wait for in-flight requests on shutdown, e.g. 30s [default: 30s].
    #[arg(long, env = "ORDO_SHUTDOWN_TIMEOUT", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_timeout: Option<Duration>,
    /// Bound of each SKU's mailbox; reservations beyond it get 503 [default: 16384].
    #[arg(long, env = "ORDO_SKU_MAILBOX")]
    pub sku_mailbox: Option<usize>,
    /// Event-loop threads for the SKU and order actors [default: one per core].
    #[arg(long, env = "ORDO_ACTOR_THREADS")]
    pub actor_threads: Option<usize>,
    /// The waits before each webhook retry, e.g. `5s,5m,30m`: an event gets one attempt
    /// more than the list has waits [default: 5s,5m,30m,2h,5h,10h,10h — eight attempts
    /// over about 27 hours].
    #[arg(long, env = "ORDO_WEBHOOK_RETRY_SCHEDULE", value_parser = values::durations)]
    #[serde(deserialize_with = "de::durations")]
    pub webhook_retry_schedule: Option<Durations>,
    /// Delivery attempts per event before it is dead-lettered (or the subscription
    /// pauses): the schedule is cut to fit, or its last wait repeated [default: one
    /// more than the schedule's waits].
    #[arg(long, env = "ORDO_WEBHOOK_MAX_ATTEMPTS")]
    pub webhook_max_attempts: Option<u32>,
    /// Timeout of one webhook delivery [default: 10s].
    #[arg(long, env = "ORDO_WEBHOOK_TIMEOUT", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub webhook_timeout: Option<Duration>,
    /// Instead of a retry schedule: a first wait that doubles per retry, up to
    /// `--webhook-backoff-max` (the settings of earlier releases).
    #[arg(long, env = "ORDO_WEBHOOK_BACKOFF", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub webhook_backoff: Option<Duration>,
    /// The longest doubled wait of `--webhook-backoff` [default: 5m].
    #[arg(long, env = "ORDO_WEBHOOK_BACKOFF_MAX", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub webhook_backoff_max: Option<Duration>,
    /// Deliver webhooks to loopback, private (RFC 1918, 100.64/10, fc00::/7) and
    /// link-local targets too. Off: they are refused at creation and at delivery.
    #[arg(
        long,
        env = "ORDO_WEBHOOK_ALLOW_PRIVATE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_private: Option<bool>,
    /// PEM file of extra CA certificates trusted for https webhook receivers (besides
    /// the bundled public roots), e.g. a company CA.
    #[arg(long, env = "ORDO_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Events buffered per live-feed (SSE) reader; a reader that falls this far behind
    /// is cut off with its resume position [default: 1024].
    #[arg(long, env = "ORDO_SSE_BUFFER")]
    pub sse_buffer: Option<usize>,
    /// Heartbeat interval of the live feed [default: 15s].
    #[arg(long, env = "ORDO_SSE_HEARTBEAT", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub sse_heartbeat: Option<Duration>,
    /// A live-feed reader whose buffer stays full this long is cut off [default: 10s].
    #[arg(long, env = "ORDO_SSE_SLOW_TIMEOUT", value_parser = values::duration)]
    #[serde(deserialize_with = "de::duration")]
    pub sse_slow_timeout: Option<Duration>,
}

impl ServeArgs {
    /// The layer a config file gives: its keys, nothing else (unknown keys refused).
    pub fn from_file(path: &Path) -> Result<ServeArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// This layer over `lower`: each key from here if set here, else from `lower`.
    pub fn over(self, lower: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config.or(lower.config),
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            durability: self.durability.or(lower.durability),
            reservation_ttl: self.reservation_ttl.or(lower.reservation_ttl),
            auth_tokens: self.auth_tokens.or(lower.auth_tokens),
            allowed_hosts: self.allowed_hosts.or(lower.allowed_hosts),
            log_format: self.log_format.or(lower.log_format),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            rate_limit: self.rate_limit.or(lower.rate_limit),
            rate_burst: self.rate_burst.or(lower.rate_burst),
            idempotency_ttl: self.idempotency_ttl.or(lower.idempotency_ttl),
            http_workers: self.http_workers.or(lower.http_workers),
            shutdown_timeout: self.shutdown_timeout.or(lower.shutdown_timeout),
            sku_mailbox: self.sku_mailbox.or(lower.sku_mailbox),
            actor_threads: self.actor_threads.or(lower.actor_threads),
            webhook_retry_schedule: self.webhook_retry_schedule.or(lower.webhook_retry_schedule),
            webhook_max_attempts: self.webhook_max_attempts.or(lower.webhook_max_attempts),
            webhook_timeout: self.webhook_timeout.or(lower.webhook_timeout),
            webhook_backoff: self.webhook_backoff.or(lower.webhook_backoff),
            webhook_backoff_max: self.webhook_backoff_max.or(lower.webhook_backoff_max),
            webhook_ca_file: self.webhook_ca_file.or(lower.webhook_ca_file),
            webhook_allow_private: self.webhook_allow_private.or(lower.webhook_allow_private),
            sse_buffer: self.sse_buffer.or(lower.sse_buffer),
            sse_heartbeat: self.sse_heartbeat.or(lower.sse_heartbeat),
            sse_slow_timeout: self.sse_slow_timeout.or(lower.sse_slow_timeout),
        }
    }
}
