//! The `ordo` command line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ordo_storage::{Durability, Store, StoreOptions};

#[derive(Debug, Parser)]
#[command(
    name = "ordo",
    version,
    about = "Ordo: an actor-based order engine with a durable event log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the v1 API) on the embedded engine.
    Serve(Box<crate::config::ServeArgs>),
    /// Load-test a server (--url) or the embedded engine: flash-sale, catalog, lifecycle.
    Bench(Box<crate::bench::BenchArgs>),
    /// Check a server's history: random concurrent clients (and, with --spawn, SIGKILLs
    /// and restarts), then every acknowledged answer against a reference model; exit 1
    /// on any violation.
    Torture(Box<crate::torture::TortureArgs>),
    /// Replay the log, check every invariant, print per-SKU counters; exit 1 on any
    /// violation.
    Verify {
        #[arg(long, env = "ORDO_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the event log as JSON lines.
    Events {
        #[arg(long, env = "ORDO_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Only events after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only this stream (`sku/{sku}` or `order/{id}`).
        #[arg(long)]
        stream: Option<String>,
        /// Keep following new events from a running server's live feed (needs --url;
        /// the server holds the data dir). Resumes by itself after a disconnect.
        #[arg(long, requires = "url")]
        follow: bool,
        /// The server to follow, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// Bearer token (admin) for --url.
        #[arg(long, env = "ORDO_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// Exit codes: 0 ok, 1 verification failed, 2 error.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => {
            let settings = crate::config::Settings::load(&args)?;
            crate::telemetry::init(settings.server.log_format);
            actix_web::rt::System::new().block_on(crate::http::serve(settings))?;
            Ok(0)
        }
        Command::Bench(args) => crate::bench::run(*args),
        Command::Torture(args) => crate::torture::run(*args),
        Command::Verify { data_dir, json } => verify(&data_dir, json),
        Command::Events {
            data_dir,
            after,
            stream,
            follow,
            url,
            token,
        } => match (follow, url) {
            (true, Some(url)) => follow_feed(&url, token.as_deref(), after, stream.as_deref()),
            _ => events(&data_dir, after, stream.as_deref()),
        },
    }
}

fn open_existing(dir: &std::path::Path) -> anyhow::Result<std::sync::Arc<Store>> {
    if !dir.join("CURRENT").exists() {
        anyhow::bail!("no Ordo store at {}", dir.display());
    }
    Ok(Store::open(
        dir,
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        },
    )?)
}

fn verify(dir: &std::path::Path, json: bool) -> anyhow::Result<i32> {
    let store = open_existing(dir)?;
    let report = ordo_engine::verify(&store)?;
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "events": report.events,
            "orders": report.orders,
            "skus": report.skus,
            "violations": report.violations,
            "ok": report.violations.is_empty(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "{} events, {} orders, {} skus",
            report.events,
            report.orders,
            report.skus.len()
        )?;
        writeln!(
            out,
            "{:<24} {:>12} {:>12} {:>12}",
            "sku", "available", "reserved", "sold"
        )?;
        for s in &report.skus {
            writeln!(
                out,
                "{:<24} {:>12} {:>12} {:>12}",
                s.sku, s.available, s.reserved, s.sold
            )?;
        }
        for v in &report.violations {
            writeln!(out, "VIOLATION: {v}")?;
        }
        writeln!(
            out,
            "{}",
            if report.violations.is_empty() {
                "OK"
            } else {
                "FAILED"
            }
        )?;
    }
    Ok(if report.violations.is_empty() { 0 } else { 1 })
}

fn events(dir: &std::path::Path, after: u64, stream: Option<&str>) -> anyhow::Result<i32> {
    let store = open_existing(dir)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write = |r: &ordo_storage::EventRecord| -> anyhow::Result<()> {
        writeln!(out, "{}", crate::event_json(r))?;
        Ok(())
    };
    match stream {
        Some(s) => {
            for r in store.read_stream(s, 1)?.iter().filter(|r| r.seq > after) {
                write(r)?;
            }
        }
        None => {
            for r in store.read_from(after) {
                write(&r?)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

/// `ordo events --follow --url`: the server's live feed as JSON lines, resuming with
/// `Last-Event-ID` after a cut-off or a lost connection.
fn follow_feed(
    url: &str,
    token: Option<&str>,
    after: u64,
    stream: Option<&str>,
) -> anyhow::Result<i32> {
    const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(200);
    const LAST_RETRY: std::time::Duration = std::time::Duration::from_secs(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = url.trim_end_matches('/');
        let mut last = after;
        let mut out = std::io::stdout().lock();
        let mut backoff = FIRST_RETRY;
        loop {
            let Some(feed) = open_feed(&client, base, token, last).await? else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LAST_RETRY);
                continue;
            };
            backoff = FIRST_RETRY;
            print_feed(feed, stream, &mut last, &mut out).await?;
            // Cut off or disconnected: resume after the last event printed.
        }
    })
}

/// The live feed after seq `last`; `None` (logged) when it is worth trying again, an
/// error when the server refuses the request itself (4xx).
async fn open_feed(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    last: u64,
) -> anyhow::Result<Option<reqwest::Response>> {
    let mut req = client
        .get(format!("{base}/v1/events/live"))
        .header("Last-Event-ID", last.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(Some(r)),
        Ok(r) if r.status().is_client_error() => {
            anyhow::bail!(
                "{base} answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(r) => {
            tracing::warn!(status = %r.status(), "live feed unavailable; retrying");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach the live feed; retrying");
            Ok(None)
        }
    }
}

/// Prints the events of an open feed (only those of `stream`, when given) as JSON lines
/// until the feed ends; `last` follows the seq of every event seen.
async fn print_feed(
    feed: reqwest::Response,
    stream: Option<&str>,
    last: &mut u64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut body = feed.bytes_stream();
    // Bytes until a whole frame (`\n\n`) is in: a character split across two chunks is
    // decoded whole, never mangled.
    let mut buf: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.extend_from_slice(&chunk);
        for frame in take_frames(&mut buf) {
            let Some((id, data)) = event_of_frame(&frame) else {
                continue;
            };
            *last = id;
            let wanted = stream.is_none_or(|s| {
                serde_json::from_str::<serde_json::Value>(&data).is_ok_and(|v| v["stream"] == s)
            });
            if wanted {
                writeln!(out, "{data}")?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

/// The `id:` (seq) and `data:` of an SSE frame; `None` for a frame without both (a
/// heartbeat, the cut-off notice).
fn event_of_frame(frame: &str) -> Option<(u64, String)> {
    let mut id = None;
    let mut data = None;
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(v.to_owned());
        }
    }
    Some((id?, data?))
}

/// Takes every whole SSE frame (ended by a blank line) off the front of `buf`, decoded as
/// UTF-8; an incomplete frame stays, so a character split across chunks is decoded whole.
fn take_frames(buf: &mut Vec<u8>) -> Vec<String> {
    let mut frames = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let bytes: Vec<u8> = buf.drain(..end + 2).collect();
        frames.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::take_frames;

    #[test]
    fn a_character_split_across_chunks_is_decoded_whole() {
        let frame = "id: 7\ndata: {\"name\":\"Bl\u{e5}b\u{e6}r \u{1f600}\"}\n\n";
        let bytes = frame.as_bytes();
        // Split inside the four-byte emoji, then inside the two-byte letter.
        let emoji = frame.find('\u{1f600}').unwrap() + 2;
        let mut buf = Vec::new();
        buf.extend_from_slice(&bytes[..emoji]);
        assert!(take_frames(&mut buf).is_empty());
        buf.extend_from_slice(&bytes[emoji..]);
        assert_eq!(take_frames(&mut buf), vec![frame.to_owned()]);
        assert!(buf.is_empty());
    }
}
