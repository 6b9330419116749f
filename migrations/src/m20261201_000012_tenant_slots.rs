//! A tenant's running tasks hold its slots: `tenant_slots` has one row per slot of a
//! tenant (0 to its limit - 1, made when a claim first needs them), each naming the
//! task and fence that hold it, or none when free. A claim takes a free slot,
//! skipping the slots other claims have locked, so that the claims of one tenant do
//! not wait for each other the way a lock on the tenant's row (and a count of its
//! running tasks) made them; the transaction that moves a task out of `running`
//! frees its slot. Tasks running when this migration runs hold no slot.

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
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TenantSlots::Table).to_owned())
            .await
    }
}
