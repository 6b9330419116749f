//! The noop driver: succeeds at once without doing anything, for dry runs and
//! benchmarks. Its builds "produce" an artifact named after the component's version.

use async_trait::async_trait;
use shared::model::TaskKind;
use shared::store::ClaimedTask;

use shared::release::Observer;

use super::{Driver, StepOutcome, StepResult, StepStop};

/// Does nothing, successfully.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopDriver;

/// The noop driver cannot tell what runs.
impl Observer for NoopDriver {}

#[async_trait]
impl Driver for NoopDriver {
    async fn run(&self, task: &ClaimedTask, _stop: StepStop) -> StepResult {
        let artifact = match task.kind {
            TaskKind::Build => Some(format!(
                "noop://{}/{}@{}",
                task.app,
                task.component,
                task.spec.version().unwrap_or_default()
            )),
            TaskKind::Deploy | TaskKind::Delete => None,
        };
        StepResult {
            outcome: StepOutcome::Succeeded { artifact },
            log: String::new(),
        }
    }
}
