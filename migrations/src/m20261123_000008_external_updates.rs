//! External updates (DESIGN.md 5.5): each announced artifact of a component is
//! recorded once, with the release it became; a deployment made for one remembers
//! it, so that its release names the announced version.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ExternalUpdates {
    Table,
    AppId,
    Component,
    /// SHA-256 of the artifact, hex: the update's identity with the component.
    ArtifactHash,
    Artifact,
    Version,
    Sha,
    /// The release it was recorded as (without `on-update.deploy`; with it, the
    /// deployment is found by its idempotency key).
    ReleaseVersion,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    /// For a deployment of an external update: the update, as JSON.
    ExternalUpdate,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ExternalUpdates::Table)
                    .col(uuid(ExternalUpdates::AppId))
                    .col(string(ExternalUpdates::Component))
                    .col(string(ExternalUpdates::ArtifactHash))
                    .col(text(ExternalUpdates::Artifact))
                    .col(string_null(ExternalUpdates::Version))
                    .col(string_null(ExternalUpdates::Sha))
                    .col(integer_null(ExternalUpdates::ReleaseVersion))
                    .col(big_integer(ExternalUpdates::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ExternalUpdates::AppId)
                            .col(ExternalUpdates::Component)
                            .col(ExternalUpdates::ArtifactHash),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ExternalUpdates::Table, ExternalUpdates::AppId)
                            .to(Apps::Table, Apps::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .add_column(text_null(Deployments::ExternalUpdate))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .drop_column(Deployments::ExternalUpdate)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(ExternalUpdates::Table).to_owned())
            .await
    }
}
