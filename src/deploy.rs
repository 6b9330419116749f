//! `drover plan`, `drover deploy` and `drover migrate` on the embedded default: the
//! scheduler and worker roles run in this process until the deployment ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api::body::{AdoptionBody, ExternalUpdateAnswer};
use clap::{Args, ValueEnum};
use scheduler::planner::{self, PlanOptions};
use scheduler::{Policies, SchedulerOptions, SubmitError};
use shared::backends::{self, Backends, Migrations};
use shared::config::{Config, DriverKind};
use shared::ids::{DeploymentId, TenantId};
use shared::manifest::Manifest;
use shared::model::{ConcurrencyPolicy, DeploymentState, Strategy, Unknown};
use shared::names::{AppName, ComponentName, TenantName};
use shared::release::{CurrentState, ExternalUpdate, Observed};
use shared::store::Deployment;
use shared::store::{Store, TenantStore as _};
use worker::{Shutdown, WorkerOptions};

use crate::client::{Client, Submitted};
use crate::control::Target;
use crate::input::{app_argument, app_name, read_manifest};
use crate::render::{self, DeploymentJson, Progress};
use crate::run::Runner;
use crate::{Failure, err, out};

/// The tenant the embedded default deploys as.
const EMBEDDED_TENANT: &str = "default";
/// How long a failed deployment's automatic rollback is waited for.
const AUTO_ROLLBACK_WAIT: Duration = Duration::from_secs(30);
/// How often the deployment is re-read while waiting, in case progress events were lost.
const POLL_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The manifest (YAML).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The app's name; default: the manifest file's stem.
    #[arg(long)]
    pub(crate) app: Option<String>,
    /// Delete components that are deployed but no longer in the manifest.
    #[arg(long)]
    pub(crate) prune: bool,
    /// Deploy this component only (repeat for more); the others keep what they run.
    #[arg(long = "component", value_name = "NAME")]
    pub(crate) components: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

impl PlanArgs {
    /// The components `--component` names, checked against the manifest; `None`
    /// for a whole deployment.
    pub(crate) fn selection(
        &self,
        manifest: &Manifest,
    ) -> Result<Option<BTreeSet<ComponentName>>, Failure> {
        if self.components.is_empty() {
            return Ok(None);
        }
        manifest
            .select(self.components.iter().map(String::as_str))
            .map(Some)
            .map_err(|err| Failure::BadInput(anyhow::anyhow!("--component: {err}")))
    }
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Print the plan and change nothing.
    #[arg(long)]
    only_plan: bool,
    /// `queue` (wait for older deployments' deploys of a component, and for its lock)
    /// or `cancel-in-progress` (cancel
    /// older deployments still working on a component this one touches); it
    /// becomes the app's policy. Default: the app's policy, at first `queue`.
    #[arg(long, value_name = "POLICY")]
    concurrency: Option<ConcurrencyPolicy>,
    /// `rolling`, `recreate`, `blue-green` or `canary`: how the deploys roll out
    /// (the driver gets each phase in DROVER_PHASE); it becomes the app's
    /// strategy. Default: the app's, at first `rolling`.
    #[arg(long)]
    strategy: Option<Strategy>,
    /// Should it fail, deploy the release it started from again, automatically.
    #[arg(long)]
    auto_rollback: bool,
}

/// A submission's failure: what it names that does not exist, or what it refuses
/// (a stale plan), is bad input; the rest is `context`.
pub(crate) fn submit_failure(err: SubmitError, context: &'static str) -> Failure {
    match err {
        SubmitError::Unknown(missing) => unknown(missing),
        refused @ SubmitError::PlanStale { .. } => Failure::BadInput(refused.into()),
        err => anyhow::Error::new(err).context(context).into(),
    }
}

/// Something the command names does not exist: bad input.
pub(crate) fn unknown(missing: Unknown) -> Failure {
    Failure::BadInput(missing.into())
}

fn embedded_tenant() -> Result<TenantName, Failure> {
    Ok(TenantName::new(EMBEDDED_TENANT).context("invalid tenant name")?)
}

/// The store and the embedded tenant, for commands that only read: `None` when
/// nothing was ever deployed here (no database file, or no tenant yet), so that
/// reading creates nothing.
pub(crate) async fn existing_store(
    config: &Config,
) -> Result<Option<(Arc<dyn Store>, TenantId)>, Failure> {
    if config.database_url.is_none() && !config.embedded_database().exists() {
        return Ok(None);
    }
    let store = backends::connect_store(config, Migrations::Require)
        .await
        .context("failed to open the database")?;
    let tenant = store
        .tenant(&embedded_tenant()?)
        .await
        .context("failed to read the tenant")?;
    Ok(tenant.map(|tenant| (Arc::new(store) as Arc<dyn Store>, tenant)))
}

pub(crate) async fn connect(config: &Config) -> Result<(Backends, TenantId), Failure> {
    let backends = backends::connect(config)
        .await
        .context("failed to connect the backends")?;
    let tenant = backends
        .store
        .ensure_tenant(&embedded_tenant()?)
        .await
        .context("failed to read the tenant")?;
    Ok((backends, tenant))
}

/// What the app runs now, without creating anything (not even the embedded
/// database) when nothing was ever deployed.
async fn current_state(config: &Config, app: &AppName) -> Result<CurrentState, Failure> {
    let Some((store, tenant)) = existing_store(config).await? else {
        return Ok(CurrentState::default());
    };
    Ok(store
        .current_state(tenant, app)
        .await
        .context("failed to read what runs")?)
}

fn print_plan(
    plan: &shared::plan::Plan,
    current: &CurrentState,
    output: Output,
) -> Result<(), Failure> {
    match output {
        Output::Text => out(&render::plan_text(
            plan,
            current.release,
            current.changed_since_release,
        )),
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(plan).context("failed to print the plan")?
        )),
    }
    Ok(())
}

/// What the driver's status step reports the app runs, when the driver has one.
pub(crate) async fn observe(config: &Config, app: &AppName) -> Result<Option<Observed>, Failure> {
    let driver =
        worker::driver::from_config(config, None).map_err(|err| Failure::BadInput(err.into()))?;
    driver.status(app).await.map_err(|err| {
        Failure::Error(anyhow::Error::new(err).context("failed to ask the driver what runs"))
    })
}

/// `drover plan`: the plan against what the app runs (here, or as the API computes
/// it with `--server`); nothing is written.
pub(crate) async fn plan(
    config: &Config,
    remote: Option<&Client>,
    args: PlanArgs,
) -> Result<(), Failure> {
    let (app, text, manifest) = read_input(&args)?;
    let (plan, current) = match remote {
        Some(client) => {
            let planned = client
                .submit(
                    &app,
                    text,
                    true,
                    args.prune,
                    &args.components,
                    Policies::default(),
                )
                .await?;
            match planned {
                // The API's plan names no base: what it ran against is its own.
                Submitted::Plan(plan) => (plan, CurrentState::default()),
                Submitted::Deployment(_) => {
                    return Err(anyhow::anyhow!(
                        "the API started a deployment instead of planning"
                    )
                    .into());
                }
            }
        }
        None => {
            let current = current_state(config, &app).await?;
            let observed = match current.components() {
                Some(_) => observe(config, &app).await?,
                None => None,
            };
            let only = args.selection(&manifest)?;
            let options = PlanOptions {
                prune: args.prune,
                observed: observed.as_ref(),
                only: only.as_ref(),
            };
            let plan = planner::plan(&app, &manifest, current.components(), &options);
            (plan, current)
        }
    };
    print_plan(&plan, &current, args.output)
}

/// The app name, the manifest text and the manifest, validated here first so that
/// mistakes are reported with the file's name before anything is sent.
pub(crate) fn read_input(args: &PlanArgs) -> Result<(AppName, String, Manifest), Failure> {
    let manifest = read_manifest(&args.file)?;
    args.selection(&manifest)?;
    let app = app_name(args.app.as_deref(), &args.file)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("failed to read manifest `{}`", args.file.display()))?;
    Ok((app, text, manifest))
}

/// Like [`Embedded::watch_auto_rollback`], through the API.
pub(crate) async fn follow_auto_rollback_remote(
    client: &Client,
    failed: &Deployment,
    output: Output,
) {
    let say = say(output == Output::Text);
    let read = || async {
        client
            .deployment(failed.id)
            .await
            .map_err(|err| err.to_string())
    };
    let Some(rollback) = automatic_rollback(failed, &say, read).await else {
        return;
    };
    let followed = match client.deployment(rollback).await {
        Ok(started) => follow_remote(client, started, output).await,
        Err(err) => Err(err),
    };
    match followed {
        Ok(done) => say(&render::summary(&done)),
        Err(_) => say(&format!("the rollback {rollback} did not finish here")),
    }
}

/// Follows a deployment through the API until it ends, printing its progress.
pub(crate) async fn follow_remote(
    client: &Client,
    deployment: Deployment,
    output: Output,
) -> Result<Deployment, Failure> {
    let to_stdout = output == Output::Text;
    let say = say(to_stdout);
    let mut progress = Progress::new(to_stdout);
    client
        .follow(deployment, &mut |deployment| {
            for line in progress.update(deployment) {
                say(&line);
            }
        })
        .await
}

/// Prints a line of progress: on stdout with text output, on stderr when stdout
/// carries JSON.
pub(crate) fn say(to_stdout: bool) -> impl Fn(&str) {
    move |line: &str| {
        let line = format!("{line}\n");
        if to_stdout { out(&line) } else { err(&line) }
    }
}

/// Prints the finished deployment; its state decides the exit code.
pub(crate) fn finish(deployment: &Deployment, output: Output) -> Result<(), Failure> {
    match output {
        Output::Text => out(&render::summary(deployment)),
        Output::Json => {
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&DeploymentJson::new(deployment))
                    .context("failed to print the deployment")?
            ));
            if deployment.state != DeploymentState::Succeeded {
                err(&render::summary(deployment));
            }
        }
    }
    match deployment.state {
        DeploymentState::Succeeded => Ok(()),
        _ => Err(Failure::DeploymentFailed),
    }
}

/// `drover deploy`: plans and runs the deployment (here, with the scheduler and
/// worker roles in this process, or through the API with `--server`), showing its
/// progress until it ends.
pub(crate) async fn deploy(
    config: &Config,
    remote: Option<&Client>,
    args: DeployArgs,
) -> Result<(), Failure> {
    if args.only_plan {
        return plan(config, remote, args.plan).await;
    }
    let DeployArgs {
        plan: args,
        concurrency,
        strategy,
        auto_rollback,
        ..
    } = args;
    let (app, text, manifest) = read_input(&args)?;
    let policies = Policies {
        concurrency,
        strategy,
        auto_rollback,
    };
    let runner = Runner::start(config, remote, args.output).await?;
    let started = runner.submit(&app, manifest, text, &args, policies).await;
    if let Ok(deployment) = &started {
        if args.output == Output::Text {
            out(&render::plan_text(
                &deployment.plan,
                deployment.base_release,
                false,
            ));
        }
        if !deployment.plan.is_empty() {
            runner.say(&format!(
                "deployment {} of app `{app}`: {} tasks",
                deployment.id,
                deployment.plan.tasks.len()
            ));
        }
    }
    let deployment = runner.follow(started, auto_rollback).await?;
    finish(&deployment, args.output)
}

/// The scheduler and worker roles running in this process, for as long as one
/// deployment runs.
pub(crate) struct Embedded {
    pub(crate) backends: Backends,
    pub(crate) tenant: TenantId,
    to_stdout: bool,
    pub(crate) say: Box<dyn Fn(&str) + Send + Sync>,
    events: Box<dyn shared::broker::EventStream>,
    shutdown: Shutdown,
    scheduler: tokio::task::JoinHandle<Result<(), scheduler::SchedulerError>>,
    worker: tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
}

impl Embedded {
    /// The deployment, as the store has it now.
    pub(crate) async fn deployment(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        self.backends
            .store
            .deployment(self.tenant, id)
            .await
            .context("failed to read the deployment")?
            .ok_or_else(|| unknown(Unknown::Deployment(id.to_string())))
    }

    /// Connects the backends and starts the roles. Progress goes to stdout with
    /// text output, to stderr when stdout carries JSON.
    pub(crate) async fn start(config: &Config, output: Output) -> Result<Embedded, Failure> {
        let driver = worker::driver::from_config(config, crate::guard::step_guard())
            .map_err(|err| Failure::BadInput(err.into()))?;
        let (backends, tenant) = connect(config).await?;
        let to_stdout = output == Output::Text;
        let say = say(to_stdout);
        if config.driver.kind == DriverKind::Noop {
            say(
                "note: no driver is configured, so the noop driver runs (nothing is built or deployed); set `[driver]` in the config file",
            );
        }
        let events = backends
            .broker
            .subscribe_events()
            .await
            .context("failed to subscribe to progress events")?;
        let shutdown = Shutdown::default();
        let scheduler = tokio::spawn(scheduler::run(
            SchedulerOptions::for_workers(&config.worker).retaining(config.store.retain),
            backends.clone(),
            shutdown.drain.clone(),
        ));
        let worker = tokio::spawn(worker::run(
            WorkerOptions::new(&config.worker),
            backends.clone(),
            driver,
            shutdown.clone(),
        ));
        Ok(Embedded {
            backends,
            tenant,
            to_stdout,
            say: Box::new(say),
            events,
            shutdown,
            scheduler,
            worker,
        })
    }

    /// Stops the roles (a role that already ended is not waited for again).
    pub(crate) async fn stop(self) {
        self.shutdown.drain.cancel();
        if !self.scheduler.is_finished() {
            let _ = self.scheduler.await;
        }
        if !self.worker.is_finished() {
            let _ = self.worker.await;
        }
    }

    /// Shows the deployment's progress until it ends, then stops the roles.
    pub(crate) async fn follow(mut self, id: DeploymentId) -> Result<Deployment, Failure> {
        let outcome = self.watch(id).await;
        self.stop().await;
        outcome
    }

    /// Like [`Embedded::follow`]; when the deployment failed, also follows the
    /// automatic rollback the scheduler answers it with.
    pub(crate) async fn follow_with_auto_rollback(
        mut self,
        id: DeploymentId,
    ) -> Result<Deployment, Failure> {
        let outcome = self.watch(id).await;
        if let Ok(failed) = &outcome
            && failed.state == DeploymentState::Failed
        {
            self.watch_auto_rollback(failed).await;
        }
        self.stop().await;
        outcome
    }

    /// Waits for the automatic rollback of `failed` and shows it to its end.
    async fn watch_auto_rollback(&mut self, failed: &Deployment) {
        let (store, tenant) = (self.backends.store.clone(), self.tenant);
        let read = || {
            let store = store.clone();
            async move {
                store
                    .deployment(tenant, failed.id)
                    .await
                    .map_err(|err| err.to_string())?
                    .ok_or_else(|| format!("deployment {} disappeared", failed.id))
            }
        };
        let Some(rollback) = automatic_rollback(failed, &self.say, read).await else {
            return;
        };
        match self.watch(rollback).await {
            Ok(done) => (self.say)(&render::summary(&done)),
            Err(_) => (self.say)(&format!("the rollback {rollback} did not finish here")),
        }
    }

    /// Shows the deployment's progress until it ends.
    async fn watch(&mut self, id: DeploymentId) -> Result<Deployment, Failure> {
        let mut progress = Progress::new(self.to_stdout);
        let outcome = loop {
            if let Some(deployment) = finished(&self.backends, self.tenant, id).await? {
                break Ok(deployment);
            }
            tokio::select! {
                event = self.events.next() => {
                    let Some(event) = event else {
                        // No more events: the store alone tells when it is over.
                        tokio::time::sleep(POLL_EVERY).await;
                        continue;
                    };
                    if event.deployment() != id {
                        continue;
                    }
                    if progress.is_live() {
                        // The checklist shows the whole deployment: read it.
                        if let Ok(Some(deployment)) = self.backends.store.deployment(self.tenant, id).await {
                            progress.update(&deployment);
                        }
                    } else if let Some(line) = progress.line(&event) {
                        (self.say)(&line);
                    }
                }
                () = tokio::time::sleep(POLL_EVERY) => {}
                result = &mut self.scheduler => break Err(role_failure("scheduler", result)),
                result = &mut self.worker => break Err(role_failure("worker", result)),
                _ = tokio::signal::ctrl_c() => {
                    // Stop now: running steps are killed, their tasks stay leased.
                    self.shutdown.abort.cancel();
                    break Err(Failure::Error(anyhow::anyhow!(
                        "interrupted: deployment {id} is unfinished; its tasks resume the next time drover runs"
                    )));
                }
            }
        };
        let deployment = outcome?;
        for line in progress.update(&deployment) {
            (self.say)(&line);
        }
        Ok(deployment)
    }
}

/// Waits, up to [`AUTO_ROLLBACK_WAIT`], until a scheduler answers the failed
/// deployment (read again with `read`) with its automatic rollback; says what it
/// found.
async fn automatic_rollback<F, Fut>(
    failed: &Deployment,
    say: &dyn Fn(&str),
    mut read: F,
) -> Option<DeploymentId>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Deployment, String>>,
{
    let Some(version) = failed.base_release else {
        say("no earlier release to roll back to");
        return None;
    };
    let asked = tokio::time::Instant::now();
    loop {
        match read().await {
            Ok(Deployment {
                rolled_back_by: Some(rollback),
                ..
            }) => {
                say(&format!(
                    "rolling back to release {version} automatically: deployment {rollback}"
                ));
                return Some(rollback);
            }
            Ok(_) if asked.elapsed() < AUTO_ROLLBACK_WAIT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(_) => {
                say(&format!(
                    "no automatic rollback started within {}s; `drover status {}` names it once a scheduler starts it",
                    AUTO_ROLLBACK_WAIT.as_secs(),
                    failed.id
                ));
                return None;
            }
            Err(err) => {
                say(&format!("failed to look for the automatic rollback: {err}"));
                return None;
            }
        }
    }
}

/// The deployment, once it has finished (events only tell when to look).
async fn finished(
    backends: &Backends,
    tenant: TenantId,
    id: DeploymentId,
) -> Result<Option<Deployment>, Failure> {
    let deployment = backends
        .store
        .deployment(tenant, id)
        .await
        .context("failed to read the deployment")?
        .with_context(|| format!("deployment {id} disappeared from the store"))?;
    Ok(deployment.state.is_terminal().then_some(deployment))
}

fn role_failure<E: std::error::Error + Send + Sync + 'static>(
    role: &str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> Failure {
    Failure::Error(match result {
        Ok(Ok(())) => anyhow::anyhow!("the {role} stopped unexpectedly"),
        Ok(Err(err)) => anyhow::Error::new(err).context(format!("the {role} failed")),
        Err(err) => anyhow::Error::new(err).context(format!("the {role} crashed")),
    })
}

/// `drover migrate`: applies the database migrations.
pub(crate) async fn migrate(config: &Config) -> Result<(), Failure> {
    backends::connect_store(config, Migrations::Apply)
        .await
        .context("failed to migrate the database")?;
    out("database migrated\n");
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The deployment's id.
    deployment: String,
    /// Follow it until it ends, printing each step (through the API: its live
    /// events); the exit code is then the deployment's, as for `deploy`.
    #[arg(long)]
    follow: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn deployment_id(text: &str) -> Result<DeploymentId, Failure> {
    text.parse().map_err(|_| {
        Failure::BadInput(anyhow::anyhow!(
            "`{text}` is not a deployment id (a UUID such as the one `drover deploy` prints)"
        ))
    })
}

/// `drover status`: a deployment's tasks and why those not running wait.
pub(crate) async fn status(
    config: &Config,
    remote: Option<&Client>,
    args: StatusArgs,
) -> Result<(), Failure> {
    let id = deployment_id(&args.deployment)?;
    let target = Target::open(config, remote).await?;
    let deployment = target.deployment(id).await?;
    if !args.follow {
        return print_status(&deployment, args.output);
    }
    let to_stdout = args.output == Output::Text;
    let (say, mut progress) = (say(to_stdout), Progress::new(to_stdout));
    let deployment = target
        .follow(deployment, &mut |deployment| {
            for line in progress.update(deployment) {
                say(&line);
            }
        })
        .await?;
    finish(&deployment, args.output)
}

fn print_status(deployment: &Deployment, output: Output) -> Result<(), Failure> {
    print_deployment(deployment, output, render::status)
}

/// Prints a deployment: `text` for people, or its JSON.
fn print_deployment(
    deployment: &Deployment,
    output: Output,
    text: fn(&Deployment) -> String,
) -> Result<(), Failure> {
    match output {
        Output::Text => out(&text(deployment)),
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&DeploymentJson::new(deployment))
                .context("failed to print the deployment")?
        )),
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The deployment's id.
    deployment: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `drover cancel`: stops a deployment. Its tasks that have not started are
/// cancelled at once; its running steps are stopped by their workers.
pub(crate) async fn cancel(
    config: &Config,
    remote: Option<&Client>,
    args: CancelArgs,
) -> Result<(), Failure> {
    let id = deployment_id(&args.deployment)?;
    let deployment = Target::open(config, remote).await?.cancel(id).await?;
    print_cancelled(&deployment, args.output)
}

fn print_cancelled(deployment: &Deployment, output: Output) -> Result<(), Failure> {
    print_deployment(deployment, output, render::cancelled)
}

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// The failed deployment's id.
    deployment: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `drover retry`: runs a failed deployment's failed and skipped tasks again (here,
/// or through the API with `--server`) and follows it to its end.
pub(crate) async fn retry(
    config: &Config,
    remote: Option<&Client>,
    args: RetryArgs,
) -> Result<(), Failure> {
    let id = deployment_id(&args.deployment)?;
    let runner = Runner::open(config, remote, args.output, || {
        Unknown::Deployment(id.to_string())
    })
    .await?;
    let started = runner.retry(id).await;
    if let Ok(deployment) = &started {
        let again: Vec<&str> = deployment
            .tasks
            .iter()
            .filter(|task| !task.state.is_terminal())
            .map(|task| task.id.as_str())
            .collect();
        runner.say(&format!(
            "retrying {} tasks of deployment {id}: {}",
            again.len(),
            again.join(", ")
        ));
    }
    let deployment = runner.follow(started, false).await?;
    finish(&deployment, args.output)
}

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The app's name.
    app: String,
    /// The release to go back to.
    #[arg(long = "to", value_name = "VERSION")]
    to: u32,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `drover rollback`: deploys release N again, whole and without building (here,
/// or through the API with `--server`), and follows it to its end.
pub(crate) async fn rollback(
    config: &Config,
    remote: Option<&Client>,
    args: RollbackArgs,
) -> Result<(), Failure> {
    let app = app_argument(&args.app)?;
    let runner = Runner::open(config, remote, args.output, || Unknown::Release {
        app: app.to_string(),
        version: args.to.to_string(),
    })
    .await?;
    let started = runner.rollback(&app, args.to).await;
    if let Ok(deployment) = &started {
        announce(
            &runner,
            deployment,
            args.output,
            &format!("rolls app `{app}` back to release {}", args.to),
        );
    }
    let deployment = runner.follow(started, false).await?;
    finish(&deployment, args.output)
}

/// Prints a started deployment's plan (with text output) and what it does.
pub(crate) fn announce(runner: &Runner<'_>, deployment: &Deployment, output: Output, what: &str) {
    if output == Output::Text {
        out(&render::plan_text(
            &deployment.plan,
            deployment.base_release,
            false,
        ));
    }
    runner.say(&format!(
        "deployment {} {what}: {} tasks",
        deployment.id,
        deployment.plan.tasks.len()
    ));
}

#[derive(Debug, Args)]
pub(crate) struct ExternalUpdateArgs {
    /// The app's name.
    app: String,
    /// The component that has a new artifact.
    component: String,
    /// The new artifact, e.g. `registry.example/api@sha256:…`.
    #[arg(long)]
    artifact: String,
    /// Its version, e.g. `1.4.2` (the release records it; default: the artifact).
    #[arg(long)]
    version: Option<String>,
    /// The commit it was built from.
    #[arg(long)]
    sha: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl ExternalUpdateArgs {
    fn update(&self) -> Result<(AppName, ExternalUpdate), Failure> {
        let app = app_argument(&self.app)?;
        let component = ComponentName::new(&self.component).map_err(|err| {
            Failure::BadInput(anyhow::anyhow!(
                "invalid component name `{}`: {err}",
                self.component
            ))
        })?;
        let update = ExternalUpdate::new(
            component,
            self.artifact.clone(),
            self.version.clone(),
            self.sha.clone(),
        )
        .map_err(|err| Failure::BadInput(err.into()))?;
        Ok((app, update))
    }
}

/// `drover external-update`: records a component's new artifact as a release, or,
/// when the component opted in with `on-update: {deploy: true}`, deploys it (here,
/// or through the API with `--server`) and follows the deployment to its end.
pub(crate) async fn external_update(
    config: &Config,
    remote: Option<&Client>,
    args: ExternalUpdateArgs,
) -> Result<(), Failure> {
    let (app, update) = args.update()?;
    let runner = Runner::open(config, remote, args.output, || {
        Unknown::App(app.to_string())
    })
    .await?;
    match runner.external_update(&app, update).await {
        Ok((answer, None)) => {
            runner.stop().await;
            print_external_update(answer, args.output)
        }
        Ok((answer, Some(deployment))) => {
            runner.say(&format!(
                "recorded; deployment {} deploys it: {} tasks",
                deployment.id,
                deployment.plan.tasks.len()
            ));
            let deployment = runner.follow(Ok(deployment), false).await?;
            finish_external_update(&deployment, answer.duplicate, args.output)
        }
        Err(err) => runner.follow(Err(err), false).await.map(drop),
    }
}

fn print_external_update(answer: ExternalUpdateAnswer, output: Output) -> Result<(), Failure> {
    match output {
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&answer).context("failed to print the answer")?
        )),
        Output::Text => {
            let again = if answer.duplicate {
                " (the same update was sent before)"
            } else {
                ""
            };
            match (answer.release, &answer.deployment) {
                (Some(release), _) => {
                    out(&format!("{}: release {release}{again}\n", answer.message))
                }
                (None, _) => out(&format!("{}{again}\n", answer.message)),
            }
        }
    }
    Ok(())
}

/// Prints the deployment of an external update once it ended; its state decides
/// the exit code.
fn finish_external_update(
    deployment: &Deployment,
    duplicate: bool,
    output: Output,
) -> Result<(), Failure> {
    let deployed = deployment.state == DeploymentState::Succeeded;
    print_external_update(
        ExternalUpdateAnswer {
            message: if deployed {
                "recorded, deployed"
            } else {
                "recorded, not deployed: its deployment did not succeed"
            }
            .to_owned(),
            release: deployment.release,
            deployment: Some(api::body::DeploymentBody::from(deployment)),
            duplicate,
        },
        output,
    )?;
    if output == Output::Text {
        out(&render::summary(deployment));
    }
    if deployed {
        Ok(())
    } else {
        Err(Failure::DeploymentFailed)
    }
}

#[derive(Debug, Args)]
pub(crate) struct AdoptArgs {
    /// The app's name.
    app: String,
    /// The manifest that describes what runs (YAML).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `drover adopt`: records what the driver reports running as the app's release 1,
/// deploying nothing. Again, it records nothing and shows release 1.
pub(crate) async fn adopt(
    config: &Config,
    remote: Option<&Client>,
    args: AdoptArgs,
) -> Result<(), Failure> {
    let manifest = read_manifest(&args.file)?;
    let app = app_argument(&args.app)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("failed to read manifest `{}`", args.file.display()))?;
    let adoption = Target::open(config, remote)
        .await?
        .adopt(&app, &manifest, &text)
        .await?;
    print_adoption(&app, &adoption, args.output)
}

fn print_adoption(app: &AppName, adoption: &AdoptionBody, output: Output) -> Result<(), Failure> {
    let components = adoption.release.components.len();
    match output {
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(adoption).context("failed to print the release")?
        )),
        Output::Text if adoption.existing => out(&format!(
            "app `{app}` has releases already; nothing recorded (release 1 has {components} components)\n"
        )),
        Output::Text => out(&format!(
            "adopted app `{app}` as release 1: {components} components, nothing deployed\n"
        )),
    }
    Ok(())
}
