//! A tenant's weight: its share of the fleet when tenants compete for it. A
//! tenant of weight `w` may have `w × tenant-limit` tasks handed out and running
//! at once (its slots in `tenant_slots` go up to that), and takes `w` dispatches
//! per turn in the relay's fair claim. Every tenant starts at 1, as before.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Weight,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(integer(Tenants::Weight).default(1))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .drop_column(Tenants::Weight)
                    .to_owned(),
            )
            .await
    }
}
