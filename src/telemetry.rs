//! Logging: `tracing` to stderr, human-readable or JSON lines; level from `RUST_LOG`
//! (default `info`).

use crate::config::LogFormat;

/// Installs the global subscriber (a second call does nothing).
pub fn init(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
