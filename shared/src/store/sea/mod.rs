//! The store on sea-orm: one implementation for `postgres://` and `sqlite:` URLs.
//!
//! Times come from the database's clock (one reading per transaction), never from
//! a worker's, so leases mean the same thing to every process.
//!
//! One module per capability of the store: `tenant_store` (tenants, tokens, tenant
//! slots), `release_store` (what runs, releases), `plan_store` (saved plans), `hook_store` (webhooks, their deliveries' answers), `log_store` (what steps print, live), `deployment_store` (submission,
//! reading with why-waiting, cancellation, retry, external updates, adoption,
//! automatic rollbacks, retention), `task_store` (fences, claims, leases, results,
//! readying dependents) and `outbox_store`. This module holds the connection and
//! the row helpers they share: the database's clock, a task's key, a column of a
//! task's deployment.

mod deployment_store;
mod hook_store;
mod log_store;
mod outbox_store;
mod plan_store;
mod release_store;
mod task_store;
mod tenant_store;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::{
    Alias, CaseStatement, Expr, ExprTrait, Func, IntoTableRef, LockBehavior, LockType, OnConflict,
    Order, Query, SelectStatement, ValueTuple,
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
    api_tokens, apps, audit, deployed_components, deployments, external_updates, fences,
    hook_deliveries, hooks, outbox, releases, saved_plans, task_logs, task_needs, tasks,
    tenant_slots, tenants,
};
use super::{
    Adoption, AppSummary, AuditEntry, AutoRollback, Cancellation, Claim, ClaimOutcome, ClaimedTask,
    Creation, Deployment, DeploymentFilter, DeploymentStore, DeploymentSummary, Finished, Grant,
    Hook, HookAnswer, HookInfo, HookStore, Idempotency, Lease, LeasedTask, LogLine, NewAuditEntry,
    NewDeployment, NewHook, NewToken, OutboxMessage, OutboxStore, Page, PageRequest, PlanContent,
    PlanStore, Reaped, RecordOutcome, Recorded, ReleaseStore, Retry, Rotation, SavedPlan, Store,
    StoreError, TaskLogStore, TaskOutcome, TaskResult, TaskStore, TaskView, TenantStore,
    TenantWeight, TokenInfo, Waiting, timestamp,
};
use crate::broker::TASKS_QUEUE;
use crate::config::redact_url;
use crate::dispatch::TaskDispatch;
use crate::ids::{DeploymentId, Fence, HookId, PlanId, TaskId, TenantId, TokenId};
use crate::locks::component_lock_key;
use crate::metrics;
use crate::model::{
    ConcurrencyPolicy, DeploymentState, HookKind, Scope, Strategy, TaskKind, TaskState,
};
use crate::names::{AppName, ComponentName, TenantName};
use crate::plan::Plan;
use crate::release::{Components, CurrentState, ExternalUpdate, Release, ReleasedComponent};
use crate::store::StoreFigures;
// What each concern's module shares with the others (its `pub(super)` items); each
// module sees this one's items and imports through `use super::*`.
use self::deployment_store::*;
use self::release_store::*;
use self::task_store::*;
use self::tenant_store::*;

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

/// A page of a list from up to `limit + 1` items read in its order (one more than
/// asked tells whether another page follows), the cursor made of its last item.
fn page_of<T>(mut items: Vec<T>, limit: u64, total: u64, cursor: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() as u64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = items.last().filter(|_| more).map(cursor);
    Page {
        items,
        next_cursor,
        total,
    }
}

fn strategy_of(stored: Option<&str>) -> Result<Strategy, StoreError> {
    stored.map_or(Ok(Strategy::default()), |strategy| {
        parse("strategy", strategy)
    })
}

/// The clock of `backend` in SQL: milliseconds since the epoch.
fn clock_sql(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        _ => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// `value IN (query)`, written for PostgreSQL as `value = ANY(ARRAY(query))`: the
/// query runs once, and `value` is then looked up by its index. (Planned as a
/// semi-join, PostgreSQL may instead run the query again for every row a scan
/// finds, when its statistics are stale or missing.)
fn in_once(value: Expr, query: SelectStatement, backend: DbBackend) -> Expr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_exprs(
            "$1 = ANY(ARRAY $2)",
            [value, Expr::SubQuery(None, Box::new(query.into()))],
        ),
        _ => value.in_subquery(query),
    }
}

/// The database's clock as an expression, so that a statement needs no round trip
/// to learn the time.
fn clock(backend: DbBackend) -> Expr {
    Expr::cust(clock_sql(backend))
}

impl SeaOrmStore {
    /// Wakes this process's relay once `after` has passed, so that an outbox row due
    /// then is published at once rather than at the relay's next poll.
    fn signal_after(&self, after: Duration) {
        let signal = self.outbox_signal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            signal.notify_one();
        });
    }
}

/// A task handed out to the workers that has not ended (or become `ready` again):
/// what counts against its tenant's `tenant-limit`. The SQL of the partial index
/// `tasks_handed_out` (its migration), word for word, so that PostgreSQL's planner
/// matches the two.
const HANDED_OUT_LIVE: &str = "handed_out AND state IN ('ready', 'running')";

fn task_key(deployment: DeploymentId, task: &TaskId) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(tasks::Column::DeploymentId.eq(deployment.0))
        .add(tasks::Column::TaskId.eq(task.as_str()))
}

fn attempt_of(row: &tasks::Model) -> u32 {
    u32::try_from(row.attempt).unwrap_or(0)
}

#[async_trait]
impl Store for SeaOrmStore {
    async fn check_connectivity(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    async fn figures(&self) -> Result<StoreFigures, StoreError> {
        fn by_state(table: impl IntoTableRef) -> SelectStatement {
            Query::select()
                .column(Alias::new("state"))
                .expr(Expr::col(Alias::new("state")).count())
                .from(table)
                .group_by_col(Alias::new("state"))
                .to_owned()
        }
        let mut figures = StoreFigures::default();
        for row in self.db.query_all(&by_state(deployments::Entity)).await? {
            let state: String = row.try_get_by_index(0)?;
            let n: i64 = row.try_get_by_index(1)?;
            figures
                .deployments
                .insert(parse("deployment state", &state)?, n as u64);
        }
        for row in self.db.query_all(&by_state(tasks::Entity)).await? {
            let state: String = row.try_get_by_index(0)?;
            let n: i64 = row.try_get_by_index(1)?;
            figures.tasks.insert(parse("task state", &state)?, n as u64);
        }
        let now = self.now(&self.db).await?;
        let outbox = Query::select()
            .expr(Expr::col(outbox::Column::Id).count())
            .expr(
                Expr::case(
                    Expr::col(outbox::Column::NotBefore)
                        .is_null()
                        .or(Expr::col(outbox::Column::NotBefore).lte(now)),
                    Expr::col(outbox::Column::CreatedAt),
                )
                .min(),
            )
            .from(outbox::Entity)
            .to_owned();
        if let Some(row) = self.db.query_one(&outbox).await? {
            let n: i64 = row.try_get_by_index(0)?;
            let oldest: Option<i64> = row.try_get_by_index(1)?;
            figures.outbox = n as u64;
            figures.outbox_lag = oldest
                .map(|oldest| Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0)))
                .unwrap_or_default();
        }
        Ok(figures)
    }
}
