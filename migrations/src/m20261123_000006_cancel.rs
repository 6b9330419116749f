//! A deployment remembers when it was asked to stop: its pending tasks are cancelled
//! at once, its running steps are stopped, and it ends `cancelled` once they have.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    /// When `drover cancel` asked it to stop (ms); null when nobody did.
    CancelRequestedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .add_column(big_integer_null(Deployments::CancelRequestedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .drop_column(Deployments::CancelRequestedAt)
                    .to_owned(),
            )
            .await
    }
}
