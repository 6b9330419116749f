//! Each task names its component's lock (`tenant/app/component`), so that the store
//! itself keeps two tasks of one component from running at once and refuses writes
//! carrying a fence older than the component's newest.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    /// The component's lock key; tasks written before this migration have none.
    LockKey,
    State,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(string_null(Tasks::LockKey))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_lock_key_state")
                    .table(Tasks::Table)
                    .col(Tasks::LockKey)
                    .col(Tasks::State)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("tasks_lock_key_state")
                    .table(Tasks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::LockKey)
                    .to_owned(),
            )
            .await
    }
}
