//! drover's database schema as sea-orm migrations, written with sea-query's schema
//! builder so that the same migrations run on PostgreSQL and SQLite.
//!
//! Conventions: timestamps are `BIGINT` milliseconds since the Unix epoch, taken
//! from the database's clock; structured values (manifests, plans, specs, release
//! snapshots) are JSON in `TEXT` columns.

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::{MigrationTrait, async_trait};

mod m20261123_000001_initial;
mod m20261123_000002_api;
mod m20261123_000003_fleet;
mod m20261123_000004_component_lock;
mod m20261123_000005_retry_at;
mod m20261123_000006_cancel;
mod m20261123_000007_rollback;
mod m20261123_000008_external_updates;
mod m20261123_000009_policies;
mod m20261123_000010_rolled_back_by;
mod m20261201_000011_deployed_components;
mod m20261201_000012_tenant_slots;
mod m20261201_000013_hand_out;
mod m20261202_000014_tenant_weight;
mod m20261202_000015_deployments_tenant;
mod m20261202_000016_token_scopes;
mod m20261202_000017_audit;
mod m20261202_000018_saved_plans;
mod m20261202_000019_hooks;
mod m20261202_000020_task_logs;

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_api::Migration),
            Box::new(m20261123_000003_fleet::Migration),
            Box::new(m20261123_000004_component_lock::Migration),
            Box::new(m20261123_000005_retry_at::Migration),
            Box::new(m20261123_000006_cancel::Migration),
            Box::new(m20261123_000007_rollback::Migration),
            Box::new(m20261123_000008_external_updates::Migration),
            Box::new(m20261123_000009_policies::Migration),
            Box::new(m20261123_000010_rolled_back_by::Migration),
            Box::new(m20261201_000011_deployed_components::Migration),
            Box::new(m20261201_000012_tenant_slots::Migration),
            Box::new(m20261201_000013_hand_out::Migration),
            Box::new(m20261202_000014_tenant_weight::Migration),
            Box::new(m20261202_000015_deployments_tenant::Migration),
            Box::new(m20261202_000016_token_scopes::Migration),
            Box::new(m20261202_000017_audit::Migration),
            Box::new(m20261202_000018_saved_plans::Migration),
            Box::new(m20261202_000019_hooks::Migration),
            Box::new(m20261202_000020_task_logs::Migration),
        ]
    }
}
