//! traptor-host: a real-time collector of social-media posts.
//!
//! Posts flow `source → decode → classify → match → (stages) → envelope → sink`
//! in batches over bounded channels (see `docs/ARCHITECTURE.md`). Modules, with
//! dependencies pointing one way (DESIGN §1):
//!
//! * [`config`] — the pipeline file.
//! * [`rules`] — the rule model (pure) and the rule stores.
//! * [`post`] — the normalised post view and source decoders (pure).
//! * [`matcher`] — attribution of posts to rules (pure, no I/O).
//! * [`envelope`] — the output `traptor` object spliced onto original bytes.
//! * [`plugins`] — the WebAssembly stage runtime (wasmtime).
//! * [`pipeline`] — batches, workers, ordering.
//! * [`sources`], [`sinks`] — the edges; [`spool`] — the on-disk record queue
//!   format the Kafka sink and the pipeline buffer share.
//! * [`coordination`] — Redis: heartbeats, rule stats, API-key leases, the rule planner.
//! * [`telemetry`] — logs and counters.
//! * [`app`] — wiring, supervision, reload, shutdown.
//! * [`cli`] — the command line: one file per command group; [`exit`] — exit codes.

pub mod admin;
pub mod app;
pub mod batch;
pub mod cli;
pub mod component;
pub mod config;
pub mod coordination;
pub mod envelope;
pub mod exit;
pub mod jitter;
pub mod key_pool;
pub mod matcher;
pub mod pipeline;
pub mod plugins;
pub mod post;
pub mod preview;
pub mod redis_conn;
pub mod rules;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod spool;
pub mod telemetry;

#[cfg(test)]
mod fuzz;
