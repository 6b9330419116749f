//! Webhooks: `hooks` (one per app and caller: its kind, the branch a GitHub hook
//! deploys, its secret and, during a rotation, the previous one, both valid;
//! looked up by kind and app through `hooks_app`) and `hook_deliveries` (the
//! answer to each delivery, by hook and delivery id, kept 72 hours so that a
//! redelivery gets the first answer and starts nothing).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Hooks {
    Table,
    Id,
    TenantId,
    App,
    Kind,
    Branch,
    Secret,
    PreviousSecret,
    CreatedAt,
}

#[derive(DeriveIden)]
enum HookDeliveries {
    Table,
    HookId,
    Delivery,
    ReceivedAt,
    Status,
    Body,
}

const INDEX: &str = "hooks_app";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Hooks::Table)
                    .col(uuid(Hooks::Id).primary_key())
                    .col(uuid(Hooks::TenantId))
                    .col(string(Hooks::App))
                    .col(string(Hooks::Kind))
                    .col(string_null(Hooks::Branch))
                    .col(string(Hooks::Secret))
                    .col(string_null(Hooks::PreviousSecret))
                    .col(big_integer(Hooks::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Hooks::Table)
                    .col(Hooks::Kind)
                    .col(Hooks::App)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HookDeliveries::Table)
                    .col(uuid(HookDeliveries::HookId))
                    .col(string(HookDeliveries::Delivery))
                    .col(big_integer(HookDeliveries::ReceivedAt))
                    .col(integer(HookDeliveries::Status))
                    .col(text(HookDeliveries::Body))
                    .primary_key(
                        Index::create()
                            .col(HookDeliveries::HookId)
                            .col(HookDeliveries::Delivery),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HookDeliveries::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Hooks::Table).to_owned())
            .await
    }
}
