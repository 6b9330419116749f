//! `drover tenant create`: a tenant and its first API token, printed once.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use shared::backends::{self, Migrations};
use shared::config::Config;
use shared::names::TenantName;
use shared::store::{StoreError, TenantStore as _};
use shared::tokens::ApiToken;

use crate::deploy::Output;
use crate::{Failure, out};

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant and print its API token (shown only this once).
    Create(CreateArgs),
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
    }
}

async fn create(config: &Config, args: CreateArgs) -> Result<(), Failure> {
    let name = TenantName::new(&args.name).map_err(|err| {
        Failure::BadInput(anyhow::anyhow!(
            "invalid tenant name `{}`: {err}",
            args.name
        ))
    })?;
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
