//! Reading one stream through the `streams` index (stream + version → seq): whole, from a
//! version, a feed's page after a seq, its head.

use super::*;
use crate::codec::RecordEvents;

impl Store {
    /// One stream's events with version >= `from_version`, in version order.
    pub fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<EventRecord>> {
        self.read_stream_range(stream, from_version, usize::MAX)
    }

    /// A page of one stream for a feed: at most `limit` of its events with seq > `after`,
    /// in order. Found through the stream's index (a binary search over its versions, then
    /// `limit` entries), so a page costs O(log(stream) + limit), not the whole stream.
    pub fn read_stream_page(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        let head = self.stream_head(stream)?;
        // Seqs grow with versions: find the first version whose seq is past `after`.
        let (mut lo, mut hi) = (1u64, head + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.version_seq(stream, mid)? > after {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo > head {
            return Ok(Vec::new());
        }
        self.read_stream_range(stream, lo, limit)
    }

    /// The seq of `stream`'s event `version` (which must exist).
    fn version_seq(&self, stream: &str, version: u64) -> Result<u64> {
        let got = self
            .db
            .get_pinned_cf(self.cf(CF_STREAMS), stream_key(stream, version))?;
        let bytes = got.ok_or_else(|| {
            corrupt(
                CF_STREAMS,
                format!("stream {stream}"),
                format!("version {version} below the head is missing"),
            )
        })?;
        codec::parse_stream_value(stream, &bytes).map(|(seq, _)| seq)
    }

    /// At most `limit` of one stream's events from `from_version` on, in version order.
    fn read_stream_range(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        let prefix = stream_prefix(stream);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_STREAMS));
        it.seek(stream_key(stream, from_version.max(1)));
        // (seq, key of the record holding it); consecutive events of one append share it.
        let mut seqs: Vec<(u64, u64)> = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) || seqs.len() >= limit {
                break;
            }
            seqs.push(codec::parse_stream_value(stream, v)?);
            it.next();
        }
        it.status()?;
        let mut records: Vec<u64> = seqs.iter().map(|(_, r)| *r).collect();
        records.dedup();
        let events = self.cf(CF_EVENTS);
        let values = self
            .db
            .multi_get_cf(records.iter().map(|r| (events, seq_key(*r))));
        let missing = |seq: u64| {
            corrupt(
                CF_STREAMS,
                format!("stream {stream}"),
                format!("index points at missing seq {seq}"),
            )
        };
        let mut out = Vec::with_capacity(seqs.len());
        let mut wanted = seqs.iter().peekable();
        for (record, got) in records.iter().zip(values) {
            let Some(v) = got? else {
                return Err(missing(wanted.peek().map_or(*record, |(s, _)| *s)));
            };
            let mut events = RecordEvents::new(*record, &v)?;
            while let Some(&(seq, _)) = wanted.next_if(|(_, r)| r == record) {
                // The record's events come in seq order: skip to this one.
                let view = match events.find(|e| e.as_ref().map_or(true, |v| v.seq >= seq)) {
                    Some(Ok(view)) if view.seq == seq => view,
                    Some(Err(e)) => return Err(e),
                    _ => return Err(missing(seq)),
                };
                if view.stream != stream {
                    return Err(corrupt(
                        CF_EVENTS,
                        format!("seq {seq}"),
                        format!("indexed under stream {stream} but holds {}", view.stream),
                    ));
                }
                out.push(view.to_record());
            }
        }
        Ok(out)
    }

    /// The last version of `stream` (0 when it has no events).
    pub fn stream_head(&self, stream: &str) -> Result<u64> {
        let prefix = stream_prefix(stream);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_STREAMS));
        it.seek_for_prev(stream_key(stream, u64::MAX));
        it.status()?;
        match it.key() {
            Some(k) if k.starts_with(&prefix) && k.len() == prefix.len() + 8 => {
                let mut arr = [0u8; 8];
                arr.copy_from_slice(&k[prefix.len()..]);
                Ok(u64::from_be_bytes(arr))
            }
            _ => Ok(0),
        }
    }

    /// Whether `stream` has an event at exactly `version`. A point lookup (bloom-filtered).
    pub(crate) fn has_version(&self, stream: &str, version: u64) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_STREAMS), stream_key(stream, version))?
            .is_some())
    }
}
