//! `ordo torture` (SPEC §5): a history checker. This module holds its reference model
//! ([`model`]): the recorded history of a run and the checks over it; the clients and
//! the subcommand come on top of it.

pub mod model;
