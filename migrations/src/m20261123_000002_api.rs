//! What the HTTP API needs: API tokens (stored hashed) and idempotency keys on
//! deployments.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    TenantId,
    /// SHA-256 of the token, hex; the token itself is shown once and never stored.
    TokenHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    TenantId,
    /// The client's `Idempotency-Key`, unique per tenant.
    IdempotencyKey,
    /// A hash of the request the key was first used with.
    RequestHash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(pk_uuid(ApiTokens::Id))
                    .col(uuid(ApiTokens::TenantId))
                    .col(string_uniq(ApiTokens::TokenHash))
                    .col(big_integer(ApiTokens::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiTokens::Table, ApiTokens::TenantId)
                            .to(Tenants::Table, Tenants::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per statement.
        for column in [
            string_null(Deployments::IdempotencyKey),
            string_null(Deployments::RequestHash),
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
        manager
            .create_index(
                Index::create()
                    .name("deployments_tenant_idempotency_key")
                    .table(Deployments::Table)
                    .col(Deployments::TenantId)
                    .col(Deployments::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("deployments_tenant_idempotency_key")
                    .table(Deployments::Table)
                    .to_owned(),
            )
            .await?;
        for column in [Deployments::IdempotencyKey, Deployments::RequestHash] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deployments::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(ApiTokens::Table).to_owned())
            .await
    }
}
