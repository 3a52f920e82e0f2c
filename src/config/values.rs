//! The value types of the settings and how each is read from text: one parser per type,
//! shared by clap (flags and `ORDO_*` variables) and serde (the config file), so a value
//! means the same and is refused with the same words wherever it comes from.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use ordo_storage::Durability;
use serde::{Deserialize, Deserializer};

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

/// Log line format (`--log-format`, `log_format = "json"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Parses `role:token,role:token`. The messages never quote a token.
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

/// A host name with or without a port, as `Host` and `--allowed-hosts` spell it:
/// `name`, `name:port`, `1.2.3.4:port`, `[::1]:port`. The name is lower-cased and an IPv6
/// address written in its shortest form, so two spellings of one host compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// `None` for anything else: a name with characters a host name cannot have, a
    /// bracket that is not an IPv6 address, a port that is not 1-5 digits of a u16.
    pub fn parse(s: &str) -> Option<HostPort> {
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (ip, after) = rest.split_once(']')?;
                let ip: Ipv6Addr = ip.parse().ok()?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':')?),
                };
                (format!("[{ip}]"), port)
            }
            None => {
                let (host, port) = match s.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (s, None),
                };
                let name_char =
                    |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
                if host.is_empty() || !host.bytes().all(name_char) {
                    return None;
                }
                (host.to_ascii_lowercase(), port)
            }
        };
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse().ok()?)
            }
            Some(_) => return None,
        };
        Some(HostPort { host, port })
    }
}

/// Parses `--allowed-hosts`: `name[:port],...`.
pub fn parse_allowed_hosts(s: &str) -> Result<Vec<HostPort>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            HostPort::parse(h).ok_or_else(|| ConfigError::Invalid {
                key: "allowed_hosts",
                detail: format!(
                    "{h:?} is not a host name with an optional port, like localhost:8080 or [::1]"
                ),
            })
        })
        .collect()
}

/// A humantime duration: `15m`, `90s`, `500ms`, `1h 30m`.
pub(super) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 15m or 30s: {e}"))
}

/// Durations given as one comma-separated value (`5s,5m,30m`; empty: none). A type of
/// its own, so clap takes the whole list as one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durations(pub Vec<Duration>);

pub(super) fn durations(s: &str) -> Result<Durations, String> {
    s.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(duration)
        .collect::<Result<_, _>>()
        .map(Durations)
}

pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("{s:?} is not an address like 127.0.0.1:8080: {e}"))
}

fn durability(s: &str) -> Result<Durability, String> {
    s.trim().parse()
}

/// `--durability`: the three names offered in `--help` and in the error, typed on the
/// way in. (`Durability` lives in the storage crate, which does not know clap.)
pub(super) fn durability_parser() -> impl TypedValueParser<Value = Durability> {
    PossibleValuesParser::new(["sync", "buffered", "memory"]).try_map(|s| durability(&s))
}

/// Config-file values given as strings and parsed like the flag (serde
/// `deserialize_with` wants one function per type).
pub(super) mod de {
    use super::*;

    fn parsed<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        parse(&s).map(Some).map_err(serde::de::Error::custom)
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        parsed(d, super::duration)
    }

    pub fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Durations>, D::Error> {
        parsed(d, super::durations)
    }

    pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        parsed(d, super::socket_addr)
    }

    pub fn durability<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Durability>, D::Error> {
        parsed(d, super::durability)
    }
}
