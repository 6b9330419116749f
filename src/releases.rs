//! `drover releases APP` and `drover release APP N`: what each deployment left
//! running, on the embedded default or through the API.

use anyhow::Context as _;
use api::body::{ReleaseBody, ReleasePage};
use clap::Args;
use shared::config::Config;
use shared::store::{DEFAULT_PAGE_LIMIT, PageRequest};

use crate::apps::page_footer;
use crate::client::Client;
use crate::control::Target;
use crate::deploy::Output;
use crate::input::app_argument;
use crate::{Failure, out};

#[derive(Debug, Args)]
pub(crate) struct ReleasesArgs {
    /// The app's name.
    app: String,
    /// Start after this release: the `next_cursor` of the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// Releases per page, 1 to 100.
    #[arg(long, default_value_t = DEFAULT_PAGE_LIMIT)]
    limit: u64,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    /// The app's name.
    app: String,
    /// The release's version.
    version: u32,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `drover releases`: a page of the app's releases, newest first.
pub(crate) async fn list(
    config: &Config,
    remote: Option<&Client>,
    args: ReleasesArgs,
) -> Result<(), Failure> {
    let app = app_argument(&args.app)?;
    let request = PageRequest::parse(args.cursor.as_deref(), Some(args.limit))
        .map_err(|err| Failure::BadInput(err.into()))?;
    let page = Target::open(config, remote)
        .await?
        .releases(&app, request)
        .await?;
    match args.output {
        Output::Json => print_json(&page),
        Output::Text => {
            out(&releases_text(&args.app, &page));
            Ok(())
        }
    }
}

/// `drover release`: one release, every component's version and artifact.
pub(crate) async fn show(
    config: &Config,
    remote: Option<&Client>,
    args: ReleaseArgs,
) -> Result<(), Failure> {
    let app = app_argument(&args.app)?;
    let release = Target::open(config, remote)
        .await?
        .release(&app, args.version)
        .await?;
    match args.output {
        Output::Json => print_json(&release),
        Output::Text => {
            out(&release_text(&release));
            Ok(())
        }
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).context("failed to print JSON")?;
    out(&format!("{text}\n"));
    Ok(())
}

fn releases_text(app: &str, page: &ReleasePage) -> String {
    let mut text = String::new();
    if page.items.is_empty() {
        text.push_str(&format!("{app} has no releases here\n"));
    }
    for release in &page.items {
        let deployment = release.deployment.as_deref().unwrap_or("-");
        text.push_str(&format!(
            "release {:>4}  {}  deployment {deployment}  {} components\n",
            release.version,
            release.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            release.components.len()
        ));
    }
    text.push_str(&page_footer(
        page.items.len(),
        page.total,
        "releases",
        page.next_cursor.as_deref(),
    ));
    text
}

fn release_text(release: &ReleaseBody) -> String {
    let mut text = format!(
        "{} release {} ({}, deployment {})\n",
        release.app,
        release.version,
        release.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        release.deployment.as_deref().unwrap_or("-")
    );
    let width = release
        .components
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (name, component) in &release.components {
        text.push_str(&format!(
            "  {name:width$}  version {}  artifact {}\n",
            component.version.as_deref().unwrap_or("-"),
            component.artifact.as_deref().unwrap_or("-"),
        ));
    }
    text
}
