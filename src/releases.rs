//! `drover releases APP` and `drover release APP N`: what each deployment left
//! running, on the embedded default or through the API.

use anyhow::Context as _;
use api::body::{ReleaseBody, ReleasePage};
use clap::Args;
use shared::model::Unknown;
use shared::store::{DEFAULT_PAGE_LIMIT, PageRequest};

use crate::client::Client;
use crate::deploy::{Output, existing_store, unknown};
use crate::input::app_argument;
use crate::{Failure, out};
use shared::config::Config;

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

fn unknown_app(app: &str) -> Failure {
    unknown(Unknown::App(app.to_owned()))
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
    let page = match remote {
        Some(client) => client.releases(&app, request).await?,
        None => {
            let (store, tenant) = existing_store(config)
                .await?
                .ok_or_else(|| unknown_app(&args.app))?;
            let page = store
                .releases(tenant, &app, request)
                .await
                .context("failed to read the releases")?
                .ok_or_else(|| unknown_app(&args.app))?;
            ReleasePage::from(&page)
        }
    };
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
    let release = match remote {
        Some(client) => client.release(&app, args.version).await?,
        None => {
            let (store, tenant) = existing_store(config)
                .await?
                .ok_or_else(|| unknown_app(&args.app))?;
            let release = store
                .find_release(tenant, &app, args.version)
                .await
                .context("failed to read the release")?
                .map_err(unknown)?;
            ReleaseBody::from(&release)
        }
    };
    match args.output {
        Output::Json => print_json(&release),
        Output::Text => {
            out(&release_text(&release));
            Ok(())
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
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
    let shown = page.items.len();
    text.push_str(&format!("{shown} of {} releases", page.total));
    match &page.next_cursor {
        Some(cursor) => text.push_str(&format!("; more with --cursor {cursor}\n")),
        None => text.push('\n'),
    }
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
