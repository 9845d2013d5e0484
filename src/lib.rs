//! The Vespene autoscaler as a library: the binary in `main.rs` is a thin edge over it, and the
//! integration tests and benchmarks drive the same code.
//!
//! - [`cli`]: the command line contract.
//! - [`config`]: the optional TOML file.
//! - [`db`]: the Vespene database (PostgreSQL or SQLite).
//! - [`planner`]: pure planners (`stock`, `boot-aware`); [`guard`]: the runaway guard.
//! - [`simulate`]: replays a trace of builds through the planners; [`audit`]: read-only fleet audit.
//! - [`engine`]: one evaluation cycle; [`run`]: the loop, signals, exit codes.
//! - Executors live in their own crates under `executors/`.
//!
//! Every public item is documented (`missing_docs` is an error): the integration tests, the
//! benchmarks and the next developer read this crate from the outside, and a name alone does
//! not say why an item exists.

#![deny(missing_docs)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod engine;
pub mod guard;
pub mod lazy;
pub mod logging;
pub mod metrics;
pub mod planner;
pub mod run;
pub mod simulate;
pub mod status;
