//! Byte layouts: keys (big-endian, so RocksDB's byte order is numeric order) and the
//! versioned value envelope (one leading format byte, then bincode).

use crate::error::{Result, StorageError};

/// The format byte in front of every stored value. A new encoding gets a new byte; readers
/// dispatch on it, so stores written by older releases keep decoding.
pub const VALUE_FORMAT_V1: u8 = 1;
/// The format byte of event envelopes that carry the idempotency stamp (`events` only;
/// envelopes of format 1 still decode, without it).
pub const EVENT_FORMAT_V2: u8 = 2;
/// The format byte of an `events` record that holds one append's events: the count
/// (bincode varint), then each envelope as in format 2. The record's key is the seq of its
/// first event; the others follow with consecutive seqs. Records of formats 1 and 2 hold
/// one event each, so a store can hold both kinds.
pub const APPEND_FORMAT_V3: u8 = 3;

pub(crate) fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` as format byte + bincode into `out` (appending).
pub(crate) fn encode_into<T: bincode::Encode>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    out.push(VALUE_FORMAT_V1);
    bincode::encode_into_std_write(value, out, bincode_config())
        .map(|_| ())
        .map_err(|e| StorageError::Encode(e.to_string()))
}

pub(crate) fn encode<T: bincode::Encode>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes a value written by [`encode`]. `cf` and `key` only name the record in errors.
pub(crate) fn decode<T: bincode::Decode<()>>(
    bytes: &[u8],
    cf: &'static str,
    key: impl Fn() -> String,
) -> Result<T> {
    let body = strip_format(bytes, cf, &key)?;
    match bincode::decode_from_slice::<T, _>(body, bincode_config()) {
        Ok((v, used)) if used == body.len() => Ok(v),
        Ok((_, used)) => Err(corrupt(
            cf,
            key(),
            format!("{} trailing bytes", body.len() - used),
        )),
        Err(e) => Err(corrupt(cf, key(), e.to_string())),
    }
}

/// Starts an append record (format 3) of `n` events in `out`; each event follows through
/// [`encode_record_event_into`].
pub(crate) fn begin_record(n: usize, out: &mut Vec<u8>) -> Result<()> {
    out.push(APPEND_FORMAT_V3);
    bincode::encode_into_std_write(n as u64, out, bincode_config())
        .map(|_| ())
        .map_err(|e| StorageError::Encode(e.to_string()))
}

/// Appends one envelope to the record begun by [`begin_record`].
pub(crate) fn encode_record_event_into(
    view: &crate::event::EventView<'_>,
    out: &mut Vec<u8>,
) -> Result<()> {
    bincode::encode_into_std_write(view, out, bincode_config())
        .map(|_| ())
        .map_err(|e| StorageError::Encode(e.to_string()))
}

/// How many events the `events` record at seq `first` holds (formats 1 and 2: one).
/// Its seqs, `first..first + n`, stay below `u64::MAX` (a damaged key cannot make a
/// reader's arithmetic overflow).
pub(crate) fn record_len(first: u64, bytes: &[u8]) -> Result<u64> {
    match bytes.split_first() {
        Some((&APPEND_FORMAT_V3, body)) => record_count(first, body).map(|(n, _)| n),
        Some((&EVENT_FORMAT_V2 | &VALUE_FORMAT_V1, _)) => in_range(first, 1),
        Some((other, _)) => Err(corrupt(
            "events",
            format!("seq {first}"),
            format!("unknown value format byte {other}"),
        )),
        None => Err(corrupt(
            "events",
            format!("seq {first}"),
            "empty value".into(),
        )),
    }
}

/// The count at the front of a format-3 body and the bytes after it.
fn record_count(first: u64, body: &[u8]) -> Result<(u64, &[u8])> {
    let (n, used) = bincode::decode_from_slice::<u64, _>(body, bincode_config())
        .map_err(|e| corrupt("events", format!("seq {first}"), e.to_string()))?;
    let rest = &body[used..];
    // Every envelope takes more than one byte: a count beyond the bytes is damage.
    if n == 0 || n > rest.len() as u64 {
        return Err(corrupt(
            "events",
            format!("seq {first}"),
            format!("record claims {n} events in {} bytes", rest.len()),
        ));
    }
    in_range(first, n).map(|n| (n, rest))
}

/// `n` events from seq `first` on: damage if their seqs would reach `u64::MAX`, which no
/// journal ever assigns.
fn in_range(first: u64, n: u64) -> Result<u64> {
    match first.checked_add(n) {
        Some(_) => Ok(n),
        None => Err(corrupt(
            "events",
            format!("seq {first}"),
            format!("{n} events from this seq overflow"),
        )),
    }
}

/// The events of one `events` record, decoded one at a time and borrowed from its bytes.
/// Each is checked to carry the seq its place in the record gives it.
pub(crate) struct RecordEvents<'a> {
    next_seq: u64,
    left: u64,
    rest: &'a [u8],
    /// A record of format 1 or 2: the whole value is one envelope.
    single: Option<&'a [u8]>,
}

impl<'a> RecordEvents<'a> {
    /// The events of the record stored under seq `first`.
    pub(crate) fn new(first: u64, bytes: &'a [u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&APPEND_FORMAT_V3, body)) => {
                let (n, rest) = record_count(first, body)?;
                Ok(RecordEvents {
                    next_seq: first,
                    left: n,
                    rest,
                    single: None,
                })
            }
            _ => Ok(RecordEvents {
                next_seq: first,
                left: in_range(first, 1)?,
                rest: &[],
                single: Some(bytes),
            }),
        }
    }

    fn check(&self, view: &crate::event::EventView<'_>) -> Result<()> {
        if view.seq != self.next_seq {
            return Err(corrupt(
                "events",
                format!("seq {}", self.next_seq),
                format!("record says seq {}", view.seq),
            ));
        }
        Ok(())
    }
}

impl<'a> Iterator for RecordEvents<'a> {
    type Item = Result<crate::event::EventView<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let seq = self.next_seq;
        let got = match self.single.take() {
            Some(bytes) => decode_event_view(bytes, || format!("seq {seq}")),
            None => match bincode::borrow_decode_from_slice::<crate::event::EventView<'a>, _>(
                self.rest,
                bincode_config(),
            ) {
                Ok((view, used)) => {
                    self.rest = &self.rest[used..];
                    if self.left == 1 && !self.rest.is_empty() {
                        Err(corrupt(
                            "events",
                            format!("seq {seq}"),
                            format!("{} trailing bytes", self.rest.len()),
                        ))
                    } else {
                        Ok(view)
                    }
                }
                Err(e) => Err(corrupt("events", format!("seq {seq}"), e.to_string())),
            },
        };
        let got = got.and_then(|view| self.check(&view).map(|()| view));
        // After an error nothing more is read from this record.
        self.left = if got.is_ok() { self.left - 1 } else { 0 };
        self.next_seq += 1;
        Some(got)
    }
}

/// A `streams` value: the event's seq, and the key of the record holding it when that is
/// not the event's own seq (an event after the first of its append).
pub(crate) fn stream_value(seq: u64, record: u64) -> ([u8; 16], usize) {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    if record == seq {
        (v, 8)
    } else {
        v[8..].copy_from_slice(&record.to_be_bytes());
        (v, 16)
    }
}

/// Reads a `streams` value: (seq, key of the record holding it).
pub(crate) fn parse_stream_value(stream: &str, v: &[u8]) -> Result<(u64, u64)> {
    let word = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_be_bytes(a)
    };
    match v.len() {
        8 => Ok((word(v), word(v))),
        16 if word(&v[8..]) < word(&v[..8]) => Ok((word(&v[..8]), word(&v[8..]))),
        _ => Err(corrupt(
            "streams",
            format!("stream {stream}"),
            format!("index value of {} bytes", v.len()),
        )),
    }
}

/// Decodes an event envelope of either format, borrowing from `bytes`.
pub(crate) fn decode_event_view<'a>(
    bytes: &'a [u8],
    key: impl Fn() -> String,
) -> Result<crate::event::EventView<'a>> {
    const CF: &str = "events";
    fn finish<T>(
        r: std::result::Result<(T, usize), bincode::error::DecodeError>,
        len: usize,
        key: &dyn Fn() -> String,
    ) -> Result<T> {
        match r {
            Ok((v, used)) if used == len => Ok(v),
            Ok((_, used)) => Err(corrupt(CF, key(), format!("{} trailing bytes", len - used))),
            Err(e) => Err(corrupt(CF, key(), e.to_string())),
        }
    }
    match bytes.split_first() {
        Some((&EVENT_FORMAT_V2, body)) => finish(
            bincode::borrow_decode_from_slice::<crate::event::EventView<'a>, _>(
                body,
                bincode_config(),
            ),
            body.len(),
            &key,
        ),
        Some((&VALUE_FORMAT_V1, body)) => finish(
            bincode::borrow_decode_from_slice::<crate::event::EventViewV1<'a>, _>(
                body,
                bincode_config(),
            ),
            body.len(),
            &key,
        )
        .map(Into::into),
        Some((other, _)) => Err(corrupt(
            CF,
            key(),
            format!("unknown value format byte {other}"),
        )),
        None => Err(corrupt(CF, key(), "empty value".to_owned())),
    }
}

fn strip_format<'a>(
    bytes: &'a [u8],
    cf: &'static str,
    key: &dyn Fn() -> String,
) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&VALUE_FORMAT_V1, body)) => Ok(body),
        Some((other, _)) => Err(corrupt(
            cf,
            key(),
            format!("unknown value format byte {other}"),
        )),
        None => Err(corrupt(cf, key(), "empty value".to_owned())),
    }
}

pub(crate) fn corrupt(cf: &'static str, key: String, detail: String) -> StorageError {
    StorageError::Corrupt { cf, key, detail }
}

/// `events` key: the global seq, big-endian.
#[inline]
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn key_to_seq(key: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = key.try_into().map_err(|_| {
        corrupt(
            "events",
            format!("key {key:?}"),
            "key is not 8 bytes".into(),
        )
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// `streams` key: stream name, a NUL (never part of a stream name), version big-endian.
pub(crate) fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 9);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The prefix all of one stream's `streams` keys share.
pub(crate) fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 1);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}
