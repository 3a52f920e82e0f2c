//! Snapshots: each stream's latest cached state, tagged with the version and seq it
//! covers (written by the journal; these are for recovery, tools and tests).

use super::*;

impl Store {
    /// Stores a snapshot outside the journal (e.g. at shutdown). Snapshots written with
    /// events go through [`crate::Append::snapshots`] instead, so they share their batch.
    pub fn save_snapshot(&self, snap: &SnapshotRecord) -> Result<()> {
        let bytes = codec::encode(snap)?;
        self.db.put_cf_opt(
            self.cf(CF_SNAPSHOTS),
            snap.stream.as_bytes(),
            bytes,
            &self.write_opts(),
        )?;
        Ok(())
    }

    /// Stores a large snapshot as a cache, outside the journal and without the WAL, so
    /// writing it never holds up the journal's fsynced batches: it reaches disk with the
    /// next memtable flush, and a crash before that loses only the cache (recovery reads
    /// the stream instead). Callers write it only once the events it covers are durable.
    pub fn save_snapshot_cache(&self, snap: &SnapshotRecord) -> Result<()> {
        let bytes = codec::encode(snap)?;
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db
            .put_cf_opt(self.cf(CF_SNAPSHOTS), snap.stream.as_bytes(), bytes, &wo)?;
        Ok(())
    }

    /// Flushes `snapshots`, so every snapshot cache written so far is on disk (a
    /// checkpoint's, before its marker). Blocks for the flush.
    pub fn flush_snapshot_cache(&self) -> Result<()> {
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cf_opt(self.cf(CF_SNAPSHOTS), &fo)?;
        Ok(())
    }

    pub fn load_snapshot(&self, stream: &str) -> Result<Option<SnapshotRecord>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_SNAPSHOTS), stream.as_bytes())?
        {
            Some(v) => codec::decode(&v, CF_SNAPSHOTS, || format!("stream {stream}")).map(Some),
            None => Ok(None),
        }
    }

    /// Visits every snapshot whose stream starts with `prefix`. A snapshot that does not
    /// decode is handed over as an error, so the caller can fall back to the log.
    pub fn scan_snapshots(
        &self,
        prefix: &str,
        mut f: impl FnMut(Result<SnapshotRecord>) -> Result<()>,
    ) -> Result<()> {
        let it = self.db.iterator_cf(
            self.cf(CF_SNAPSHOTS),
            IteratorMode::From(prefix.as_bytes(), Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            f(codec::decode(&v, CF_SNAPSHOTS, || {
                format!("stream {}", String::from_utf8_lossy(&k))
            }))?;
        }
        Ok(())
    }

    /// Removes a stream's snapshot.
    pub fn delete_snapshot(&self, stream: &str) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf(CF_SNAPSHOTS), stream.as_bytes(), &self.write_opts())?;
        Ok(())
    }
}
