//! Webhooks: a row each, looked up by tenant and id, or by kind and app for a
//! delivery; the answers to deliveries by hook and delivery id.

use super::*;

#[async_trait]
impl HookStore for SeaOrmStore {
    async fn create_hook(&self, tenant: TenantId, hook: &NewHook) -> Result<HookInfo, StoreError> {
        let now = self.now(&self.db).await?;
        let row = hooks::Model {
            id: Uuid::now_v7(),
            tenant_id: tenant.0,
            app: hook.app.to_string(),
            kind: hook.kind.as_str().to_owned(),
            branch: hook.branch.clone(),
            secret: hook.secret.clone(),
            previous_secret: None,
            created_at: now,
        };
        hooks::Entity::insert(hooks::ActiveModel::from(row.clone()))
            .exec_without_returning(&self.db)
            .await?;
        hook_info(&row)
    }

    async fn hooks(
        &self,
        tenant: TenantId,
        PageRequest { after, limit }: PageRequest<HookId>,
    ) -> Result<Page<HookInfo>, StoreError> {
        use hooks::Column;
        let of_tenant = hooks::Entity::find().filter(Column::TenantId.eq(tenant.0));
        let total = of_tenant.clone().count(&self.db).await?;
        let mut query = of_tenant;
        if let Some(after) = after {
            query = query.filter(Column::Id.lt(after.0));
        }
        let rows = query
            .order_by_desc(Column::Id)
            .limit(limit.saturating_add(1))
            .all(&self.db)
            .await?;
        let items = rows.iter().map(hook_info).collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(items, limit, total, |hook| hook.id.to_string()))
    }

    async fn hooks_of_app(&self, kind: HookKind, app: &AppName) -> Result<Vec<Hook>, StoreError> {
        use hooks::Column;
        let rows = hooks::Entity::find()
            .filter(Column::Kind.eq(kind.as_str()))
            .filter(Column::App.eq(app.as_str()))
            .order_by_asc(Column::Id)
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Hook {
                    tenant: TenantId(row.tenant_id),
                    info: hook_info(&row)?,
                    secrets: std::iter::once(row.secret)
                        .chain(row.previous_secret)
                        .collect(),
                })
            })
            .collect()
    }

    async fn rotate_hook_secret(
        &self,
        tenant: TenantId,
        id: HookId,
        secret: &str,
    ) -> Result<Option<Rotation>, StoreError> {
        use hooks::Column;
        // One conditional update: two rotations racing cannot both succeed.
        let rotated = hooks::Entity::update_many()
            .col_expr(Column::PreviousSecret, Expr::col(Column::Secret))
            .col_expr(Column::Secret, Expr::value(secret))
            .filter(Column::TenantId.eq(tenant.0))
            .filter(Column::Id.eq(id.0))
            .filter(Column::PreviousSecret.is_null())
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        let Some(info) = self.hook(tenant, id).await? else {
            return Ok(None);
        };
        Ok(Some(if rotated {
            Rotation::Rotated(info)
        } else {
            Rotation::Rotating(info)
        }))
    }

    async fn finish_hook_rotation(
        &self,
        tenant: TenantId,
        id: HookId,
    ) -> Result<Option<HookInfo>, StoreError> {
        use hooks::Column;
        hooks::Entity::update_many()
            .col_expr(Column::PreviousSecret, Expr::value(Option::<String>::None))
            .filter(Column::TenantId.eq(tenant.0))
            .filter(Column::Id.eq(id.0))
            .exec(&self.db)
            .await?;
        self.hook(tenant, id).await
    }

    async fn delete_hook(
        &self,
        tenant: TenantId,
        id: HookId,
    ) -> Result<Option<HookInfo>, StoreError> {
        let Some(info) = self.hook(tenant, id).await? else {
            return Ok(None);
        };
        let txn = self.db.begin().await?;
        hooks::Entity::delete_many()
            .filter(hooks::Column::TenantId.eq(tenant.0))
            .filter(hooks::Column::Id.eq(id.0))
            .exec(&txn)
            .await?;
        hook_deliveries::Entity::delete_many()
            .filter(hook_deliveries::Column::HookId.eq(id.0))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(info))
    }

    async fn hook_answer(
        &self,
        hook: HookId,
        delivery: &str,
        keep: Duration,
    ) -> Result<Option<HookAnswer>, StoreError> {
        let now = self.now(&self.db).await?;
        let row = hook_deliveries::Entity::find_by_id((hook.0, delivery.to_owned()))
            .filter(hook_deliveries::Column::ReceivedAt.gte(now - millis(keep)))
            .one(&self.db)
            .await?;
        row.map(|row| {
            Ok(HookAnswer {
                status: u16::try_from(row.status)
                    .map_err(|err| corrupt("hook answer")(err.to_string()))?,
                body: row.body,
            })
        })
        .transpose()
    }

    async fn record_hook_answer(
        &self,
        hook: HookId,
        delivery: &str,
        answer: &HookAnswer,
        keep: Duration,
    ) -> Result<(), StoreError> {
        use hook_deliveries::Column;
        let now = self.now(&self.db).await?;
        let txn = self.db.begin().await?;
        hook_deliveries::Entity::delete_many()
            .filter(Column::HookId.eq(hook.0))
            .filter(Column::ReceivedAt.lt(now - millis(keep)))
            .exec(&txn)
            .await?;
        let row = hook_deliveries::Model {
            hook_id: hook.0,
            delivery: delivery.to_owned(),
            received_at: now,
            status: i32::from(answer.status),
            body: answer.body.clone(),
        };
        hook_deliveries::Entity::insert(hook_deliveries::ActiveModel::from(row))
            .on_conflict_do_nothing_on([Column::HookId, Column::Delivery])
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

impl SeaOrmStore {
    /// The tenant's hook `id`.
    async fn hook(&self, tenant: TenantId, id: HookId) -> Result<Option<HookInfo>, StoreError> {
        hooks::Entity::find_by_id(id.0)
            .filter(hooks::Column::TenantId.eq(tenant.0))
            .one(&self.db)
            .await?
            .as_ref()
            .map(hook_info)
            .transpose()
    }
}

/// A hook's row as its tenant sees it.
fn hook_info(row: &hooks::Model) -> Result<HookInfo, StoreError> {
    Ok(HookInfo {
        id: HookId(row.id),
        app: parse("hook's app", &row.app)?,
        kind: parse("hook kind", &row.kind)?,
        branch: row.branch.clone(),
        created_at: timestamp(row.created_at),
        rotating: row.previous_secret.is_some(),
    })
}
