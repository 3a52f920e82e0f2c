//! Engine configuration.

use std::path::PathBuf;
use std::time::Duration;

pub use ordo_storage::Durability;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where RocksDB lives (ignored in `memory` durability except as a name).
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// How long a PENDING order holds its stock (SPEC default 15 minutes).
    pub reservation_ttl: Duration,
    /// Bound of each SKU's mailbox; new reservations for a SKU whose queue is full are
    /// refused with `Overloaded`.
    pub sku_mailbox: usize,
    /// A SKU writes a snapshot with every this-many of its events.
    pub snapshot_every: u64,
    /// A SKU with at least this many holds has its snapshots (its own and a
    /// checkpoint's) encoded and written on a thread of its own, outside the journal's
    /// batches; below it they are small enough for the actor and an append.
    pub large_snapshot_holds: usize,
    /// A checkpoint (snapshots of every live actor + the log position) is taken after
    /// this many events, so recovery replays at most about that many.
    pub checkpoint_every: u64,
    /// Arbiters (event-loop threads) for actors; default: one per core.
    pub workers: usize,
    /// Orders that are CONFIRMED or later and idle this long are passivated (reloaded
    /// from the log on next use). PENDING orders stay live for their expiry timer.
    pub order_idle_timeout: Duration,
    /// SKUs with no holds and no requests for this long are passivated (snapshot, stop;
    /// activated again on the next request).
    pub sku_idle_timeout: Duration,
    /// Recovery ignores snapshots and checkpoints and replays the whole log (for
    /// checking that both paths agree, and to recover from damaged snapshots).
    pub ignore_snapshots: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: PathBuf::from("./data"),
            durability: Durability::Sync,
            reservation_ttl: Duration::from_secs(15 * 60),
            sku_mailbox: 16_384,
            snapshot_every: 1_000,
            large_snapshot_holds: 4_096,
            checkpoint_every: 1_000_000,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            order_idle_timeout: Duration::from_secs(60),
            sku_idle_timeout: Duration::from_secs(300),
            ignore_snapshots: false,
        }
    }
}
