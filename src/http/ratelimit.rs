//! Token-bucket rate limiting per caller (token, or peer address without auth).
//!
//! One small mutex per caller inside a DashMap: a caller's requests contend only with
//! that caller's own, and the shard lock is held only to find the bucket. Buckets that
//! have refilled completely carry no information and are swept, so the map stays as big
//! as the set of recently active callers.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<Arc<str>, Mutex<Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once. `rate == 0` is no limiter.
    pub fn new(rate: u32, burst: u32) -> Option<RateLimiter> {
        (rate > 0).then(|| RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        })
    }

    /// Takes one token for `caller`; `Err(seconds)` says when to retry.
    pub fn check(&self, caller: &Arc<str>) -> Result<(), u64> {
        let now = Instant::now();
        let entry = self.buckets.entry(caller.clone()).or_insert_with(|| {
            Mutex::new(Bucket {
                tokens: self.burst,
                last: now,
            })
        });
        let mut b = entry.lock();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    /// Drops buckets that are full again (their callers have been idle).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.buckets.retain(|_, b| {
            let b = b.lock();
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * self.rate < self.burst
        });
    }

    pub fn callers(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_retry_hint() {
        let rl = RateLimiter::new(1, 3).unwrap();
        let c: Arc<str> = Arc::from("peer");
        for _ in 0..3 {
            assert!(rl.check(&c).is_ok());
        }
        assert_eq!(rl.check(&c), Err(1));
        // Another caller has its own bucket.
        assert!(rl.check(&Arc::from("other")).is_ok());
        assert!(RateLimiter::new(0, 10).is_none());
    }
}
