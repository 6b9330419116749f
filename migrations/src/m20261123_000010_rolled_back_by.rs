//! Which rollback replaces a deployment: deployments are looked up by the one they
//! replace (`drover status` and the API show it, and a client that asked for an
//! automatic rollback follows it).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Replaces,
}

const INDEX: &str = "deployments_replaces";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Deployments::Table)
                    .col(Deployments::Replaces)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(Deployments::Table)
                    .to_owned(),
            )
            .await
    }
}
