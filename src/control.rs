//! What a command asks of drover, behind one trait ([`Control`]) with two
//! implementations: the embedded default, reading and writing the store in this
//! process ([`Embedded`]), and a server's API ([`Client`], with `--server`). A
//! command is written once against the trait; only the answers' printing is its own.

use std::sync::Arc;

use anyhow::Context as _;
use api::body::{
    AdoptionBody, AppDetailBody, AppPage, AuditPage, DeploymentPage, HookBody, HookPage,
    HookSecretBody, NewHookBody, NewTokenBody, ReleaseBody, ReleasePage, TokenBody,
    TokenCreatedBody, TokenPage,
};
use async_trait::async_trait;
use scheduler::SubmitError;
use shared::config::Config;
use shared::hooks::{HookError, HookSecret, hook_branch};
use shared::ids::{DeploymentId, HookId, TaskId, TenantId, TokenId};
use shared::manifest::Manifest;
use shared::model::{TaskState, Unknown};
use shared::names::AppName;
use shared::store::{
    Deployment, DeploymentFilter, LogLine, NewHook, NewToken, Page, PageRequest, Rotation, Store,
    TASK_OUTPUT_PAGE, task_output,
};
use shared::tokens::{ApiToken, check_token_name};

use crate::Failure;
use crate::client::Client;
use crate::deploy::{connect, existing_store, observe, unknown};

/// How often the embedded default's store is read again to follow a deployment.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// What the commands that read, or change a deployment, ask of drover.
#[async_trait]
pub(crate) trait Control: Send + Sync {
    /// A page of the tenant's apps, by name.
    async fn apps(&self, page: PageRequest<AppName>) -> Result<AppPage, Failure>;

    /// One app, with what it runs.
    async fn app(&self, app: &AppName) -> Result<AppDetailBody, Failure>;

    /// A page of the tenant's deployments that `filter` holds, newest first.
    async fn deployments(
        &self,
        filter: &DeploymentFilter,
        page: PageRequest<DeploymentId>,
    ) -> Result<DeploymentPage, Failure>;

    /// A deployment, its tasks saying why they wait.
    async fn deployment(&self, id: DeploymentId) -> Result<Deployment, Failure>;

    /// Follows the deployment until it ends, handing `on_update` a snapshot at every
    /// step; the last one, ended, is returned.
    async fn follow(
        &self,
        deployment: Deployment,
        on_update: &mut (dyn for<'d> FnMut(&'d Deployment) + Send),
    ) -> Result<Deployment, Failure>;

    /// Hands `on_line` the output of `task` of a deployment; with `follow`, until
    /// the task ends, whose state it returns.
    async fn task_log(
        &self,
        id: DeploymentId,
        task: &TaskId,
        follow: bool,
        on_line: &mut (dyn for<'l> FnMut(&'l LogLine) + Send),
    ) -> Result<Option<TaskState>, Failure>;

    /// Cancels a deployment; one that already ended is bad input.
    async fn cancel(&self, id: DeploymentId) -> Result<Deployment, Failure>;

    /// A page of an app's releases, newest first.
    async fn releases(&self, app: &AppName, page: PageRequest) -> Result<ReleasePage, Failure>;

    /// One release of an app.
    async fn release(&self, app: &AppName, version: u32) -> Result<ReleaseBody, Failure>;

    /// Makes a token of the tenant; its secret is in this answer only.
    async fn create_token(&self, token: &NewTokenBody) -> Result<TokenCreatedBody, Failure>;

    /// A page of the tenant's tokens, newest first.
    async fn tokens(&self, page: PageRequest<TokenId>) -> Result<TokenPage, Failure>;

    /// Revokes one of the tenant's tokens.
    async fn revoke_token(&self, id: TokenId) -> Result<TokenBody, Failure>;

    /// A page of the tenant's audit trail, newest first.
    async fn audit(&self, page: PageRequest<uuid::Uuid>) -> Result<AuditPage, Failure>;

    /// Makes a webhook of an app; its secret is in this answer only.
    async fn create_hook(
        &self,
        app: &AppName,
        hook: &NewHookBody,
    ) -> Result<HookSecretBody, Failure>;

    /// A page of the tenant's webhooks, newest first.
    async fn hooks(&self, page: PageRequest<HookId>) -> Result<HookPage, Failure>;

    /// Gives a hook a new secret, the one before still valid beside it.
    async fn rotate_hook(&self, id: HookId) -> Result<HookSecretBody, Failure>;

    /// Ends a hook's rotation: only its newest secret stays valid.
    async fn finish_hook_rotation(&self, id: HookId) -> Result<HookBody, Failure>;

    /// Removes a hook.
    async fn delete_hook(&self, id: HookId) -> Result<HookBody, Failure>;

    /// Records what the driver reports running as the app's release 1 (`manifest`,
    /// already validated, is `text` parsed).
    async fn adopt(
        &self,
        app: &AppName,
        manifest: &Manifest,
        text: &str,
    ) -> Result<AdoptionBody, Failure>;
}

/// What a command talks to: the server's API with `--server`, else the embedded
/// default.
pub(crate) enum Target<'a> {
    Server(&'a Client),
    Embedded(Embedded<'a>),
}

impl<'a> Target<'a> {
    pub(crate) async fn open(
        config: &'a Config,
        remote: Option<&'a Client>,
    ) -> Result<Self, Failure> {
        Ok(match remote {
            Some(client) => Target::Server(client),
            None => Target::Embedded(Embedded::open(config).await?),
        })
    }
}

impl<'a> std::ops::Deref for Target<'a> {
    type Target = dyn Control + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            Target::Server(client) => *client,
            Target::Embedded(embedded) => embedded,
        }
    }
}

/// The embedded default's store, as its one tenant sees it.
pub(crate) struct Embedded<'a> {
    config: &'a Config,
    /// `None` until something was stored: nothing to read yet.
    stored: Option<(Arc<dyn Store>, TenantId)>,
}

impl<'a> Embedded<'a> {
    pub(crate) async fn open(config: &'a Config) -> Result<Self, Failure> {
        Ok(Self {
            config,
            stored: existing_store(config).await?,
        })
    }

    /// The store and the tenant, or `missing` when nothing was stored yet.
    fn stored(&self, missing: impl FnOnce() -> Unknown) -> Result<(&dyn Store, TenantId), Failure> {
        self.stored
            .as_ref()
            .map(|(store, tenant)| (store.as_ref(), *tenant))
            .ok_or_else(|| unknown(missing()))
    }
}

fn empty<T>() -> Page<T> {
    Page {
        items: Vec::new(),
        next_cursor: None,
        total: 0,
    }
}

#[async_trait]
impl Control for Embedded<'_> {
    async fn apps(&self, page: PageRequest<AppName>) -> Result<AppPage, Failure> {
        let Some((store, tenant)) = &self.stored else {
            return Ok(AppPage::from(&empty()));
        };
        let page = store
            .apps(*tenant, page)
            .await
            .context("failed to read the apps")?;
        Ok(AppPage::from(&page))
    }

    async fn app(&self, app: &AppName) -> Result<AppDetailBody, Failure> {
        let missing = || Unknown::App(app.to_string());
        let (store, tenant) = self.stored(missing)?;
        let summary = store
            .app(tenant, app)
            .await
            .context("failed to read the app")?
            .ok_or_else(|| unknown(missing()))?;
        let current = store
            .current_state(tenant, app)
            .await
            .context("failed to read what runs")?;
        Ok(AppDetailBody::new(&summary, &current))
    }

    async fn deployments(
        &self,
        filter: &DeploymentFilter,
        page: PageRequest<DeploymentId>,
    ) -> Result<DeploymentPage, Failure> {
        let Some((store, tenant)) = &self.stored else {
            return Ok(DeploymentPage::from(&empty()));
        };
        let page = store
            .deployments(*tenant, filter, page)
            .await
            .context("failed to read the deployments")?;
        Ok(DeploymentPage::from(&page))
    }

    async fn deployment(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        let missing = || Unknown::Deployment(id.to_string());
        let (store, tenant) = self.stored(missing)?;
        let mut deployment = store
            .deployment(tenant, id)
            .await
            .context("failed to read the deployment")?
            .ok_or_else(|| unknown(missing()))?;
        for task in &mut deployment.tasks {
            task.waiting = task
                .waiting
                .take()
                .map(|waiting| waiting.under_tenant_limit(self.config.worker.tenant_limit));
        }
        Ok(deployment)
    }

    /// Reads the store again every 200 ms: the deployment runs in another process
    /// (`drover deploy`, `drover serve`).
    async fn follow(
        &self,
        mut deployment: Deployment,
        on_update: &mut (dyn for<'d> FnMut(&'d Deployment) + Send),
    ) -> Result<Deployment, Failure> {
        loop {
            on_update(&deployment);
            if deployment.state.is_terminal() {
                return Ok(deployment);
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
            deployment = self.deployment(deployment.id).await?;
        }
    }

    /// Reads the store again every 200 ms while following.
    async fn task_log(
        &self,
        id: DeploymentId,
        task: &TaskId,
        follow: bool,
        on_line: &mut (dyn for<'l> FnMut(&'l LogLine) + Send),
    ) -> Result<Option<TaskState>, Failure> {
        let missing = || Unknown::Task {
            deployment: id.to_string(),
            task: task.to_string(),
        };
        let (store, tenant) = self.stored(missing)?;
        let mut after = None;
        loop {
            let output = task_output(store, tenant, id, task, after)
                .await
                .context("failed to read the task's output")?
                .ok_or_else(|| unknown(missing()))?;
            for line in &output.lines {
                on_line(line);
            }
            let full = output.lines.len() as u64 == TASK_OUTPUT_PAGE;
            if let Some(last) = output.lines.last() {
                after = Some((last.attempt, last.seq));
            }
            match output.ended {
                Some(state) => return Ok(Some(state)),
                None if full => {}
                None if follow => tokio::time::sleep(FOLLOW_EVERY).await,
                None => return Ok(None),
            }
        }
    }

    async fn cancel(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        let missing = || Unknown::Deployment(id.to_string());
        let (store, tenant) = self.stored(missing)?;
        let cancellation = store
            .cancel_deployment(tenant, id)
            .await
            .context("failed to cancel the deployment")?
            .ok_or_else(|| unknown(missing()))?;
        if let Some(refusal) = cancellation.refusal(id) {
            return Err(Failure::BadInput(anyhow::anyhow!(refusal)));
        }
        self.deployment(id).await
    }

    async fn releases(&self, app: &AppName, page: PageRequest) -> Result<ReleasePage, Failure> {
        let missing = || Unknown::App(app.to_string());
        let (store, tenant) = self.stored(missing)?;
        let page = store
            .releases(tenant, app, page)
            .await
            .context("failed to read the releases")?
            .ok_or_else(|| unknown(missing()))?;
        Ok(ReleasePage::from(&page))
    }

    async fn release(&self, app: &AppName, version: u32) -> Result<ReleaseBody, Failure> {
        let (store, tenant) = self.stored(|| Unknown::App(app.to_string()))?;
        let release = store
            .find_release(tenant, app, version)
            .await
            .context("failed to read the release")?
            .map_err(unknown)?;
        Ok(ReleaseBody::from(&release))
    }

    async fn create_token(&self, asked: &NewTokenBody) -> Result<TokenCreatedBody, Failure> {
        if let Some(name) = &asked.name {
            check_token_name(name).map_err(|err| Failure::BadInput(err.into()))?;
        }
        let (backends, tenant) = connect(self.config).await?;
        let secret = ApiToken::generate();
        let token = backends
            .store
            .create_token(
                tenant,
                &NewToken {
                    name: asked.name.clone(),
                    scope: asked.scope,
                    expires_at: asked.expires_at,
                    hash: secret.hash(),
                },
            )
            .await
            .context("failed to create the token")?;
        Ok(TokenCreatedBody {
            info: TokenBody::from(&token),
            token: secret.reveal().to_owned(),
        })
    }

    async fn tokens(&self, page: PageRequest<TokenId>) -> Result<TokenPage, Failure> {
        let Some((store, tenant)) = &self.stored else {
            return Ok(TokenPage::from(&empty()));
        };
        let page = store
            .tokens(*tenant, page)
            .await
            .context("failed to read the tokens")?;
        Ok(TokenPage::from(&page))
    }

    async fn audit(&self, page: PageRequest<uuid::Uuid>) -> Result<AuditPage, Failure> {
        let Some((store, tenant)) = &self.stored else {
            return Ok(AuditPage::from(&empty()));
        };
        let page = store
            .audit(*tenant, page)
            .await
            .context("failed to read the audit trail")?;
        Ok(AuditPage::from(&page))
    }

    async fn revoke_token(&self, id: TokenId) -> Result<TokenBody, Failure> {
        let missing = || Unknown::Token(id.to_string());
        let (store, tenant) = self.stored(missing)?;
        let token = store
            .revoke_token(tenant, id)
            .await
            .context("failed to revoke the token")?
            .ok_or_else(|| unknown(missing()))?;
        Ok(TokenBody::from(&token))
    }

    async fn create_hook(
        &self,
        app: &AppName,
        asked: &NewHookBody,
    ) -> Result<HookSecretBody, Failure> {
        let branch = hook_branch(asked.kind, asked.branch.clone())
            .map_err(|err| Failure::BadInput(err.into()))?;
        let (backends, tenant) = connect(self.config).await?;
        let secret = HookSecret::generate();
        let hook = backends
            .store
            .create_hook(
                tenant,
                &NewHook {
                    app: app.clone(),
                    kind: asked.kind,
                    branch,
                    secret: secret.reveal().to_owned(),
                },
            )
            .await
            .context("failed to create the hook")?;
        Ok(HookSecretBody {
            hook: HookBody::from(&hook),
            secret: secret.reveal().to_owned(),
        })
    }

    async fn hooks(&self, page: PageRequest<HookId>) -> Result<HookPage, Failure> {
        let Some((store, tenant)) = &self.stored else {
            return Ok(HookPage::from(&empty()));
        };
        let page = store
            .hooks(*tenant, page)
            .await
            .context("failed to read the hooks")?;
        Ok(HookPage::from(&page))
    }

    async fn rotate_hook(&self, id: HookId) -> Result<HookSecretBody, Failure> {
        let missing = || Unknown::Hook(id.to_string());
        let (store, tenant) = self.stored(missing)?;
        let secret = HookSecret::generate();
        let rotation = store
            .rotate_hook_secret(tenant, id, secret.reveal())
            .await
            .context("failed to rotate the hook's secret")?
            .ok_or_else(|| unknown(missing()))?;
        match rotation {
            Rotation::Rotated(hook) => Ok(HookSecretBody {
                hook: HookBody::from(&hook),
                secret: secret.reveal().to_owned(),
            }),
            Rotation::Rotating(_) => Err(Failure::BadInput(HookError::Rotating(id).into())),
        }
    }

    async fn finish_hook_rotation(&self, id: HookId) -> Result<HookBody, Failure> {
        let missing = || Unknown::Hook(id.to_string());
        let (store, tenant) = self.stored(missing)?;
        let hook = store
            .finish_hook_rotation(tenant, id)
            .await
            .context("failed to finish the rotation")?
            .ok_or_else(|| unknown(missing()))?;
        Ok(HookBody::from(&hook))
    }

    async fn delete_hook(&self, id: HookId) -> Result<HookBody, Failure> {
        let missing = || Unknown::Hook(id.to_string());
        let (store, tenant) = self.stored(missing)?;
        let hook = store
            .delete_hook(tenant, id)
            .await
            .context("failed to remove the hook")?
            .ok_or_else(|| unknown(missing()))?;
        Ok(HookBody::from(&hook))
    }

    async fn adopt(
        &self,
        app: &AppName,
        manifest: &Manifest,
        _text: &str,
    ) -> Result<AdoptionBody, Failure> {
        let observed = observe(self.config, app).await?;
        let (backends, tenant) = connect(self.config).await?;
        let adoption = scheduler::adopt(backends.store.as_ref(), tenant, app, manifest, observed)
            .await
            .map_err(|err| match err {
                SubmitError::Store(err) => {
                    Failure::Error(anyhow::Error::new(err).context("failed to record the release"))
                }
                refused => Failure::BadInput(refused.into()),
            })?;
        Ok(AdoptionBody::from(&adoption))
    }
}

#[async_trait]
impl Control for Client {
    async fn apps(&self, page: PageRequest<AppName>) -> Result<AppPage, Failure> {
        let path = format!("/v1/apps?{}", page_query(&page));
        self.get(path, "apps").await
    }

    async fn app(&self, app: &AppName) -> Result<AppDetailBody, Failure> {
        self.get(format!("/v1/apps/{app}"), "app").await
    }

    async fn deployments(
        &self,
        filter: &DeploymentFilter,
        page: PageRequest<DeploymentId>,
    ) -> Result<DeploymentPage, Failure> {
        let mut path = format!("/v1/deployments?{}", page_query(&page));
        if let Some(app) = &filter.app {
            path.push_str(&format!("&app={app}"));
        }
        if let Some(state) = filter.state {
            path.push_str(&format!("&state={state}"));
        }
        if let Some(since) = filter.since {
            // `+` would be a space in a query string: UTC has none.
            path.push_str(&format!("&since={}", since.format("%Y-%m-%dT%H:%M:%S%.fZ")));
        }
        self.get(path, "deployments").await
    }

    async fn deployment(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        Client::deployment(self, id).await
    }

    async fn follow(
        &self,
        deployment: Deployment,
        on_update: &mut (dyn for<'d> FnMut(&'d Deployment) + Send),
    ) -> Result<Deployment, Failure> {
        Client::follow(self, deployment, on_update).await
    }

    async fn task_log(
        &self,
        id: DeploymentId,
        task: &TaskId,
        follow: bool,
        on_line: &mut (dyn for<'l> FnMut(&'l LogLine) + Send),
    ) -> Result<Option<TaskState>, Failure> {
        Client::task_log(self, id, task, follow, on_line).await
    }

    async fn cancel(&self, id: DeploymentId) -> Result<Deployment, Failure> {
        Client::cancel(self, id).await
    }

    async fn releases(&self, app: &AppName, page: PageRequest) -> Result<ReleasePage, Failure> {
        let path = format!("/v1/apps/{app}/releases?{}", page_query(&page));
        self.get(path, "releases").await
    }

    async fn release(&self, app: &AppName, version: u32) -> Result<ReleaseBody, Failure> {
        self.get(format!("/v1/apps/{app}/releases/{version}"), "release")
            .await
    }

    async fn create_token(&self, token: &NewTokenBody) -> Result<TokenCreatedBody, Failure> {
        Client::create_token(self, token).await
    }

    async fn tokens(&self, page: PageRequest<TokenId>) -> Result<TokenPage, Failure> {
        self.get(format!("/v1/tokens?{}", page_query(&page)), "tokens")
            .await
    }

    async fn revoke_token(&self, id: TokenId) -> Result<TokenBody, Failure> {
        Client::revoke_token(self, id).await
    }

    async fn audit(&self, page: PageRequest<uuid::Uuid>) -> Result<AuditPage, Failure> {
        self.get(format!("/v1/audit?{}", page_query(&page)), "audit trail")
            .await
    }

    async fn create_hook(
        &self,
        app: &AppName,
        hook: &NewHookBody,
    ) -> Result<HookSecretBody, Failure> {
        Client::create_hook(self, app, hook).await
    }

    async fn hooks(&self, page: PageRequest<HookId>) -> Result<HookPage, Failure> {
        self.get(format!("/v1/hooks?{}", page_query(&page)), "hooks")
            .await
    }

    async fn rotate_hook(&self, id: HookId) -> Result<HookSecretBody, Failure> {
        Client::rotate_hook(self, id).await
    }

    async fn finish_hook_rotation(&self, id: HookId) -> Result<HookBody, Failure> {
        self.delete(format!("/v1/hooks/{id}/previous-secret"), "hook")
            .await
    }

    async fn delete_hook(&self, id: HookId) -> Result<HookBody, Failure> {
        self.delete(format!("/v1/hooks/{id}"), "hook").await
    }

    /// The API's driver is asked what runs.
    async fn adopt(
        &self,
        app: &AppName,
        _manifest: &Manifest,
        text: &str,
    ) -> Result<AdoptionBody, Failure> {
        Client::adopt(self, app, text.to_owned()).await
    }
}

/// The query string of a page (names, ids and versions need no escaping).
fn page_query<C: std::fmt::Display>(page: &PageRequest<C>) -> String {
    match &page.after {
        Some(after) => format!("limit={}&cursor={after}", page.limit),
        None => format!("limit={}", page.limit),
    }
}
