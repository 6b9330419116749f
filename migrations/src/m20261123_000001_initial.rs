//! The first schema: tenants, apps, deployments, tasks and their needs, releases,
//! the outbox and the fences.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
    TenantId,
    Name,
    /// The last release version handed out; bumped in the transaction that writes a release.
    ReleaseSeq,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
    TenantId,
    AppId,
    /// The app's name, so that dispatches can name component locks without a join.
    App,
    State,
    /// Tasks not yet in a terminal state; the deployment finishes when it reaches 0.
    NOpen,
    HasFailed,
    BaseRelease,
    ReleaseVersion,
    Manifest,
    Plan,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    DeploymentId,
    TaskId,
    Kind,
    Component,
    State,
    Attempt,
    Fence,
    /// Needs not yet succeeded; the task becomes ready when it reaches 0.
    NPending,
    Spec,
    ArtifactFrom,
    Artifact,
    Worker,
    LeaseUntil,
    StartedAt,
    FinishedAt,
    Log,
    Error,
}

#[derive(DeriveIden)]
enum TaskNeeds {
    Table,
    DeploymentId,
    NeedId,
    TaskId,
}

#[derive(DeriveIden)]
enum Releases {
    Table,
    AppId,
    Version,
    DeploymentId,
    Components,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Queue,
    Payload,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Fences {
    Table,
    LockKey,
    Fence,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(pk_uuid(Tenants::Id))
                    .col(string_uniq(Tenants::Name))
                    .col(big_integer(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Apps::Table)
                    .col(pk_uuid(Apps::Id))
                    .col(uuid(Apps::TenantId))
                    .col(string(Apps::Name))
                    .col(integer(Apps::ReleaseSeq).default(0))
                    .col(big_integer(Apps::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Apps::Table, Apps::TenantId)
                            .to(Tenants::Table, Tenants::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("apps_tenant_name")
                    .table(Apps::Table)
                    .col(Apps::TenantId)
                    .col(Apps::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .col(pk_uuid(Deployments::Id))
                    .col(uuid(Deployments::TenantId))
                    .col(uuid(Deployments::AppId))
                    .col(string(Deployments::App))
                    .col(string(Deployments::State))
                    .col(integer(Deployments::NOpen))
                    .col(boolean(Deployments::HasFailed).default(false))
                    .col(integer_null(Deployments::BaseRelease))
                    .col(integer_null(Deployments::ReleaseVersion))
                    .col(text(Deployments::Manifest))
                    .col(text(Deployments::Plan))
                    .col(big_integer(Deployments::CreatedAt))
                    .col(big_integer_null(Deployments::StartedAt))
                    .col(big_integer_null(Deployments::FinishedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deployments::Table, Deployments::AppId)
                            .to(Apps::Table, Apps::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deployments_app_created")
                    .table(Deployments::Table)
                    .col(Deployments::AppId)
                    .col(Deployments::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .col(uuid(Tasks::DeploymentId))
                    .col(string(Tasks::TaskId))
                    .col(string(Tasks::Kind))
                    .col(string(Tasks::Component))
                    .col(string(Tasks::State))
                    .col(integer(Tasks::Attempt))
                    .col(big_integer_null(Tasks::Fence))
                    .col(integer(Tasks::NPending))
                    .col(text(Tasks::Spec))
                    .col(string_null(Tasks::ArtifactFrom))
                    .col(text_null(Tasks::Artifact))
                    .col(string_null(Tasks::Worker))
                    .col(big_integer_null(Tasks::LeaseUntil))
                    .col(big_integer_null(Tasks::StartedAt))
                    .col(big_integer_null(Tasks::FinishedAt))
                    .col(text_null(Tasks::Log))
                    .col(text_null(Tasks::Error))
                    .primary_key(Index::create().col(Tasks::DeploymentId).col(Tasks::TaskId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Tasks::Table, Tasks::DeploymentId)
                            .to(Deployments::Table, Deployments::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The reaper looks for running tasks whose lease has expired.
        manager
            .create_index(
                Index::create()
                    .name("tasks_state_lease")
                    .table(Tasks::Table)
                    .col(Tasks::State)
                    .col(Tasks::LeaseUntil)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TaskNeeds::Table)
                    .col(uuid(TaskNeeds::DeploymentId))
                    .col(string(TaskNeeds::NeedId))
                    .col(string(TaskNeeds::TaskId))
                    .primary_key(
                        Index::create()
                            .col(TaskNeeds::DeploymentId)
                            .col(TaskNeeds::NeedId)
                            .col(TaskNeeds::TaskId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(TaskNeeds::Table, TaskNeeds::DeploymentId)
                            .to(Deployments::Table, Deployments::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Releases::Table)
                    .col(uuid(Releases::AppId))
                    .col(integer(Releases::Version))
                    .col(uuid_null(Releases::DeploymentId))
                    .col(text(Releases::Components))
                    .col(big_integer(Releases::CreatedAt))
                    // Versions are unique per app by this key, not by a `max() + 1` race.
                    .primary_key(Index::create().col(Releases::AppId).col(Releases::Version))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Releases::Table, Releases::AppId)
                            .to(Apps::Table, Apps::Id),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(big_pk_auto(Outbox::Id))
                    .col(string(Outbox::Queue))
                    .col(text(Outbox::Payload))
                    .col(big_integer(Outbox::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Fences::Table)
                    .col(string(Fences::LockKey).primary_key())
                    .col(big_integer(Fences::Fence))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Fences::Table.into_iden(),
            Outbox::Table.into_iden(),
            Releases::Table.into_iden(),
            TaskNeeds::Table.into_iden(),
            Tasks::Table.into_iden(),
            Deployments::Table.into_iden(),
            Apps::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
