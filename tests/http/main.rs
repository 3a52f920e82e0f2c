//! `ordo serve` end to end: the real binary on 127.0.0.1 (an ephemeral port), a temp data
//! dir, a real HTTP client. One test binary for all of them (link time, RocksDB); each
//! topic is a module, and `helpers` is the harness they share.
//!
//! Set `TEST_LOG=1` to see the servers' logs.

mod helpers;

mod auth;
mod bench;
mod browsers;
mod crash;
mod feed;
mod idempotency;
mod input;
mod openapi;
mod ops;
mod orders;
mod receivers;
mod skus;
mod standard_webhooks;
mod webhook_targets;
mod webhooks;
