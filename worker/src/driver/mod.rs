//! Drivers: the adapters that actually build and deploy (DESIGN.md section 6).
//!
//! A driver turns a claimed task into a [`StepResult`]; it never touches the store,
//! the broker or the locks, which stay the worker's business.

mod exec;
mod noop;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use shared::config::{Config, DriverKind};
use shared::release::Observer;
use shared::store::ClaimedTask;
use tokio_util::sync::CancellationToken;

pub use exec::{EX_TEMPFAIL, ExecDriver};
pub use noop::NoopDriver;
pub use shared::release::StatusError;

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    Succeeded {
        artifact: Option<String>,
    },
    Failed {
        error: String,
        /// Whether trying again may succeed (the worker retries within its budget).
        transient: bool,
    },
}

impl StepOutcome {
    /// A failure that trying again will not mend.
    pub fn failed(error: impl Into<String>) -> Self {
        StepOutcome::Failed {
            error: error.into(),
            transient: false,
        }
    }
}

/// How a step ended, with what it printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    pub outcome: StepOutcome,
    /// The step's output, stdout and stderr interleaved by line (the tail, when long).
    pub log: String,
}

/// Why a driver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the exec driver needs `[driver.exec]` in the config file")]
    MissingExecConfig,
    #[error("failed to create the step directory `{path}`: {source}")]
    StepDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the worker stops a step before it ends; the result then says so.
#[derive(Clone, Debug, Default)]
pub struct StepStop {
    /// Stop gracefully, because the deployment was cancelled: SIGTERM, then SIGKILL
    /// after the grace period.
    pub terminate: CancellationToken,
    /// Stop now: the task's result would be refused, or the worker is aborting.
    pub kill: CancellationToken,
}

/// Something that builds and deploys, and may tell what runs ([`Observer`]).
#[async_trait]
pub trait Driver: Observer + Send + Sync + fmt::Debug {
    /// Runs the step of `task` until it ends or `stop` stops it.
    async fn run(&self, task: &ClaimedTask, stop: StepStop) -> StepResult;
}

/// The driver the configuration names. `guard` is the step guard the exec driver
/// starts steps through (see [`ExecDriver::new`]).
pub fn from_config(
    config: &Config,
    guard: Option<StepGuard>,
) -> Result<Arc<dyn Driver>, DriverError> {
    Ok(match config.driver.kind {
        DriverKind::Exec => Arc::new(ExecDriver::new(config, guard)?),
        DriverKind::Noop => Arc::new(NoopDriver),
    })
}

/// A program that runs a step so that it dies with its worker: invoked as
/// `PROGRAM ARGS… -- STEP STEP_ARGS…`; it must stay in the process group it is
/// started in, die (with the whole group) when its parent dies, and exit with the
/// step's status. `drover step-guard` is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepGuard {
    pub program: PathBuf,
    pub args: Vec<String>,
}
