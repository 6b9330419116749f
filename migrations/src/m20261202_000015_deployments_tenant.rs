//! `deployments_tenant (tenant_id, id)`: a tenant's deployments, newest first (ids
//! are time-ordered), for the API's list of deployments. Without it the list reads
//! every deployment of the fleet.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    TenantId,
    Id,
}

const INDEX: &str = "deployments_tenant";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Deployments::Table)
                    .col(Deployments::TenantId)
                    .col(Deployments::Id)
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
