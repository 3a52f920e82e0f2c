//! `ordo serve` settings, layered: built-in defaults < the `--config` TOML file <
//! `ORDO_*` environment variables < command-line flags, into one typed [`Settings`].
//!
//! clap resolves flag-over-environment for each value; anything it leaves unset falls
//! back to the file, then to the default. Every value is parsed and checked here, once,
//! so the server never starts on a half-valid configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use ordo_storage::Durability;
use serde::Deserialize;

/// Who a bearer token belongs to. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Client,
    Payment,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
            Role::Payment => "payment",
        }
    }

    fn parse(s: &str) -> Result<Role, ConfigError> {
        match s {
            "admin" => Ok(Role::Admin),
            "client" => Ok(Role::Client),
            "payment" => Ok(Role::Payment),
            other => Err(ConfigError::Invalid {
                key: "auth_tokens",
                detail: format!("unknown role `{other}` (admin, client or payment)"),
            }),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("invalid `{key}`: {detail}")]
    Invalid { key: &'static str, detail: String },
}

/// The flags of `ordo serve`. Each is also `ORDO_<NAME>` in the environment and
/// `<name>` (snake_case) in the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "ORDO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where RocksDB keeps the event log [default: ./data].
    #[arg(long, env = "ORDO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "ORDO_LISTEN")]
    pub listen: Option<String>,
    /// sync (fsync every batch), buffered (no fsync) or memory (no disk) [default: sync].
    #[arg(long, env = "ORDO_DURABILITY")]
    pub durability: Option<String>,
    /// How long a PENDING order holds its stock, e.g. 15m, 90s [default: 15m].
    #[arg(long, env = "ORDO_RESERVATION_TTL")]
    pub reservation_ttl: Option<String>,
    /// Bearer tokens as `role:token,...` with roles admin, client, payment. Without any,
    /// every request is allowed and the server binds loopback addresses only.
    #[arg(long, env = "ORDO_AUTH_TOKENS", hide_env_values = true)]
    pub auth_tokens: Option<String>,
    /// human or json [default: human].
    #[arg(long, env = "ORDO_LOG_FORMAT")]
    pub log_format: Option<String>,
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
    #[arg(long, env = "ORDO_IDEMPOTENCY_TTL")]
    pub idempotency_ttl: Option<String>,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "ORDO_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Longest wait for in-flight requests on shutdown, e.g. 30s [default: 30s].
    #[arg(long, env = "ORDO_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,
    /// Bound of each SKU's mailbox; reservations beyond it get 503 [default: 16384].
    #[arg(long, env = "ORDO_SKU_MAILBOX")]
    pub sku_mailbox: Option<usize>,
    /// Event-loop threads for the SKU and order actors [default: one per core].
    #[arg(long, env = "ORDO_ACTOR_THREADS")]
    pub actor_threads: Option<usize>,
    /// Delivery attempts per event before it is dead-lettered (or the subscription
    /// pauses) [default: 8].
    #[arg(long, env = "ORDO_WEBHOOK_MAX_ATTEMPTS")]
    pub webhook_max_attempts: Option<u32>,
    /// Timeout of one webhook delivery [default: 10s].
    #[arg(long, env = "ORDO_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<String>,
    /// First retry delay; doubles per attempt, with full jitter [default: 500ms].
    #[arg(long, env = "ORDO_WEBHOOK_BACKOFF")]
    pub webhook_backoff: Option<String>,
    /// Longest retry delay [default: 5m].
    #[arg(long, env = "ORDO_WEBHOOK_BACKOFF_MAX")]
    pub webhook_backoff_max: Option<String>,
    /// PEM file of extra CA certificates trusted for https webhook receivers (besides
    /// the bundled public roots), e.g. a company CA.
    #[arg(long, env = "ORDO_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Events buffered per live-feed (SSE) reader; a reader that falls this far behind
    /// is cut off with its resume position [default: 1024].
    #[arg(long, env = "ORDO_SSE_BUFFER")]
    pub sse_buffer: Option<usize>,
    /// Heartbeat interval of the live feed [default: 15s].
    #[arg(long, env = "ORDO_SSE_HEARTBEAT")]
    pub sse_heartbeat: Option<String>,
    /// A live-feed reader whose buffer stays full this long is cut off [default: 10s].
    #[arg(long, env = "ORDO_SSE_SLOW_TIMEOUT")]
    pub sse_slow_timeout: Option<String>,
}

/// The config file: the same keys, all optional, nothing else allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    durability: Option<String>,
    reservation_ttl: Option<String>,
    auth_tokens: Option<String>,
    log_format: Option<String>,
    max_body_bytes: Option<usize>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    idempotency_ttl: Option<String>,
    http_workers: Option<usize>,
    shutdown_timeout: Option<String>,
    sku_mailbox: Option<usize>,
    actor_threads: Option<usize>,
    webhook_max_attempts: Option<u32>,
    webhook_timeout: Option<String>,
    webhook_backoff: Option<String>,
    webhook_backoff_max: Option<String>,
    webhook_ca_file: Option<PathBuf>,
    sse_buffer: Option<usize>,
    sse_heartbeat: Option<String>,
    sse_slow_timeout: Option<String>,
}

/// Everything `ordo serve` runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub durability: Durability,
    pub reservation_ttl: Duration,
    /// token → role. Empty: no authentication (loopback only).
    pub tokens: HashMap<String, Role>,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    /// Requests per second per caller; 0 = off.
    pub rate_limit: u32,
    pub rate_burst: u32,
    pub idempotency_ttl: Duration,
    pub http_workers: usize,
    pub shutdown_timeout: Duration,
    pub sku_mailbox: usize,
    pub actor_threads: usize,
    pub webhook_max_attempts: u32,
    pub webhook_timeout: Duration,
    pub webhook_backoff: Duration,
    pub webhook_backoff_max: Duration,
    pub webhook_ca_file: Option<PathBuf>,
    pub sse_buffer: usize,
    pub sse_heartbeat: Duration,
    pub sse_slow_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            durability: Durability::Sync,
            reservation_ttl: Duration::from_secs(15 * 60),
            tokens: HashMap::new(),
            log_format: LogFormat::Human,
            max_body_bytes: 64 * 1024,
            rate_limit: 0,
            rate_burst: 0,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            http_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            shutdown_timeout: Duration::from_secs(30),
            sku_mailbox: 16_384,
            actor_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            webhook_max_attempts: 8,
            webhook_timeout: Duration::from_secs(10),
            webhook_backoff: Duration::from_millis(500),
            webhook_backoff_max: Duration::from_secs(300),
            webhook_ca_file: None,
            sse_buffer: 1024,
            sse_heartbeat: Duration::from_secs(15),
            sse_slow_timeout: Duration::from_secs(10),
        }
    }
}

fn duration(key: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim()).map_err(|e| ConfigError::Invalid {
        key,
        detail: format!("{s:?} is not a duration like 15m or 30s: {e}"),
    })
}

/// Parses `role:token,role:token`.
pub fn parse_tokens(s: &str) -> Result<HashMap<String, Role>, ConfigError> {
    let mut out = HashMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((role, token)) = item.split_once(':') else {
            return Err(ConfigError::Invalid {
                key: "auth_tokens",
                detail: "expected role:token pairs separated by commas".into(),
            });
        };
        let role = Role::parse(role.trim())?;
        let token = token.trim();
        if token.len() < 8 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid {
                key: "auth_tokens",
                detail: format!(
                    "the {} token must be at least 8 visible ASCII characters",
                    role.as_str()
                ),
            });
        }
        if out.insert(token.to_owned(), role).is_some() {
            return Err(ConfigError::Invalid {
                key: "auth_tokens",
                detail: "a token is listed twice".into(),
            });
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

impl Settings {
    /// Merges flags/env (already resolved by clap) over the config file over defaults.
    pub fn load(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileSettings::default(),
        };
        let d = Settings::default();
        let listen_s = args.listen.clone().or(file.listen);
        let listen = match listen_s {
            Some(s) => s.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
                key: "listen",
                detail: format!("{s:?} is not an address like 127.0.0.1:8080: {e}"),
            })?,
            None => d.listen,
        };
        let durability = match args.durability.clone().or(file.durability) {
            Some(s) => s.parse::<Durability>().map_err(|e| ConfigError::Invalid {
                key: "durability",
                detail: e.to_string(),
            })?,
            None => d.durability,
        };
        let reservation_ttl = match args.reservation_ttl.clone().or(file.reservation_ttl) {
            Some(s) => duration("reservation_ttl", &s)?,
            None => d.reservation_ttl,
        };
        if reservation_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                key: "reservation_ttl",
                detail: "must be longer than zero".into(),
            });
        }
        let tokens = match args.auth_tokens.clone().or(file.auth_tokens) {
            Some(s) => parse_tokens(&s)?,
            None => HashMap::new(),
        };
        let log_format = match args.log_format.clone().or(file.log_format).as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    detail: format!("`{other}` (human or json)"),
                })
            }
        };
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(d.max_body_bytes);
        if max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                detail: "must be at least 1024".into(),
            });
        }
        let rate_limit = args.rate_limit.or(file.rate_limit).unwrap_or(0);
        let rate_burst = args
            .rate_burst
            .or(file.rate_burst)
            .unwrap_or(rate_limit)
            .max(if rate_limit > 0 { 1 } else { 0 });
        let idempotency_ttl = match args.idempotency_ttl.clone().or(file.idempotency_ttl) {
            Some(s) => duration("idempotency_ttl", &s)?,
            None => d.idempotency_ttl,
        };
        let http_workers = args
            .http_workers
            .or(file.http_workers)
            .unwrap_or(d.http_workers)
            .clamp(1, 256);
        let shutdown_timeout = match args.shutdown_timeout.clone().or(file.shutdown_timeout) {
            Some(s) => duration("shutdown_timeout", &s)?,
            None => d.shutdown_timeout,
        };
        let sku_mailbox = args
            .sku_mailbox
            .or(file.sku_mailbox)
            .unwrap_or(d.sku_mailbox)
            .max(16);
        let actor_threads = args
            .actor_threads
            .or(file.actor_threads)
            .unwrap_or(d.actor_threads)
            .clamp(1, 256);
        let dur = |key: &'static str,
                   a: &Option<String>,
                   f: Option<String>,
                   d: Duration|
         -> Result<Duration, ConfigError> {
            match a.clone().or(f) {
                Some(s) => duration(key, &s),
                None => Ok(d),
            }
        };
        let webhook_timeout = dur(
            "webhook_timeout",
            &args.webhook_timeout,
            file.webhook_timeout,
            d.webhook_timeout,
        )?;
        let webhook_backoff = dur(
            "webhook_backoff",
            &args.webhook_backoff,
            file.webhook_backoff,
            d.webhook_backoff,
        )?;
        let webhook_backoff_max = dur(
            "webhook_backoff_max",
            &args.webhook_backoff_max,
            file.webhook_backoff_max,
            d.webhook_backoff_max,
        )?;
        let sse_heartbeat = dur(
            "sse_heartbeat",
            &args.sse_heartbeat,
            file.sse_heartbeat,
            d.sse_heartbeat,
        )?;
        let sse_slow_timeout = dur(
            "sse_slow_timeout",
            &args.sse_slow_timeout,
            file.sse_slow_timeout,
            d.sse_slow_timeout,
        )?;
        if sse_heartbeat.is_zero() || webhook_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "sse_heartbeat",
                detail: "sse_heartbeat and webhook_timeout must be longer than zero".into(),
            });
        }
        let s = Settings {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            listen,
            durability,
            reservation_ttl,
            tokens,
            log_format,
            max_body_bytes,
            rate_limit,
            rate_burst,
            idempotency_ttl,
            http_workers,
            shutdown_timeout,
            sku_mailbox,
            actor_threads,
            webhook_max_attempts: args
                .webhook_max_attempts
                .or(file.webhook_max_attempts)
                .unwrap_or(d.webhook_max_attempts)
                .clamp(1, 100),
            webhook_timeout,
            webhook_backoff,
            webhook_backoff_max,
            webhook_ca_file: args.webhook_ca_file.clone().or(file.webhook_ca_file),
            sse_buffer: args
                .sse_buffer
                .or(file.sse_buffer)
                .unwrap_or(d.sse_buffer)
                .clamp(1, 1 << 20),
            sse_heartbeat,
            sse_slow_timeout,
        };
        s.check_bind()?;
        Ok(s)
    }

    /// Without tokens every request is allowed, so only loopback may be bound.
    pub fn check_bind(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "listen",
                detail: format!(
                    "no auth tokens are configured, so every request would be allowed; \
                     refusing to listen on {} (a non-loopback address). Set --auth-tokens \
                     (ORDO_AUTH_TOKENS) or listen on 127.0.0.1",
                    self.listen
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_reject_bad_ones() {
        let t = parse_tokens("admin:aaaaaaaa, client:bbbbbbbb").unwrap();
        assert_eq!(t.get("aaaaaaaa"), Some(&Role::Admin));
        assert_eq!(t.get("bbbbbbbb"), Some(&Role::Client));
        assert!(parse_tokens("root:aaaaaaaa").is_err());
        assert!(parse_tokens("admin:short").is_err());
        assert!(parse_tokens("admin").is_err());
        assert!(parse_tokens("admin:aaaaaaaa,client:aaaaaaaa").is_err());
    }

    #[test]
    fn flags_beat_file_beat_defaults_and_open_binds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ordo.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9000\"\nreservation_ttl = \"2m\"\nrate_limit = 5\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(f.clone()),
            reservation_ttl: Some("30s".into()),
            ..Default::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.reservation_ttl, Duration::from_secs(30));
        assert_eq!((s.rate_limit, s.rate_burst), (5, 5));
        assert_eq!(s.data_dir, PathBuf::from("./data"));

        let open = ServeArgs {
            listen: Some("0.0.0.0:8080".into()),
            ..Default::default()
        };
        assert!(matches!(
            Settings::load(&open),
            Err(ConfigError::Invalid { key: "listen", .. })
        ));
        let with_tokens = ServeArgs {
            listen: Some("0.0.0.0:8080".into()),
            auth_tokens: Some("admin:aaaaaaaa".into()),
            ..Default::default()
        };
        assert!(Settings::load(&with_tokens).is_ok());

        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        assert!(matches!(
            Settings::load(&args),
            Err(ConfigError::File { .. })
        ));
    }
}
