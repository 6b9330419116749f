//! An app's policies, as its last deployment request that named them chose: its
//! concurrency policy (DESIGN.md 5.3: `queue`, the default when null, or
//! `cancel-in-progress`) and its strategy (5.8: `rolling`, the default when null,
//! `recreate`, `blue-green` or `canary`). A deployment keeps the strategy it runs
//! with, and a task the phase of the strategy its deploy step is in.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Apps {
    Table,
    Concurrency,
    Strategy,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Strategy,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Phase,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        for column in [string_null(Apps::Concurrency), string_null(Apps::Strategy)] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Apps::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .add_column(string_null(Deployments::Strategy))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(string_null(Tasks::Phase))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::Phase)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .drop_column(Deployments::Strategy)
                    .to_owned(),
            )
            .await?;
        for column in [Apps::Strategy, Apps::Concurrency] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Apps::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
