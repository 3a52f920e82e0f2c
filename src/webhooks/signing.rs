//! Signing deliveries: Standard Webhooks secrets and signatures, rotation, and the
//! `Ordo-Signature` kept for receivers written before them.
//!
//! - A secret is `whsec_` + base64 of 24–64 random bytes; the HMAC key is those bytes.
//!   One is generated (32 bytes) when a subscription or rotation names none.
//! - `webhook-signature: v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`,
//!   one such entry per signing key, space-separated.
//! - `Ordo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "{t}.{body}")>`, with a
//!   `,v1=` entry per signing key.
//! - Subscriptions stored by releases before Standard Webhooks have plain-text secrets:
//!   their key is the text's own bytes, as it always was, so their receivers keep
//!   verifying `Ordo-Signature` — and can verify `webhook-signature` with the same bytes.
//! - Rotation: the new secret signs from now on; the one before it also signs until its
//!   grace period ends, so receivers can switch at their own pace.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::WebhookError;

const PREFIX: &str = "whsec_";

/// How long a rotated-out secret may keep signing at the most.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A subscription's secrets, as stored (inside its record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Secrets {
    /// The current secret, as given or generated.
    secret: String,
    /// `true`: `secret` is `whsec_` + base64, the key is the decoded bytes. Absent from
    /// the records of earlier releases, whose plain secrets are their own key.
    #[serde(default)]
    whsec: bool,
    /// The secret before the last rotation, while it still signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<Previous>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Previous {
    secret: String,
    #[serde(default)]
    whsec: bool,
    /// Unix milliseconds: it signs deliveries made before then.
    until: u64,
}

/// The key of a stored secret.
fn key_of(secret: &str, whsec: bool) -> Vec<u8> {
    if whsec {
        if let Some(key) = secret
            .strip_prefix(PREFIX)
            .and_then(|b| BASE64.decode(b).ok())
        {
            return key;
        }
    }
    secret.as_bytes().to_vec()
}

/// Checks a secret given through the API: `whsec_` + base64 of 24–64 bytes.
pub(super) fn check_secret(secret: &str) -> Result<(), WebhookError> {
    let bad = || {
        WebhookError::invalid(
            "secret must be `whsec_` followed by the base64 of 24-64 random bytes \
             (leave it out and one is generated)",
        )
    };
    let key = secret
        .strip_prefix(PREFIX)
        .and_then(|b| BASE64.decode(b).ok())
        .ok_or_else(bad)?;
    if (24..=64).contains(&key.len()) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub(super) fn generate_secret() -> String {
    format!("{PREFIX}{}", BASE64.encode(rand::random::<[u8; 32]>()))
}

impl Secrets {
    /// A subscription's first secret (already checked, or generated).
    pub(super) fn new(secret: String) -> Secrets {
        Secrets {
            secret,
            whsec: true,
            previous: None,
        }
    }

    /// `secret` (already checked, or generated) in place of the current one, which
    /// keeps signing until `now_ms + grace`. A secret still in an earlier grace period
    /// stops signing now: two sign at the most.
    pub(super) fn rotated(&self, secret: String, grace: Duration, now_ms: u64) -> Secrets {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        Secrets {
            secret,
            whsec: true,
            previous: (!grace.is_zero()).then(|| Previous {
                secret: self.secret.clone(),
                whsec: self.whsec,
                until: now_ms.saturating_add(grace_ms),
            }),
        }
    }

    /// The keys that sign a delivery made at `now_ms`: the current one first.
    pub(super) fn keys(&self, now_ms: u64) -> Vec<Vec<u8>> {
        let mut keys = vec![key_of(&self.secret, self.whsec)];
        if let Some(p) = self.previous.as_ref().filter(|p| now_ms < p.until) {
            keys.push(key_of(&p.secret, p.whsec));
        }
        keys
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `webhook-signature` for message `id` sent at unix second `t`: `v1,<base64>` per key,
/// space-separated.
pub fn standard_signature(keys: &[Vec<u8>], id: &str, t: u64, body: &[u8]) -> String {
    let t = t.to_string();
    keys.iter()
        .map(|k| {
            let tag = hmac(k, &[id.as_bytes(), b".", t.as_bytes(), b".", body]);
            format!("v1,{}", BASE64.encode(tag))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Ordo-Signature` for `body` sent at unix second `t`: `t=<t>` and a `v1=<hex>` per key.
pub fn ordo_signature(keys: &[Vec<u8>], t: u64, body: &[u8]) -> String {
    let t = t.to_string();
    let mut out = format!("t={t}");
    for k in keys {
        let tag = hmac(k, &[t.as_bytes(), b".", body]);
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(",v1=");
        out.push_str(&hex);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_signs_as_the_spec_says() {
        // From the standardwebhooks crate's own tests.
        let keys = [key_of("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", true)];
        let sig = standard_signature(
            &keys,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn ordo_signature_matches_a_known_hmac() {
        // HMAC-SHA256("key", "1.{}"), computed with Python's hmac module.
        let key = [b"key".to_vec()];
        let s = ordo_signature(&key, 1, b"{}");
        assert_eq!(
            s,
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        assert_ne!(s, ordo_signature(&[b"other".to_vec()], 1, b"{}"));
        assert_ne!(s, ordo_signature(&key, 2, b"{}"));
    }

    #[test]
    fn secrets_must_be_whsec_and_base64_of_24_to_64_bytes() {
        check_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        check_secret(&generate_secret()).unwrap();
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_not base64 at all!",
            "whsec_c2hvcnQ=",
            "a-long-enough-webhook-secret",
            "",
        ] {
            assert!(check_secret(bad).is_err(), "{bad}");
        }
        assert_ne!(generate_secret(), generate_secret());
    }

    #[test]
    fn a_secret_of_an_earlier_release_is_its_own_key() {
        let old: Secrets = serde_json::from_str(r#"{"secret":"a-long-enough-webhook-secret"}"#)
            .expect("the old record form");
        assert_eq!(old.keys(0), [b"a-long-enough-webhook-secret".to_vec()]);
        let new = Secrets::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into());
        assert_eq!(new.keys(0)[0].len(), 24);
    }

    #[test]
    fn a_rotated_out_secret_signs_until_its_grace_ends() {
        let first = Secrets::new(generate_secret());
        let second = first.rotated(generate_secret(), Duration::from_secs(60), 1_000);
        let keys = second.keys(1_000);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1], first.keys(0)[0], "the old key signs second");
        assert_eq!(second.keys(60_999).len(), 2);
        assert_eq!(second.keys(61_000).len(), 1, "grace is over");
        let sig = standard_signature(&keys, "msg_1", 7, b"{}");
        assert_eq!(sig.split(' ').count(), 2, "{sig}");
        // No grace: the old secret stops at once.
        assert_eq!(
            second
                .rotated(generate_secret(), Duration::ZERO, 0)
                .keys(0)
                .len(),
            1
        );
        // A third rotation drops the first secret, whatever its grace.
        let third = second.rotated(generate_secret(), Duration::from_secs(60), 2_000);
        assert_eq!(third.keys(2_000)[1], second.keys(0)[0]);
    }
}
