//! The RocksDB store: column families, reads, snapshots, the idempotency store and the
//! `meta` record. Appends to the event log go through the [`crate::Journal`] (one writer,
//! group commit); everything else here may be called from any thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, Env,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use crate::codec::{self, corrupt, key_to_seq, seq_key, stream_key, stream_prefix, RecordEvents};
use crate::error::{Result, StorageError};
use crate::event::{EventRecord, EventView};

mod idempotency;
mod meta;
mod snapshots;
mod streams;

pub use meta::StoreIdentity;

pub(crate) const CF_EVENTS: &str = "events";
pub(crate) const CF_STREAMS: &str = "streams";
pub(crate) const CF_SNAPSHOTS: &str = "snapshots";
pub(crate) const CF_IDEMPOTENCY: &str = "idempotency";
pub(crate) const CF_META: &str = "meta";

/// The format of the store as a whole (column families, key layouts). Bumped when a
/// release changes them; a release opens every format up to its own and refuses newer.
/// 2: an `events` record holds a whole append (value format 3) and `streams` values may
/// name the record holding their event. A store of format 1 is raised to 2 when opened
/// (its records stay readable; the new ones are not readable by a format-1 release).
pub const STORE_FORMAT: u32 = 2;
pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_LAST_SEQ: &[u8] = b"last_seq";
pub(crate) const META_STORE_ID: &[u8] = b"store_id";
pub(crate) const META_INCARNATION: &[u8] = b"incarnation";

/// How durable an acknowledged append is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every batch is fsynced (fdatasync of the WAL) before its callers are answered.
    #[default]
    Sync,
    /// Written to the OS (WAL without fsync): survives a process crash, not a power loss.
    Buffered,
    /// Nothing touches the disk: RocksDB on an in-memory environment, no WAL. For tests
    /// and load-test dry runs.
    Memory,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sync" => Ok(Self::Sync),
            "buffered" => Ok(Self::Buffered),
            "memory" => Ok(Self::Memory),
            other => Err(format!(
                "unknown durability `{other}` (sync, buffered or memory)"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Buffered => "buffered",
            Self::Memory => "memory",
        })
    }
}

/// A snapshot of one stream's state, tagged with the stream version and the global seq it
/// covers. `state` is the domain's own encoding, versioned by `schema`.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct SnapshotRecord {
    pub stream: String,
    pub version: u64,
    pub seq: u64,
    pub schema: u16,
    pub state: Vec<u8>,
}

/// A stored answer to an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct IdempotencyRecord {
    /// A digest of the request, so a reuse of the key with another body is recognised.
    pub fingerprint: Vec<u8>,
    /// The stored response, in the caller's own encoding.
    pub response: Vec<u8>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// What [`Store::idempotency_put_if_absent`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The key was free (or held only an expired record): the record is stored.
    Inserted,
    /// A live record holds the key; it is returned and nothing was written.
    Existing(IdempotencyRecord),
}

/// Unix milliseconds now.
/// The most memory all memtables together may hold before the largest is flushed.
pub const MEMTABLES_MAX_BYTES: usize = 256 << 20;

/// The most WAL the store keeps before flushing the memtables that pin it.
pub const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// The most WAL kept before the memtables that pin it are flushed
    /// ([`MAX_TOTAL_WAL_BYTES`] by default).
    pub max_wal_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::default(),
            max_wal_bytes: MAX_TOTAL_WAL_BYTES,
        }
    }
}

/// The opened store. Cheap to share behind an `Arc`; RocksDB is thread-safe for reads and
/// writes.
pub struct Store {
    // Field order matters: `db` is dropped (closed) before the in-memory `Env` it may use.
    db: DB,
    durability: Durability,
    path: PathBuf,
    /// Serialises put-if-absent on idempotency keys (check then write). Striped by key
    /// hash so unrelated keys do not wait on each other; one process owns the store, so
    /// in-process locks are enough.
    idem_locks: Vec<Mutex<()>>,
    _env: Option<Env>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish()
    }
}

const IDEM_STRIPES: usize = 64;

impl Store {
    /// Opens (creating if needed) the store at `path`. In [`Durability::Memory`] the path
    /// only names the in-memory database.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Arc<Self>> {
        let path = path.as_ref().to_path_buf();
        let env = match opts.durability {
            Durability::Memory => Some(Env::mem_env()?),
            _ => {
                std::fs::create_dir_all(&path).map_err(|source| StorageError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                None
            }
        };

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(3);
        db_opts.set_max_log_file_size(8 << 20);
        // Bounded WAL: past this, the column families holding the oldest WAL file are
        // flushed so it can be deleted (a quiet family, such as `meta`, would otherwise
        // keep every WAL file since its last flush alive).
        db_opts.set_max_total_wal_size(opts.max_wal_bytes);
        // Memtables of all column families together (each family's own buffer size
        // still applies): bounds the memory the store holds however many families fill.
        db_opts.set_db_write_buffer_size(MEMTABLES_MAX_BYTES);
        if let Some(env) = &env {
            db_opts.set_env(env);
        }

        let mut table = BlockBasedOptions::default();
        table.set_block_size(16 << 10);
        table.set_bloom_filter(10.0, false);

        let mut events = Options::default();
        events.set_compression_type(DBCompressionType::Lz4);
        events.set_write_buffer_size(64 << 20);
        events.set_block_based_table_factory(&table);

        let mut streams = Options::default();
        streams.set_compression_type(DBCompressionType::Lz4);
        streams.set_write_buffer_size(32 << 20);
        streams.set_memtable_whole_key_filtering(true);
        streams.set_memtable_prefix_bloom_ratio(0.1);
        streams.set_block_based_table_factory(&table);

        let mut idem = Options::default();
        idem.set_block_based_table_factory(&table);
        // Expired idempotency records are dropped whenever compaction meets them.
        idem.set_compaction_filter("ordo-idempotency-expiry", |_level, _key, value: &[u8]| {
            match codec::decode::<IdempotencyRecord>(value, CF_IDEMPOTENCY, String::new) {
                Ok(rec) if rec.expires_at_ms <= now_ms() => rocksdb::CompactionDecision::Remove,
                _ => rocksdb::CompactionDecision::Keep,
            }
        });

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_EVENTS, events),
            ColumnFamilyDescriptor::new(CF_STREAMS, streams),
            ColumnFamilyDescriptor::new(CF_SNAPSHOTS, Options::default()),
            ColumnFamilyDescriptor::new(CF_IDEMPOTENCY, idem),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs)?;
        let store = Store {
            db,
            durability: opts.durability,
            path,
            idem_locks: (0..IDEM_STRIPES).map(|_| Mutex::new(())).collect(),
            _env: env,
        };
        store.check_format()?;
        store.ensure_store_id()?;
        Ok(Arc::new(store))
    }

    fn check_format(&self) -> Result<()> {
        let meta = self.cf(CF_META);
        match self.db.get_pinned_cf(meta, META_FORMAT)? {
            Some(v) => {
                let arr: [u8; 4] = v.as_ref().try_into().map_err(|_| {
                    corrupt(CF_META, "format".into(), "format is not 4 bytes".into())
                })?;
                let found = u32::from_be_bytes(arr);
                if found > STORE_FORMAT {
                    return Err(StorageError::NewerFormat {
                        found,
                        supported: STORE_FORMAT,
                    });
                }
                if found < STORE_FORMAT {
                    // Before anything of the new format is written: an older release then
                    // refuses the store rather than misreading it.
                    self.set_format_version(STORE_FORMAT)?;
                    tracing::info!(from = found, to = STORE_FORMAT, "store format raised");
                }
                Ok(())
            }
            None => {
                self.db.put_cf_opt(
                    meta,
                    META_FORMAT,
                    STORE_FORMAT.to_be_bytes(),
                    &self.write_opts(),
                )?;
                Ok(())
            }
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // All column families are created in `open`; a missing one is a programming error
        // that `open` would already have failed on.
        #[allow(clippy::expect_used)]
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Write options for this store's durability mode.
    pub(crate) fn write_opts(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        match self.durability {
            Durability::Sync => wo.set_sync(true),
            Durability::Buffered => wo.set_sync(false),
            Durability::Memory => wo.disable_wal(true),
        }
        wo
    }

    /// The store's format version as recorded in `meta`.
    pub fn format_version(&self) -> Result<u32> {
        match self.db.get_pinned_cf(self.cf(CF_META), META_FORMAT)? {
            Some(v) => v
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt(CF_META, "format".into(), "format is not 4 bytes".into())),
            None => Ok(STORE_FORMAT),
        }
    }

    /// Overwrites the recorded format version. For migration tooling and tests.
    pub fn set_format_version(&self, version: u32) -> Result<()> {
        self.db.put_cf_opt(
            self.cf(CF_META),
            META_FORMAT,
            version.to_be_bytes(),
            &self.write_opts(),
        )?;
        Ok(())
    }

    /// The highest stored seq (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_EVENTS));
        it.seek_to_last();
        it.status()?;
        match (it.key(), it.value()) {
            // The whole record is decoded and checked: a damaged count must not move
            // where the next append starts.
            (Some(k), Some(v)) => {
                let first = key_to_seq(k)?;
                let mut last = first;
                for view in RecordEvents::new(first, v)? {
                    last = view?.seq;
                }
                Ok(last)
            }
            _ => Ok(0),
        }
    }

    /// One event by seq: one seek to the record holding it (a record's key is the seq of
    /// its first event).
    pub fn get_event(&self, seq: u64) -> Result<Option<EventRecord>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_EVENTS));
        it.seek_for_prev(seq_key(seq));
        it.status()?;
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            return Ok(None);
        };
        let first = key_to_seq(k)?;
        if first + codec::record_len(first, v)? <= seq {
            return Ok(None);
        }
        for view in RecordEvents::new(first, v)? {
            let view = view?;
            if view.seq == seq {
                return Ok(Some(view.to_record()));
            }
        }
        Ok(None)
    }

    /// An iterator over `events` placed on the record holding seq `start`, or on the
    /// first record after it.
    fn events_from(
        &self,
        start: u64,
        readahead: usize,
    ) -> Result<rocksdb::DBRawIteratorWithThreadMode<'_, DB>> {
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        ro.set_readahead_size(readahead);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_EVENTS), ro);
        it.seek_for_prev(seq_key(start));
        match (it.key(), it.value()) {
            (Some(k), Some(v)) => {
                let first = key_to_seq(k)?;
                if first + codec::record_len(first, v)? <= start {
                    it.next();
                }
            }
            _ => {
                it.status()?;
                it.seek(seq_key(start));
            }
        }
        Ok(it)
    }

    /// The whole log after `after` (exclusive), in seq order.
    pub fn read_from(&self, after: u64) -> EventIter<'_> {
        let start = after.saturating_add(1);
        let (it, failed) = match self.events_from(start, 2 << 20) {
            Ok(it) => (Some(it), None),
            Err(e) => (None, Some(e)),
        };
        EventIter {
            it,
            start,
            buffered: std::collections::VecDeque::new(),
            failed,
        }
    }

    /// Visits events after `after` in seq order without allocating per event; `f` returns
    /// `false` to stop. Returns how many events were visited.
    pub fn scan_from(
        &self,
        after: u64,
        mut f: impl FnMut(EventView<'_>) -> Result<bool>,
    ) -> Result<u64> {
        let start = after.saturating_add(1);
        let mut it = self.events_from(start, 4 << 20)?;
        let mut n = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let first = key_to_seq(k)?;
            for view in RecordEvents::new(first, v)? {
                let view = view?;
                if view.seq < start {
                    continue;
                }
                n += 1;
                if !f(view)? {
                    return Ok(n);
                }
            }
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    /// Flushes memtables and syncs the WAL (clean shutdown).
    pub fn flush(&self) -> Result<()> {
        if self.durability != Durability::Memory {
            self.db.flush_wal(true)?;
        }
        Ok(())
    }

    /// Replaces the record holding event `seq` (or, if none holds it, the record under
    /// `seq`) with raw bytes. Only for tests that need damage.
    #[doc(hidden)]
    pub fn corrupt_event_for_test(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_EVENTS));
        it.seek_for_prev(seq_key(seq));
        let key = match (it.key(), it.value()) {
            (Some(k), Some(v)) => {
                let first = key_to_seq(k)?;
                match codec::record_len(first, v) {
                    Ok(n) if first + n > seq => first,
                    _ => seq,
                }
            }
            _ => seq,
        };
        drop(it);
        self.db
            .put_cf_opt(self.cf(CF_EVENTS), seq_key(key), bytes, &self.write_opts())?;
        Ok(())
    }
}

/// Iterator over the log from a seq; see [`Store::read_from`].
pub struct EventIter<'a> {
    it: Option<rocksdb::DBRawIteratorWithThreadMode<'a, DB>>,
    /// Events before this seq (the front of the first record) are skipped.
    start: u64,
    buffered: std::collections::VecDeque<EventRecord>,
    failed: Option<StorageError>,
}

impl EventIter<'_> {
    /// Decodes the record under the iterator into `buffered` and moves past it.
    fn fill(&mut self) -> Result<bool> {
        let Some(it) = self.it.as_mut() else {
            return Ok(false);
        };
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            it.status()?;
            return Ok(false);
        };
        let first = key_to_seq(k)?;
        // The events before a damaged one are still delivered, then the error.
        let decoded = RecordEvents::new(first, v).and_then(|events| {
            for view in events {
                let view = view?;
                if view.seq >= self.start {
                    self.buffered.push_back(view.to_record());
                }
            }
            Ok(())
        });
        match decoded {
            Ok(()) => it.next(),
            Err(e) => self.failed = Some(e),
        }
        Ok(true)
    }
}

impl Iterator for EventIter<'_> {
    type Item = Result<EventRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(rec) = self.buffered.pop_front() {
                return Some(Ok(rec));
            }
            if let Some(e) = self.failed.take() {
                self.it = None;
                return Some(Err(e));
            }
            match self.fill() {
                Ok(true) => continue,
                Ok(false) => {
                    self.it = None;
                    return None;
                }
                Err(e) => {
                    self.it = None;
                    return Some(Err(e));
                }
            }
        }
    }
}
