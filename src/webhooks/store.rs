//! The webhooks' own records: subscriptions, cursors, pause marks and dead letters, kept
//! in the store's `meta` column family beside the log (so a restart, a backup or a
//! restore carries them with the events they point into).
//!
//! [`WebhookStore`] is the webhooks' handle on them, handed over when the server is
//! wired up; the webhooks read the log itself through the engine's API. Each call is one
//! small RocksDB read or write on the caller's thread.

use std::sync::Arc;

use ordo_storage::{Store, StoreIdentity};

use super::{DeadLetter, Record, WebhookError};

fn sub_key(id: &str) -> String {
    format!("webhook/sub/{id}")
}
fn cursor_key(id: &str) -> String {
    format!("webhook/cursor/{id}")
}
fn paused_key(id: &str) -> String {
    format!("webhook/paused/{id}")
}
fn dead_prefix(id: &str) -> String {
    format!("webhook/dead/{id}/")
}
fn dead_key(id: &str, seq: u64) -> String {
    format!("webhook/dead/{id}/{seq:020}")
}

/// Not logged here: the delivery task logs what it was doing, the HTTP edge logs what
/// it answers 500 for.
fn store_err(e: impl std::fmt::Display) -> WebhookError {
    WebhookError::Store(e.to_string())
}

/// The webhooks' records in the store. Clones share the store.
#[derive(Clone)]
pub struct WebhookStore {
    store: Arc<Store>,
}

impl WebhookStore {
    /// Over the store the engine opened (the records are the webhooks' own; the engine
    /// never reads them).
    pub fn new(store: Arc<Store>) -> WebhookStore {
        WebhookStore { store }
    }

    /// The store's id and incarnation: with a seq, they make a `webhook-id`.
    pub(super) fn identity(&self) -> Result<StoreIdentity, WebhookError> {
        self.store.identity().map_err(store_err)
    }

    /// Every stored subscription, in id order; one that does not decode is logged and
    /// skipped.
    pub(super) fn subscriptions(&self) -> Result<Vec<Record>, WebhookError> {
        let rows = self.store.scan_meta("webhook/sub/").map_err(store_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| match serde_json::from_slice(&v) {
                Ok(sub) => Some(sub),
                Err(e) => {
                    tracing::error!(error = %e, "a stored subscription does not decode; skipped");
                    None
                }
            })
            .collect())
    }

    /// Stores a subscription's record (a new one, or its new secrets).
    pub(super) fn put_subscription(&self, record: &Record) -> Result<(), WebhookError> {
        let bytes = serde_json::to_vec(record).map_err(store_err)?;
        self.store
            .put_meta(&sub_key(&record.sub.id), &bytes)
            .map_err(store_err)
    }

    /// Forgets subscription `id`: its record, cursor, pause mark and dead letters.
    pub(super) fn delete_subscription(&self, id: &str) -> Result<(), WebhookError> {
        for key in [sub_key(id), cursor_key(id), paused_key(id)] {
            self.store.delete_meta(&key).map_err(store_err)?;
        }
        for (k, _) in self.store.scan_meta(&dead_prefix(id)).map_err(store_err)? {
            self.store.delete_meta(&k).map_err(store_err)?;
        }
        Ok(())
    }

    /// The last seq handled, if one was stored (and is well formed).
    pub(super) fn cursor(&self, id: &str) -> Result<Option<u64>, WebhookError> {
        let raw = self.store.get_meta(&cursor_key(id)).map_err(store_err)?;
        Ok(raw
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes))
    }

    pub(super) fn put_cursor(&self, id: &str, seq: u64) -> Result<(), WebhookError> {
        self.store
            .put_meta(&cursor_key(id), &seq.to_be_bytes())
            .map_err(store_err)
    }

    pub(super) fn is_paused(&self, id: &str) -> Result<bool, WebhookError> {
        let mark = self.store.get_meta(&paused_key(id)).map_err(store_err)?;
        Ok(mark.is_some())
    }

    pub(super) fn set_paused(&self, id: &str, paused: bool) -> Result<(), WebhookError> {
        let key = paused_key(id);
        if paused {
            self.store.put_meta(&key, b"1")
        } else {
            self.store.delete_meta(&key)
        }
        .map_err(store_err)
    }

    /// The dead letters of `id` in seq order (one that does not decode is left out).
    pub(super) fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, WebhookError> {
        let rows = self.store.scan_meta(&dead_prefix(id)).map_err(store_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// How many dead letters `id` has.
    pub(super) fn dead_letter_count(&self, id: &str) -> Result<u64, WebhookError> {
        let rows = self.store.scan_meta(&dead_prefix(id)).map_err(store_err)?;
        Ok(rows.len() as u64)
    }

    /// Stores `d` (replacing the one of its seq, after a failed redrive); `true` if the
    /// list grew.
    pub(super) fn put_dead_letter(&self, id: &str, d: &DeadLetter) -> Result<bool, WebhookError> {
        let key = dead_key(id, d.seq);
        let existed = matches!(self.store.get_meta(&key), Ok(Some(_)));
        let bytes = serde_json::to_vec(d).map_err(store_err)?;
        self.store.put_meta(&key, &bytes).map_err(store_err)?;
        Ok(!existed)
    }

    pub(super) fn delete_dead_letter(&self, id: &str, seq: u64) -> Result<(), WebhookError> {
        self.store
            .delete_meta(&dead_key(id, seq))
            .map_err(store_err)
    }
}
