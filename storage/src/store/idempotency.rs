//! The store's idempotency records: each command's stored answer under its key, with an
//! expiry. A running engine writes them only through the journal (in the command's own
//! append) and expires them through it too; the direct writes here serve tools and tests.

use super::*;

impl Store {
    pub(super) fn idem_lock(&self, key: &[u8]) -> &Mutex<()> {
        // FNV-1a: cheap and good enough to spread keys over the stripes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        &self.idem_locks[(h % IDEM_STRIPES as u64) as usize]
    }

    /// Stores `record` under `key` unless a live (unexpired at `now_ms`) record holds it;
    /// then that record is returned and nothing is written. Atomic per key: of many
    /// concurrent callers with one key, exactly one gets `Inserted`.
    pub fn idempotency_put_if_absent(
        &self,
        key: &[u8],
        record: &IdempotencyRecord,
        now_ms: u64,
    ) -> Result<PutOutcome> {
        let _guard = self.idem_lock(key).lock();
        if let Some(existing) = self.idempotency_get(key, now_ms)? {
            return Ok(PutOutcome::Existing(existing));
        }
        let bytes = codec::encode(record)?;
        self.db
            .put_cf_opt(self.cf(CF_IDEMPOTENCY), key, bytes, &self.write_opts())?;
        Ok(PutOutcome::Inserted)
    }

    /// Replaces the record under `key` (e.g. a pending claim by its final response).
    pub fn idempotency_put(&self, key: &[u8], record: &IdempotencyRecord) -> Result<()> {
        let _guard = self.idem_lock(key).lock();
        let bytes = codec::encode(record)?;
        self.db
            .put_cf_opt(self.cf(CF_IDEMPOTENCY), key, bytes, &self.write_opts())?;
        Ok(())
    }

    /// Removes the record under `key` (e.g. a claim whose request failed before it
    /// changed anything).
    pub fn idempotency_delete(&self, key: &[u8]) -> Result<()> {
        let _guard = self.idem_lock(key).lock();
        self.db
            .delete_cf_opt(self.cf(CF_IDEMPOTENCY), key, &self.write_opts())?;
        Ok(())
    }

    /// The live record under `key`; an expired one reads as absent.
    pub fn idempotency_get(&self, key: &[u8], now_ms: u64) -> Result<Option<IdempotencyRecord>> {
        match self.db.get_pinned_cf(self.cf(CF_IDEMPOTENCY), key)? {
            Some(v) => {
                let rec: IdempotencyRecord = codec::decode(&v, CF_IDEMPOTENCY, || {
                    format!("key {}", String::from_utf8_lossy(key))
                })?;
                Ok((rec.expires_at_ms > now_ms).then_some(rec))
            }
            None => Ok(None),
        }
    }

    /// The expiry of the record under `key` (`0` for a record that does not decode,
    /// expired by definition), or `None` without a record.
    pub(crate) fn idempotency_expiry(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.db.get_pinned_cf(self.cf(CF_IDEMPOTENCY), key)? {
            Some(v) => Ok(Some(
                codec::decode::<IdempotencyRecord>(&v, CF_IDEMPOTENCY, String::new)
                    .map_or(0, |r| r.expires_at_ms),
            )),
            None => Ok(None),
        }
    }

    /// Up to `limit` idempotency records expired at `now_ms`, as (key, expiry seen); a
    /// record that does not decode counts as expired (expiry 0). Hand them to the
    /// journal ([`crate::Append::expire_idempotency`]), which deletes each only if it is
    /// still the record seen here.
    pub fn idempotency_expired(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_IDEMPOTENCY), IteratorMode::Start)
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let expiry = codec::decode::<IdempotencyRecord>(&v, CF_IDEMPOTENCY, String::new)
                .map_or(0, |r| r.expires_at_ms);
            if expiry <= now_ms {
                out.push((String::from_utf8_lossy(&k).into_owned(), expiry));
            }
        }
        Ok(out)
    }

    /// Deletes every idempotency record expired at `now_ms`; returns how many. Only for a
    /// store no journal writes to (offline tools): a running engine expires keys through
    /// the journal instead, so a key reused meanwhile cannot lose its new record.
    pub fn idempotency_sweep(&self, now_ms: u64) -> Result<usize> {
        let cf = self.cf(CF_IDEMPOTENCY);
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let expired = match codec::decode::<IdempotencyRecord>(&v, CF_IDEMPOTENCY, || {
                format!("key {}", String::from_utf8_lossy(&k))
            }) {
                Ok(rec) => rec.expires_at_ms <= now_ms,
                // A record that does not decode can never be answered from; drop it too.
                Err(e) => {
                    tracing::warn!(error = %e, "dropping undecodable idempotency record");
                    true
                }
            };
            if expired {
                batch.delete_cf(cf, &k);
                n += 1;
            }
        }
        if n > 0 {
            self.db.write_opt(batch, &self.write_opts())?;
        }
        Ok(n)
    }

    /// Forces a compaction of the idempotency column family (runs the expiry filter).
    pub fn compact_idempotency(&self) {
        self.db
            .compact_range_cf(self.cf(CF_IDEMPOTENCY), None::<&[u8]>, None::<&[u8]>);
    }
}
