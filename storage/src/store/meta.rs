//! The `meta` column family: the store's own records (format, last seq, checkpoint, its
//! identity) and small records of the layers above (webhook subscriptions and cursors).

use super::*;

/// Who a store is (SPEC §3): an id made once, when the store is first opened, and an
/// incarnation number that each restore from a backup raises. Together with a seq they
/// name one event across every store and every restore of it (webhook ids are built
/// from them), where a seq alone repeats in another store or after a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreIdentity {
    /// A ULID, 26 characters of Crockford base32.
    pub id: String,
    /// 0 until a restore raises it. Stores of releases before it was kept have none
    /// and read as 0; they get their id at their first open by this release.
    pub incarnation: u64,
}

impl Store {
    /// Reads a raw `meta` value.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META), key.as_bytes())?)
    }

    /// Writes a raw `meta` value.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.db
            .put_cf_opt(self.cf(CF_META), key.as_bytes(), value, &self.write_opts())?;
        Ok(())
    }

    /// Writes a large `meta` value outside the WAL and then flushes `meta`, so it is on
    /// disk when this returns without ever passing through the journal's fsynced batches
    /// (a checkpoint's table of tens of MB held every order queued behind it). Blocks for
    /// the flush: call it from a thread that may block.
    pub fn put_meta_flushed(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db
            .put_cf_opt(self.cf(CF_META), key.as_bytes(), value, &wo)?;
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cf_opt(self.cf(CF_META), &fo)?;
        Ok(())
    }

    /// Deletes a `meta` record.
    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf(CF_META), key.as_bytes(), &self.write_opts())?;
        Ok(())
    }

    /// This store's id and incarnation.
    pub fn identity(&self) -> Result<StoreIdentity> {
        let meta = self.cf(CF_META);
        let id = match self.db.get_pinned_cf(meta, META_STORE_ID)? {
            Some(v) => String::from_utf8(v.to_vec())
                .map_err(|_| corrupt(CF_META, "store_id".into(), "store id is not UTF-8".into()))?,
            None => return Err(corrupt(CF_META, "store_id".into(), "no store id".into())),
        };
        Ok(StoreIdentity {
            id,
            incarnation: self.incarnation()?,
        })
    }

    fn incarnation(&self) -> Result<u64> {
        match self.db.get_pinned_cf(self.cf(CF_META), META_INCARNATION)? {
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| {
                corrupt(
                    CF_META,
                    "incarnation".into(),
                    "incarnation is not 8 bytes".into(),
                )
            }),
            None => Ok(0),
        }
    }

    /// Raises the incarnation by one and returns the new one: what a restore from a
    /// backup must do before the restored store serves (no restore exists yet in this
    /// release; the incarnation stays 0 until one calls this).
    pub fn raise_incarnation(&self) -> Result<u64> {
        let next = self.incarnation()?.saturating_add(1);
        self.db.put_cf_opt(
            self.cf(CF_META),
            META_INCARNATION,
            next.to_be_bytes(),
            &self.write_opts(),
        )?;
        Ok(next)
    }

    /// Gives the store its id if it has none yet (a new store, or one of an earlier
    /// release): made once, never changed.
    pub(super) fn ensure_store_id(&self) -> Result<()> {
        let meta = self.cf(CF_META);
        if self.db.get_pinned_cf(meta, META_STORE_ID)?.is_none() {
            let id = ulid::Ulid::new().to_string();
            self.db
                .put_cf_opt(meta, META_STORE_ID, id.as_bytes(), &self.write_opts())?;
        }
        Ok(())
    }

    /// Every `meta` record whose key starts with `prefix`, in key order.
    pub fn scan_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let cf = self.cf(CF_META);
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(cf, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }
}
