//! `drover logs DEPLOYMENT TASK [--follow]`: what a task's step printed, or prints
//! as it runs; on the embedded default or through the API.

use anyhow::anyhow;
use clap::Args;
use shared::config::Config;
use shared::ids::{DeploymentId, TaskId};
use shared::model::TaskState;

use crate::client::Client;
use crate::control::Target;
use crate::{Failure, err, out};

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The deployment's id.
    deployment: String,
    /// The task's id, e.g. `build:toolhunt-api` (`drover status` lists them).
    task: String,
    /// Follow the output until the task ends; the exit code is then 0 if it
    /// succeeded, 1 if not.
    #[arg(short = 'f', long)]
    follow: bool,
}

pub(crate) async fn logs(
    config: &Config,
    remote: Option<&Client>,
    args: LogsArgs,
) -> Result<(), Failure> {
    let id: DeploymentId = args.deployment.parse().map_err(|_| {
        Failure::BadInput(anyhow!(
            "`{}` is not a deployment id (a UUID such as the one `drover deploy` prints)",
            args.deployment
        ))
    })?;
    let task: TaskId = args.task.parse().map_err(|_| {
        Failure::BadInput(anyhow!(
            "`{}` is not a task id: `build:NAME`, `deploy:NAME` or `delete:NAME`",
            args.task
        ))
    })?;
    let target = Target::open(config, remote).await?;
    let ended = target
        .task_log(id, &task, args.follow, &mut |line| {
            out(&format!("{}\n", line.line));
        })
        .await?;
    match ended {
        Some(state) if args.follow && state != TaskState::Succeeded => {
            err(&format!("{task} {state}\n"));
            Err(Failure::DeploymentFailed)
        }
        _ => Ok(()),
    }
}
