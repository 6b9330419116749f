//! Saved plans: one row each, its content as JSON, read by id within its tenant.

use super::*;

#[async_trait]
impl PlanStore for SeaOrmStore {
    async fn save_plan(
        &self,
        tenant: TenantId,
        id: PlanId,
        app: &AppName,
        content: &PlanContent,
    ) -> Result<SavedPlan, StoreError> {
        let now = self.now(&self.db).await?;
        let row = saved_plans::Model {
            id: id.0,
            tenant_id: tenant.0,
            app: app.to_string(),
            created_at: now,
            body: to_json(content),
        };
        saved_plans::Entity::insert(saved_plans::ActiveModel::from(row))
            .exec_without_returning(&self.db)
            .await?;
        Ok(SavedPlan {
            id,
            app: app.clone(),
            created_at: timestamp(now),
            content: content.clone(),
        })
    }

    async fn saved_plan(
        &self,
        tenant: TenantId,
        id: PlanId,
    ) -> Result<Option<SavedPlan>, StoreError> {
        let Some(row) = saved_plans::Entity::find_by_id(id.0)
            .filter(saved_plans::Column::TenantId.eq(tenant.0))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(SavedPlan {
            id,
            app: parse("saved plan's app", &row.app)?,
            created_at: timestamp(row.created_at),
            content: from_json("saved plan", &row.body)?,
        }))
    }

    async fn prune_saved_plans(&self, older_than: Duration, limit: u64) -> Result<u64, StoreError> {
        let old = Query::select()
            .column(saved_plans::Column::Id)
            .from(saved_plans::Entity)
            .and_where(
                Expr::col(saved_plans::Column::CreatedAt)
                    .lt(clock(self.backend()).sub(millis(older_than))),
            )
            .limit(limit)
            .to_owned();
        let deleted = saved_plans::Entity::delete_many()
            .filter(saved_plans::Column::Id.in_subquery(old))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }
}
