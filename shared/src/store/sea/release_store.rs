//! What runs, per component, and the releases that are snapshots of it.

use super::*;

impl SeaOrmStore {
    pub(super) async fn app_by_name(
        &self,
        conn: &impl ConnectionTrait,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<Option<apps::Model>, StoreError> {
        Ok(apps::Entity::find()
            .filter(apps::Column::TenantId.eq(tenant.0))
            .filter(apps::Column::Name.eq(app.as_str()))
            .one(conn)
            .await?)
    }

    pub(super) async fn newest_release(
        &self,
        conn: &impl ConnectionTrait,
        app: &apps::Model,
    ) -> Result<Option<Release>, StoreError> {
        let row = releases::Entity::find()
            .filter(releases::Column::AppId.eq(app.id))
            .order_by_desc(releases::Column::Version)
            .limit(1)
            .one(conn)
            .await?;
        row.map(|row| release_from_row(&app.name, row)).transpose()
    }

    /// Takes the app's next release version. Bumping the sequence locks the app's
    /// row, so concurrent releases of one app are written one after the other,
    /// each on top of the last.
    pub(super) async fn bump_release_seq(
        &self,
        txn: &DatabaseTransaction,
        app: Uuid,
    ) -> Result<apps::Model, StoreError> {
        apps::Entity::update_many()
            .col_expr(
                apps::Column::ReleaseSeq,
                Expr::col(apps::Column::ReleaseSeq).add(1),
            )
            .filter(apps::Column::Id.eq(app))
            .exec_with_returning(txn)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                what: "app",
                id: app.to_string(),
            })
    }

    /// What the app runs now, by component.
    pub(super) async fn running_components(
        &self,
        conn: &impl ConnectionTrait,
        app: Uuid,
    ) -> Result<Components, StoreError> {
        deployed_components::Entity::find()
            .filter(deployed_components::Column::AppId.eq(app))
            .all(conn)
            .await?
            .into_iter()
            .map(|row| {
                Ok((
                    parse("component name", &row.component)?,
                    ReleasedComponent {
                        spec: from_json("deployed spec", &row.spec)?,
                        artifact: row.artifact,
                        version: row.version,
                        deployment: row.deployment_id.map(DeploymentId),
                    },
                ))
            })
            .collect()
    }

    /// Writes the app's next release, made by `deployment` (none for an external
    /// update): a snapshot of what the app runs now, never the previous release
    /// patched, so that it cannot disagree with what runs.
    pub(super) async fn write_release(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        app: Uuid,
        deployment: Option<Uuid>,
    ) -> Result<u32, StoreError> {
        let app = self.bump_release_seq(txn, app).await?;
        let components = self.running_components(txn, app.id).await?;
        releases::Entity::insert(releases::ActiveModel {
            app_id: Set(app.id),
            version: Set(app.release_seq),
            deployment_id: Set(deployment),
            components: Set(to_json(&components)),
            created_at: Set(now),
        })
        .exec_without_returning(txn)
        .await?;
        Ok(app.release_seq as u32)
    }

    /// Changes what runs by a succeeded deploy or delete, under its fence: a
    /// component's row is only replaced or removed by a write with a newer fence.
    pub(super) async fn apply_to_running(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        app: Uuid,
        task: &tasks::Model,
    ) -> Result<(), StoreError> {
        use deployed_components::{Column, Entity};
        let kind: TaskKind = parse("task kind", &task.kind)?;
        let older =
            Expr::col((Entity, Column::Fence))
                .is_null()
                .or(Expr::col((Entity, Column::Fence)).lt(task.fence));
        match kind {
            TaskKind::Build => {}
            TaskKind::Delete => {
                Entity::delete_many()
                    .filter(Column::AppId.eq(app))
                    .filter(Column::Component.eq(task.component.as_str()))
                    .filter(older)
                    .exec(txn)
                    .await?;
            }
            TaskKind::Deploy => {
                let row = deployed_components::ActiveModel {
                    app_id: Set(app),
                    component: Set(task.component.clone()),
                    spec: Set(task.spec.clone()),
                    artifact: Set(task.artifact.clone()),
                    version: Set(task.version.clone()),
                    deployment_id: Set(Some(task.deployment_id)),
                    fence: Set(task.fence),
                    updated_at: Set(now),
                };
                put_running(txn, row, Some(older)).await?;
            }
        }
        Ok(())
    }
}

/// An app's row as its tenant sees it.
fn app_summary(row: apps::Model) -> Result<AppSummary, StoreError> {
    Ok(AppSummary {
        name: parse("app name", &row.name)?,
        created_at: timestamp(row.created_at),
        // Releases are numbered 1, 2, … and never deleted: the newest is the count.
        active_release: u32::try_from(row.release_seq).ok().filter(|seq| *seq > 0),
        concurrency: row
            .concurrency
            .as_deref()
            .map_or(Ok(ConcurrencyPolicy::Queue), |policy| {
                parse("concurrency policy", policy)
            })?,
        strategy: strategy_of(row.strategy.as_deref())?,
        deployments: u64::try_from(row.deployment_seq).unwrap_or(0),
    })
}

#[async_trait]
impl ReleaseStore for SeaOrmStore {
    async fn apps(
        &self,
        tenant: TenantId,
        PageRequest { after, limit }: PageRequest<AppName>,
    ) -> Result<Page<AppSummary>, StoreError> {
        let of_tenant = apps::Entity::find().filter(apps::Column::TenantId.eq(tenant.0));
        let total = of_tenant.clone().count(&self.db).await?;
        let mut query = of_tenant;
        if let Some(after) = &after {
            query = query.filter(apps::Column::Name.gt(after.as_str()));
        }
        let rows = query
            .order_by_asc(apps::Column::Name)
            .limit(limit.saturating_add(1))
            .all(&self.db)
            .await?;
        let items = rows
            .into_iter()
            .map(app_summary)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(items, limit, total, |app| app.name.to_string()))
    }

    async fn app(&self, tenant: TenantId, app: &AppName) -> Result<Option<AppSummary>, StoreError> {
        self.app_by_name(&self.db, tenant, app)
            .await?
            .map(app_summary)
            .transpose()
    }

    async fn current_state(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<CurrentState, StoreError> {
        let Some(app) = self.app_by_name(&self.db, tenant, app).await? else {
            return Ok(CurrentState::default());
        };
        let components = self.running_components(&self.db, app.id).await?;
        let active = self.newest_release(&self.db, &app).await?;
        Ok(CurrentState {
            release: active.as_ref().map(|release| release.version),
            changed_since_release: active.map_or(!components.is_empty(), |release| {
                release.components != components
            }),
            components,
        })
    }

    async fn active_release(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<Option<Release>, StoreError> {
        match self.app_by_name(&self.db, tenant, app).await? {
            Some(app) => self.newest_release(&self.db, &app).await,
            None => Ok(None),
        }
    }

    async fn releases(
        &self,
        tenant: TenantId,
        app: &AppName,
        PageRequest { after, limit }: PageRequest,
    ) -> Result<Option<Page<Release>>, StoreError> {
        let Some(app) = self.app_by_name(&self.db, tenant, app).await? else {
            return Ok(None);
        };
        // Releases are numbered 1, 2, … in the transaction that takes each number
        // and never deleted: the sequence is the count, without counting history.
        let total = u64::try_from(app.release_seq).unwrap_or(0);
        let mut query = releases::Entity::find().filter(releases::Column::AppId.eq(app.id));
        if let Some(before) = after {
            query = query.filter(releases::Column::Version.lt(before as i32));
        }
        let rows = query
            .order_by_desc(releases::Column::Version)
            .limit(limit.saturating_add(1))
            .all(&self.db)
            .await?;
        let items = rows
            .into_iter()
            .map(|row| release_from_row(&app.name, row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(page_of(items, limit, total, |release| {
            release.version.to_string()
        })))
    }

    async fn release(
        &self,
        tenant: TenantId,
        app: &AppName,
        version: u32,
    ) -> Result<Option<Release>, StoreError> {
        let Some(app) = self.app_by_name(&self.db, tenant, app).await? else {
            return Ok(None);
        };
        releases::Entity::find_by_id((app.id, version as i32))
            .one(&self.db)
            .await?
            .map(|row| release_from_row(&app.name, row))
            .transpose()
    }
}

/// Writes what a component runs, replacing its row (only where `only_if` holds of
/// the row, when given).
pub(super) async fn put_running(
    txn: &DatabaseTransaction,
    row: deployed_components::ActiveModel,
    only_if: Option<Expr>,
) -> Result<(), StoreError> {
    use deployed_components::{Column, Entity};
    Entity::insert(row)
        .on_conflict(
            OnConflict::columns([Column::AppId, Column::Component])
                .update_columns([
                    Column::Spec,
                    Column::Artifact,
                    Column::Version,
                    Column::DeploymentId,
                    Column::Fence,
                    Column::UpdatedAt,
                ])
                .action_and_where_option(only_if)
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

fn release_from_row(app: &str, row: releases::Model) -> Result<Release, StoreError> {
    let components: BTreeMap<ComponentName, ReleasedComponent> =
        from_json("release", &row.components)?;
    Ok(Release {
        app: parse("app name", app)?,
        version: row.version as u32,
        deployment: row.deployment_id.map(DeploymentId),
        created_at: timestamp(row.created_at),
        components,
    })
}
