//! A tenant's running tasks hold its slots: `tenant_slots` has one row per slot of a
//! tenant (0 to its limit - 1, made when a claim first needs them), each naming the
//! task and fence that hold it, or none when free. A claim takes a free slot,
//! skipping the slots other claims have locked, so that the claims of one tenant do
//! not wait for each other the way a lock on the tenant's row (and a count of its
//! running tasks) made them; the transaction that moves a task out of `running`
//! frees its slot. Tasks running when this migration runs hold no slot.
//!
//! Indexes of `tasks` cost every change of a task's state an entry each. So:
//! - `tasks_tenant_state` served the count of a tenant's running tasks on every
//!   claim; nothing on the hot path reads it now: dropped.
//! - `tasks_state_lease` indexed every task ever written by state, and the planner
//!   took it for a deployment's `blocked` tasks (scanning every blocked task of the
//!   fleet) instead of the primary key. It becomes `tasks_live`, the same columns
//!   for the `ready` and `running` tasks only (what the reaper and the redispatch at
//!   start read): bounded by what runs, not by history.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum TenantSlots {
    Table,
    TenantId,
    Slot,
    /// The holder: a task (deployment and task id) under a fence; none when never held.
    DeploymentId,
    TaskId,
    Fence,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    TenantId,
    State,
    LeaseUntil,
}

const TENANT_STATE: &str = "tasks_tenant_state";
const STATE_LEASE: &str = "tasks_state_lease";

/// A partial index: sea-query's builder has none, and both backends take this SQL.
const CREATE_LIVE: &str =
    "CREATE INDEX tasks_live ON tasks (state, lease_until) WHERE state IN ('ready', 'running')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TenantSlots::Table)
                    .col(uuid(TenantSlots::TenantId))
                    .col(integer(TenantSlots::Slot))
                    .col(uuid_null(TenantSlots::DeploymentId))
                    .col(string_null(TenantSlots::TaskId))
                    .col(big_integer_null(TenantSlots::Fence))
                    .primary_key(
                        Index::create()
                            .col(TenantSlots::TenantId)
                            .col(TenantSlots::Slot),
                    )
                    .to_owned(),
            )
            .await?;
        for index in [TENANT_STATE, STATE_LEASE] {
            manager
                .drop_index(Index::drop().name(index).table(Tasks::Table).to_owned())
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(CREATE_LIVE)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("tasks_live")
                    .table(Tasks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(STATE_LEASE)
                    .table(Tasks::Table)
                    .col(Tasks::State)
                    .col(Tasks::LeaseUntil)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(TENANT_STATE)
                    .table(Tasks::Table)
                    .col(Tasks::TenantId)
                    .col(Tasks::State)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(TenantSlots::Table).to_owned())
            .await
    }
}
