//! drover's shared core: the domain vocabulary (ids, names, states, manifest, plan,
//! releases), configuration, telemetry, and the three ports — [`broker::Broker`],
//! [`locks::Locks`], [`store::Store`] — with their adapters.
//!
//! Everything that talks to RabbitMQ, Redis or a database lives here, behind
//! those ports, so that the role crates (`scheduler`, `worker`, `api`) stay
//! free of infrastructure.

pub mod ids;
pub mod manifest;
pub mod model;
pub mod names;
pub mod plan;
pub mod release;
