//! drover's shared core: the domain vocabulary (ids, names, states, manifest, plan,
//! releases), configuration, telemetry, and the three ports — [`broker::Broker`],
//! [`locks::Locks`], [`store::Store`] — with their adapters.
//!
//! Everything that talks to a broker, a lock service or a database lives here,
//! behind those ports, so that the role crates (`scheduler`, `worker`, `api`) stay
//! free of infrastructure.

pub mod backends;
pub mod broker;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod hooks;
pub mod ids;
pub mod locks;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod names;
pub mod outbox;
pub mod plan;
pub mod release;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod trace;
