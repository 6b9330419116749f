//! Rollbacks. A rollback deployment remembers the release it goes back to and the
//! deployment it replaces, which becomes `rolled_back` when it succeeds. A
//! deployment that opted into automatic rollback is `armed` until its failure has
//! been answered by a rollback (`done`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    /// For a rollback: the version of the release it deploys again.
    RollbackTo,
    /// For a rollback: the deployment it replaces.
    Replaces,
    /// `armed` (roll back if it fails), `done`, or null (no automatic rollback).
    AutoRollback,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        for column in [
            integer_null(Deployments::RollbackTo),
            uuid_null(Deployments::Replaces),
            string_null(Deployments::AutoRollback),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deployments::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // The scheduler looks for armed deployments often; few ever are.
        manager
            .create_index(
                Index::create()
                    .name("deployments_auto_rollback")
                    .table(Deployments::Table)
                    .col(Deployments::AutoRollback)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("deployments_auto_rollback")
                    .table(Deployments::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Deployments::AutoRollback,
            Deployments::Replaces,
            Deployments::RollbackTo,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deployments::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
