//! `drover serve` and the single-role commands `api`, `scheduler` and `worker`:
//! long-running roles, any number of each, sharing the database, broker and locks.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{Context as _, anyhow};
use clap::{Args, ValueEnum};
use scheduler::SchedulerOptions;
use shared::backends;
use shared::config::Config;
use tokio::task::JoinSet;
use worker::{Shutdown, WorkerOptions};

use crate::Failure;

/// A role a process can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Role {
    Api,
    Scheduler,
    Worker,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The roles this process plays.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "api,scheduler,worker"
    )]
    roles: Vec<Role>,
    #[command(flatten)]
    options: RoleOptions,
}

/// Options of the roles, shared by `serve` and the single-role commands.
#[derive(Debug, Args, Default)]
pub(crate) struct RoleOptions {
    /// Where the API listens (with the `api` role; also `DROVER_API_LISTEN`).
    /// Without the `api` role: where `/healthz`, `/readyz` and `/metrics` are
    /// served (nowhere unless given).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Tasks the worker runs at once (with the `worker` role); also `DROVER_WORKER_CONCURRENCY`.
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
}

/// `drover scheduler`'s options.
#[derive(Debug, Args)]
pub(crate) struct SchedulerArgs {
    /// Where `/healthz`, `/readyz` and `/metrics` are served (nowhere unless given).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

impl From<SchedulerArgs> for RoleOptions {
    fn from(args: SchedulerArgs) -> Self {
        Self {
            listen: args.listen,
            concurrency: None,
        }
    }
}

impl ServeArgs {
    pub(crate) fn only(role: Role, options: RoleOptions) -> Self {
        Self {
            roles: vec![role],
            options,
        }
    }
}

/// Runs the roles until SIGINT or SIGTERM. Then running steps have `worker.drain`
/// to finish; those still running after it (or at a second signal) are stopped
/// and their tasks handed back to run elsewhere.
pub(crate) async fn serve(config: &Config, args: ServeArgs) -> Result<(), Failure> {
    shared::metrics::install();
    let roles: BTreeSet<Role> = args.roles.into_iter().collect();
    let mut config = config.clone();
    let mut ops_listen = None;
    match (args.options.listen, roles.contains(&Role::Api)) {
        (Some(listen), true) => config.api.listen = listen,
        (Some(listen), false) => ops_listen = Some(listen),
        (None, _) => {}
    }
    if let Some(concurrency) = args.options.concurrency {
        config.worker.concurrency = concurrency;
    }
    config
        .validate()
        .map_err(|err| Failure::BadInput(err.into()))?;
    let all_roles = roles.len() == 3;
    if !all_roles && (config.amqp_url.is_none() || config.redis_url.is_none()) {
        return Err(Failure::BadInput(anyhow!(
            "roles in separate processes share work through RabbitMQ and Redis: set DROVER_AMQP_URL and DROVER_REDIS_URL (or run `drover serve` with every role)"
        )));
    }
    let driver = if roles.contains(&Role::Worker) {
        Some(
            worker::driver::from_config(&config, crate::guard::step_guard())
                .map_err(|err| Failure::BadInput(err.into()))?,
        )
    } else {
        None
    };
    let backends = backends::connect(&config)
        .await
        .context("failed to connect the backends")?;

    let shutdown = Shutdown::default();
    let mut running = JoinSet::new();
    for role in &roles {
        let backends = backends.clone();
        match role {
            Role::Api => {
                let (listen, drain) = (config.api.listen, shutdown.drain.clone());
                // The API asks the driver what runs, to plan drift and adopt apps.
                let observer = worker::driver::from_config(&config, None)
                    .map_err(|err| Failure::BadInput(err.into()))?;
                let state = api::AppState {
                    backends,
                    tenant_limit: config.worker.tenant_limit,
                    observer: Some(observer),
                    rate_limits: api::RateLimits::new(config.api.rate_limit, config.api.rate_burst),
                    followers: api::Followers::default(),
                };
                running.spawn(async move {
                    api::run(listen, state, drain)
                        .await
                        .context("the api failed")
                });
            }
            Role::Scheduler => {
                let drain = shutdown.drain.clone();
                let options =
                    SchedulerOptions::for_workers(&config.worker).retaining(config.store.retain);
                running.spawn(async move {
                    scheduler::run(options, backends, drain)
                        .await
                        .context("the scheduler failed")
                });
            }
            Role::Worker => {
                let options = WorkerOptions::new(&config.worker);
                let (driver, shutdown) = (driver.clone(), shutdown.clone());
                running.spawn(async move {
                    let driver = driver.ok_or_else(|| anyhow!("no driver for the worker"))?;
                    worker::run(options, backends, driver, shutdown)
                        .await
                        .context("the worker failed")
                });
            }
        }
    }
    if let Some(listen) = ops_listen {
        let (backends, drain) = (backends.clone(), shutdown.drain.clone());
        running.spawn(async move {
            api::ops::serve(listen, backends, drain)
                .await
                .context("the health and metrics listener failed")
        });
    }
    tracing::info!(roles = ?roles, "drover serving");

    let mut first_error = None;
    let mut signals = Signals::new()?;
    // Once draining: when the steps still running are stopped; once stopped:
    // when the process exits whatever still runs (a follower's open stream).
    let mut deadline = None;
    loop {
        let at = deadline;
        let expired = async move {
            match at {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signals.next() => {
                if shutdown.drain.is_cancelled() {
                    tracing::warn!("second signal: stopping running steps now, handing their tasks back");
                    shutdown.abort.cancel();
                    deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                } else {
                    tracing::info!(drain = ?config.worker.drain, "signal received: finishing running steps, then stopping (signal again to stop at once)");
                    shutdown.drain.cancel();
                    deadline = Some(tokio::time::Instant::now() + config.worker.drain);
                }
            }
            () = expired => {
                if shutdown.abort.is_cancelled() {
                    tracing::warn!("roles still running after the shutdown; exiting");
                    break;
                }
                tracing::warn!(drain = ?config.worker.drain, "drain time over: stopping running steps, handing their tasks back");
                shutdown.abort.cancel();
                deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            joined = running.join_next() => {
                let Some(joined) = joined else { break };
                let result = joined.map_err(anyhow::Error::from).and_then(|result| result);
                if let Err(err) = result {
                    // One role failing stops the process, for its supervisor to restart it.
                    tracing::error!(error = %format!("{err:#}"), "a role stopped; shutting down");
                    first_error.get_or_insert(err);
                    shutdown.drain.cancel();
                } else if !shutdown.drain.is_cancelled() {
                    first_error.get_or_insert(anyhow!("a role stopped unexpectedly"));
                    shutdown.drain.cancel();
                }
                if shutdown.drain.is_cancelled() && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + config.worker.drain);
                }
            }
        }
    }
    match first_error {
        Some(err) => Err(Failure::Error(err)),
        None => Ok(()),
    }
}

/// How long the roles have to end once running steps were stopped: to hand their
/// tasks back, release their locks, and close what is open.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGINT and SIGTERM, as one stream.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
