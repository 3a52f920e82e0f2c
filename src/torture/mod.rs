//! `ordo torture` (SPEC §5): a history checker.
//!
//! Random concurrent clients ([`workload`]) drive a real server over HTTP and record every
//! request: what was sent, when, each attempt, and the final answer ([`model::Record`]).
//! With `--spawn` the server is this executable's `ordo serve`, SIGKILLed and restarted
//! on the same data directory at random points ([`server`]); with `--url` it is someone
//! else's and is never killed. Requests left without an answer (a kill, a 5xx) are
//! retried with the same key and body until one comes.
//!
//! Afterwards the final state is read back ([`client::Api::read_final`]) and the whole
//! history is checked against a reference model ([`model::check`]); with `--spawn` the
//! server is then stopped with SIGTERM and its store checked by `ordo verify`'s replay
//! in-process. Exit 0 when nothing was found, 1 on any violation (each printed).
//!
//! Threading: one multi-threaded tokio runtime; one task per client, one for the killer,
//! one for the progress line; process starts and waits run on the blocking pool.
//! Bounded: clients stop at `--duration` (or `--max-requests`); requests still
//! unanswered then retry for at most `--drain`; every read-back has its own deadline.

pub mod client;
pub mod model;
pub mod server;
pub mod workload;

mod args;
mod driver;
mod summary;

pub use args::TortureArgs;

/// Runs `ordo torture`. Exit codes: 0 clean, 1 violations, 2 error (returned as `Err`).
pub fn run(args: TortureArgs) -> anyhow::Result<i32> {
    let plan = args::Plan::from_args(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(driver::drive(plan))
}
