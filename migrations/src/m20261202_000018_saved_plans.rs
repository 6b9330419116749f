//! `saved_plans`: a plan kept to be applied later, exactly (`POST
//! /v1/apps/{app}/plans`, `drover plan --save`): the manifest, the plan, what the
//! app ran when it was made and the policies asked for, as one JSON document.
//! Read by id, within its tenant.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum SavedPlans {
    Table,
    Id,
    TenantId,
    App,
    CreatedAt,
    Body,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SavedPlans::Table)
                    .col(uuid(SavedPlans::Id).primary_key())
                    .col(uuid(SavedPlans::TenantId))
                    .col(string(SavedPlans::App))
                    .col(big_integer(SavedPlans::CreatedAt))
                    .col(text(SavedPlans::Body))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SavedPlans::Table).to_owned())
            .await
    }
}
