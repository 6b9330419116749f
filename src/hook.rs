//! `drover hook create|list|rotate|delete`: an app's webhooks (GitHub pushes,
//! registry image pushes); on the embedded default or through the API (where it
//! takes an `admin` token to change them).

use anyhow::anyhow;
use api::body::{HookBody, HookSecretBody, NewHookBody};
use clap::{Args, Subcommand};
use shared::config::Config;
use shared::ids::HookId;
use shared::model::HookKind;

use crate::apps::{PageArgs, page_footer};
use crate::client::Client;
use crate::control::Target;
use crate::deploy::Output;
use crate::input::app_argument;
use crate::releases::print_json;
use crate::{Failure, out};

#[derive(Debug, Subcommand)]
pub(crate) enum HookCommand {
    /// Make a webhook of an app and print its secret (shown only this once).
    Create(CreateArgs),
    /// List the tenant's webhooks, newest first (never their secrets).
    List(ListArgs),
    /// Give a hook a new secret, the old one valid beside it until `--finish`.
    Rotate(RotateArgs),
    /// Remove a hook: its deliveries are refused from now on.
    Delete(IdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The app's name.
    app: String,
    /// `github` (a push to the branch rebuilds the components built from the
    /// pushed repository) or `registry` (an image push is an external update).
    #[arg(long, value_parser = parse_kind)]
    kind: HookKind,
    /// `github` only: the branch whose pushes deploy (default `main`).
    #[arg(long)]
    branch: Option<String>,
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
pub(crate) struct RotateArgs {
    #[command(flatten)]
    hook: IdArgs,
    /// End the rotation: only the newest secret stays valid.
    #[arg(long)]
    finish: bool,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The hook's id (`drover hook list` shows them).
    id: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl IdArgs {
    fn id(&self) -> Result<HookId, Failure> {
        self.id.parse().map_err(|_| {
            Failure::BadInput(anyhow!(
                "`{}` is not a hook id (a UUID such as `drover hook list` shows)",
                self.id
            ))
        })
    }
}

fn parse_kind(text: &str) -> Result<HookKind, String> {
    text.parse()
        .map_err(|err| format!("{err}: one of github, registry"))
}

pub(crate) async fn run(
    config: &Config,
    remote: Option<&Client>,
    command: HookCommand,
) -> Result<(), Failure> {
    let target = Target::open(config, remote).await?;
    match command {
        HookCommand::Create(args) => {
            let app = app_argument(&args.app)?;
            let asked = NewHookBody {
                kind: args.kind,
                branch: args.branch,
            };
            let created = target.create_hook(&app, &asked).await?;
            print_secret(&created, "created", args.output)
        }
        HookCommand::List(args) => {
            let page = target.hooks(args.page.request()?).await?;
            match args.output {
                Output::Json => print_json(&page),
                Output::Text => {
                    let mut text = String::new();
                    for hook in &page.items {
                        text.push_str(&format!("{}\n", hook_line(hook)));
                    }
                    text.push_str(&page_footer(
                        page.items.len(),
                        page.total,
                        "hooks",
                        page.next_cursor.as_deref(),
                    ));
                    out(&text);
                    Ok(())
                }
            }
        }
        HookCommand::Rotate(RotateArgs {
            hook,
            finish: false,
        }) => {
            let rotated = target.rotate_hook(hook.id()?).await?;
            print_secret(&rotated, "rotated", hook.output)
        }
        HookCommand::Rotate(RotateArgs { hook, finish: true }) => {
            let finished = target.finish_hook_rotation(hook.id()?).await?;
            print_hook(&finished, "has one valid secret again", hook.output)
        }
        HookCommand::Delete(hook) => {
            let deleted = target.delete_hook(hook.id()?).await?;
            print_hook(&deleted, "removed", hook.output)
        }
    }
}

/// `<id>  <kind>  <app>  <branch>  <path>`.
fn hook_line(hook: &HookBody) -> String {
    format!(
        "{}  {:<8}  {:<20}  {:<12}  POST {}{}",
        hook.id,
        hook.kind,
        hook.app,
        hook.branch.as_deref().unwrap_or("-"),
        hook.path,
        if hook.rotating {
            "  (rotating: two secrets valid)"
        } else {
            ""
        },
    )
}

fn print_hook(hook: &HookBody, what: &str, output: Output) -> Result<(), Failure> {
    match output {
        Output::Json => print_json(hook),
        Output::Text => {
            out(&format!("hook {} {what}\n", hook.id));
            Ok(())
        }
    }
}

fn print_secret(created: &HookSecretBody, what: &str, output: Output) -> Result<(), Failure> {
    match output {
        Output::Json => print_json(created),
        Output::Text => {
            let hook = &created.hook;
            let rotating = if hook.rotating {
                "\nthe previous secret stays valid until `drover hook rotate ID --finish`"
            } else {
                ""
            };
            out(&format!(
                "hook {} of app `{}` {what}\ndeliveries: POST {} on the API (e.g. https://drover.example{})\nsecret: {}\nkeep it: it cannot be shown again{rotating}\n",
                hook.id, hook.app, hook.path, hook.path, created.secret
            ));
            Ok(())
        }
    }
}
