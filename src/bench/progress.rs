//! While the run goes: the progress bar, the ticker that moves it (and stops the run when
//! `--duration` is over), and Ctrl-C, which stops the run early.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::args::BenchArgs;
use super::tally::Shared;

/// A progress bar on stderr, hidden with `--quiet` or `--json`.
pub(super) fn progress_bar(args: &BenchArgs, duration: Option<Duration>) -> indicatif::ProgressBar {
    if args.quiet || args.json {
        return indicatif::ProgressBar::hidden();
    }
    let (len, template) = match duration {
        Some(d) => (d.as_millis() as u64, "{elapsed_precise} [{bar:30}] {msg}"),
        None => (
            args.requests.unwrap_or(0),
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        ),
    };
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Every 250 ms: stops the run once `duration` is over, and shows progress and the
/// request rate; ends once the run is stopped.
pub(super) fn spawn_ticker(
    shared: Arc<Shared>,
    pb: indicatif::ProgressBar,
    start: Instant,
    duration: Option<Duration>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(d) = duration {
                if start.elapsed() >= d {
                    shared.stop.store(true, Relaxed);
                }
            }
            let done = shared.live.done.load(Relaxed);
            let now = Instant::now();
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            pb.set_position(match duration {
                Some(_) => start.elapsed().as_millis() as u64,
                None => shared.issued.load(Relaxed),
            });
            pb.set_message(format!(
                "{rate:>9.0} req/s  ok {}  sold out {}  errors {}",
                shared.live.ok.load(Relaxed),
                shared.live.sold_out.load(Relaxed),
                shared.live.errors.load(Relaxed)
            ));
            if shared.stop.load(Relaxed) {
                break;
            }
        }
    })
}

/// Ctrl-C, caught: it ends the run early, with its report and audit. Installed before
/// the first request, so no interrupt can arrive unhandled.
pub(super) struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Catches Ctrl-C from now on.
    pub(super) fn install() -> anyhow::Result<Interrupt> {
        Ok(Interrupt {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    /// A task that stops the run on Ctrl-C.
    #[cfg_attr(not(unix), allow(unused_mut))]
    pub(super) fn spawn_stopper(mut self, shared: Arc<Shared>) -> JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            let got = self.signal.recv().await.is_some();
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            if got {
                shared.stop.store(true, Relaxed);
            }
        })
    }
}
