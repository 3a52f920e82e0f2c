//! The storage crate's one error type.

/// Everything that can go wrong below the domain: RocksDB, decoding, version checks and
/// the journal's fail-stop state.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB itself failed (I/O, corruption it detected, options).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),

    /// A stored record does not decode. Names the column family and the key so the damage
    /// can be found; nothing that reads the store trusts such a record.
    #[error("corrupt record in column family `{cf}` at {key}: {detail}")]
    Corrupt {
        cf: &'static str,
        key: String,
        detail: String,
    },

    /// An append carried a per-stream version that is not the stream's next one (a gap or
    /// a duplicate). Nothing of that append was stored.
    #[error("version conflict on stream `{stream}`: expected version {expected}, got {got}")]
    VersionConflict {
        stream: String,
        expected: u64,
        got: u64,
    },

    /// An append that is malformed in itself (empty, bad stream name, events of one
    /// stream out of order).
    #[error("invalid append: {0}")]
    InvalidAppend(String),

    /// The journal failed a write earlier and refuses every append since (fail stop).
    #[error("journal stopped after a failed write: {0}")]
    JournalStopped(String),

    /// The journal has been closed (shutdown).
    #[error("journal closed")]
    JournalClosed,

    /// The store was written by a newer release of Ordo.
    #[error(
        "store format {found} is newer than this release supports ({supported}); upgrade Ordo"
    )]
    NewerFormat { found: u32, supported: u32 },

    /// A value could not be encoded (should not happen for well-formed values).
    #[error("encode: {0}")]
    Encode(String),

    /// The journal's metrics could not be declared or registered (start-up only).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
