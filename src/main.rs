//! The `drover` command line: parses arguments, loads the configuration, installs
//! telemetry and calls into the library crates.
//!
//! Exit codes: 0 ok, 1 the deployment failed (or drover itself could not finish),
//! 2 bad input (manifest, config, arguments).

mod apps;
mod client;
mod control;
mod deploy;
mod doctor;
mod guard;
mod hook;
mod input;
mod logs;
mod plans;
mod releases;
mod render;
mod run;
mod serve;
mod tenant;
mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use shared::config::Config;
use shared::telemetry::{self, LogFormat};

use crate::serve::{Role, ServeArgs};

/// drover: plans deployments of multi-component apps as DAGs of build and deploy
/// tasks, and runs them.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about)]
struct Cli {
    /// The config file (TOML); also `DROVER_CONFIG`.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the embedded default keeps its state; also `DROVER_DATA_DIR`. Default `./.drover`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A drover API to talk to instead of running on the embedded default (every
    /// command but `migrate`, `tenant` and the roles); also `DROVER_SERVER`.
    #[arg(long, global = true, env = "DROVER_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The API token (with `--server`); also `DROVER_TOKEN`.
    #[arg(
        long,
        global = true,
        env = "DROVER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Log format on stderr (the level comes from `DROVER_LOG`, default `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Auto)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the plan for a manifest without changing anything (with `--save`,
    /// keep it to apply later).
    Plan(plans::PlanCommand),
    /// Print what a task's step printed; with `--follow`, as it runs.
    Logs(logs::LogsArgs),
    /// Deploy a plan saved with `drover plan --save`, exactly, unless the app
    /// changed since it was made.
    Apply(plans::ApplyArgs),
    /// Plan a manifest and run the deployment on the embedded default.
    Deploy(deploy::DeployArgs),
    /// Show a deployment: what each task does, or why it waits.
    Status(deploy::StatusArgs),
    /// Stop a deployment: pending tasks are cancelled, running steps get SIGTERM.
    Cancel(deploy::CancelArgs),
    /// Record what already runs as an app's release 1, deploying nothing.
    Adopt(deploy::AdoptArgs),
    /// Record a component's new artifact, announced from outside, as a release (and
    /// deploy it when the component declares `on-update: {deploy: true}`).
    ExternalUpdate(deploy::ExternalUpdateArgs),
    /// Deploy an earlier release again, whole and without building.
    Rollback(deploy::RollbackArgs),
    /// Run a failed deployment's failed and skipped tasks again.
    Retry(deploy::RetryArgs),
    /// List the apps, by name: each one's active release and policies.
    Apps(apps::AppsArgs),
    /// Show an app: its active release, its policies and what it runs.
    App(apps::AppArgs),
    /// List deployments, newest first, of one app, in one state or since a time.
    Deployments(apps::DeploymentsArgs),
    /// List an app's releases, newest first.
    Releases(releases::ReleasesArgs),
    /// Show one release of an app: every component's version and artifact.
    Release(releases::ReleaseArgs),
    /// Apply the database migrations.
    Migrate,
    /// Check this configuration against its services: the database (reachable,
    /// migrated), RabbitMQ (its queues and their depths), Redis, the driver's
    /// programs; print what is wrong and how to fix it (exit 1 when anything is).
    Doctor,
    /// Run several roles (default: all of them) in this process.
    Serve(serve::ServeArgs),
    /// Run the HTTP API.
    Api(serve::RoleOptions),
    /// Run the scheduler: the outbox relay and the lease reaper.
    Scheduler(serve::SchedulerArgs),
    /// Run a worker.
    Worker(serve::RoleOptions),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Manage the tenant's API tokens (with `--server`, an `admin` token).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Manage an app's webhooks: GitHub pushes, registry image pushes.
    #[command(subcommand)]
    Hook(hook::HookCommand),
    /// Show who did what through the API, and when, newest first (an `admin` token).
    Audit(token::AuditArgs),
    /// Print shell completions, e.g. `drover completions bash > /etc/bash_completion.d/drover`.
    Completions {
        /// `bash`, `zsh`, `fish`, `elvish` or `powershell`.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Auto,
    Text,
    Json,
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
enum Failure {
    /// Bad input: exit 2.
    BadInput(anyhow::Error),
    /// The deployment failed; already reported: exit 1.
    DeploymentFailed,
    /// drover could not do its job: exit 1.
    Error(anyhow::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::BadInput(err) | Failure::Error(err) => write!(f, "{err:#}"),
            Failure::DeploymentFailed => f.write_str("the deployment failed"),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Error(err)
    }
}

/// Writes to stdout. A closed pipe (`drover plan | head`) is not worth a panic.
fn out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Writes to stderr, ignoring a closed pipe like [`out`].
fn err(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The hidden subcommand that runs a step under a guard (see `guard`).
pub(crate) const STEP_GUARD: &str = "step-guard";

fn main() -> ExitCode {
    // The step guard runs before anything else: no runtime, no config, no logging.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|arg| arg == STEP_GUARD)
        && argv.get(2).is_some_and(|arg| arg == "--")
    {
        return guard::run(&argv[3..]);
    }
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        // Needs no config, runtime or logging.
        // Into memory first: `generate` panics on a closed stdout (`| head`).
        let mut script = Vec::new();
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "drover", &mut script);
        out(&String::from_utf8_lossy(&script));
        return ExitCode::SUCCESS;
    }
    // `doctor` reports what it finds itself: the refusals of its passive
    // declarations, which lapin logs as errors, are findings, not faults.
    let default_filter = match cli.command {
        Command::Doctor => "warn,lapin=off",
        _ => "warn",
    };
    // Declared before the runtime, so dropped after it: the spans its tasks ended
    // are exported before the process exits.
    let _telemetry = match telemetry::init(
        match cli.log_format {
            LogFormatArg::Auto => LogFormat::Auto,
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        },
        default_filter,
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            err(&format!("error: {error}\n"));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            err(&format!(
                "error: failed to start the async runtime: {error}\n"
            ));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::DeploymentFailed) => ExitCode::from(1),
        Err(Failure::BadInput(error)) => {
            err(&format!("error: {error:#}\n"));
            ExitCode::from(2)
        }
        Err(Failure::Error(error)) => {
            err(&format!("error: {error:#}\n"));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config =
        Config::load(cli.config.as_deref(), &env).map_err(|err| Failure::BadInput(err.into()))?;
    if let Some(data_dir) = cli.data_dir {
        config.data_dir = data_dir;
    }
    let remote = match &cli.server {
        Some(server) => Some(client::Client::new(server, cli.token.as_deref())?),
        None => None,
    };
    match cli.command {
        Command::Plan(plans::PlanCommand {
            plan,
            save: Some(file),
        }) => plans::save(&config, remote.as_ref(), plan, &file).await,
        Command::Plan(plans::PlanCommand { plan, save: None }) => {
            deploy::plan(&config, remote.as_ref(), plan).await
        }
        Command::Apply(args) => plans::apply(&config, remote.as_ref(), args).await,
        Command::Deploy(args) => deploy::deploy(&config, remote.as_ref(), args).await,
        Command::Status(args) => deploy::status(&config, remote.as_ref(), args).await,
        Command::Cancel(args) => deploy::cancel(&config, remote.as_ref(), args).await,
        Command::Adopt(args) => deploy::adopt(&config, remote.as_ref(), args).await,
        Command::ExternalUpdate(args) => {
            deploy::external_update(&config, remote.as_ref(), args).await
        }
        Command::Rollback(args) => deploy::rollback(&config, remote.as_ref(), args).await,
        Command::Retry(args) => deploy::retry(&config, remote.as_ref(), args).await,
        Command::Logs(args) => logs::logs(&config, remote.as_ref(), args).await,
        Command::Apps(args) => apps::list(&config, remote.as_ref(), args).await,
        Command::App(args) => apps::show(&config, remote.as_ref(), args).await,
        Command::Deployments(args) => apps::deployments(&config, remote.as_ref(), args).await,
        Command::Releases(args) => releases::list(&config, remote.as_ref(), args).await,
        Command::Release(args) => releases::show(&config, remote.as_ref(), args).await,
        Command::Migrate => deploy::migrate(&config).await,
        Command::Doctor => doctor::doctor(&config).await,
        Command::Serve(args) => serve::serve(&config, args).await,
        Command::Api(options) => serve::serve(&config, ServeArgs::only(Role::Api, options)).await,
        Command::Scheduler(args) => {
            serve::serve(&config, ServeArgs::only(Role::Scheduler, args.into())).await
        }
        Command::Worker(options) => {
            serve::serve(&config, ServeArgs::only(Role::Worker, options)).await
        }
        Command::Tenant(command) => tenant::run(&config, command).await,
        Command::Token(command) => token::run(&config, remote.as_ref(), command).await,
        Command::Hook(command) => hook::run(&config, remote.as_ref(), command).await,
        Command::Audit(args) => token::audit(&config, remote.as_ref(), args).await,
        Command::Completions { .. } => Ok(()),
    }
}
