//! The `meta` column family: the store's own records (format, last seq, checkpoint)
//! and small records of the layers above (webhook subscriptions and cursors).

use super::*;

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

    /// Deletes a `meta` record.
    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf(CF_META), key.as_bytes(), &self.write_opts())?;
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
