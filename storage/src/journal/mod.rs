//! The journal: the one writer of the event log, with group commit.
//!
//! Threading model: callers on any thread push an [`Append`] onto a shared queue (a mutex
//! around a `Vec`, held for a push) and get an [`AppendTicket`], a future. One dedicated
//! OS thread takes *everything* queued, checks per-stream versions, assigns gap-free seqs,
//! writes the lot as one RocksDB `WriteBatch` (fsynced in `sync` mode) and only then
//! resolves the tickets. Whatever arrives while a batch is being written waits for the
//! next one, so under load one fsync covers as many appends as arrived during the last.
//!
//! Fail stop: if a write fails, every caller in that batch gets the error, the journal
//! refuses every later append, and nothing is ever acknowledged that is not stored. With
//! [`JournalOptions::stop_on_conflict`] (the engine's setting) a version conflict stops it
//! the same way: the engine only appends what its actors believe valid, so a refused
//! version means memory and log disagree, and writing on would hide that.
//!
//! One append is one command's whole effect: its events, the command's idempotency record
//! ([`IdempotencyWrite`]) and any snapshots or `meta` records, all in one RocksDB write
//! batch: all durable or none.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use rocksdb::WriteBatch;
use tokio::sync::{oneshot, watch};

use crate::codec::{self, seq_key, stream_key};
use crate::error::{Result, StorageError};
use crate::event::{valid_stream_name, NewEvent};
use crate::metrics::JournalMetrics;
mod writer;
use writer::Writer;

use crate::store::{
    IdempotencyRecord, SnapshotRecord, Store, CF_EVENTS, CF_IDEMPOTENCY, CF_META, CF_SNAPSHOTS,
    CF_STREAMS, META_LAST_SEQ,
};

/// A snapshot, written with an append's events or on its own (an append of snapshots
/// only is written in a later batch than any events of its stream queued with it, so it
/// never becomes durable before what it covers). It covers `stream` up to `version`,
/// which must be the version of one of the request's events (or the stream's current
/// head); the journal tags it with that event's seq.
#[derive(Debug, Clone)]
pub struct SnapshotWrite {
    pub stream: Arc<str>,
    pub version: u64,
    pub schema: u16,
    pub state: Vec<u8>,
}

/// A command's idempotency record, stored in the same batch as the command's events.
#[derive(Debug, Clone)]
pub struct IdempotencyWrite {
    /// The record's key in the `idempotency` column family (the caller's scope and key).
    pub key: String,
    pub record: IdempotencyRecord,
    /// This append applies the command (its first event is stamped with `key`), rather
    /// than only storing an answer (a refusal, or the end of a saga whose first step
    /// carried the stamp).
    pub applies: bool,
}

/// One append: events stored all-or-nothing, plus the command's idempotency record,
/// snapshots and `meta` records stored in the same batch (so a checkpoint marker is
/// durable exactly when what precedes it is). An empty append is a barrier: it resolves
/// once everything queued before it is durable.
#[derive(Debug, Clone, Default)]
pub struct Append {
    pub events: Vec<NewEvent>,
    pub snapshots: Vec<SnapshotWrite>,
    pub meta: Vec<(String, Vec<u8>)>,
    pub idempotency: Option<IdempotencyWrite>,
    /// Idempotency records to delete as expired: (key, the `expires_at_ms` seen when it
    /// was found expired). The writer deletes a record only if it is still that one —
    /// every idempotency write goes through the writer, so a key reused meanwhile keeps
    /// its new record.
    pub expire_idempotency: Vec<(String, u64)>,
    /// Streams whose snapshot is deleted with this append (a terminal order leaving
    /// memory: nothing reads its snapshot again, and recovery need not load it).
    pub delete_snapshots: Vec<Arc<str>>,
    /// A stream the caller minted (a fresh id): its events from version 1 need no point
    /// read to prove the stream is new. Only for ids no one else can have used.
    pub minted: Option<Arc<str>>,
}

/// How the journal treats appends.
#[derive(Debug, Clone, Copy, Default)]
pub struct JournalOptions {
    /// A version conflict stops the journal (fail stop) instead of refusing only that
    /// append. For writers that never append a version they do not believe valid.
    pub stop_on_conflict: bool,
}

impl Append {
    pub fn events(events: Vec<NewEvent>) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
}

/// The seqs an append was given: `first..=last`, contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub first_seq: u64,
    pub last_seq: u64,
}

/// How the caller of an append learns its outcome.
pub enum Completion {
    /// An [`AppendTicket`] resolves.
    Ticket(oneshot::Sender<Result<Receipt>>),
    /// The writer thread calls this once the outcome is known (durable or failed). It must
    /// be short and must not block: it runs on the one writer thread, between batches.
    Call(Box<dyn FnOnce(Result<Receipt>) + Send>),
}

impl Completion {
    /// A completion that calls `f` with the outcome.
    pub fn call(f: impl FnOnce(Result<Receipt>) + Send + 'static) -> Self {
        Completion::Call(Box::new(f))
    }

    pub(crate) fn complete(self, res: Result<Receipt>) {
        match self {
            Completion::Ticket(tx) => {
                let _ = tx.send(res);
            }
            Completion::Call(f) => f(res),
        }
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Completion::Ticket(_) => "Completion::Ticket",
            Completion::Call(_) => "Completion::Call",
        })
    }
}

struct Pending {
    req: Append,
    done: Completion,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    closed: bool,
    /// Set once a write failed: the reason every later append is refused with.
    stopped: Option<String>,
    /// Failure point: while set, the writer leaves what is queued unwritten.
    held: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    metrics: JournalMetrics,
    durable: watch::Sender<u64>,
    /// Failure point: the next batch write fails as if RocksDB had refused it.
    fail_next_write: AtomicBool,
    options: JournalOptions,
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    store: Arc<Store>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        close(&self.shared, &self.thread);
    }
}

fn close(shared: &Shared, thread: &Mutex<Option<JoinHandle<()>>>) {
    shared.queue.lock().closed = true;
    shared.wake.notify_all();
    if let Some(handle) = thread.lock().take() {
        if handle.join().is_err() {
            tracing::error!("journal writer thread panicked");
        }
    }
}

/// Handle to the journal. Clones share one writer.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("durable_seq", &self.durable_seq())
            .finish()
    }
}

/// Most streams whose head version the writer remembers; past it the cache is dropped
/// and heads are read back from the `streams` index (two bloom-filtered point lookups).
/// Small enough to stay a few MiB (every order's stream passes through it, and a new
/// order's first append needs no entry: its stream is minted), large enough to hold the
/// orders paid or cancelled soon after they were placed.
const HEAD_CACHE_MAX: usize = 1 << 17;

impl Journal {
    /// Starts the writer thread on `store`.
    pub fn start(store: Arc<Store>) -> Result<Self> {
        Self::start_with(store, JournalOptions::default())
    }

    /// Starts the writer thread on `store` with `options`.
    pub fn start_with(store: Arc<Store>, options: JournalOptions) -> Result<Self> {
        let last_seq = store.last_seq()?;
        let (durable, _) = watch::channel(last_seq);
        let metrics = JournalMetrics::new()?;
        metrics.set_durable(last_seq);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            metrics,
            durable,
            fail_next_write: AtomicBool::new(false),
            options,
        });
        let writer = Writer {
            store: store.clone(),
            shared: shared.clone(),
            next_seq: last_seq + 1,
            heads: HashMap::new(),
            buf: Vec::with_capacity(256),
        };
        let handle = std::thread::Builder::new()
            .name("ordo-journal".into())
            .spawn(move || writer.run())
            .map_err(|source| StorageError::Io {
                path: "journal writer thread".into(),
                source,
            })?;
        Ok(Journal {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(handle)),
                store,
            }),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Queues `req`; the ticket resolves once the batch holding it is stored under the
    /// store's durability mode (or with the reason it was not).
    pub fn append(&self, req: Append) -> AppendTicket {
        let (tx, rx) = oneshot::channel();
        self.append_all(std::iter::once((req, Completion::Ticket(tx))));
        AppendTicket { rx }
    }

    /// Queues `req`; `done` is called on the writer thread once the batch holding it is
    /// stored (or with the reason it was not). No task or channel per append.
    pub fn append_then(&self, req: Append, done: impl FnOnce(Result<Receipt>) + Send + 'static) {
        self.append_all(std::iter::once((req, Completion::call(done))));
    }

    /// Queues every append in order under one lock (an actor's whole batch): they are
    /// written in this order, in one RocksDB batch or in consecutive ones.
    pub fn append_all(&self, appends: impl IntoIterator<Item = (Append, Completion)>) {
        let shared = &self.inner.shared;
        let mut q = shared.queue.lock();
        // Refused at submission: `Some(reason)` stopped, `None` closed.
        let refused = match (&q.stopped, q.closed) {
            (Some(reason), _) => Some(Some(reason.clone())),
            (None, true) => Some(None),
            (None, false) => None,
        };
        if let Some(reason) = refused {
            drop(q);
            for (_, done) in appends {
                done.complete(Err(match &reason {
                    Some(r) => StorageError::JournalStopped(r.clone()),
                    None => StorageError::JournalClosed,
                }));
            }
            return;
        }
        let was_empty = q.pending.is_empty();
        q.pending
            .extend(appends.into_iter().map(|(req, done)| Pending { req, done }));
        let wake = was_empty && !q.pending.is_empty();
        drop(q);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// The highest seq known durable.
    pub fn durable_seq(&self) -> u64 {
        *self.inner.shared.durable.borrow()
    }

    /// A receiver that sees the durable seq advance (for live feeds).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.durable.subscribe()
    }

    /// Whether a failed write has stopped the journal, and why.
    pub fn stopped(&self) -> Option<String> {
        self.inner.shared.queue.lock().stopped.clone()
    }

    /// What the journal counts (for `/metrics`, benchmarks and tests).
    pub fn metrics(&self) -> &JournalMetrics {
        &self.inner.shared.metrics
    }

    /// Failure point for tests: the next batch write fails as a disk error would, which
    /// must stop the journal.
    #[doc(hidden)]
    pub fn fail_next_write_for_test(&self) {
        self.inner
            .shared
            .fail_next_write
            .store(true, Ordering::SeqCst);
    }

    /// Appends queued and not yet taken by the writer (tests: "these are all waiting").
    #[doc(hidden)]
    pub fn queued_for_test(&self) -> usize {
        self.inner.shared.queue.lock().pending.len()
    }

    /// Failure point for tests: the writer stops writing (appends queue up, none becomes
    /// durable) until the returned guard is dropped. Makes "not yet durable" windows
    /// deterministic.
    #[doc(hidden)]
    pub fn hold_writes_for_test(&self) -> HoldWrites {
        self.inner.shared.queue.lock().held = true;
        HoldWrites {
            shared: self.inner.shared.clone(),
        }
    }

    /// Writes what is queued, refuses new appends, and stops the writer thread. Later
    /// appends fail with [`StorageError::JournalClosed`].
    pub fn close(&self) {
        close(&self.inner.shared, &self.inner.thread);
    }
}

/// Releases the writer held by [`Journal::hold_writes_for_test`] when dropped.
#[doc(hidden)]
pub struct HoldWrites {
    shared: Arc<Shared>,
}

impl Drop for HoldWrites {
    fn drop(&mut self) {
        self.shared.queue.lock().held = false;
        self.shared.wake.notify_all();
    }
}

/// Resolves with the [`Receipt`] once the append is durable. Also usable without an async
/// runtime through [`AppendTicket::wait`].
pub struct AppendTicket {
    rx: oneshot::Receiver<Result<Receipt>>,
}

impl AppendTicket {
    /// Blocks the current thread until the append is resolved. Not for async contexts.
    pub fn wait(self) -> Result<Receipt> {
        self.rx.blocking_recv().unwrap_or_else(|_| {
            Err(StorageError::JournalStopped(
                "journal writer is gone".into(),
            ))
        })
    }
}

impl Future for AppendTicket {
    type Output = Result<Receipt>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(StorageError::JournalStopped(
                    "journal writer is gone".into(),
                ))
            })
        })
    }
}
