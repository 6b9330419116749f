//! What a fleet of processes needs: outbox rows claimed by one relay at a time
//! (and published no earlier than a retry's backoff allows), and each task's tenant
//! so that per-tenant limits are one indexed count.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    /// A relay has claimed the row until then (ms); another may take it afterwards.
    ClaimedUntil,
    /// Not to be published before then (ms): a retry's backoff.
    NotBefore,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    TenantId,
    State,
    DeploymentId,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
    TenantId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            big_integer_null(Outbox::ClaimedUntil),
            big_integer_null(Outbox::NotBefore),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(uuid_null(Tasks::TenantId))
                    .to_owned(),
            )
            .await?;
        // Tasks written before this migration learn their tenant from their deployment.
        let backfill = Query::update()
            .table(Tasks::Table)
            .value(
                Tasks::TenantId,
                SimpleExpr::SubQuery(
                    None,
                    Box::new(
                        Query::select()
                            .column((Deployments::Table, Deployments::TenantId))
                            .from(Deployments::Table)
                            .and_where(
                                Expr::col((Deployments::Table, Deployments::Id))
                                    .equals((Tasks::Table, Tasks::DeploymentId)),
                            )
                            .to_owned()
                            .into_sub_query_statement(),
                    ),
                ),
            )
            .to_owned();
        manager.exec_stmt(backfill).await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_tenant_state")
                    .table(Tasks::Table)
                    .col(Tasks::TenantId)
                    .col(Tasks::State)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("tasks_tenant_state")
                    .table(Tasks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::TenantId)
                    .to_owned(),
            )
            .await?;
        for column in [Outbox::ClaimedUntil, Outbox::NotBefore] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
