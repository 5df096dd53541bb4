//! Portcullis: a security-first API gateway. The module layout follows the request pipeline of
//! `docs/pipeline.md`; see the README for the user's manual.

pub mod activity;
pub mod admin;
pub mod anomaly;
pub mod authn;
pub mod authz;
pub mod body;
pub mod cli;
pub mod client;
pub mod config;
pub mod content;
pub mod events;
pub mod exchange;
pub mod fleet;
pub mod guard;
pub mod inspect;
pub mod json;
pub mod limit;
pub mod observe;
pub mod pipeline;
pub mod proxy;
pub mod respond;
pub mod route;
pub mod scan;
pub mod secret;
pub mod server;
pub mod sqlite;
pub mod store;
pub mod tls;
pub mod tokenize;
pub mod units;
pub mod validate;

/// "Give freed memory back to the operating system now", from the process allocator. Set by the
/// binary, whose global allocator it is (`src/alloc.rs`); the connection sweeper calls it after
/// connections park (`server::conn::Sweeper`). A process-wide fact, like the allocator itself.
pub static RELEASE_FREED_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();
