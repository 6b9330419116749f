//! API tokens get a name, a scope (`read`, `deploy` or `admin`; every token made
//! before this is `admin`, as it could do everything), an expiry and a revocation
//! time. A revoked or expired token is refused.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Name,
    Scope,
    ExpiresAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column at a time: SQLite alters one per statement.
        for column in [
            string_null(ApiTokens::Name),
            string(ApiTokens::Scope).default("admin").to_owned(),
            big_integer_null(ApiTokens::ExpiresAt),
            big_integer_null(ApiTokens::RevokedAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiTokens::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ApiTokens::RevokedAt,
            ApiTokens::ExpiresAt,
            ApiTokens::Scope,
            ApiTokens::Name,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiTokens::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
