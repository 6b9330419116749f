//! `audit`: who did what through the API, and when: a row per deployment started,
//! cancelled or retried, rollback, adoption, external update, and token made or
//! revoked, naming the tenant, the token that asked and what it acted on. Listed
//! newest first by tenant (`audit_tenant`); ids are time-ordered.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Audit {
    Table,
    Id,
    TenantId,
    TokenId,
    At,
    Action,
    Target,
}

const INDEX: &str = "audit_tenant";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Audit::Table)
                    .col(uuid(Audit::Id).primary_key())
                    .col(uuid(Audit::TenantId))
                    .col(uuid_null(Audit::TokenId))
                    .col(big_integer(Audit::At))
                    .col(string(Audit::Action))
                    .col(string(Audit::Target))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Audit::Table)
                    .col(Audit::TenantId)
                    .col(Audit::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Audit::Table).to_owned())
            .await
    }
}
