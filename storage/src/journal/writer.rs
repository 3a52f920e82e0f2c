//! The journal's writer thread: takes everything queued, checks per-stream versions,
//! assigns gap-free seqs, stages the lot into one RocksDB write batch, writes it (fsynced
//! in `sync` mode) and only then answers the callers.

use super::*;

/// One batch being built by the writer.
struct Batch {
    wb: WriteBatch,
    /// Heads of the streams this batch writes.
    staged: HashMap<Arc<str>, u64>,
    answers: Vec<(Completion, Result<Receipt>)>,
    /// The seq the next staged event gets.
    next: u64,
    n_events: u64,
    /// Idempotency keys written by this batch so far (an expiry must not delete them).
    idem_written: HashSet<String>,
    /// Snapshot-only appends that wait for the next batch.
    deferred: Vec<Pending>,
}

impl Batch {
    fn new(next: u64, capacity: usize) -> Self {
        Batch {
            wb: WriteBatch::default(),
            staged: HashMap::new(),
            answers: Vec::with_capacity(capacity),
            next,
            n_events: 0,
            idem_written: HashSet::new(),
            deferred: Vec::new(),
        }
    }
}

pub(super) struct Writer {
    pub(super) store: Arc<Store>,
    pub(super) shared: Arc<Shared>,
    pub(super) next_seq: u64,
    /// Head version of streams written since open (bounded; see [`HEAD_CACHE_MAX`]).
    pub(super) heads: HashMap<Arc<str>, u64>,
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut q = self.shared.queue.lock();
                while (q.pending.is_empty() || q.held) && !q.closed {
                    self.shared.wake.wait(&mut q);
                }
                if q.pending.is_empty() {
                    break; // closed and drained
                }
                std::mem::swap(&mut q.pending, &mut batch);
            }

            if let Err(reason) = self.write(&mut batch) {
                let mut q = self.shared.queue.lock();
                q.stopped = Some(reason.clone());
                let refused: Vec<Pending> = q.pending.drain(..).collect();
                drop(q);
                for p in refused {
                    p.done
                        .complete(Err(StorageError::JournalStopped(reason.clone())));
                }
                let mut q = self.shared.queue.lock();
                tracing::error!(%reason, "journal write failed; journal stopped");
                // Keep refusing until closed: appends are answered at submission now.
                while !q.closed {
                    self.shared.wake.wait(&mut q);
                }
                break;
            }
        }
    }

    /// The stream's current head: batch-staged, cached, or read from the index.
    fn head(
        &self,
        staged: &HashMap<Arc<str>, u64>,
        stream: &Arc<str>,
        want: u64,
        minted: bool,
    ) -> Result<u64> {
        if let Some(v) = staged.get(stream).or_else(|| self.heads.get(stream)) {
            return Ok(*v);
        }
        if minted && want == 1 {
            return Ok(0); // a stream the caller minted is new: no read needed
        }
        // Not seen since open. Versions are contiguous from 1, so "want - 1 exists and want
        // does not" is exactly "head == want - 1"; otherwise read the true head.
        let store = &self.store;
        let prev_ok = want <= 1 || store.has_version(stream, want - 1)?;
        if prev_ok && !store.has_version(stream, want)? {
            return Ok(want.saturating_sub(1));
        }
        store.stream_head(stream)
    }

    /// Validates one append against the batch so far; on success stages its heads.
    fn check(&self, req: &Append, staged: &mut HashMap<Arc<str>, u64>) -> Result<()> {
        let mut local: Vec<(Arc<str>, u64)> = Vec::with_capacity(2);
        for ev in &req.events {
            if !valid_stream_name(&ev.stream) {
                return Err(StorageError::InvalidAppend(format!(
                    "bad stream name {:?}",
                    ev.stream
                )));
            }
            let head = match local.iter().find(|(s, _)| *s == ev.stream) {
                Some((_, v)) => *v,
                None => {
                    let minted = req.minted.as_ref() == Some(&ev.stream);
                    self.head(staged, &ev.stream, ev.version, minted)?
                }
            };
            if ev.version != head + 1 {
                return Err(StorageError::VersionConflict {
                    stream: ev.stream.to_string(),
                    expected: head + 1,
                    got: ev.version,
                });
            }
            match local.iter_mut().find(|(s, _)| *s == ev.stream) {
                Some(entry) => entry.1 = ev.version,
                None => local.push((ev.stream.clone(), ev.version)),
            }
        }
        for snap in &req.snapshots {
            let head = match local.iter().find(|(s, _)| *s == snap.stream) {
                Some((_, v)) => *v,
                None => self.head(staged, &snap.stream, snap.version + 1, false)?,
            };
            if snap.version == 0 || snap.version > head {
                return Err(StorageError::InvalidAppend(format!(
                    "snapshot of {} at version {} beyond head {head}",
                    snap.stream, snap.version
                )));
            }
        }
        staged.extend(local);
        Ok(())
    }

    /// Writes one batch: every queued append checked and staged into one RocksDB write
    /// batch, written (fsynced in `sync` mode), then every caller answered.
    fn write(&mut self, batch: &mut Vec<Pending>) -> std::result::Result<(), String> {
        let mut b = Batch::new(self.next_seq, batch.len());
        let mut pending = batch.drain(..);
        while let Some(Pending { req, done: tx }) = pending.next() {
            // Snapshot-only appends of a stream this batch writes events to wait for the
            // next batch: a snapshot is written only once the events it covers are durable.
            if req.events.is_empty()
                && req
                    .snapshots
                    .iter()
                    .any(|s| b.staged.contains_key(&s.stream))
            {
                b.deferred.push(Pending { req, done: tx });
                continue;
            }
            if let Err(e) = self.check(&req, &mut b.staged) {
                if self.stops_on(&e) {
                    // Memory and log disagree (or cannot be compared): the actor already
                    // applied these events. Write nothing of this batch, stop.
                    let reason = format!("{e}: memory and log disagree; stopped");
                    for p in pending.by_ref() {
                        p.done
                            .complete(Err(StorageError::JournalStopped(reason.clone())));
                    }
                    return self.fail(b.answers, tx, reason);
                }
                b.answers.push((tx, Err(e)));
                continue;
            }
            match self.stage(&req, &mut b) {
                Ok(receipt) => b.answers.push((tx, Ok(receipt))),
                // Encoding well-formed values cannot fail; if it did, fail the batch.
                Err(e) => return self.fail(b.answers, tx, e.to_string()),
            }
        }
        self.commit(b)
    }

    /// Whether a refused append stops the journal (see [`JournalOptions`]).
    fn stops_on(&self, e: &StorageError) -> bool {
        self.shared.options.stop_on_conflict
            && matches!(
                e,
                StorageError::VersionConflict { .. }
                    | StorageError::Rocks(_)
                    | StorageError::Corrupt { .. }
            )
    }

    /// Stages one checked append into the batch: its events (the first stamped with the
    /// idempotency key of a command it applies) and their index entries, snapshots,
    /// `meta` records, the idempotency record, and expired idempotency records to delete.
    fn stage(&mut self, req: &Append, b: &mut Batch) -> Result<Receipt> {
        let store = self.store.clone();
        let (cf_events, cf_streams) = (store.cf(CF_EVENTS), store.cf(CF_STREAMS));
        let first = b.next;
        let stamp = req
            .idempotency
            .as_ref()
            .filter(|w| w.applies)
            .map(|w| (w.key.as_str(), w.record.expires_at_ms));
        if !req.events.is_empty() {
            // One `events` record for the whole append, under its first seq; one `streams`
            // entry per event, pointing at the record.
            self.buf.clear();
            codec::begin_record(req.events.len(), &mut self.buf)?;
            for (i, ev) in req.events.iter().enumerate() {
                let seq = first + i as u64;
                let mut view = ev.view(seq);
                if let (0, Some((key, expires))) = (i, stamp) {
                    view.idempotency_key = Some(key);
                    view.idempotency_expires_ms = expires;
                }
                codec::encode_record_event_into(&view, &mut self.buf)?;
                let (value, len) = codec::stream_value(seq, first);
                b.wb.put_cf(
                    cf_streams,
                    stream_key(&ev.stream, ev.version),
                    &value[..len],
                );
            }
            b.wb.put_cf(cf_events, seq_key(first), &self.buf);
            b.next += req.events.len() as u64;
        }
        for snap in &req.snapshots {
            let seq = req
                .events
                .iter()
                .zip(first..)
                .find(|(ev, _)| ev.stream == snap.stream && ev.version == snap.version)
                .map(|(_, s)| s)
                .unwrap_or(b.next - 1);
            let rec = SnapshotRecord {
                stream: snap.stream.to_string(),
                version: snap.version,
                seq,
                schema: snap.schema,
                state: snap.state.clone(),
            };
            b.wb.put_cf(
                store.cf(CF_SNAPSHOTS),
                snap.stream.as_bytes(),
                codec::encode(&rec)?,
            );
        }
        for stream in &req.delete_snapshots {
            b.wb.delete_cf(store.cf(CF_SNAPSHOTS), stream.as_bytes());
        }
        for (key, value) in &req.meta {
            b.wb.put_cf(store.cf(CF_META), key.as_bytes(), value);
        }
        self.stage_idempotency(req, b)?;
        b.n_events += req.events.len() as u64;
        // `next >= 1` always; an append of snapshots only gets the empty range.
        Ok(Receipt {
            first_seq: first,
            last_seq: b.next - 1,
        })
    }

    /// Stages the append's idempotency record, and deletes the expired records it names
    /// that are still the ones found expired.
    fn stage_idempotency(&self, req: &Append, b: &mut Batch) -> Result<()> {
        let store = &self.store;
        if let Some(w) = &req.idempotency {
            b.wb.put_cf(
                store.cf(CF_IDEMPOTENCY),
                w.key.as_bytes(),
                codec::encode(&w.record)?,
            );
            b.idem_written.insert(w.key.clone());
        }
        for (key, seen_expiry) in &req.expire_idempotency {
            if b.idem_written.contains(key) {
                continue; // written by this batch: a key reused meanwhile
            }
            // Any record, even one that no longer decodes, is compared by its expiry.
            match store.idempotency_expiry(key.as_bytes()) {
                Ok(Some(expiry)) if expiry == *seen_expiry => {
                    b.wb.delete_cf(store.cf(CF_IDEMPOTENCY), key.as_bytes())
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency expiry check failed; record kept")
                }
            }
        }
        Ok(())
    }

    /// Writes the staged batch, then answers every caller and requeues the deferred
    /// snapshots. A failed write stops the journal before anyone is answered.
    fn commit(&mut self, mut b: Batch) -> std::result::Result<(), String> {
        let store = self.store.clone();
        if !b.wb.is_empty() {
            if b.next > self.next_seq {
                b.wb.put_cf(store.cf(CF_META), META_LAST_SEQ, (b.next - 1).to_be_bytes());
            }
            let started = Instant::now();
            let res = if self.shared.fail_next_write.swap(false, Ordering::SeqCst) {
                Err("injected write failure".to_owned())
            } else {
                store
                    .db()
                    .write_opt(b.wb, &store.write_opts())
                    .map_err(|e| e.to_string())
            };
            let nanos = started.elapsed().as_nanos() as u64;
            if let Err(reason) = res {
                // Stop first, answer after: a caller told of the failure must already see
                // the journal stopped.
                self.shared.queue.lock().stopped = Some(reason.clone());
                for (done, _) in b.answers {
                    done.complete(Err(StorageError::JournalStopped(reason.clone())));
                }
                return Err(reason);
            }
            self.shared.metrics.batch_written(b.n_events, nanos);
        }
        if self.heads.len() + b.staged.len() > HEAD_CACHE_MAX {
            self.heads.clear();
        }
        self.heads.extend(b.staged);
        self.next_seq = b.next;
        self.shared.metrics.set_durable(b.next - 1);
        self.shared.durable.send_replace(b.next - 1);
        for (done, res) in b.answers {
            done.complete(res);
        }
        if !b.deferred.is_empty() {
            let mut q = self.shared.queue.lock();
            b.deferred.append(&mut q.pending);
            q.pending = b.deferred;
        }
        Ok(())
    }

    fn fail(
        &self,
        answers: Vec<(Completion, Result<Receipt>)>,
        tx: Completion,
        reason: String,
    ) -> std::result::Result<(), String> {
        self.shared.queue.lock().stopped = Some(reason.clone());
        tx.complete(Err(StorageError::JournalStopped(reason.clone())));
        for (done, _) in answers {
            done.complete(Err(StorageError::JournalStopped(reason.clone())));
        }
        Err(reason)
    }
}
