//! What runs, per component, and the order deployments were submitted in.
//!
//! - `deployed_components`: each app's deployed state, one row per component (its
//!   spec, artifact, version, and the deployment and fence that put it there),
//!   written in the transaction of each deploy or delete result, under its fence. A
//!   release is a snapshot of these rows when its deployment succeeds. Filled, for
//!   apps that existed before, from each app's newest release.
//! - `apps.deployment_seq` numbers an app's deployments in submission order;
//!   `tasks.seq` is its deployment's number, so that a deploy waits for the older
//!   deployments' deploys of its component. Tasks written before have 0: the newer
//!   deployments wait for them, they wait for nothing.
//! - `tasks.version`: the version a deploy puts in place (a build id, or a hash of
//!   the build input; an external update's announced version; a rollback's
//!   target's).

use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum DeployedComponents {
    Table,
    AppId,
    Component,
    Spec,
    Artifact,
    Version,
    DeploymentId,
    Fence,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
    DeploymentSeq,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Seq,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeployedComponents::Table)
                    .col(uuid(DeployedComponents::AppId))
                    .col(string(DeployedComponents::Component))
                    .col(text(DeployedComponents::Spec))
                    .col(text_null(DeployedComponents::Artifact))
                    .col(string_null(DeployedComponents::Version))
                    .col(uuid_null(DeployedComponents::DeploymentId))
                    .col(big_integer_null(DeployedComponents::Fence))
                    .col(big_integer(DeployedComponents::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(DeployedComponents::AppId)
                            .col(DeployedComponents::Component),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(DeployedComponents::Table, DeployedComponents::AppId)
                            .to(Apps::Table, Apps::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Apps::Table)
                    .add_column(big_integer(Apps::DeploymentSeq).default(0).to_owned())
                    .to_owned(),
            )
            .await?;
        for column in [
            big_integer(Tasks::Seq).default(0).to_owned(),
            string_null(Tasks::Version),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tasks::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        fill_from_newest_releases(manager.get_connection()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Tasks::Version, Tasks::Seq] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tasks::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Apps::Table)
                    .drop_column(Apps::DeploymentSeq)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(DeployedComponents::Table).to_owned())
            .await
    }
}

/// What ran before this migration is what each app's newest release says.
async fn fill_from_newest_releases(db: &SchemaManagerConnection<'_>) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let newest = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT r.app_id, r.components, r.created_at FROM releases r \
             WHERE r.version = (SELECT MAX(n.version) FROM releases n WHERE n.app_id = r.app_id)",
        ))
        .await?;
    for row in newest {
        let app: uuid::Uuid = row.try_get("", "app_id")?;
        let text: String = row.try_get("", "components")?;
        let created_at: i64 = row.try_get("", "created_at")?;
        let components: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .map_err(|err| DbErr::Migration(format!("release components of app {app}: {err}")))?;
        for (name, released) in components {
            let field = |key: &str| released.get(key).filter(|value| !value.is_null());
            let text_of = |key: &str| field(key).and_then(|v| v.as_str().map(str::to_owned));
            let deployment = text_of("deployment")
                .map(|id| uuid::Uuid::parse_str(&id))
                .transpose()
                .map_err(|err| DbErr::Migration(format!("deployment of {name}: {err}")))?;
            let insert = Query::insert()
                .into_table(DeployedComponents::Table)
                .columns([
                    DeployedComponents::AppId,
                    DeployedComponents::Component,
                    DeployedComponents::Spec,
                    DeployedComponents::Artifact,
                    DeployedComponents::Version,
                    DeployedComponents::DeploymentId,
                    DeployedComponents::UpdatedAt,
                ])
                .values_panic([
                    app.into(),
                    name.clone().into(),
                    field("spec")
                        .map(ToString::to_string)
                        .unwrap_or_default()
                        .into(),
                    text_of("artifact").into(),
                    text_of("version").into(),
                    deployment.into(),
                    created_at.into(),
                ])
                .to_owned();
            db.execute(&insert).await?;
        }
    }
    Ok(())
}
