//! Requests with retries: a change under one `Idempotency-Key`, sent again with the
//! same key and body until it gets an answer that is not the server's fault and recorded
//! attempt by attempt; reads retried for a while; the run's SKUs created.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use super::super::model::{Answer, Attempt};
use super::{Api, Call};

/// What one attempt came to.
enum Tried {
    /// An answer that is not the server's fault: the call's answer.
    Answered(Answer),
    /// No answer, a 5xx or a 429: try again (not sooner than `Retry-After`, if given).
    Retry { retry_after: Option<u64> },
}

impl Api {
    /// Sends `body` under `key` until an answer that is neither a 5xx nor a 429 arrives
    /// (then that is the answer), or the run gives up (then there is none). No answer at
    /// all (connection refused or reset, timeout, a body cut short) is retried too: the
    /// server may or may not have acted, and the key makes the retry safe.
    pub async fn call(&self, method: Method, path: &str, body: &Value, key: &str) -> Call {
        let sent_us = self.now_us();
        let mut attempts = Vec::new();
        while !self.stopped() {
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let (attempt, tried) = self.attempt(method.clone(), path, body, key).await;
            attempts.push(attempt);
            let mut wait = backoff();
            match tried {
                Tried::Answered(answer) => {
                    return Call {
                        sent_us,
                        answered_us: Some(self.now_us()),
                        attempts,
                        answer: Some(answer),
                    }
                }
                // Honoured, but never more than a second: the run is short.
                Tried::Retry {
                    retry_after: Some(s),
                } => wait = wait.max(Duration::from_secs(s.min(1))),
                Tried::Retry { retry_after: None } => {}
            }
            tokio::time::sleep(wait).await;
        }
        Call {
            sent_us,
            answered_us: None,
            attempts,
            answer: None,
        }
    }

    /// One attempt of [`Api::call`]: the attempt as recorded, and what came of it.
    async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        key: &str,
    ) -> (Attempt, Tried) {
        let at_us = self.now_us();
        let sent = self
            .request(method, path)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        let no_answer = Tried::Retry { retry_after: None };
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                let attempt = Attempt {
                    at_us,
                    status: None,
                    error: Some(short_error(&e)),
                };
                return (attempt, no_answer);
            }
        };
        let status = resp.status().as_u16();
        let replayed = resp
            .headers()
            .get("Idempotent-Replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = match resp.text().await {
            Ok(text) => text,
            Err(e) => {
                let attempt = Attempt {
                    at_us,
                    status: Some(status),
                    error: Some(format!("body: {}", short_error(&e))),
                };
                return (attempt, no_answer);
            }
        };
        let attempt = Attempt {
            at_us,
            status: Some(status),
            error: None,
        };
        if status < 500 && status != 429 {
            let answer = Answer {
                status,
                body: text,
                replayed,
            };
            (attempt, Tried::Answered(answer))
        } else {
            (attempt, Tried::Retry { retry_after })
        }
    }

    /// A read: retried on errors and 5xx for up to `patience`. Returns status and body.
    pub async fn get(&self, path: &str, patience: Duration) -> anyhow::Result<(u16, Value)> {
        let until = Instant::now() + patience;
        let mut last = String::new();
        while Instant::now() < until && !self.abort.load(Ordering::Relaxed) {
            match self.request(Method::GET, path).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.text().await {
                        Ok(text) if status < 500 && status != 429 => {
                            let v = serde_json::from_str(&text).unwrap_or(Value::Null);
                            return Ok((status, v));
                        }
                        Ok(text) => last = format!("{status} {text}"),
                        Err(e) => last = short_error(&e),
                    }
                }
                Err(e) => last = short_error(&e),
            }
            tokio::time::sleep(backoff()).await;
        }
        anyhow::bail!("GET {path}: no answer ({last})")
    }

    /// `PUT /v1/skus/{sku}` with its initial stock; returns the units it starts with.
    pub async fn create_sku(
        &self,
        sku: &str,
        price_minor: i64,
        per_customer_limit: Option<u32>,
        stock: i64,
    ) -> anyhow::Result<i64> {
        let body = json!({
            "name": format!("torture {sku}"),
            "price_minor": price_minor,
            "currency": "EUR",
            "per_customer_limit": per_customer_limit,
            "stock": stock,
        });
        let key = format!("setup-{sku}");
        let call = self
            .call(Method::PUT, &format!("/v1/skus/{sku}"), &body, &key)
            .await;
        match call.answer {
            Some(a) if a.status == 201 => Ok(stock),
            Some(a) => anyhow::bail!(
                "creating sku {sku} was answered {} {} (an admin token is needed with --url)",
                a.status,
                a.body
            ),
            None => anyhow::bail!("creating sku {sku}: the server did not answer"),
        }
    }
}

/// 50–200 ms, jittered so retries after a restart do not arrive in one wave.
fn backoff() -> Duration {
    Duration::from_millis(rand::rng().random_range(50..=200))
}

fn short_error(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut s = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    if s.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}
