//! Byte layouts: keys (big-endian, so RocksDB's byte order is numeric order) and the
//! versioned value envelope (one leading format byte, then bincode).

use crate::error::{Result, StorageError};

/// The format byte in front of every stored value. A new encoding gets a new byte; readers
/// dispatch on it, so stores written by older releases keep decoding.
pub const VALUE_FORMAT_V1: u8 = 1;
/// The format byte of event envelopes that carry the idempotency stamp (`events` only;
/// envelopes of format 1 still decode, without it).
pub const EVENT_FORMAT_V2: u8 = 2;

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

/// Encodes an event envelope (format 2) into `out` (appending).
pub(crate) fn encode_event_into(
    view: &crate::event::EventView<'_>,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.push(EVENT_FORMAT_V2);
    bincode::encode_into_std_write(view, out, bincode_config())
        .map(|_| ())
        .map_err(|e| StorageError::Encode(e.to_string()))
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
