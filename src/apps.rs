//! `drover apps`, `drover app APP` and `drover deployments`: what the tenant has,
//! on the embedded default or through the API.

use api::body::{AppDetailBody, AppPage, DeploymentPage};
use chrono::{DateTime, Utc};
use clap::Args;
use shared::config::Config;
use shared::model::DeploymentState;
use shared::store::{DEFAULT_PAGE_LIMIT, DeploymentFilter, PageRequest};

use crate::client::Client;
use crate::control::Target;
use crate::deploy::Output;
use crate::input::app_argument;
use crate::releases::print_json;
use crate::{Failure, out};

/// Where a page starts and how long it is.
#[derive(Debug, Args)]
pub(crate) struct PageArgs {
    /// Start after this item: the `next_cursor` of the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// Items per page, 1 to 100.
    #[arg(long, default_value_t = DEFAULT_PAGE_LIMIT)]
    limit: u64,
}

impl PageArgs {
    pub(crate) fn request<C: std::str::FromStr>(&self) -> Result<PageRequest<C>, Failure> {
        PageRequest::parse(self.cursor.as_deref(), Some(self.limit))
            .map_err(|err| Failure::BadInput(err.into()))
    }
}

#[derive(Debug, Args)]
pub(crate) struct AppsArgs {
    #[command(flatten)]
    page: PageArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct AppArgs {
    /// The app's name.
    app: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct DeploymentsArgs {
    /// Only this app's.
    #[arg(long)]
    app: Option<String>,
    /// Only those in this state.
    #[arg(long, value_parser = parse_state)]
    state: Option<DeploymentState>,
    /// Only those created at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    #[command(flatten)]
    page: PageArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn parse_state(text: &str) -> Result<DeploymentState, String> {
    text.parse().map_err(|err| {
        let states: Vec<&str> = DeploymentState::ALL
            .iter()
            .map(|state| state.as_str())
            .collect();
        format!("{err}: one of {}", states.join(", "))
    })
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| format!("not an RFC 3339 time ({err}), e.g. 2026-12-01T00:00:00Z"))
}

/// `drover apps`: a page of the tenant's apps, by name.
pub(crate) async fn list(
    config: &Config,
    remote: Option<&Client>,
    args: AppsArgs,
) -> Result<(), Failure> {
    let request = args.page.request()?;
    let page = Target::open(config, remote).await?.apps(request).await?;
    match args.output {
        Output::Json => print_json(&page),
        Output::Text => {
            out(&apps_text(&page));
            Ok(())
        }
    }
}

/// `drover app APP`: its active release, its policies and what it runs.
pub(crate) async fn show(
    config: &Config,
    remote: Option<&Client>,
    args: AppArgs,
) -> Result<(), Failure> {
    let app = app_argument(&args.app)?;
    let detail = Target::open(config, remote).await?.app(&app).await?;
    match args.output {
        Output::Json => print_json(&detail),
        Output::Text => {
            out(&app_text(&detail));
            Ok(())
        }
    }
}

/// `drover deployments`: a page of the tenant's deployments, newest first.
pub(crate) async fn deployments(
    config: &Config,
    remote: Option<&Client>,
    args: DeploymentsArgs,
) -> Result<(), Failure> {
    let app = args.app.as_deref().map(app_argument).transpose()?;
    let filter = DeploymentFilter {
        app,
        state: args.state,
        since: args.since,
    };
    let request = args.page.request()?;
    let page = Target::open(config, remote)
        .await?
        .deployments(&filter, request)
        .await?;
    match args.output {
        Output::Json => print_json(&page),
        Output::Text => {
            out(&deployments_text(&page));
            Ok(())
        }
    }
}

/// "N of M things", and how to read on.
pub(crate) fn page_footer(
    shown: usize,
    total: u64,
    what: &str,
    next_cursor: Option<&str>,
) -> String {
    match next_cursor {
        Some(cursor) => format!("{shown} of {total} {what}; more with --cursor {cursor}\n"),
        None => format!("{shown} of {total} {what}\n"),
    }
}

fn release_of(version: Option<u32>) -> String {
    version.map_or_else(
        || "no release".to_owned(),
        |version| format!("release {version}"),
    )
}

fn apps_text(page: &AppPage) -> String {
    let width = page
        .items
        .iter()
        .map(|app| app.name.len())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for app in &page.items {
        text.push_str(&format!(
            "{:width$}  {:<12}  {} deployments  {} / {}\n",
            app.name,
            release_of(app.active_release),
            app.deployments,
            app.concurrency,
            app.strategy,
        ));
    }
    text.push_str(&page_footer(
        page.items.len(),
        page.total,
        "apps",
        page.next_cursor.as_deref(),
    ));
    text
}

fn app_text(detail: &AppDetailBody) -> String {
    let app = &detail.app;
    let mut text = format!(
        "{}: {}, {} deployments, concurrency {}, strategy {}\n",
        app.name,
        release_of(app.active_release),
        app.deployments,
        app.concurrency,
        app.strategy
    );
    if detail.changed_since_release {
        text.push_str("what runs differs from the release: a failed or cancelled deployment applied part of its plan since\n");
    }
    if detail.running.is_empty() {
        text.push_str("nothing runs\n");
    }
    let width = detail.running.keys().map(String::len).max().unwrap_or(0);
    for (name, component) in &detail.running {
        text.push_str(&format!(
            "  {name:width$}  version {}  artifact {}\n",
            component.version.as_deref().unwrap_or("-"),
            component.artifact.as_deref().unwrap_or("-"),
        ));
    }
    text
}

fn deployments_text(page: &DeploymentPage) -> String {
    let mut text = String::new();
    for deployment in &page.items {
        text.push_str(&format!(
            "{}  {}  {:<11}  {}  {}\n",
            deployment.id,
            deployment.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            deployment.state,
            deployment.app,
            release_of(deployment.release.as_ref().map(|release| release.version)),
        ));
    }
    text.push_str(&page_footer(
        page.items.len(),
        page.total,
        "deployments",
        page.next_cursor.as_deref(),
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_state_or_time_says_what_is_accepted() {
        let state = parse_state("done").expect_err("not a state");
        assert!(
            state.contains("one of pending, running, succeeded"),
            "{state}"
        );
        let since = parse_since("yesterday").expect_err("not a time");
        assert!(since.contains("RFC 3339"), "{since}");
        assert_eq!(
            parse_since("2026-12-01T02:00:00+02:00").map(|time| time.to_rfc3339()),
            Ok("2026-12-01T00:00:00+00:00".to_owned())
        );
    }
}
