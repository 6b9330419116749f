//! `drover token create|list|revoke`: the tenant's API tokens, and `drover audit`:
//! what they did; on the embedded default or through the API (where it takes an
//! `admin` token).

use std::time::Duration;

use anyhow::anyhow;
use api::body::{NewTokenBody, TokenBody, TokenPage};
use chrono::Utc;
use clap::{Args, Subcommand};
use shared::config::Config;
use shared::ids::TokenId;
use shared::model::Scope;

use crate::apps::{PageArgs, page_footer};
use crate::client::Client;
use crate::control::Target;
use crate::deploy::Output;
use crate::releases::print_json;
use crate::{Failure, out};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a token and print its secret (shown only this once).
    Create(CreateArgs),
    /// List the tenant's tokens, newest first (never their secrets).
    List(ListArgs),
    /// Revoke a token: it is refused from now on.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// What it is for, e.g. `ci`.
    #[arg(long)]
    name: Option<String>,
    /// `read`, `deploy` (reads too) or `admin` (everything, tokens included).
    #[arg(long, default_value = "read", value_parser = parse_scope)]
    scope: Scope,
    /// Refused after this long, e.g. `30d` or `12h`; without it, never.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires: Option<Duration>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    page: PageArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The token's id (`drover token list` shows them).
    id: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
        .map_err(|err| format!("{err}: one of read, deploy, admin"))
}

pub(crate) async fn run(
    config: &Config,
    remote: Option<&Client>,
    command: TokenCommand,
) -> Result<(), Failure> {
    match command {
        TokenCommand::Create(args) => create(config, remote, args).await,
        TokenCommand::List(args) => list(config, remote, args).await,
        TokenCommand::Revoke(args) => revoke(config, remote, args).await,
    }
}

async fn create(config: &Config, remote: Option<&Client>, args: CreateArgs) -> Result<(), Failure> {
    let expires_at = match args.expires {
        Some(after) if after.is_zero() => {
            return Err(Failure::BadInput(anyhow!(
                "--expires must be longer than nothing, e.g. 30d"
            )));
        }
        Some(after) => Some(
            chrono::Duration::from_std(after)
                .ok()
                .and_then(|after| Utc::now().checked_add_signed(after))
                .ok_or_else(|| Failure::BadInput(anyhow!("--expires is too far away")))?,
        ),
        None => None,
    };
    let asked = NewTokenBody {
        name: args.name,
        scope: args.scope,
        expires_at,
    };
    let created = Target::open(config, remote)
        .await?
        .create_token(&asked)
        .await?;
    match args.output {
        Output::Json => print_json(&created),
        Output::Text => {
            out(&format!(
                "token {} ({}) created\ntoken: {}\nkeep it: it is not stored and cannot be shown again\n",
                created.info.id, created.info.scope, created.token
            ));
            Ok(())
        }
    }
}

async fn list(config: &Config, remote: Option<&Client>, args: ListArgs) -> Result<(), Failure> {
    let request = args.page.request()?;
    let page = Target::open(config, remote).await?.tokens(request).await?;
    match args.output {
        Output::Json => print_json(&page),
        Output::Text => {
            out(&tokens_text(&page));
            Ok(())
        }
    }
}

async fn revoke(config: &Config, remote: Option<&Client>, args: RevokeArgs) -> Result<(), Failure> {
    let id: TokenId = args.id.parse().map_err(|_| {
        Failure::BadInput(anyhow!(
            "`{}` is not a token id (a UUID such as `drover token list` shows)",
            args.id
        ))
    })?;
    let token = Target::open(config, remote).await?.revoke_token(id).await?;
    match args.output {
        Output::Json => print_json(&token),
        Output::Text => {
            out(&format!("token {} revoked\n", token.id));
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    page: PageArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `drover audit`: who did what through the API, and when, newest first.
pub(crate) async fn audit(
    config: &Config,
    remote: Option<&Client>,
    args: AuditArgs,
) -> Result<(), Failure> {
    let request = args.page.request()?;
    let page = Target::open(config, remote).await?.audit(request).await?;
    match args.output {
        Output::Json => print_json(&page),
        Output::Text => {
            let mut text = String::new();
            for entry in &page.items {
                text.push_str(&format!(
                    "{}  {:<26}  {}  by token {}\n",
                    entry.at.format("%Y-%m-%d %H:%M:%S UTC"),
                    entry.action,
                    entry.target,
                    entry.token.as_deref().unwrap_or("-"),
                ));
            }
            text.push_str(&page_footer(
                page.items.len(),
                page.total,
                "entries",
                page.next_cursor.as_deref(),
            ));
            out(&text);
            Ok(())
        }
    }
}

fn tokens_text(page: &TokenPage) -> String {
    let mut text = String::new();
    for token in &page.items {
        text.push_str(&format!(
            "{}  {:<6}  {:<16}  {}\n",
            token.id,
            token.scope,
            token.name.as_deref().unwrap_or("-"),
            standing(token),
        ));
    }
    text.push_str(&page_footer(
        page.items.len(),
        page.total,
        "tokens",
        page.next_cursor.as_deref(),
    ));
    text
}

/// Whether a token is valid, and until when.
fn standing(token: &TokenBody) -> String {
    let at = |time: chrono::DateTime<Utc>| time.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    match (token.revoked_at, token.expires_at) {
        (Some(revoked), _) => format!("revoked {}", at(revoked)),
        (None, Some(expires)) if expires <= Utc::now() => format!("expired {}", at(expires)),
        (None, Some(expires)) => format!("valid until {}", at(expires)),
        (None, None) => "valid, no expiry".to_owned(),
    }
}
