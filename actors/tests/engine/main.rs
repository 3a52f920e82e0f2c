//! Engine tests: real actors on real RocksDB in temp dirs. One binary, to keep link time
//! down; one module per topic, the shared helpers in `helpers`.

mod helpers;

mod atomic_commands;
mod batching;
mod crash;
mod lifecycle;
mod mailbox;
mod passivation;
mod placement;
mod recovery;
mod schema;
mod verify;
