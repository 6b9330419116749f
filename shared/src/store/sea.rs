//! The store on sea-orm: one implementation for `postgres://` and `sqlite:` URLs.
//!
//! Times come from the database's clock (one reading per transaction), never from
//! a worker's, so leases mean the same thing to every process.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::{
    Alias, CaseStatement, Expr, ExprTrait, Func, LockBehavior, LockType, OnConflict, Order, Query,
    SelectStatement, ValueTuple,
};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult,
    Iterable, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
    TransactionTrait,
};
use tokio::sync::Notify;
use uuid::Uuid;

use super::entities::{
    api_tokens, apps, deployed_components, deployments, external_updates, fences, outbox, releases,
    task_needs, tasks, tenant_slots, tenants,
};
use super::{
    Adoption, AutoRollback, Cancellation, Claim, ClaimOutcome, ClaimedTask, Creation, Deployment,
    Finished, Idempotency, Lease, LeasedTask, NewDeployment, OutboxMessage, Page, PageRequest,
    Reaped, RecordOutcome, Recorded, Retry, Store, StoreError, TaskOutcome, TaskResult, TaskView,
    Waiting, timestamp,
};
use crate::broker::TASKS_QUEUE;
use crate::config::redact_url;
use crate::dispatch::TaskDispatch;
use crate::ids::{DeploymentId, Fence, TaskId, TenantId};
use crate::locks::component_lock_key;
use crate::model::{ConcurrencyPolicy, DeploymentState, Strategy, TaskKind, TaskState};
use crate::names::{AppName, ComponentName, TenantName};
use crate::plan::Plan;
use crate::release::{Components, CurrentState, ExternalUpdate, Release, ReleasedComponent};

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        StoreError::Database(err.to_string())
    }
}

fn corrupt(what: &'static str) -> impl Fn(String) -> StoreError {
    move |message| StoreError::Corrupt { what, message }
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| corrupt(what)(err.to_string()))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Domain values are plain data: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn parse<T: std::str::FromStr>(what: &'static str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|err: T::Err| corrupt(what)(err.to_string()))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The store on PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub struct SeaOrmStore {
    db: DatabaseConnection,
    outbox_signal: Arc<Notify>,
}

impl SeaOrmStore {
    /// Connects to `url` (`postgres://…` or `sqlite:…`). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url);
        options.sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // SQLite allows one writer at a time; one connection avoids `database is
            // locked` errors between our own transactions.
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None::<Duration>)
                .max_lifetime(None::<Duration>)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                });
        } else {
            options
                .max_connections(16)
                .connect_timeout(Duration::from_secs(5))
                .acquire_timeout(Duration::from_secs(10));
        }
        let db = Database::connect(options)
            .await
            .map_err(|err| StoreError::Connect {
                url: redact_url(url),
                message: err.to_string(),
            })?;
        Ok(Self {
            db,
            outbox_signal: Arc::new(Notify::new()),
        })
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|err| StoreError::Migrate(err.to_string()))
    }

    /// The names of the migrations not yet applied (without creating anything).
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let pending = Migrator::get_pending_migrations_read_only(&self.db)
            .await
            .map_err(|err| StoreError::Migrate(err.to_string()))?;
        Ok(pending
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect())
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The database's clock, in milliseconds since the epoch.
    async fn now(&self, conn: &impl ConnectionTrait) -> Result<i64, StoreError> {
        let sql = format!("SELECT {} AS now", clock_sql(self.backend()));
        let row = conn
            .query_one_raw(Statement::from_string(self.backend(), sql))
            .await?
            .ok_or_else(|| StoreError::Database("the clock query returned no row".into()))?;
        Ok(row.try_get::<i64>("", "now")?)
    }

    async fn deployment_by_idempotency_key_in(
        &self,
        conn: &impl ConnectionTrait,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<(DeploymentId, String)>, StoreError> {
        let row = deployments::Entity::find()
            .filter(deployments::Column::TenantId.eq(tenant.0))
            .filter(deployments::Column::IdempotencyKey.eq(key))
            .one(conn)
            .await?;
        Ok(row.map(|row| (DeploymentId(row.id), row.request_hash.unwrap_or_default())))
    }

    async fn app_by_name(
        &self,
        conn: &impl ConnectionTrait,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<Option<apps::Model>, StoreError> {
        Ok(apps::Entity::find()
            .filter(apps::Column::TenantId.eq(tenant.0))
            .filter(apps::Column::Name.eq(app.as_str()))
            .one(conn)
            .await?)
    }

    async fn newest_release(
        &self,
        conn: &impl ConnectionTrait,
        app: &apps::Model,
    ) -> Result<Option<Release>, StoreError> {
        let row = releases::Entity::find()
            .filter(releases::Column::AppId.eq(app.id))
            .order_by_desc(releases::Column::Version)
            .limit(1)
            .one(conn)
            .await?;
        row.map(|row| release_from_row(&app.name, row)).transpose()
    }

    /// Writes a dispatch to the outbox, to be published at once.
    async fn enqueue(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        dispatch: &TaskDispatch,
    ) -> Result<(), StoreError> {
        self.enqueue_at(txn, now, dispatch, None).await
    }

    /// Writes a dispatch to the outbox, to be published no earlier than `not_before`.
    async fn enqueue_at(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        dispatch: &TaskDispatch,
        not_before: Option<i64>,
    ) -> Result<(), StoreError> {
        outbox::Entity::insert(outbox_row(now, dispatch, not_before))
            .exec_without_returning(txn)
            .await?;
        Ok(())
    }

    /// Writes dispatches to the outbox in one statement.
    async fn enqueue_all(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        dispatches: &[TaskDispatch],
    ) -> Result<(), StoreError> {
        if dispatches.is_empty() {
            return Ok(());
        }
        let rows = dispatches
            .iter()
            .map(|dispatch| outbox_row(now, dispatch, None));
        outbox::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
        Ok(())
    }

    /// Readies the dependents of `done` whose last need it was, in one statement,
    /// and writes their dispatches in one more; returns them.
    async fn ready_dependents(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        tenant: TenantId,
        app: &AppName,
        deployment: DeploymentId,
        done: &TaskId,
    ) -> Result<Vec<TaskDispatch>, StoreError> {
        let needing = Query::select()
            .column(task_needs::Column::DeploymentId)
            .column(task_needs::Column::TaskId)
            .from(task_needs::Entity)
            .and_where(task_needs::Column::DeploymentId.eq(deployment.0))
            .and_where(task_needs::Column::NeedId.eq(done.as_str()))
            .to_owned();
        // Every SET sees the row before the update: the last need's end readies it.
        let readied_state = Expr::case(
            Expr::col(tasks::Column::NPending).lte(1),
            TaskState::Ready.as_str(),
        )
        .finally(Expr::col(tasks::Column::State));
        // Locked in the order of their ids first (PostgreSQL): concurrent results of
        // one deployment ready overlapping dependents, and rows locked in an order
        // the plan picks can deadlock.
        let blocked = Query::select()
            .expr(other(tasks::Column::DeploymentId))
            .expr(other(tasks::Column::TaskId))
            .from_as(tasks::Entity, Alias::new(OTHER))
            .and_where(
                Expr::tuple([
                    other(tasks::Column::DeploymentId),
                    other(tasks::Column::TaskId),
                ])
                .in_subquery(needing),
            )
            .and_where(other(tasks::Column::State).eq(TaskState::Blocked.as_str()))
            .order_by_expr(other(tasks::Column::TaskId), Order::Asc)
            .lock(LockType::NoKeyUpdate)
            .to_owned();
        let updated = tasks::Entity::update_many()
            .col_expr(
                tasks::Column::NPending,
                Expr::col(tasks::Column::NPending).sub(1),
            )
            .col_expr(tasks::Column::State, readied_state.into())
            .filter(
                Expr::tuple([
                    Expr::col(tasks::Column::DeploymentId),
                    Expr::col(tasks::Column::TaskId),
                ])
                .in_subquery(blocked),
            )
            .filter(tasks::Column::State.eq(TaskState::Blocked.as_str()))
            .exec_with_returning(txn)
            .await?;
        let mut readied = Vec::new();
        for row in updated {
            if row.state == TaskState::Ready.as_str() {
                readied.push(TaskDispatch {
                    tenant,
                    app: app.clone(),
                    deployment,
                    task: parse("task id", &row.task_id)?,
                    attempt: attempt_of(&row),
                });
            }
        }
        self.enqueue_all(txn, now, &readied).await?;
        Ok(readied)
    }

    /// Marks every task that (transitively) needs `failed` as skipped; returns them.
    async fn skip_dependents(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        deployment: DeploymentId,
        failed: &TaskId,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut skipped = Vec::new();
        let mut frontier = VecDeque::from([failed.clone()]);
        while let Some(task) = frontier.pop_front() {
            for dependent in dependents(txn, deployment, &task).await? {
                let result = tasks::Entity::update_many()
                    .col_expr(
                        tasks::Column::State,
                        Expr::value(TaskState::Skipped.as_str()),
                    )
                    .col_expr(tasks::Column::FinishedAt, Expr::value(now))
                    .filter(task_key(deployment, &dependent))
                    .filter(tasks::Column::State.eq(TaskState::Blocked.as_str()))
                    .exec(txn)
                    .await?;
                if result.rows_affected == 1 {
                    skipped.push(dependent.clone());
                    frontier.push_back(dependent);
                }
            }
        }
        Ok(skipped)
    }

    /// Whether someone asked the deployment to stop.
    async fn cancel_requested(
        &self,
        conn: &impl ConnectionTrait,
        deployment: DeploymentId,
    ) -> Result<bool, StoreError> {
        Ok(deployments::Entity::find_by_id(deployment.0)
            .select_only()
            .column(deployments::Column::CancelRequestedAt)
            .into_tuple::<Option<i64>>()
            .one(conn)
            .await?
            .flatten()
            .is_some())
    }

    /// Ends a deployment whose last open task just closed, writing its release
    /// when it succeeded.
    async fn finish_deployment(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        deployment: &deployments::Model,
    ) -> Result<Finished, StoreError> {
        let state = if deployment.cancel_requested_at.is_some() {
            DeploymentState::Cancelled
        } else if deployment.has_failed {
            DeploymentState::Failed
        } else {
            DeploymentState::Succeeded
        };
        let release = match state {
            DeploymentState::Succeeded => Some(
                self.write_release(txn, now, deployment.app_id, Some(deployment.id))
                    .await?,
            ),
            _ => None,
        };
        if state == DeploymentState::Succeeded
            && let Some(replaced) = deployment.replaces
        {
            // The deployment a rollback replaced: it succeeded, or failed (an
            // automatic rollback).
            deployments::Entity::update_many()
                .col_expr(
                    deployments::Column::State,
                    Expr::value(DeploymentState::RolledBack.as_str()),
                )
                .filter(deployments::Column::Id.eq(replaced))
                .filter(deployments::Column::State.is_in([
                    DeploymentState::Succeeded.as_str(),
                    DeploymentState::Failed.as_str(),
                ]))
                .exec(txn)
                .await?;
        }
        deployments::Entity::update_many()
            .col_expr(deployments::Column::State, Expr::value(state.as_str()))
            .col_expr(deployments::Column::FinishedAt, Expr::value(now))
            .col_expr(
                deployments::Column::ReleaseVersion,
                Expr::value(release.map(|version| version as i32)),
            )
            .filter(deployments::Column::Id.eq(deployment.id))
            .exec(txn)
            .await?;
        Ok(Finished { state, release })
    }

    /// Takes the app's next release version. Bumping the sequence locks the app's
    /// row, so concurrent releases of one app are written one after the other,
    /// each on top of the last.
    async fn bump_release_seq(
        &self,
        txn: &DatabaseTransaction,
        app: Uuid,
    ) -> Result<apps::Model, StoreError> {
        apps::Entity::update_many()
            .col_expr(
                apps::Column::ReleaseSeq,
                Expr::col(apps::Column::ReleaseSeq).add(1),
            )
            .filter(apps::Column::Id.eq(app))
            .exec_with_returning(txn)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                what: "app",
                id: app.to_string(),
            })
    }

    /// What the app runs now, by component.
    async fn running_components(
        &self,
        conn: &impl ConnectionTrait,
        app: Uuid,
    ) -> Result<Components, StoreError> {
        deployed_components::Entity::find()
            .filter(deployed_components::Column::AppId.eq(app))
            .all(conn)
            .await?
            .into_iter()
            .map(|row| {
                Ok((
                    parse("component name", &row.component)?,
                    ReleasedComponent {
                        spec: from_json("deployed spec", &row.spec)?,
                        artifact: row.artifact,
                        version: row.version,
                        deployment: row.deployment_id.map(DeploymentId),
                    },
                ))
            })
            .collect()
    }

    /// Writes the app's next release, made by `deployment` (none for an external
    /// update): a snapshot of what the app runs now, never the previous release
    /// patched, so that it cannot disagree with what runs.
    async fn write_release(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        app: Uuid,
        deployment: Option<Uuid>,
    ) -> Result<u32, StoreError> {
        let app = self.bump_release_seq(txn, app).await?;
        let components = self.running_components(txn, app.id).await?;
        releases::Entity::insert(releases::ActiveModel {
            app_id: Set(app.id),
            version: Set(app.release_seq),
            deployment_id: Set(deployment),
            components: Set(to_json(&components)),
            created_at: Set(now),
        })
        .exec_without_returning(txn)
        .await?;
        Ok(app.release_seq as u32)
    }

    /// Changes what runs by a succeeded deploy or delete, under its fence: a
    /// component's row is only replaced or removed by a write with a newer fence.
    async fn apply_to_running(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        app: Uuid,
        task: &tasks::Model,
    ) -> Result<(), StoreError> {
        use deployed_components::{Column, Entity};
        let kind: TaskKind = parse("task kind", &task.kind)?;
        let older =
            Expr::col((Entity, Column::Fence))
                .is_null()
                .or(Expr::col((Entity, Column::Fence)).lt(task.fence));
        match kind {
            TaskKind::Build => {}
            TaskKind::Delete => {
                Entity::delete_many()
                    .filter(Column::AppId.eq(app))
                    .filter(Column::Component.eq(task.component.as_str()))
                    .filter(older)
                    .exec(txn)
                    .await?;
            }
            TaskKind::Deploy => {
                let row = deployed_components::ActiveModel {
                    app_id: Set(app),
                    component: Set(task.component.clone()),
                    spec: Set(task.spec.clone()),
                    artifact: Set(task.artifact.clone()),
                    version: Set(task.version.clone()),
                    deployment_id: Set(Some(task.deployment_id)),
                    fence: Set(task.fence),
                    updated_at: Set(now),
                };
                put_running(txn, row, Some(older)).await?;
            }
        }
        Ok(())
    }

    /// What follows a task's end, in its transaction: a success changes what runs
    /// (a deploy or delete: `applied`), readies its dependents and hands its
    /// artifact to the deploys that use it; a failure skips them; the deployment's
    /// open-task count drops, and the last task finishes the deployment.
    #[allow(clippy::too_many_arguments)]
    async fn close_task(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        owner: &Owner,
        task: &TaskId,
        state: TaskState,
        artifact: Option<&str>,
        applied: Option<&tasks::Model>,
    ) -> Result<(Vec<TaskId>, Option<Finished>), StoreError> {
        let deployment = owner.deployment;
        let mut skipped = Vec::new();
        if state == TaskState::Succeeded {
            if let Some(applied) = applied {
                self.apply_to_running(txn, now, owner.app_id, applied)
                    .await?;
            }
            if let Some(artifact) = artifact {
                // Deploys of this build's artifact learn it now.
                tasks::Entity::update_many()
                    .col_expr(tasks::Column::Artifact, Expr::value(artifact))
                    .filter(tasks::Column::DeploymentId.eq(deployment.0))
                    .filter(tasks::Column::ArtifactFrom.eq(task.as_str()))
                    .exec(txn)
                    .await?;
            }
            self.ready_dependents(txn, now, owner.tenant, &owner.app, deployment, task)
                .await?;
        } else {
            skipped = self.skip_dependents(txn, now, deployment, task).await?;
        }
        // Last, so that the row is locked only until the commit: closing tasks
        // through the deployment's row serializes concurrent results of one
        // deployment, so exactly one of them sees the count reach zero.
        let n_closed = 1 + skipped.len() as i32;
        let mut close = deployments::Entity::update_many().col_expr(
            deployments::Column::NOpen,
            Expr::col(deployments::Column::NOpen).sub(n_closed),
        );
        if state == TaskState::Failed {
            close = close.col_expr(deployments::Column::HasFailed, Expr::value(true));
        }
        let row = close
            .filter(deployments::Column::Id.eq(deployment.0))
            .exec_with_returning(txn)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                id: deployment.to_string(),
            })?;
        let finished = if row.n_open <= 0 {
            Some(self.finish_deployment(txn, now, &row).await?)
        } else {
            None
        };
        Ok((skipped, finished))
    }

    /// Hands a transiently failed task out again as the next attempt, dispatched no
    /// earlier than `after` from now.
    async fn retry_later(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        result: &TaskResult,
        error: &str,
        after: Duration,
    ) -> Result<RecordOutcome, StoreError> {
        let attempt = result.attempt + 1;
        let retried = tasks::Entity::update_many()
            .col_expr(tasks::Column::State, Expr::value(TaskState::Ready.as_str()))
            .col_expr(tasks::Column::Attempt, Expr::value(attempt as i32))
            .col_expr(tasks::Column::Worker, Expr::value(None::<String>))
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .col_expr(tasks::Column::Log, Expr::value(result.log.as_str()))
            .col_expr(tasks::Column::Error, Expr::value(error))
            .col_expr(tasks::Column::RetryAt, Expr::value(now + millis(after)))
            .filter(task_key(result.deployment, &result.task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(result.attempt as i32))
            .filter(tasks::Column::Fence.eq(result.fence.0))
            .filter(fence_is_current())
            .exec(txn)
            .await?;
        if retried.rows_affected != 1 {
            return Ok(RecordOutcome::Stale);
        }
        let deployment = deployment_row(txn, result.deployment).await?;
        free_tenant_slot(
            txn,
            Some(deployment.tenant_id),
            (result.deployment.0, result.task.as_str(), result.fence.0),
        )
        .await?;
        let not_before = now + millis(after);
        let dispatch = TaskDispatch {
            tenant: TenantId(deployment.tenant_id),
            app: parse("app name", &deployment.app)?,
            deployment: result.deployment,
            task: result.task.clone(),
            attempt,
        };
        self.enqueue_at(txn, now, &dispatch, Some(not_before))
            .await?;
        Ok(RecordOutcome::Retrying {
            attempt,
            at: timestamp(not_before),
        })
    }

    /// Records one result in `txn`. A stale result writes nothing, so that the
    /// results recorded beside it in one transaction stand.
    async fn record_in(
        &self,
        txn: &DatabaseTransaction,
        result: &TaskResult,
    ) -> Result<RecordOutcome, StoreError> {
        let (state, artifact, error) = match &result.outcome {
            TaskOutcome::Succeeded { artifact } => (TaskState::Succeeded, artifact.clone(), None),
            TaskOutcome::Failed { error } => (TaskState::Failed, None, Some(error.clone())),
            TaskOutcome::Cancelled { error } => (TaskState::Cancelled, None, Some(error.clone())),
            TaskOutcome::Retry { error, after } => {
                // A cancelled deployment runs nothing again.
                if self.cancel_requested(txn, result.deployment).await? {
                    (TaskState::Cancelled, None, Some(error.clone()))
                } else {
                    let now = self.now(txn).await?;
                    return self.retry_later(txn, now, result, error, *after).await;
                }
            }
        };
        let mut update = tasks::Entity::update_many()
            .col_expr(tasks::Column::State, Expr::value(state.as_str()))
            .col_expr(tasks::Column::FinishedAt, clock(self.backend()))
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .col_expr(tasks::Column::Log, Expr::value(result.log.as_str()))
            .col_expr(tasks::Column::Error, Expr::value(error));
        if let Some(artifact) = &artifact {
            update = update.col_expr(tasks::Column::Artifact, Expr::value(artifact.as_str()));
        }
        // The task as recorded, then its deployment's tenant, app and app id.
        let n_columns = tasks::Column::iter().count();
        let mut returning: Vec<Expr> = tasks::Column::iter().map(Expr::col).collect();
        returning.extend([
            of_deployment(deployments::Column::TenantId),
            of_deployment(deployments::Column::App),
            of_deployment(deployments::Column::AppId),
        ]);
        let mut update = update
            .filter(task_key(result.deployment, &result.task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(result.attempt as i32))
            .filter(tasks::Column::Fence.eq(result.fence.0))
            .filter(fence_is_current())
            .into_query();
        update.returning(Query::returning().exprs(returning));
        let Some(row) = txn.query_one(&update).await? else {
            return Ok(RecordOutcome::Stale);
        };
        let task = tasks::Model::from_query_result(&row, "")?;
        let app: String = row.try_get_by_index(n_columns + 1)?;
        let owner = Owner {
            deployment: result.deployment,
            tenant: TenantId(row.try_get_by_index(n_columns)?),
            app: parse("app name", &app)?,
            app_id: row.try_get_by_index(n_columns + 2)?,
        };
        // The time of the task's end is the rest of the transaction's.
        let now = task
            .finished_at
            .ok_or_else(|| StoreError::Database("the recorded task has no end time".into()))?;
        free_tenant_slot(
            txn,
            task.tenant_id,
            (task.deployment_id, &task.task_id, result.fence.0),
        )
        .await?;
        let (skipped, finished) = self
            .close_task(
                txn,
                now,
                &owner,
                &result.task,
                state,
                artifact.as_deref(),
                Some(&task),
            )
            .await?;
        Ok(RecordOutcome::Recorded { skipped, finished })
    }

    /// Why each task of a deployment that is neither running nor finished waits.
    async fn why_waiting(
        &self,
        tenant: Uuid,
        plan: &Plan,
        tasks: &[tasks::Model],
    ) -> Result<BTreeMap<String, Waiting>, StoreError> {
        let states: BTreeMap<&str, &str> = tasks
            .iter()
            .map(|task| (task.task_id.as_str(), task.state.as_str()))
            .collect();
        let succeeded =
            |id: &TaskId| states.get(id.as_str()) == Some(&TaskState::Succeeded.as_str());
        let mut waiting = BTreeMap::new();
        let mut tenant_running = None;
        let now = self.now(&self.db).await?;
        // What keeps the ready tasks' components, read for all of them at once: the
        // oldest older deploy of each, and the running task of each.
        let ready: Vec<&tasks::Model> = tasks
            .iter()
            .filter(|task| task.state == TaskState::Ready.as_str())
            .filter(|task| task.retry_at.is_none_or(|at| at <= now))
            .collect();
        let ordered: BTreeMap<i64, Vec<&str>> = ready
            .iter()
            .filter(|task| ORDERED_KINDS.contains(&task.kind.as_str()))
            .fold(BTreeMap::new(), |mut by_seq, task| {
                if let Some(key) = &task.lock_key {
                    by_seq.entry(task.seq).or_default().push(key.as_str());
                }
                by_seq
            });
        let mut older = BTreeMap::new();
        for (seq, keys) in ordered {
            let query = older_work_query(of_locks(keys), Expr::val(seq));
            for (key, work) in first_task_by_lock(&self.db, &query).await? {
                older.insert((seq, key), work);
            }
        }
        let keys: BTreeSet<&str> = ready
            .iter()
            .filter_map(|task| task.lock_key.as_deref())
            .collect();
        let holders = if keys.is_empty() {
            BTreeMap::new()
        } else {
            let query = lock_holders_query(of_locks(keys), Expr::val(now));
            first_task_by_lock(&self.db, &query).await?
        };
        for task in tasks {
            let key = task.lock_key.clone().unwrap_or_default();
            let reason = if task.state == TaskState::Blocked.as_str() {
                let unmet = plan
                    .task(&parse("task id", &task.task_id)?)
                    .map(|planned| {
                        planned
                            .needs
                            .iter()
                            .filter(|need| !succeeded(need))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                Waiting::Needs { tasks: unmet }
            } else if task.state != TaskState::Ready.as_str() {
                continue;
            } else if let Some(until) = task.retry_at.filter(|at| *at > now) {
                Waiting::RetryBackoff {
                    until: timestamp(until),
                }
            } else if let Some((deployment, task)) = ORDERED_KINDS
                .contains(&task.kind.as_str())
                .then(|| older.get(&(task.seq, key.clone())))
                .flatten()
            {
                Waiting::Order {
                    deployment: *deployment,
                    task: task.clone(),
                }
            } else if let Some((deployment, task)) = holders.get(&key) {
                Waiting::Lock {
                    deployment: *deployment,
                    task: task.clone(),
                }
            } else {
                let running = match tenant_running {
                    Some(running) => running,
                    None => {
                        let running = tasks::Entity::find()
                            .filter(tasks::Column::TenantId.eq(tenant))
                            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
                            .count(&self.db)
                            .await?;
                        *tenant_running.insert(running)
                    }
                };
                Waiting::Queued {
                    tenant_running: running,
                }
            };
            waiting.insert(task.task_id.clone(), reason);
        }
        Ok(waiting)
    }

    /// The running task (under a live lease) of the same component as `task`, if any.
    async fn lock_holder(
        &self,
        conn: &impl ConnectionTrait,
        task: &tasks::Model,
        now: i64,
    ) -> Result<Option<Waiting>, StoreError> {
        let Some(lock_key) = &task.lock_key else {
            return Ok(None);
        };
        let query = lock_holders_query(of_lock(Expr::val(lock_key.as_str())), Expr::val(now));
        Ok(first_task(conn, &query)
            .await?
            .map(|(deployment, task)| Waiting::Lock { deployment, task }))
    }

    /// Why `claim` claimed nothing, read in its transaction; `None` when nothing
    /// keeps it from running any more.
    async fn refusal(
        &self,
        txn: &DatabaseTransaction,
        claim: &Claim,
        fence: Fence,
    ) -> Result<Option<ClaimOutcome>, StoreError> {
        let Some(task) = tasks::Entity::find()
            .filter(task_key(claim.deployment, &claim.task))
            .one(txn)
            .await?
        else {
            return Ok(Some(ClaimOutcome::Unknown));
        };
        let not_claimable = ClaimOutcome::NotClaimable {
            state: parse("task state", &task.state)?,
            attempt: attempt_of(&task),
        };
        if task.state != TaskState::Ready.as_str()
            || task.attempt != claim.attempt as i32
            || task.fence.is_some_and(|newest| newest >= fence.0)
            || task
                .lock_key
                .as_ref()
                .is_some_and(|key| *key != claim.lock_key)
        {
            return Ok(Some(not_claimable));
        }
        let now = self.now(txn).await?;
        if self.lock_holder(txn, &task, now).await?.is_some() {
            return Ok(Some(ClaimOutcome::ComponentBusy));
        }
        if older_work(txn, &task).await?.is_some() {
            return Ok(Some(ClaimOutcome::Ordered));
        }
        Ok(None)
    }

    async fn load_deployment(&self, row: deployments::Model) -> Result<Deployment, StoreError> {
        let plan: Plan = from_json("plan", &row.plan)?;
        let task_rows = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(row.id))
            .all(&self.db)
            .await?;
        let mut waiting = self.why_waiting(row.tenant_id, &plan, &task_rows).await?;
        let mut by_id: BTreeMap<String, tasks::Model> = task_rows
            .into_iter()
            .map(|task| (task.task_id.clone(), task))
            .collect();
        // Tasks in plan order, which puts every task after its needs.
        let tasks = plan
            .tasks
            .iter()
            .filter_map(|planned| {
                let task = by_id.remove(planned.id.as_str())?;
                Some(Ok(TaskView {
                    id: planned.id.clone(),
                    kind: planned.kind,
                    component: planned.component.clone(),
                    state: match parse("task state", &task.state) {
                        Ok(state) => state,
                        Err(err) => return Some(Err(err)),
                    },
                    attempts: attempts_made(&task),
                    needs: planned.needs.clone(),
                    started_at: task.started_at.map(timestamp),
                    finished_at: task.finished_at.map(timestamp),
                    artifact: task.artifact,
                    error: task.error,
                    log: task.log,
                    waiting: waiting.remove(planned.id.as_str()),
                    phase: task.phase,
                }))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let state: DeploymentState = parse("deployment state", &row.state)?;
        let partially_applied = state.is_terminal()
            && row.release_version.is_none()
            && tasks.iter().any(|task| {
                task.state == TaskState::Succeeded
                    && matches!(task.kind, TaskKind::Deploy | TaskKind::Delete)
            });
        let rolled_back_by = deployments::Entity::find()
            .filter(deployments::Column::TenantId.eq(row.tenant_id))
            .filter(deployments::Column::Replaces.eq(row.id))
            .order_by_desc(deployments::Column::CreatedAt)
            .one(&self.db)
            .await?
            .map(|rollback| DeploymentId(rollback.id));
        Ok(Deployment {
            id: DeploymentId(row.id),
            tenant: TenantId(row.tenant_id),
            app: parse("app name", &row.app)?,
            state,
            created_at: timestamp(row.created_at),
            started_at: row.started_at.map(timestamp),
            finished_at: row.finished_at.map(timestamp),
            base_release: row.base_release.map(|version| version as u32),
            release: row.release_version.map(|version| version as u32),
            partially_applied,
            strategy: strategy_of(row.strategy.as_deref())?,
            rolled_back_by,
            plan,
            tasks,
        })
    }
}

/// A deployment submitted after `id` whose deploys or deletes (not skipped or
/// cancelled) touch a component one of `id`'s failed or skipped deploys or deletes
/// would deploy again: retrying `id` would undo it.
async fn overtaken(
    conn: &impl ConnectionTrait,
    id: DeploymentId,
) -> Result<Option<DeploymentId>, StoreError> {
    let again: Vec<(Option<String>, i64)> = tasks::Entity::find()
        .select_only()
        .column(tasks::Column::LockKey)
        .column(tasks::Column::Seq)
        .filter(tasks::Column::DeploymentId.eq(id.0))
        .filter(tasks::Column::Kind.is_in(ORDERED_KINDS))
        .filter(
            tasks::Column::State.is_in([TaskState::Failed.as_str(), TaskState::Skipped.as_str()]),
        )
        .into_tuple()
        .all(conn)
        .await?;
    let Some(seq) = again.first().map(|(_, seq)| *seq) else {
        return Ok(None);
    };
    let lock_keys: Vec<String> = again.into_iter().filter_map(|(key, _)| key).collect();
    let by = tasks::Entity::find()
        .select_only()
        .column(tasks::Column::DeploymentId)
        .filter(tasks::Column::LockKey.is_in(lock_keys))
        .filter(tasks::Column::Kind.is_in(ORDERED_KINDS))
        .filter(tasks::Column::Seq.gt(seq))
        .filter(
            tasks::Column::State
                .is_not_in([TaskState::Skipped.as_str(), TaskState::Cancelled.as_str()]),
        )
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(by.map(DeploymentId))
}

/// Writes what a component runs, replacing its row (only where `only_if` holds of
/// the row, when given).
async fn put_running(
    txn: &DatabaseTransaction,
    row: deployed_components::ActiveModel,
    only_if: Option<Expr>,
) -> Result<(), StoreError> {
    use deployed_components::{Column, Entity};
    Entity::insert(row)
        .on_conflict(
            OnConflict::columns([Column::AppId, Column::Component])
                .update_columns([
                    Column::Spec,
                    Column::Artifact,
                    Column::Version,
                    Column::DeploymentId,
                    Column::Fence,
                    Column::UpdatedAt,
                ])
                .action_and_where_option(only_if)
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// A deployment's row, which must exist.
async fn deployment_row(
    conn: &impl ConnectionTrait,
    id: DeploymentId,
) -> Result<deployments::Model, StoreError> {
    deployments::Entity::find_by_id(id.0)
        .one(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "deployment",
            id: id.to_string(),
        })
}

/// The tenant's deployment row with its state; `None` for another tenant's.
async fn tenant_deployment(
    conn: &impl ConnectionTrait,
    tenant: TenantId,
    id: DeploymentId,
) -> Result<Option<(deployments::Model, DeploymentState)>, StoreError> {
    let Some(row) = deployments::Entity::find_by_id(id.0)
        .filter(deployments::Column::TenantId.eq(tenant.0))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    let state = parse("deployment state", &row.state)?;
    Ok(Some((row, state)))
}

/// `deployments.auto_rollback`: roll back if it fails.
const AUTO_ROLLBACK_ARMED: &str = "armed";
/// `deployments.auto_rollback`: its rollback was submitted (or there was none to do).
const AUTO_ROLLBACK_DONE: &str = "done";

/// A stored strategy; null is the default.
/// The outbox row of a dispatch, to be published no earlier than `not_before`.
fn outbox_row(now: i64, dispatch: &TaskDispatch, not_before: Option<i64>) -> outbox::ActiveModel {
    outbox::ActiveModel {
        queue: Set(TASKS_QUEUE.to_owned()),
        payload: Set(to_json(dispatch)),
        created_at: Set(now),
        claimed_until: Set(None),
        not_before: Set(not_before),
        ..Default::default()
    }
}

/// A column of the task's deployment, read inside a statement on `tasks`.
fn of_deployment(column: deployments::Column) -> Expr {
    Expr::SubQuery(
        None,
        Box::new(
            Query::select()
                .column((deployments::Entity, column))
                .from(deployments::Entity)
                .and_where(
                    Expr::col((deployments::Entity, deployments::Column::Id))
                        .equals((tasks::Entity, tasks::Column::DeploymentId)),
                )
                .to_owned()
                .into(),
        ),
    )
}

/// The deployment of a closing task, as closing it needs it.
struct Owner {
    deployment: DeploymentId,
    tenant: TenantId,
    app: AppName,
    app_id: Uuid,
}

/// For a deploy, the first phase of `strategy` (a deployment's stored strategy,
/// none for the default): the claim notes it, so that the worker need not. None for
/// other kinds.
fn first_phase(strategy: Expr) -> Expr {
    let first = |strategy: Strategy| Expr::val(strategy.phases().first().map(|p| p.to_string()));
    let mut phases =
        CaseStatement::new().case(strategy.clone().is_null(), first(Strategy::default()));
    for known in Strategy::ALL {
        phases = phases.case(strategy.clone().eq(known.as_str()), first(*known));
    }
    Expr::case(
        Expr::col((tasks::Entity, tasks::Column::Kind)).eq(TaskKind::Deploy.as_str()),
        phases.finally(Expr::val(None::<String>)),
    )
    .finally(Expr::val(None::<String>))
    .into()
}

fn strategy_of(stored: Option<&str>) -> Result<Strategy, StoreError> {
    stored.map_or(Ok(Strategy::default()), |strategy| {
        parse("strategy", strategy)
    })
}

fn existing_creation((id, request_hash): (DeploymentId, String), asked: &Idempotency) -> Creation {
    Creation::Existing {
        id,
        same_request: request_hash == asked.request_hash,
    }
}

/// Frees the tenant slot `holder` holds, in the transaction that moves it out of
/// `running` (tasks without a tenant, or claimed without a limit, hold none).
async fn free_tenant_slot(
    txn: &DatabaseTransaction,
    tenant: Option<Uuid>,
    holder: SlotHolder<'_>,
) -> Result<(), StoreError> {
    use tenant_slots::{Column, Entity};
    let Some(tenant) = tenant else {
        return Ok(());
    };
    Entity::update_many()
        .col_expr(Column::DeploymentId, Expr::value(None::<Uuid>))
        .col_expr(Column::TaskId, Expr::value(None::<String>))
        .col_expr(Column::Fence, Expr::value(None::<i64>))
        .filter(Column::TenantId.eq(tenant))
        .filter(Column::DeploymentId.eq(holder.0))
        .filter(Column::TaskId.eq(holder.1))
        .filter(Column::Fence.eq(holder.2))
        .exec(txn)
        .await?;
    Ok(())
}

/// Takes the next fence of the lock `key` (the first is 1); on PostgreSQL the key's
/// row stays locked until `conn`'s transaction ends.
async fn take_fence(conn: &impl ConnectionTrait, key: &str) -> Result<Fence, StoreError> {
    let insert = Query::insert()
        .into_table(fences::Entity)
        .columns([fences::Column::LockKey, fences::Column::Fence])
        .values_panic([key.into(), 1i64.into()])
        .on_conflict(
            OnConflict::column(fences::Column::LockKey)
                .value(
                    fences::Column::Fence,
                    Expr::col((fences::Entity, fences::Column::Fence)).add(1),
                )
                .to_owned(),
        )
        .returning_col(fences::Column::Fence)
        .to_owned();
    let row = conn
        .query_one(&insert)
        .await?
        .ok_or_else(|| StoreError::Database("taking a fence returned no row".into()))?;
    Ok(Fence(row.try_get::<i64>("", "fence")?))
}

/// The task's fence is its component's newest: nobody took the component's lock
/// since (tasks written before tasks knew their lock key are exempt).
fn fence_is_current() -> Condition {
    let newest = Query::select()
        .column((fences::Entity, fences::Column::Fence))
        .from(fences::Entity)
        .and_where(
            Expr::col((fences::Entity, fences::Column::LockKey))
                .equals((tasks::Entity, tasks::Column::LockKey)),
        )
        .to_owned();
    Condition::any()
        .add(tasks::Column::LockKey.is_null())
        .add(tasks::Column::Fence.in_subquery(newest))
}

/// The task kinds that change what runs, and so apply in submission order.
const ORDERED_KINDS: [&str; 2] = [TaskKind::Deploy.as_str(), TaskKind::Delete.as_str()];

/// The states of a task not yet ended.
const OPEN_STATES: [&str; 3] = [
    TaskState::Blocked.as_str(),
    TaskState::Ready.as_str(),
    TaskState::Running.as_str(),
];

/// The most leases one statement extends (four parameters each; SQLite takes at
/// most 32,766).
const LEASES_PER_STATEMENT: usize = 1_000;

/// The alias of the other task in the claim's subqueries.
const OTHER: &str = "other";

fn other(column: tasks::Column) -> Expr {
    Expr::col((Alias::new(OTHER), column))
}

/// The other task's lock key is `lock_key`.
fn of_lock(lock_key: Expr) -> Expr {
    other(tasks::Column::LockKey).eq(lock_key)
}

/// The other task's lock key is one of `lock_keys`.
fn of_locks<'a>(lock_keys: impl IntoIterator<Item = &'a str>) -> Expr {
    other(tasks::Column::LockKey).is_in(lock_keys)
}

/// The deploys and deletes of the locks `of`, in deployments submitted before
/// `seq`, that have not ended, oldest first: a deploy or delete waits for them
/// (deploys of one component apply in submission order). Rows are `(deployment,
/// task, lock key)`.
fn older_work_query(of: Expr, seq: Expr) -> SelectStatement {
    Query::select()
        .expr(other(tasks::Column::DeploymentId))
        .expr(other(tasks::Column::TaskId))
        .expr(other(tasks::Column::LockKey))
        .from_as(tasks::Entity, Alias::new(OTHER))
        .and_where(of)
        .and_where(other(tasks::Column::State).is_in(OPEN_STATES))
        .and_where(other(tasks::Column::Kind).is_in(ORDERED_KINDS))
        .and_where(other(tasks::Column::Seq).lt(seq))
        .order_by_expr(other(tasks::Column::Seq), Order::Asc)
        .to_owned()
}

/// The tasks of the locks `of` running under a lease live at `now`. Rows are
/// `(deployment, task, lock key)`.
fn lock_holders_query(of: Expr, now: Expr) -> SelectStatement {
    Query::select()
        .expr(other(tasks::Column::DeploymentId))
        .expr(other(tasks::Column::TaskId))
        .expr(other(tasks::Column::LockKey))
        .from_as(tasks::Entity, Alias::new(OTHER))
        .and_where(of)
        .and_where(other(tasks::Column::State).eq(TaskState::Running.as_str()))
        .and_where(other(tasks::Column::LeaseUntil).gt(now))
        .to_owned()
}

/// The first `(deployment, task)` row `query` returns, by lock key.
async fn first_task_by_lock(
    conn: &impl ConnectionTrait,
    query: &SelectStatement,
) -> Result<BTreeMap<String, (DeploymentId, TaskId)>, StoreError> {
    let mut first = BTreeMap::new();
    for row in conn.query_all(query).await? {
        let deployment: Uuid = row.try_get_by_index(0)?;
        let task: String = row.try_get_by_index(1)?;
        let lock_key: String = row.try_get_by_index(2)?;
        if let std::collections::btree_map::Entry::Vacant(entry) = first.entry(lock_key) {
            entry.insert((DeploymentId(deployment), parse("task id", &task)?));
        }
    }
    Ok(first)
}

/// The first `(deployment, task)` row `query` returns.
async fn first_task(
    conn: &impl ConnectionTrait,
    query: &SelectStatement,
) -> Result<Option<(DeploymentId, TaskId)>, StoreError> {
    let Some(row) = conn.query_one(&query.clone().limit(1).to_owned()).await? else {
        return Ok(None);
    };
    let deployment: Uuid = row.try_get_by_index(0)?;
    let task: String = row.try_get_by_index(1)?;
    Ok(Some((DeploymentId(deployment), parse("task id", &task)?)))
}

/// For a deploy or delete: the oldest deploy or delete of its component, in a
/// deployment of the app submitted before its own, that has not ended. `None` when
/// it may run.
async fn older_work(
    conn: &impl ConnectionTrait,
    task: &tasks::Model,
) -> Result<Option<(DeploymentId, TaskId)>, StoreError> {
    let Some(lock_key) = &task.lock_key else {
        return Ok(None);
    };
    if !ORDERED_KINDS.contains(&task.kind.as_str()) {
        return Ok(None);
    }
    first_task(
        conn,
        &older_work_query(of_lock(Expr::val(lock_key.as_str())), Expr::val(task.seq)),
    )
    .await
}

/// The clock of `backend` in SQL: milliseconds since the epoch.
fn clock_sql(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        _ => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// The database's clock as an expression, so that a statement needs no round trip
/// to learn the time.
fn clock(backend: DbBackend) -> Expr {
    Expr::cust(clock_sql(backend))
}

/// A task holding a tenant slot: its deployment, id and fence.
type SlotHolder<'a> = (Uuid, &'a str, i64);

/// Takes a free slot of `tenant` below `limit` for `holder`. On PostgreSQL the
/// slots other claims have locked are skipped, so that the claims of one tenant do
/// not wait for each other. The slots are made the first time a claim needs them.
/// `false`: the tenant runs `limit` tasks.
///
/// A slot is free when it names no holder: the transaction that moves a task out
/// of `running` frees its slot ([`free_tenant_slot`]). Freeness is a column of the
/// slot's own row, not a read of the holder's task, so that PostgreSQL re-checks it
/// on the newest row when two claims race for one slot.
async fn take_tenant_slot(
    txn: &DatabaseTransaction,
    tenant: Uuid,
    limit: u32,
    holder: SlotHolder<'_>,
) -> Result<bool, StoreError> {
    use tenant_slots::{Column, Entity};
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let free = Query::select()
        .column((Entity, Column::Slot))
        .from(Entity)
        .and_where(Expr::col((Entity, Column::TenantId)).eq(tenant))
        .and_where(Expr::col((Entity, Column::Slot)).lt(limit))
        .and_where(Expr::col((Entity, Column::DeploymentId)).is_null())
        .order_by((Entity, Column::Slot), Order::Asc)
        .limit(1)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let take = Entity::update_many()
        .col_expr(Column::DeploymentId, Expr::value(holder.0))
        .col_expr(Column::TaskId, Expr::value(holder.1))
        .col_expr(Column::Fence, Expr::value(holder.2))
        .filter(Column::TenantId.eq(tenant))
        .filter(Column::Slot.in_subquery(free));
    if take.clone().exec(txn).await?.rows_affected == 1 {
        return Ok(true);
    }
    let n_slots = Entity::find()
        .filter(Column::TenantId.eq(tenant))
        .filter(Column::Slot.lt(limit))
        .count(txn)
        .await?;
    if n_slots >= u64::try_from(limit).unwrap_or(u64::MAX) {
        return Ok(false);
    }
    let slots = (0..limit).map(|slot| tenant_slots::ActiveModel {
        tenant_id: Set(tenant),
        slot: Set(slot),
        deployment_id: Set(None),
        task_id: Set(None),
        fence: Set(None),
    });
    Entity::insert_many(slots)
        .on_conflict_do_nothing_on([Column::TenantId, Column::Slot])
        .exec(txn)
        .await?;
    Ok(take.exec(txn).await?.rows_affected == 1)
}

fn task_key(deployment: DeploymentId, task: &TaskId) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(tasks::Column::DeploymentId.eq(deployment.0))
        .add(tasks::Column::TaskId.eq(task.as_str()))
}

/// The tasks of `deployment` that need `task`.
async fn dependents(
    conn: &impl ConnectionTrait,
    deployment: DeploymentId,
    task: &TaskId,
) -> Result<Vec<TaskId>, StoreError> {
    task_needs::Entity::find()
        .filter(task_needs::Column::DeploymentId.eq(deployment.0))
        .filter(task_needs::Column::NeedId.eq(task.as_str()))
        .all(conn)
        .await?
        .into_iter()
        .map(|edge| parse("task id", &edge.task_id))
        .collect()
}

fn attempt_of(row: &tasks::Model) -> u32 {
    u32::try_from(row.attempt).unwrap_or(0)
}

/// Attempts made so far: the current attempt counts once a worker claimed it (a
/// claim sets the worker; handing the task out again clears it).
fn attempts_made(row: &tasks::Model) -> u32 {
    let attempt = attempt_of(row);
    if row.worker.is_some() {
        attempt
    } else {
        attempt.saturating_sub(1)
    }
}

fn release_from_row(app: &str, row: releases::Model) -> Result<Release, StoreError> {
    let components: BTreeMap<ComponentName, ReleasedComponent> =
        from_json("release", &row.components)?;
    Ok(Release {
        app: parse("app name", app)?,
        version: row.version as u32,
        deployment: row.deployment_id.map(DeploymentId),
        created_at: timestamp(row.created_at),
        components,
    })
}

#[async_trait]
impl Store for SeaOrmStore {
    async fn check_connectivity(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    async fn ensure_tenant(&self, name: &TenantName) -> Result<TenantId, StoreError> {
        let now = self.now(&self.db).await?;
        tenants::Entity::insert(tenants::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_string()),
            created_at: Set(now),
        })
        .on_conflict_do_nothing_on([tenants::Column::Name])
        .exec_without_returning(&self.db)
        .await?;
        self.tenant(name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "tenant",
                id: name.to_string(),
            })
    }

    async fn create_tenant(
        &self,
        name: &TenantName,
        token_hash: &str,
    ) -> Result<TenantId, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let id = Uuid::now_v7();
        let inserted = tenants::Entity::insert(tenants::ActiveModel {
            id: Set(id),
            name: Set(name.to_string()),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = inserted {
            return Err(match err.sql_err() {
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict {
                    what: "tenant",
                    id: name.to_string(),
                },
                _ => err.into(),
            });
        }
        api_tokens::Entity::insert(api_tokens::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(id),
            token_hash: Set(token_hash.to_owned()),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(TenantId(id))
    }

    async fn tenant_by_token(&self, token_hash: &str) -> Result<Option<TenantId>, StoreError> {
        let token = api_tokens::Entity::find()
            .filter(api_tokens::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?;
        Ok(token.map(|token| TenantId(token.tenant_id)))
    }

    async fn deployment_by_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<(DeploymentId, String)>, StoreError> {
        self.deployment_by_idempotency_key_in(&self.db, tenant, key)
            .await
    }

    async fn tenant(&self, name: &TenantName) -> Result<Option<TenantId>, StoreError> {
        let tenant = tenants::Entity::find()
            .filter(tenants::Column::Name.eq(name.as_str()))
            .one(&self.db)
            .await?;
        Ok(tenant.map(|tenant| TenantId(tenant.id)))
    }

    async fn current_state(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<CurrentState, StoreError> {
        let Some(app) = self.app_by_name(&self.db, tenant, app).await? else {
            return Ok(CurrentState::default());
        };
        let components = self.running_components(&self.db, app.id).await?;
        let active = self.newest_release(&self.db, &app).await?;
        Ok(CurrentState {
            release: active.as_ref().map(|release| release.version),
            changed_since_release: active.map_or(!components.is_empty(), |release| {
                release.components != components
            }),
            components,
        })
    }

    async fn active_release(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<Option<Release>, StoreError> {
        match self.app_by_name(&self.db, tenant, app).await? {
            Some(app) => self.newest_release(&self.db, &app).await,
            None => Ok(None),
        }
    }

    async fn releases(
        &self,
        tenant: TenantId,
        app: &AppName,
        PageRequest { before, limit }: PageRequest,
    ) -> Result<Option<Page<Release>>, StoreError> {
        let Some(app) = self.app_by_name(&self.db, tenant, app).await? else {
            return Ok(None);
        };
        // Releases are numbered 1, 2, … in the transaction that takes each number
        // and never deleted: the sequence is the count, without counting history.
        let total = u64::try_from(app.release_seq).unwrap_or(0);
        let mut query = releases::Entity::find().filter(releases::Column::AppId.eq(app.id));
        if let Some(before) = before {
            query = query.filter(releases::Column::Version.lt(before as i32));
        }
        // One more than asked tells whether another page follows.
        let mut rows = query
            .order_by_desc(releases::Column::Version)
            .limit(limit.saturating_add(1))
            .all(&self.db)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let items = rows
            .into_iter()
            .map(|row| release_from_row(&app.name, row))
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = items
            .last()
            .filter(|_| more)
            .map(|release| release.version.to_string());
        Ok(Some(Page {
            items,
            next_cursor,
            total,
        }))
    }

    async fn release(
        &self,
        tenant: TenantId,
        app: &AppName,
        version: u32,
    ) -> Result<Option<Release>, StoreError> {
        let Some(app) = self.app_by_name(&self.db, tenant, app).await? else {
            return Ok(None);
        };
        releases::Entity::find_by_id((app.id, version as i32))
            .one(&self.db)
            .await?
            .map(|row| release_from_row(&app.name, row))
            .transpose()
    }

    async fn create_deployment(&self, new: &NewDeployment) -> Result<Creation, StoreError> {
        let rows = new.task_rows()?;
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        if let Some(idempotency) = &new.idempotency
            && let Some(existing) = self
                .deployment_by_idempotency_key_in(&txn, new.tenant, &idempotency.key)
                .await?
        {
            txn.rollback().await?;
            return Ok(existing_creation(existing, idempotency));
        }

        let app_name = new.plan.app.as_str();
        apps::Entity::insert(apps::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(new.tenant.0),
            name: Set(app_name.to_owned()),
            release_seq: Set(0),
            created_at: Set(now),
            concurrency: Set(None),
            strategy: Set(None),
            deployment_seq: Set(0),
        })
        .on_conflict_do_nothing_on([apps::Column::TenantId, apps::Column::Name])
        .exec_without_returning(&txn)
        .await?;
        // Numbering the deployment locks the app's row: submissions of one app
        // commit one after the other, in the order of their numbers.
        let app = apps::Entity::update_many()
            .col_expr(
                apps::Column::DeploymentSeq,
                Expr::col(apps::Column::DeploymentSeq).add(1),
            )
            .filter(apps::Column::TenantId.eq(new.tenant.0))
            .filter(apps::Column::Name.eq(app_name))
            .exec_with_returning(&txn)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                what: "app",
                id: app_name.to_owned(),
            })?;
        if let Some(policy) = new.concurrency {
            apps::Entity::update_many()
                .col_expr(apps::Column::Concurrency, Expr::value(policy.as_str()))
                .filter(apps::Column::Id.eq(app.id))
                .exec(&txn)
                .await?;
        }
        let strategy = match new.strategy {
            Some(strategy) => {
                apps::Entity::update_many()
                    .col_expr(apps::Column::Strategy, Expr::value(strategy.as_str()))
                    .filter(apps::Column::Id.eq(app.id))
                    .exec(&txn)
                    .await?;
                strategy
            }
            None => strategy_of(app.strategy.as_deref())?,
        };

        let state = if rows.is_empty() {
            DeploymentState::Succeeded
        } else {
            DeploymentState::Pending
        };
        // A deployment that changes nothing leaves the active release active, unless
        // what runs moved away from it (a deployment applied only partly): then it
        // records what runs as a new release, so that its release is true.
        let release_version = if rows.is_empty() {
            let active = self.newest_release(&txn, &app).await?;
            let running = self.running_components(&txn, app.id).await?;
            match active {
                Some(active) if active.components == running => Some(active.version as i32),
                None if running.is_empty() => None,
                _ => Some(
                    self.write_release(&txn, now, app.id, Some(new.id.0))
                        .await? as i32,
                ),
            }
        } else {
            None
        };
        let inserted = deployments::Entity::insert(deployments::ActiveModel {
            id: Set(new.id.0),
            tenant_id: Set(new.tenant.0),
            app_id: Set(app.id),
            app: Set(app.name.clone()),
            state: Set(state.as_str().to_owned()),
            n_open: Set(rows.len() as i32),
            has_failed: Set(false),
            base_release: Set(new.current.release.map(|version| version as i32)),
            release_version: Set(release_version),
            manifest: Set(to_json(&new.manifest)),
            plan: Set(to_json(&new.plan)),
            created_at: Set(now),
            started_at: Set(rows.is_empty().then_some(now)),
            finished_at: Set(rows.is_empty().then_some(now)),
            idempotency_key: Set(new.idempotency.as_ref().map(|i| i.key.clone())),
            request_hash: Set(new.idempotency.as_ref().map(|i| i.request_hash.clone())),
            cancel_requested_at: Set(None),
            rollback_to: Set(new.rollback_to.map(|version| version as i32)),
            replaces: Set(new.replaces.map(|id| id.0)),
            auto_rollback: Set(new.auto_rollback.then(|| AUTO_ROLLBACK_ARMED.to_owned())),
            external_update: Set(new.external_update.as_ref().map(to_json)),
            strategy: Set(Some(strategy.as_str().to_owned())),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = inserted {
            // Two requests with one idempotency key raced: the other one won.
            if let (Some(idempotency), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) =
                (&new.idempotency, err.sql_err())
            {
                txn.rollback().await?;
                if let Some(existing) = self
                    .deployment_by_idempotency_key(new.tenant, &idempotency.key)
                    .await?
                {
                    return Ok(existing_creation(existing, idempotency));
                }
            }
            return Err(err.into());
        }

        if !rows.is_empty() {
            let task_models = rows.iter().map(|row| tasks::ActiveModel {
                deployment_id: Set(new.id.0),
                task_id: Set(row.id.to_string()),
                kind: Set(row.kind.as_str().to_owned()),
                component: Set(row.component.to_string()),
                state: Set(if row.needs.is_empty() {
                    TaskState::Ready
                } else {
                    TaskState::Blocked
                }
                .as_str()
                .to_owned()),
                attempt: Set(1),
                fence: Set(None),
                n_pending: Set(row.needs.len() as i32),
                spec: Set(to_json(&row.spec)),
                artifact_from: Set(row.artifact_from.as_ref().map(TaskId::to_string)),
                artifact: Set(row.artifact.clone()),
                worker: Set(None),
                lease_until: Set(None),
                started_at: Set(None),
                finished_at: Set(None),
                log: Set(None),
                error: Set(None),
                retry_at: Set(None),
                phase: Set(None),
                seq: Set(app.deployment_seq),
                version: Set(row.version.clone()),
                tenant_id: Set(Some(new.tenant.0)),
                lock_key: Set(Some(component_lock_key(
                    new.tenant,
                    &new.plan.app,
                    &row.component,
                ))),
            });
            tasks::Entity::insert_many(task_models)
                .exec_without_returning(&txn)
                .await?;
            let edges: Vec<_> = rows
                .iter()
                .flat_map(|row| {
                    row.needs.iter().map(|need| task_needs::ActiveModel {
                        deployment_id: Set(new.id.0),
                        need_id: Set(need.to_string()),
                        task_id: Set(row.id.to_string()),
                    })
                })
                .collect();
            if !edges.is_empty() {
                task_needs::Entity::insert_many(edges)
                    .exec_without_returning(&txn)
                    .await?;
            }
            let first: Vec<TaskDispatch> = rows
                .iter()
                .filter(|row| row.needs.is_empty())
                .map(|row| TaskDispatch {
                    tenant: new.tenant,
                    app: new.plan.app.clone(),
                    deployment: new.id,
                    task: row.id.clone(),
                    attempt: 1,
                })
                .collect();
            self.enqueue_all(&txn, now, &first).await?;
        }
        txn.commit().await?;
        self.outbox_signal.notify_one();
        Ok(Creation::Created)
    }

    async fn deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Deployment>, StoreError> {
        let row = deployments::Entity::find_by_id(id.0)
            .filter(deployments::Column::TenantId.eq(tenant.0))
            .one(&self.db)
            .await?;
        match row {
            Some(row) => Ok(Some(self.load_deployment(row).await?)),
            None => Ok(None),
        }
    }

    async fn next_fence(&self, key: &str) -> Result<Fence, StoreError> {
        take_fence(&self.db, key).await
    }

    async fn claim_task(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let backend = self.backend();
        let txn = self.db.begin().await?;
        // First the component's fence row, which stays locked until the commit
        // (PostgreSQL): concurrent claims of one component are decided one after
        // the other, each seeing the ones committed before.
        let fence = match claim.fence {
            Some(fence) => {
                fences::Entity::find_by_id(claim.lock_key.clone())
                    .lock(LockType::NoKeyUpdate)
                    .one(&txn)
                    .await?;
                fence
            }
            None => take_fence(&txn, &claim.lock_key).await?,
        };
        // The claim, in one statement: the task is ready at the attempt, under an
        // older fence, no other task of its component runs, and no deploy of its
        // component submitted before waits. It returns what the worker needs.
        let key = Expr::col((tasks::Entity, tasks::Column::LockKey));
        let seq = Expr::col((tasks::Entity, tasks::Column::Seq));
        let now = clock(backend);
        let update = Query::update()
            .table(tasks::Entity)
            .value(tasks::Column::State, TaskState::Running.as_str())
            .value(tasks::Column::Fence, fence.0)
            .value(tasks::Column::Worker, claim.worker.as_str())
            .value(
                tasks::Column::LeaseUntil,
                now.clone().add(millis(claim.lease)),
            )
            .value(tasks::Column::StartedAt, now.clone())
            .value(tasks::Column::RetryAt, None::<i64>)
            .value(
                tasks::Column::Phase,
                first_phase(of_deployment(deployments::Column::Strategy)),
            )
            .cond_where(
                Condition::all()
                    .add(task_key(claim.deployment, &claim.task))
                    .add(tasks::Column::State.eq(TaskState::Ready.as_str()))
                    .add(tasks::Column::Attempt.eq(claim.attempt as i32))
                    .add(
                        Condition::any()
                            .add(tasks::Column::Fence.is_null())
                            .add(tasks::Column::Fence.lt(fence.0)),
                    )
                    .add(
                        Condition::any()
                            .add(tasks::Column::LockKey.is_null())
                            .add(tasks::Column::LockKey.eq(claim.lock_key.as_str())),
                    )
                    .add(Expr::not_exists(lock_holders_query(
                        of_lock(key.clone()),
                        now,
                    )))
                    .add(
                        Condition::any()
                            .add(tasks::Column::Kind.is_not_in(ORDERED_KINDS))
                            .add(Expr::not_exists(older_work_query(of_lock(key), seq))),
                    ),
            )
            .returning(Query::returning().exprs([
                Expr::col(tasks::Column::Kind),
                Expr::col(tasks::Column::Component),
                Expr::col(tasks::Column::Spec),
                Expr::col(tasks::Column::Artifact),
                of_deployment(deployments::Column::TenantId),
                of_deployment(deployments::Column::App),
                of_deployment(deployments::Column::Strategy),
                of_deployment(deployments::Column::State),
                Expr::col(tasks::Column::Phase),
            ]))
            .to_owned();
        // What refused the claim is read after it, and may have ended since (a
        // holder's result, a lease that lapsed): then the claim is tried again, still
        // under the fence row's lock.
        let mut attempts = 0;
        let row = loop {
            if let Some(row) = txn.query_one(&update).await? {
                break row;
            }
            attempts += 1;
            let refusal = match self.refusal(&txn, claim, fence).await? {
                Some(refusal) => refusal,
                None if attempts < 3 => continue,
                None => ClaimOutcome::ComponentBusy,
            };
            if matches!(refusal, ClaimOutcome::ComponentBusy) && claim.fence.is_none() {
                // The lock is ours, yet another task of the component runs: its
                // holder lost the lock. The fence taken stays, so that the lost
                // holder's writes are refused from now on.
                txn.commit().await?;
            } else {
                txn.rollback().await?;
            }
            return Ok(refusal);
        };
        let tenant: Uuid = row.try_get_by_index(4)?;
        // Last: the tenant's slot, whose row stays locked until the commit.
        if let Some(limit) = claim.tenant_limit
            && !take_tenant_slot(
                &txn,
                tenant,
                limit,
                (claim.deployment.0, claim.task.as_str(), fence.0),
            )
            .await?
        {
            txn.rollback().await?;
            return Ok(ClaimOutcome::TenantLimit);
        }
        let deployment_state: String = row.try_get_by_index(7)?;
        if deployment_state == DeploymentState::Pending.as_str() {
            deployments::Entity::update_many()
                .col_expr(
                    deployments::Column::State,
                    Expr::value(DeploymentState::Running.as_str()),
                )
                .col_expr(deployments::Column::StartedAt, clock(backend))
                .filter(deployments::Column::Id.eq(claim.deployment.0))
                .filter(deployments::Column::State.eq(DeploymentState::Pending.as_str()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        let kind: String = row.try_get_by_index(0)?;
        let component: String = row.try_get_by_index(1)?;
        let spec: String = row.try_get_by_index(2)?;
        let app: String = row.try_get_by_index(5)?;
        let strategy: Option<String> = row.try_get_by_index(6)?;
        Ok(ClaimOutcome::Claimed(Box::new(ClaimedTask {
            tenant: TenantId(tenant),
            app: parse("app name", &app)?,
            deployment: claim.deployment,
            task: claim.task.clone(),
            kind: parse("task kind", &kind)?,
            component: parse("component name", &component)?,
            spec: from_json("task spec", &spec)?,
            artifact: row.try_get_by_index(3)?,
            attempt: claim.attempt,
            fence,
            strategy: strategy_of(strategy.as_deref())?,
            phase: row.try_get_by_index(8)?,
        })))
    }

    async fn extend_leases(
        &self,
        tasks: &[LeasedTask],
        lease: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        let mut leases = BTreeMap::new();
        for chunk in tasks.chunks(LEASES_PER_STATEMENT) {
            // One statement: the extensions, and whether each deployment was asked
            // to stop.
            let held = chunk.iter().map(|held| {
                ValueTuple::Many(vec![
                    held.deployment.0.into(),
                    held.task.as_str().into(),
                    (held.attempt as i32).into(),
                    held.fence.0.into(),
                ])
            });
            let mut update = tasks::Entity::update_many()
                .col_expr(
                    tasks::Column::LeaseUntil,
                    clock(self.backend()).add(millis(lease)),
                )
                .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
                .filter(
                    Expr::tuple([
                        Expr::col(tasks::Column::DeploymentId),
                        Expr::col(tasks::Column::TaskId),
                        Expr::col(tasks::Column::Attempt),
                        Expr::col(tasks::Column::Fence),
                    ])
                    .in_tuples(held),
                )
                .filter(fence_is_current())
                .into_query();
            update.returning(Query::returning().exprs([
                Expr::col(tasks::Column::DeploymentId),
                Expr::col(tasks::Column::TaskId),
                Expr::col(tasks::Column::Attempt),
                Expr::col(tasks::Column::Fence),
                of_deployment(deployments::Column::CancelRequestedAt),
            ]));
            for row in self.db.query_all(&update).await? {
                let deployment: Uuid = row.try_get_by_index(0)?;
                let task: String = row.try_get_by_index(1)?;
                let attempt: i32 = row.try_get_by_index(2)?;
                let fence: i64 = row.try_get_by_index(3)?;
                let cancel_requested: Option<i64> = row.try_get_by_index(4)?;
                let lease = if cancel_requested.is_some() {
                    Lease::CancelRequested
                } else {
                    Lease::Extended
                };
                leases.insert((deployment, task, attempt, fence), lease);
            }
        }
        // A task not extended is no longer at its attempt and fence.
        Ok(tasks
            .iter()
            .map(|held| {
                let key = (
                    held.deployment.0,
                    held.task.to_string(),
                    held.attempt as i32,
                    held.fence.0,
                );
                leases.get(&key).copied().unwrap_or(Lease::Lost)
            })
            .collect())
    }

    async fn concurrency_policy(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<ConcurrencyPolicy, StoreError> {
        match self
            .app_by_name(&self.db, tenant, app)
            .await?
            .and_then(|app| app.concurrency)
        {
            Some(policy) => parse("concurrency policy", &policy),
            None => Ok(ConcurrencyPolicy::Queue),
        }
    }

    async fn superseded_by(
        &self,
        tenant: TenantId,
        newer: DeploymentId,
        components: &[ComponentName],
    ) -> Result<Vec<DeploymentId>, StoreError> {
        // The newer deployment's number and app, from one of its tasks.
        let Some(newer_task) = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(newer.0))
            .filter(tasks::Column::TenantId.eq(tenant.0))
            .one(&self.db)
            .await?
        else {
            return Ok(Vec::new());
        };
        let Some(app) = deployments::Entity::find_by_id(newer.0)
            .select_only()
            .column(deployments::Column::App)
            .into_tuple::<String>()
            .one(&self.db)
            .await?
        else {
            return Ok(Vec::new());
        };
        let app: AppName = parse("app name", &app)?;
        let lock_keys = components
            .iter()
            .map(|component| component_lock_key(tenant, &app, component));
        let touching: BTreeSet<Uuid> = tasks::Entity::find()
            .select_only()
            .column(tasks::Column::DeploymentId)
            .filter(tasks::Column::LockKey.is_in(lock_keys))
            .filter(tasks::Column::State.is_in(OPEN_STATES))
            .filter(tasks::Column::Seq.lt(newer_task.seq))
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        Ok(touching.into_iter().map(DeploymentId).collect())
    }

    async fn record_external_update(
        &self,
        tenant: TenantId,
        app: &AppName,
        update: &ExternalUpdate,
        as_release: bool,
    ) -> Result<Option<Recorded>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let Some(app) = self.app_by_name(&txn, tenant, app).await? else {
            return Ok(None);
        };
        let hash = update.artifact_hash();
        let key = (app.id, update.component.to_string(), hash.clone());
        let inserted = external_updates::Entity::insert(external_updates::ActiveModel {
            app_id: Set(app.id),
            component: Set(update.component.to_string()),
            artifact_hash: Set(hash),
            artifact: Set(update.artifact.clone()),
            version: Set(update.version.clone()),
            sha: Set(update.sha.clone()),
            release_version: Set(None),
            created_at: Set(now),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        if !matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
            let earlier = external_updates::Entity::find_by_id(key)
                .one(&txn)
                .await?
                .ok_or_else(|| StoreError::Database("an external update vanished".into()))?;
            txn.rollback().await?;
            return Ok(Some(Recorded {
                release: earlier.release_version.map(|version| version as u32),
                duplicate: true,
            }));
        }
        if !as_release {
            txn.commit().await?;
            return Ok(Some(Recorded {
                release: None,
                duplicate: false,
            }));
        }
        // The announced artifact is what the component runs from now on: the
        // platform announced it, drover deploys nothing.
        let announced = deployed_components::Entity::update_many()
            .col_expr(
                deployed_components::Column::Artifact,
                Expr::value(update.artifact.as_str()),
            )
            .col_expr(
                deployed_components::Column::Version,
                Expr::value(update.released_version()),
            )
            .col_expr(
                deployed_components::Column::DeploymentId,
                Expr::value(None::<Uuid>),
            )
            .col_expr(deployed_components::Column::UpdatedAt, Expr::value(now))
            .filter(deployed_components::Column::AppId.eq(app.id))
            .filter(deployed_components::Column::Component.eq(update.component.as_str()))
            .exec(&txn)
            .await?;
        if announced.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(None);
        }
        let version = self.write_release(&txn, now, app.id, None).await?;
        external_updates::Entity::update_many()
            .col_expr(
                external_updates::Column::ReleaseVersion,
                Expr::value(version as i32),
            )
            .filter(external_updates::Column::AppId.eq(key.0))
            .filter(external_updates::Column::Component.eq(key.1))
            .filter(external_updates::Column::ArtifactHash.eq(key.2))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(Recorded {
            release: Some(version),
            duplicate: false,
        }))
    }

    async fn retry_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Retry>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let Some((deployment, state)) = tenant_deployment(&txn, tenant, id).await? else {
            return Ok(None);
        };
        if state != DeploymentState::Failed {
            return Ok(Some(Retry::NotFailed(state)));
        }
        let active = releases::Entity::find()
            .select_only()
            .column(releases::Column::Version)
            .filter(releases::Column::AppId.eq(deployment.app_id))
            .order_by_desc(releases::Column::Version)
            .into_tuple::<i32>()
            .one(&txn)
            .await?;
        if active.is_some() && active != deployment.base_release {
            return Ok(Some(Retry::Superseded {
                active: active.map_or(0, |version| version as u32),
            }));
        }
        if let Some(by) = overtaken(&txn, id).await? {
            return Ok(Some(Retry::Overtaken { by }));
        }
        // Claiming the deployment's row first: a second retry at once waits, then
        // finds it running.
        let reopened_deployment = deployments::Entity::update_many()
            .col_expr(
                deployments::Column::State,
                Expr::value(DeploymentState::Running.as_str()),
            )
            .col_expr(deployments::Column::HasFailed, Expr::value(false))
            .col_expr(deployments::Column::FinishedAt, Expr::value(None::<i64>))
            .filter(deployments::Column::Id.eq(id.0))
            .filter(deployments::Column::State.eq(DeploymentState::Failed.as_str()))
            .exec(&txn)
            .await?;
        if reopened_deployment.rows_affected != 1 {
            txn.rollback().await?;
            return Box::pin(self.retry_deployment(tenant, id)).await;
        }
        let reopened: Vec<tasks::Model> = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(id.0))
            .filter(
                tasks::Column::State
                    .is_in([TaskState::Failed.as_str(), TaskState::Skipped.as_str()]),
            )
            .all(&txn)
            .await?;
        let reopened_ids: BTreeSet<&str> =
            reopened.iter().map(|task| task.task_id.as_str()).collect();
        // A reopened task waits for its needs that are reopened too; the others
        // succeeded.
        let mut pending: BTreeMap<String, i32> = BTreeMap::new();
        for edge in task_needs::Entity::find()
            .filter(task_needs::Column::DeploymentId.eq(id.0))
            .all(&txn)
            .await?
        {
            if reopened_ids.contains(edge.task_id.as_str())
                && reopened_ids.contains(edge.need_id.as_str())
            {
                *pending.entry(edge.task_id).or_default() += 1;
            }
        }
        let app: AppName = parse("app name", &deployment.app)?;
        let mut tasks = Vec::new();
        for task in &reopened {
            let failed = task.state == TaskState::Failed.as_str();
            let n_pending = pending.get(&task.task_id).copied().unwrap_or(0);
            let state = if n_pending == 0 {
                TaskState::Ready
            } else {
                TaskState::Blocked
            };
            let attempt = if failed {
                task.attempt + 1
            } else {
                task.attempt
            };
            let task_id: TaskId = parse("task id", &task.task_id)?;
            tasks::Entity::update_many()
                .col_expr(tasks::Column::State, Expr::value(state.as_str()))
                .col_expr(tasks::Column::Attempt, Expr::value(attempt))
                .col_expr(tasks::Column::NPending, Expr::value(n_pending))
                .col_expr(tasks::Column::Worker, Expr::value(None::<String>))
                .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
                .col_expr(tasks::Column::RetryAt, Expr::value(None::<i64>))
                .col_expr(tasks::Column::StartedAt, Expr::value(None::<i64>))
                .col_expr(tasks::Column::FinishedAt, Expr::value(None::<i64>))
                .col_expr(tasks::Column::Error, Expr::value(None::<String>))
                .filter(task_key(id, &task_id))
                .filter(tasks::Column::State.eq(task.state.as_str()))
                .exec(&txn)
                .await?;
            if state == TaskState::Ready {
                let dispatch = TaskDispatch {
                    tenant,
                    app: app.clone(),
                    deployment: id,
                    task: task_id.clone(),
                    attempt: u32::try_from(attempt).unwrap_or(0),
                };
                self.enqueue(&txn, now, &dispatch).await?;
            }
            tasks.push(task_id);
        }
        deployments::Entity::update_many()
            .col_expr(deployments::Column::NOpen, Expr::value(tasks.len() as i32))
            .filter(deployments::Column::Id.eq(id.0))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.outbox_signal.notify_one();
        Ok(Some(Retry::Reopened { tasks }))
    }

    async fn cancel_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Cancellation>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let Some((_, state)) = tenant_deployment(&txn, tenant, id).await? else {
            return Ok(None);
        };
        if state.is_terminal() {
            return Ok(Some(Cancellation::AlreadyFinished(state)));
        }
        // Tasks first, then the deployment's row: the order results take, so that a
        // result recorded meanwhile and this cancellation cannot deadlock.
        let cancelled: Vec<TaskId> = tasks::Entity::update_many()
            .col_expr(
                tasks::Column::State,
                Expr::value(TaskState::Cancelled.as_str()),
            )
            .col_expr(tasks::Column::FinishedAt, Expr::value(now))
            .col_expr(tasks::Column::RetryAt, Expr::value(None::<i64>))
            .filter(tasks::Column::DeploymentId.eq(id.0))
            .filter(
                tasks::Column::State
                    .is_in([TaskState::Blocked.as_str(), TaskState::Ready.as_str()]),
            )
            .exec_with_returning(&txn)
            .await?
            .into_iter()
            .map(|task| parse("task id", &task.task_id))
            .collect::<Result<_, _>>()?;
        let Some(deployment) = deployments::Entity::update_many()
            .col_expr(
                deployments::Column::NOpen,
                Expr::col(deployments::Column::NOpen).sub(cancelled.len() as i32),
            )
            .col_expr(
                deployments::Column::CancelRequestedAt,
                Expr::expr(Func::coalesce([
                    Expr::col(deployments::Column::CancelRequestedAt),
                    Expr::value(now),
                ])),
            )
            .filter(deployments::Column::Id.eq(id.0))
            .filter(deployments::Column::State.is_in([
                DeploymentState::Pending.as_str(),
                DeploymentState::Running.as_str(),
            ]))
            .exec_with_returning(&txn)
            .await?
            .pop()
        else {
            // It ended between the two reads.
            txn.rollback().await?;
            return Box::pin(self.cancel_deployment(tenant, id)).await;
        };
        let finished = if deployment.n_open <= 0 {
            Some(self.finish_deployment(&txn, now, &deployment).await?)
        } else {
            None
        };
        let running: Vec<TaskId> = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(id.0))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .all(&txn)
            .await?
            .into_iter()
            .map(|task| parse("task id", &task.task_id))
            .collect::<Result<_, _>>()?;
        txn.commit().await?;
        Ok(Some(Cancellation::Requested {
            cancelled,
            running,
            finished,
        }))
    }

    async fn adopt(
        &self,
        tenant: TenantId,
        app: &AppName,
        components: BTreeMap<ComponentName, ReleasedComponent>,
    ) -> Result<Adoption, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        apps::Entity::insert(apps::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.0),
            name: Set(app.to_string()),
            release_seq: Set(0),
            created_at: Set(now),
            concurrency: Set(None),
            strategy: Set(None),
            deployment_seq: Set(0),
        })
        .on_conflict_do_nothing_on([apps::Column::TenantId, apps::Column::Name])
        .exec_without_returning(&txn)
        .await?;
        // Bumping the sequence locks the app's row: concurrent adoptions and
        // deployments of the app are decided one after the other.
        let row =
            self.app_by_name(&txn, tenant, app)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "app",
                    id: app.to_string(),
                })?;
        let bumped = self.bump_release_seq(&txn, row.id).await?;
        if bumped.release_seq > 1 {
            txn.rollback().await?;
            let first =
                self.release(tenant, app, 1)
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        what: "release",
                        id: format!("{app} 1"),
                    })?;
            return Ok(Adoption {
                release: first,
                existing: true,
            });
        }
        // What the driver reports running is what runs.
        for (name, running) in &components {
            let row = deployed_components::ActiveModel {
                app_id: Set(row.id),
                component: Set(name.to_string()),
                spec: Set(to_json(&running.spec)),
                artifact: Set(running.artifact.clone()),
                version: Set(running.version.clone()),
                deployment_id: Set(None),
                fence: Set(None),
                updated_at: Set(now),
            };
            put_running(&txn, row, None).await?;
        }
        let components = self.running_components(&txn, row.id).await?;
        releases::Entity::insert(releases::ActiveModel {
            app_id: Set(row.id),
            version: Set(1),
            deployment_id: Set(None),
            components: Set(to_json(&components)),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(Adoption {
            release: Release {
                app: app.clone(),
                version: 1,
                deployment: None,
                created_at: timestamp(now),
                components,
            },
            existing: false,
        })
    }

    async fn armed_auto_rollbacks(&self) -> Result<Vec<AutoRollback>, StoreError> {
        deployments::Entity::find()
            .filter(deployments::Column::AutoRollback.eq(AUTO_ROLLBACK_ARMED))
            .filter(deployments::Column::State.eq(DeploymentState::Failed.as_str()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                Ok(AutoRollback {
                    tenant: TenantId(row.tenant_id),
                    app: parse("app name", &row.app)?,
                    deployment: DeploymentId(row.id),
                    to: row.base_release.map(|version| version as u32),
                })
            })
            .collect()
    }

    async fn disarm_auto_rollback(&self, deployment: DeploymentId) -> Result<(), StoreError> {
        deployments::Entity::update_many()
            .col_expr(
                deployments::Column::AutoRollback,
                Expr::value(AUTO_ROLLBACK_DONE),
            )
            .filter(deployments::Column::Id.eq(deployment.0))
            .filter(deployments::Column::AutoRollback.eq(AUTO_ROLLBACK_ARMED))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn record_phase(
        &self,
        deployment: DeploymentId,
        task: &TaskId,
        attempt: u32,
        fence: Fence,
        phase: &str,
    ) -> Result<bool, StoreError> {
        let result = tasks::Entity::update_many()
            .col_expr(tasks::Column::Phase, Expr::value(phase))
            .filter(task_key(deployment, task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(attempt as i32))
            .filter(tasks::Column::Fence.eq(fence.0))
            .filter(fence_is_current())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn record_results(
        &self,
        results: &[TaskResult],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        // In the order of deployments and tasks, so that transactions recording
        // results of the same deployments take their rows in the same order.
        let mut order: Vec<usize> = (0..results.len()).collect();
        order.sort_by(|&a, &b| {
            let key = |i: usize| (results[i].deployment.0, results[i].task.as_str());
            key(a).cmp(&key(b))
        });
        let txn = self.db.begin().await?;
        let mut outcomes = vec![RecordOutcome::Stale; results.len()];
        for i in order {
            outcomes[i] = self.record_in(&txn, &results[i]).await?;
        }
        txn.commit().await?;
        if outcomes
            .iter()
            .any(|outcome| !matches!(outcome, RecordOutcome::Stale))
        {
            self.outbox_signal.notify_one();
        }
        Ok(outcomes)
    }

    async fn reap_expired(&self, max_attempts: u32) -> Result<Vec<Reaped>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let expired = tasks::Entity::find()
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::LeaseUntil.lt(now))
            .all(&txn)
            .await?;
        let mut reaped = Vec::new();
        for task in expired {
            let task_id: TaskId = parse("task id", &task.task_id)?;
            let deployment = DeploymentId(task.deployment_id);
            let attempt = attempt_of(&task);
            let row = deployment_row(&txn, deployment).await?;
            let (tenant, app) = (row.tenant_id, row.app.clone());
            // A cancelled deployment runs nothing again: the task ends `cancelled`.
            let cancelled = row.cancel_requested_at.is_some();
            let out_of_attempts = attempt >= max_attempts;
            let mut update = tasks::Entity::update_many()
                .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
                .filter(task_key(deployment, &task_id))
                .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
                .filter(tasks::Column::Attempt.eq(task.attempt))
                .filter(tasks::Column::LeaseUntil.lt(now));
            update = if cancelled {
                update
                    .col_expr(
                        tasks::Column::State,
                        Expr::value(TaskState::Cancelled.as_str()),
                    )
                    .col_expr(tasks::Column::FinishedAt, Expr::value(now))
                    .col_expr(
                        tasks::Column::Error,
                        Expr::value("cancelled; the worker running it stopped answering"),
                    )
            } else if out_of_attempts {
                let error = format!(
                    "the lease expired {attempt} times: the workers running this task stopped answering"
                );
                update
                    .col_expr(
                        tasks::Column::State,
                        Expr::value(TaskState::Failed.as_str()),
                    )
                    .col_expr(tasks::Column::FinishedAt, Expr::value(now))
                    .col_expr(tasks::Column::Error, Expr::value(error))
            } else {
                update
                    .col_expr(tasks::Column::State, Expr::value(TaskState::Ready.as_str()))
                    .col_expr(tasks::Column::Attempt, Expr::value(attempt as i32 + 1))
                    .col_expr(tasks::Column::Worker, Expr::value(None::<String>))
            };
            if update.exec(&txn).await?.rows_affected != 1 {
                continue;
            }
            if let Some(fence) = task.fence {
                free_tenant_slot(
                    &txn,
                    task.tenant_id,
                    (task.deployment_id, &task.task_id, fence),
                )
                .await?;
            }
            if cancelled || out_of_attempts {
                let state = if cancelled {
                    TaskState::Cancelled
                } else {
                    TaskState::Failed
                };
                let owner = Owner {
                    deployment,
                    tenant: TenantId(tenant),
                    app: parse("app name", &app)?,
                    app_id: row.app_id,
                };
                let (skipped, finished) = self
                    .close_task(&txn, now, &owner, &task_id, state, None, None)
                    .await?;
                reaped.push(Reaped::Ended {
                    tenant: TenantId(tenant),
                    deployment,
                    task: task_id,
                    attempt,
                    state,
                    skipped,
                    finished,
                });
            } else {
                let dispatch = TaskDispatch {
                    tenant: TenantId(tenant),
                    app: parse("app name", &app)?,
                    deployment,
                    task: task_id,
                    attempt: attempt + 1,
                };
                self.enqueue(&txn, now, &dispatch).await?;
                reaped.push(Reaped::Requeued(dispatch));
            }
        }
        txn.commit().await?;
        if !reaped.is_empty() {
            self.outbox_signal.notify_one();
        }
        Ok(reaped)
    }

    async fn prune_finished(&self, older_than: Duration, limit: u64) -> Result<u64, StoreError> {
        let ended: Vec<&str> = DeploymentState::ALL
            .iter()
            .filter(|state| state.is_terminal())
            .map(|state| state.as_str())
            .collect();
        let not_armed = Condition::any()
            .add(deployments::Column::State.ne(DeploymentState::Failed.as_str()))
            .add(deployments::Column::AutoRollback.is_null())
            .add(deployments::Column::AutoRollback.ne(AUTO_ROLLBACK_ARMED));
        let old = Query::select()
            .column(deployments::Column::Id)
            .from(deployments::Entity)
            .and_where(Expr::col(deployments::Column::State).is_in(ended))
            .and_where(
                Expr::col(deployments::Column::FinishedAt)
                    .lt(clock(self.backend()).sub(millis(older_than))),
            )
            .cond_where(not_armed)
            .limit(limit)
            .to_owned();
        // Their tasks and task needs go with them (`ON DELETE CASCADE`).
        let deleted = deployments::Entity::delete_many()
            .filter(deployments::Column::Id.in_subquery(old))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }

    async fn redispatch_ready(&self) -> Result<usize, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let ready = tasks::Entity::find()
            .filter(tasks::Column::State.eq(TaskState::Ready.as_str()))
            .all(&txn)
            .await?;
        let deployment_ids: BTreeSet<Uuid> = ready.iter().map(|task| task.deployment_id).collect();
        let owners: BTreeMap<Uuid, (Uuid, String)> = deployments::Entity::find()
            .filter(deployments::Column::Id.is_in(deployment_ids))
            .all(&txn)
            .await?
            .into_iter()
            .map(|deployment| (deployment.id, (deployment.tenant_id, deployment.app)))
            .collect();
        let mut dispatches = Vec::with_capacity(ready.len());
        for task in &ready {
            let Some((tenant, app)) = owners.get(&task.deployment_id) else {
                continue;
            };
            dispatches.push(TaskDispatch {
                tenant: TenantId(*tenant),
                app: parse("app name", app)?,
                deployment: DeploymentId(task.deployment_id),
                task: parse("task id", &task.task_id)?,
                attempt: attempt_of(task),
            });
        }
        self.enqueue_all(&txn, now, &dispatches).await?;
        txn.commit().await?;
        if !ready.is_empty() {
            self.outbox_signal.notify_one();
        }
        Ok(ready.len())
    }

    async fn outbox_batch(&self, limit: u64) -> Result<Vec<OutboxMessage>, StoreError> {
        outbox::Entity::find()
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                Ok(OutboxMessage {
                    id: row.id,
                    queue: row.queue,
                    dispatch: from_json("outbox message", &row.payload)?,
                })
            })
            .collect()
    }

    async fn claim_outbox(
        &self,
        limit: u64,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let now = clock(self.backend());
        // On PostgreSQL, relays in other processes skip the rows this one locks;
        // SQLite has one writer and ignores the clause.
        let mut due = Query::select();
        due.column(outbox::Column::Id)
            .from(outbox::Entity)
            .cond_where(
                Condition::all()
                    .add(
                        Condition::any()
                            .add(outbox::Column::ClaimedUntil.is_null())
                            .add(Expr::col(outbox::Column::ClaimedUntil).lt(now.clone())),
                    )
                    .add(
                        Condition::any()
                            .add(outbox::Column::NotBefore.is_null())
                            .add(Expr::col(outbox::Column::NotBefore).lte(now.clone())),
                    ),
            )
            .order_by(outbox::Column::Id, Order::Asc)
            .limit(limit)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        let mut claimed = outbox::Entity::update_many()
            .col_expr(outbox::Column::ClaimedUntil, now.add(millis(lease)))
            .filter(outbox::Column::Id.in_subquery(due))
            .exec_with_returning(&self.db)
            .await?;
        claimed.sort_by_key(|row| row.id);
        claimed
            .into_iter()
            .map(|row| {
                Ok(OutboxMessage {
                    id: row.id,
                    queue: row.queue,
                    dispatch: from_json("outbox message", &row.payload)?,
                })
            })
            .collect()
    }

    async fn delete_outbox(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        outbox::Entity::delete_many()
            .filter(outbox::Column::Id.is_in(ids.iter().copied()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_signal.clone()
    }
}
