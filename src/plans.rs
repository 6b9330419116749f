//! `drover plan --save FILE` and `drover apply FILE`: a plan kept (in the embedded
//! store, or on the server with `--server`) and later deployed exactly, unless what
//! the app runs changed meanwhile.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use api::body::SavedPlanBody;
use clap::Args;
use scheduler::Policies;
use scheduler::planner::PlanOptions;
use shared::config::Config;
use shared::ids::PlanId;
use shared::model::Unknown;
use shared::plan::Plan;

use crate::client::Client;
use crate::deploy::{
    Output, PlanArgs, announce, connect, finish, observe, read_input, submit_failure,
};
use crate::input::{app_name, read_manifest};
use crate::run::Runner;
use crate::{Failure, out, render};

/// `drover plan`'s arguments, with `--save`.
#[derive(Debug, Args)]
pub(crate) struct PlanCommand {
    #[command(flatten)]
    pub(crate) plan: PlanArgs,
    /// Keep the plan and write it to FILE (JSON, with its id and what the app ran
    /// when it was made); `drover apply FILE` deploys exactly it.
    #[arg(long, value_name = "FILE")]
    pub(crate) save: Option<PathBuf>,
}

/// `drover plan --save FILE`.
pub(crate) async fn save(
    config: &Config,
    remote: Option<&Client>,
    args: PlanArgs,
    file: &Path,
) -> Result<(), Failure> {
    let saved = match remote {
        Some(client) => {
            let (app, text, _) = read_input(&args)?;
            client
                .save_plan(&app, text, args.prune, &args.components)
                .await?
        }
        None => {
            let manifest = read_manifest(&args.file)?;
            let app = app_name(args.app.as_deref(), &args.file)?;
            let only = args.selection(&manifest)?;
            let observed = observe(config, &app).await?;
            let options = PlanOptions {
                prune: args.prune,
                observed: observed.as_ref(),
                only: only.as_ref(),
            };
            let (backends, tenant) = connect(config).await?;
            let saved = scheduler::save_plan(
                backends.store.as_ref(),
                tenant,
                &app,
                manifest,
                &options,
                Policies::default(),
            )
            .await
            .map_err(|err| submit_failure(err, "failed to save the plan"))?;
            SavedPlanBody::from(&saved)
        }
    };
    let json = serde_json::to_string_pretty(&saved).context("failed to write the plan")?;
    std::fs::write(file, format!("{json}\n"))
        .with_context(|| format!("failed to write the plan to `{}`", file.display()))?;
    match args.output {
        Output::Text => {
            let plan: Plan = serde_json::from_value(
                serde_json::to_value(&saved.plan).context("failed to read the plan")?,
            )
            .context("failed to read the plan")?;
            out(&render::plan_text(&plan, saved.base_release, false));
            out(&format!(
                "saved plan {} to `{}`: `drover apply {}` deploys exactly it, unless app `{}` changes first\n",
                saved.id,
                file.display(),
                file.display(),
                saved.app
            ));
        }
        Output::Json => out(&format!("{json}\n")),
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The saved plan: the file `drover plan --save` wrote.
    file: PathBuf,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// The id of the saved plan in `file`.
fn plan_id(file: &Path) -> Result<PlanId, Failure> {
    #[derive(serde::Deserialize)]
    struct Saved {
        id: PlanId,
    }
    let bad = |reason: String| {
        Failure::BadInput(anyhow::anyhow!(
            "`{}` is not a saved plan ({reason}): write one with `drover plan --save {}`",
            file.display(),
            file.display()
        ))
    };
    let text = std::fs::read_to_string(file).map_err(|err| bad(err.to_string()))?;
    let saved: Saved = serde_json::from_str(&text).map_err(|err| bad(err.to_string()))?;
    Ok(saved.id)
}

/// `drover apply FILE`: deploys the saved plan (here, or through the API with
/// `--server`), and follows it to its end.
pub(crate) async fn apply(
    config: &Config,
    remote: Option<&Client>,
    args: ApplyArgs,
) -> Result<(), Failure> {
    let id = plan_id(&args.file)?;
    let runner = Runner::open(config, remote, args.output, || {
        Unknown::Plan(id.to_string())
    })
    .await?;
    let started = runner.apply(id).await;
    if let Ok(deployment) = &started {
        announce(
            &runner,
            deployment,
            args.output,
            &format!("applies plan {id}"),
        );
    }
    let deployment = runner.follow(started, false).await?;
    finish(&deployment, args.output)
}
