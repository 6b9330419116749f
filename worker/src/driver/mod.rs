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

/// How the worker stops a step before it ends (the result then says so), and
/// hears what it prints meanwhile.
#[derive(Clone, Debug, Default)]
pub struct StepStop {
    /// Stop gracefully, because the deployment was cancelled: SIGTERM, then SIGKILL
    /// after the grace period.
    pub terminate: CancellationToken,
    /// Stop now: the task's result would be refused, or the worker is aborting.
    pub kill: CancellationToken,
    /// Where the step's lines go as it prints them, for its followers.
    pub log: LiveLog,
}

/// The most lines of one step that are shipped live; the result's log keeps the
/// tail of a longer output.
pub const MAX_LIVE_LINES: usize = 10_000;

/// The lines a step printed that were not shipped yet. Cheap to clone: clones
/// share the lines.
#[derive(Clone, Debug, Default)]
pub struct LiveLog(Arc<std::sync::Mutex<LiveLines>>);

#[derive(Debug, Default)]
struct LiveLines {
    pending: Vec<String>,
    /// How many were pushed in all.
    pushed: usize,
}

impl LiveLog {
    /// Notes a line the step printed (past [`MAX_LIVE_LINES`], a marker once).
    pub fn push(&self, line: String) {
        let mut lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.pushed += 1;
        match lines.pushed.cmp(&(MAX_LIVE_LINES + 1)) {
            std::cmp::Ordering::Less => lines.pending.push(line),
            std::cmp::Ordering::Equal => lines.pending.push(format!(
                "[drover: more than {MAX_LIVE_LINES} lines; the rest is in the log kept with the result]"
            )),
            std::cmp::Ordering::Greater => {}
        }
    }

    /// The lines pushed since the last take.
    pub fn take(&self) -> Vec<String> {
        let mut lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut lines.pending)
    }
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
