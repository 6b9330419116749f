//! A rollback deployment remembers the release it goes back to: when it succeeds,
//! the deployment it replaced is marked `rolled_back`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    /// For a rollback: the version of the release it deploys again.
    RollbackTo,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .add_column(integer_null(Deployments::RollbackTo))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .drop_column(Deployments::RollbackTo)
                    .to_owned(),
            )
            .await
    }
}
