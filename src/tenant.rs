//! `drover tenant create`: a tenant and its first API token, printed once.
//! `drover tenant weight`: a tenant's share of the fleet when tenants compete.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use shared::backends::{self, Migrations};
use shared::config::Config;
use shared::names::TenantName;
use shared::store::{StoreError, TenantStore as _, TenantWeight};
use shared::tokens::ApiToken;

use crate::deploy::Output;
use crate::{Failure, out};

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant and print its API token (shown only this once).
    Create(CreateArgs),
    /// Set a tenant's weight: a tenant of weight N may run N times the
    /// `tenant-limit` of tasks at once, and is handed N dispatches per turn when
    /// tenants compete for the workers (every tenant starts at 1).
    Weight(WeightArgs),
}

#[derive(Debug, Args)]
pub(crate) struct WeightArgs {
    /// The tenant's name.
    name: String,
    /// Its weight, from 1 to 100.
    weight: u64,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The tenant's name (a DNS label).
    name: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub(crate) async fn run(config: &Config, command: TenantCommand) -> Result<(), Failure> {
    match command {
        TenantCommand::Create(args) => create(config, args).await,
        TenantCommand::Weight(args) => weigh(config, args).await,
    }
}

fn tenant_name(name: &str) -> Result<TenantName, Failure> {
    TenantName::new(name)
        .map_err(|err| Failure::BadInput(anyhow::anyhow!("invalid tenant name `{name}`: {err}")))
}

async fn weigh(config: &Config, args: WeightArgs) -> Result<(), Failure> {
    let name = tenant_name(&args.name)?;
    let weight = TenantWeight::new(args.weight)
        .map_err(|err| Failure::BadInput(anyhow::anyhow!("{err}")))?;
    let store = backends::connect_store(config, Migrations::Require)
        .await
        .context("failed to open the database")?;
    match store.set_tenant_weight(&name, weight).await {
        Ok(_) => {}
        Err(err @ StoreError::NotFound { .. }) => {
            return Err(Failure::BadInput(
                anyhow::Error::new(err).context("create it first with `drover tenant create`"),
            ));
        }
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context("failed to set the tenant's weight")
                .into());
        }
    }
    let limit = config.worker.tenant_limit;
    out(&format!(
        "tenant `{name}` now has weight {weight}: up to {} tasks at once under tenant-limit {limit}\n",
        weight.scale(limit)
    ));
    Ok(())
}

async fn create(config: &Config, args: CreateArgs) -> Result<(), Failure> {
    let name = tenant_name(&args.name)?;
    let store = backends::connect_store(config, Migrations::Require)
        .await
        .context("failed to open the database")?;
    let token = ApiToken::generate();
    let tenant = match store.create_tenant(&name, &token.hash()).await {
        Ok(tenant) => tenant,
        Err(err @ StoreError::Conflict { .. }) => return Err(Failure::BadInput(err.into())),
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context("failed to create the tenant")
                .into());
        }
    };
    match args.output {
        Output::Text => out(&format!(
            "tenant `{name}` created ({tenant})\ntoken: {}\nkeep it: it is not stored and cannot be shown again\n",
            token.reveal()
        )),
        Output::Json => out(&format!(
            "{}\n",
            json!({"id": tenant, "name": name, "token": token.reveal()})
        )),
    }
    Ok(())
}
