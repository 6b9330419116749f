//! drover's integration tests: one test binary (one link) with a module per area.
//!
//! Port suites run against the embedded adapters and the real services; CLI tests
//! spawn the real `drover` binary. Every test isolates itself: its own data
//! directory, its own PostgreSQL database.

mod support;

#[macro_use]
mod ports;

mod api;
mod cancel;
mod cli;
#[cfg(feature = "otlp")]
#[allow(dead_code)] // shared with the fault tests, which use other parts
mod collector;
mod doctor;
mod exec;
mod order;
mod ports_amqp;
mod ports_redis;
mod site;
mod store;
