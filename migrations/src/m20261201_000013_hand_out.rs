//! Ready work is handed out fairly across tenants (the outbox relay's claim): a
//! tenant has at most its `tenant-limit` of tasks handed out to the workers at once
//! (their dispatches claimed by a relay, in the broker, or running), and the
//! dispatches of a tenant at its limit wait in the outbox, so that they do not
//! queue in the broker ahead of other tenants' work.
//!
//! - `tasks.handed_out`: set when a relay claims the task's dispatch, cleared by
//!   every statement that makes the task `ready` again. A task counts against its
//!   tenant while it is handed out and `ready` or `running`.
//! - `tasks_handed_out`: those tasks by tenant, what the relay counts on every
//!   claim: bounded by what runs, not by history.
//! - `fences.waiters`: a task of the component was handed back to wait for it (its
//!   lock, or an older deploy of it), so that the result of the component's
//!   running task makes those waiting tasks' dispatches due at once.
//! - `outbox.tenant_id`: whose dispatch a row is, so that the claim can take each
//!   tenant's oldest rows in turn (`outbox_tenant`: in that order); its
//!   `deployment_id`, `task_id` and `attempt`, so that the claim marks the tasks it
//!   hands out in the same statement. Rows written before this migration have none
//!   and are claimed as before.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    HandedOut,
}

#[derive(DeriveIden)]
enum Fences {
    Table,
    Waiters,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    TenantId,
    DeploymentId,
    TaskId,
    Attempt,
}

const HANDED_OUT: &str = "tasks_handed_out";
const OUTBOX_TENANT: &str = "outbox_tenant";

/// A partial index: sea-query's builder has none, and both backends take this SQL.
/// Its condition is the store's `HANDED_OUT_LIVE`, word for word, so that
/// PostgreSQL's planner can match the one to the other.
const CREATE_HANDED_OUT: &str = "CREATE INDEX tasks_handed_out ON tasks (tenant_id) \
     WHERE handed_out AND state IN ('ready', 'running')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(boolean(Tasks::HandedOut).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Fences::Table)
                    .add_column(boolean(Fences::Waiters).default(false))
                    .to_owned(),
            )
            .await?;
        // One column at a time: SQLite alters one per statement.
        for column in [
            uuid_null(Outbox::TenantId),
            uuid_null(Outbox::DeploymentId),
            string_null(Outbox::TaskId),
            integer_null(Outbox::Attempt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(OUTBOX_TENANT)
                    .table(Outbox::Table)
                    .col(Outbox::TenantId)
                    .col(Outbox::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(CREATE_HANDED_OUT)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(HANDED_OUT)
                    .table(Tasks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(OUTBOX_TENANT)
                    .table(Outbox::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Outbox::Attempt,
            Outbox::TaskId,
            Outbox::DeploymentId,
            Outbox::TenantId,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Fences::Table)
                    .drop_column(Fences::Waiters)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::HandedOut)
                    .to_owned(),
            )
            .await
    }
}
