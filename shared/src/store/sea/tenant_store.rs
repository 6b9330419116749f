//! Tenants, their tokens, and the slots that bound how many tasks a tenant runs.

use super::*;

#[async_trait]
impl TenantStore for SeaOrmStore {
    async fn ensure_tenant(&self, name: &TenantName) -> Result<TenantId, StoreError> {
        let now = self.now(&self.db).await?;
        tenants::Entity::insert(tenants::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_string()),
            created_at: Set(now),
            weight: Set(1),
        })
        .on_conflict_do_nothing_on([tenants::Column::Name])
        .exec_without_returning(&self.db)
        .await?;
        self.tenant(name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "tenant",
                id: name.to_string(),
            })
    }

    async fn create_tenant(
        &self,
        name: &TenantName,
        token_hash: &str,
    ) -> Result<TenantId, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let id = Uuid::now_v7();
        let inserted = tenants::Entity::insert(tenants::ActiveModel {
            id: Set(id),
            name: Set(name.to_string()),
            created_at: Set(now),
            weight: Set(1),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = inserted {
            return Err(match err.sql_err() {
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict {
                    what: "tenant",
                    id: name.to_string(),
                },
                _ => err.into(),
            });
        }
        let first = NewToken {
            name: None,
            scope: Scope::Admin,
            expires_at: None,
            hash: token_hash.to_owned(),
        };
        insert_token(&txn, now, TenantId(id), &first).await?;
        txn.commit().await?;
        Ok(TenantId(id))
    }

    async fn grant(&self, token_hash: &str) -> Result<Option<Grant>, StoreError> {
        use api_tokens::Column;
        let token = api_tokens::Entity::find()
            .filter(Column::TokenHash.eq(token_hash))
            .filter(Column::RevokedAt.is_null())
            .filter(
                Condition::any()
                    .add(Column::ExpiresAt.is_null())
                    .add(Expr::col(Column::ExpiresAt).gt(clock(self.backend()))),
            )
            .one(&self.db)
            .await?;
        token
            .map(|token| {
                Ok(Grant {
                    tenant: TenantId(token.tenant_id),
                    token: TokenId(token.id),
                    scope: parse("token scope", &token.scope)?,
                })
            })
            .transpose()
    }

    async fn create_token(
        &self,
        tenant: TenantId,
        token: &NewToken,
    ) -> Result<TokenInfo, StoreError> {
        let now = self.now(&self.db).await?;
        let row = insert_token(&self.db, now, tenant, token).await?;
        token_info(row)
    }

    async fn tokens(
        &self,
        tenant: TenantId,
        PageRequest { after, limit }: PageRequest<TokenId>,
    ) -> Result<Page<TokenInfo>, StoreError> {
        use api_tokens::Column;
        let of_tenant = api_tokens::Entity::find().filter(Column::TenantId.eq(tenant.0));
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
        let items = rows
            .into_iter()
            .map(token_info)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(items, limit, total, |token| token.id.to_string()))
    }

    async fn record_audit(&self, entry: &NewAuditEntry) -> Result<(), StoreError> {
        use audit::Column;
        // One statement: the time is the database's, computed in the insert.
        let insert = Query::insert()
            .into_table(audit::Entity)
            .columns([
                Column::Id,
                Column::TenantId,
                Column::TokenId,
                Column::At,
                Column::Action,
                Column::Target,
            ])
            .values_panic([
                Uuid::now_v7().into(),
                entry.tenant.0.into(),
                entry.token.map(|token| token.0).into(),
                clock(self.backend()),
                entry.action.as_str().into(),
                entry.target.as_str().into(),
            ])
            .to_owned();
        self.db.execute(&insert).await?;
        Ok(())
    }

    async fn audit(
        &self,
        tenant: TenantId,
        PageRequest { after, limit }: PageRequest<Uuid>,
    ) -> Result<Page<AuditEntry>, StoreError> {
        use audit::Column;
        let of_tenant = audit::Entity::find().filter(Column::TenantId.eq(tenant.0));
        let total = of_tenant.clone().count(&self.db).await?;
        let mut query = of_tenant;
        if let Some(after) = after {
            query = query.filter(Column::Id.lt(after));
        }
        let rows = query
            .order_by_desc(Column::Id)
            .limit(limit.saturating_add(1))
            .all(&self.db)
            .await?;
        let items = rows
            .into_iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.id,
                    at: timestamp(row.at),
                    token: row.token_id.map(TokenId),
                    action: parse("audit action", &row.action)?,
                    target: row.target,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(page_of(items, limit, total, |entry| entry.id.to_string()))
    }

    async fn revoke_token(
        &self,
        tenant: TenantId,
        token: TokenId,
    ) -> Result<Option<TokenInfo>, StoreError> {
        use api_tokens::Column;
        api_tokens::Entity::update_many()
            .col_expr(Column::RevokedAt, clock(self.backend()))
            .filter(Column::TenantId.eq(tenant.0))
            .filter(Column::Id.eq(token.0))
            .filter(Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        api_tokens::Entity::find_by_id(token.0)
            .filter(Column::TenantId.eq(tenant.0))
            .one(&self.db)
            .await?
            .map(token_info)
            .transpose()
    }

    async fn tenant(&self, name: &TenantName) -> Result<Option<TenantId>, StoreError> {
        let tenant = tenants::Entity::find()
            .filter(tenants::Column::Name.eq(name.as_str()))
            .one(&self.db)
            .await?;
        Ok(tenant.map(|tenant| TenantId(tenant.id)))
    }

    async fn set_tenant_weight(
        &self,
        name: &TenantName,
        weight: TenantWeight,
    ) -> Result<TenantId, StoreError> {
        let weight = i32::try_from(weight.get()).unwrap_or(i32::MAX);
        let updated = tenants::Entity::update_many()
            .col_expr(tenants::Column::Weight, Expr::value(weight))
            .filter(tenants::Column::Name.eq(name.as_str()))
            .exec_with_returning(&self.db)
            .await?;
        updated
            .first()
            .map(|tenant| TenantId(tenant.id))
            .ok_or_else(|| StoreError::NotFound {
                what: "tenant",
                id: name.to_string(),
            })
    }
}

/// Writes a token of `tenant`, created at `now`.
async fn insert_token(
    conn: &impl ConnectionTrait,
    now: i64,
    tenant: TenantId,
    token: &NewToken,
) -> Result<api_tokens::Model, StoreError> {
    let row = api_tokens::Model {
        id: Uuid::now_v7(),
        tenant_id: tenant.0,
        token_hash: token.hash.clone(),
        created_at: now,
        name: token.name.clone(),
        scope: token.scope.as_str().to_owned(),
        expires_at: token.expires_at.map(|at| at.timestamp_millis()),
        revoked_at: None,
    };
    api_tokens::Entity::insert(api_tokens::ActiveModel::from(row.clone()))
        .exec_without_returning(conn)
        .await?;
    Ok(row)
}

/// A token's row as its tenant sees it.
fn token_info(row: api_tokens::Model) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        id: TokenId(row.id),
        name: row.name,
        scope: parse("token scope", &row.scope)?,
        created_at: timestamp(row.created_at),
        expires_at: row.expires_at.map(timestamp),
        revoked_at: row.revoked_at.map(timestamp),
    })
}

/// The weight of the tenant `tenant` (the default if there is none).
pub(super) async fn tenant_weight(
    conn: &impl ConnectionTrait,
    tenant: Uuid,
) -> Result<TenantWeight, StoreError> {
    let stored = tenants::Entity::find_by_id(tenant).one(conn).await?;
    Ok(stored.map_or(TenantWeight::DEFAULT, |tenant| {
        u64::try_from(tenant.weight)
            .ok()
            .and_then(|weight| TenantWeight::new(weight).ok())
            .unwrap_or(TenantWeight::DEFAULT)
    }))
}

/// The weight of the tenant `tenant` (1 if there is none), read inside a statement.
pub(super) fn weight_of(tenant: Expr) -> Expr {
    let weight = Query::select()
        .column((tenants::Entity, tenants::Column::Weight))
        .from(tenants::Entity)
        .and_where(Expr::col((tenants::Entity, tenants::Column::Id)).eq(tenant))
        .to_owned();
    Expr::expr(Func::coalesce([
        Expr::SubQuery(None, Box::new(weight.into())),
        Expr::val(1),
    ]))
}

/// Frees the tenant slot `holder` holds, in the transaction that moves it out of
/// `running` (tasks without a tenant, or claimed without a limit, hold none).
pub(super) async fn free_tenant_slot(
    txn: &DatabaseTransaction,
    tenant: Option<Uuid>,
    holder: SlotHolder<'_>,
) -> Result<(), StoreError> {
    use tenant_slots::{Column, Entity};
    let Some(tenant) = tenant else {
        return Ok(());
    };
    Entity::update_many()
        .col_expr(Column::DeploymentId, Expr::value(None::<Uuid>))
        .col_expr(Column::TaskId, Expr::value(None::<String>))
        .col_expr(Column::Fence, Expr::value(None::<i64>))
        .filter(Column::TenantId.eq(tenant))
        .filter(Column::DeploymentId.eq(holder.0))
        .filter(Column::TaskId.eq(holder.1))
        .filter(Column::Fence.eq(holder.2))
        .exec(txn)
        .await?;
    Ok(())
}

/// A task holding a tenant slot: its deployment, id and fence.
type SlotHolder<'a> = (Uuid, &'a str, i64);

/// Takes a free slot of `tenant` below `limit` times its weight for `holder`. On PostgreSQL the
/// slots other claims have locked are skipped, so that the claims of one tenant do
/// not wait for each other. The slots are made the first time a claim needs them.
/// `false`: the tenant runs `limit` tasks.
///
/// A slot is free when it names no holder: the transaction that moves a task out
/// of `running` frees its slot ([`free_tenant_slot`]). Freeness is a column of the
/// slot's own row, not a read of the holder's task, so that PostgreSQL re-checks it
/// on the newest row when two claims race for one slot.
pub(super) async fn take_tenant_slot(
    txn: &DatabaseTransaction,
    tenant: Uuid,
    limit: u32,
    holder: SlotHolder<'_>,
) -> Result<bool, StoreError> {
    use tenant_slots::{Column, Entity};
    let free = Query::select()
        .column((Entity, Column::Slot))
        .from(Entity)
        .and_where(Expr::col((Entity, Column::TenantId)).eq(tenant))
        .and_where(
            Expr::col((Entity, Column::Slot))
                .lt(weight_of(Expr::val(tenant)).mul(i64::from(limit))),
        )
        .and_where(Expr::col((Entity, Column::DeploymentId)).is_null())
        .order_by((Entity, Column::Slot), Order::Asc)
        .limit(1)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let take = Entity::update_many()
        .col_expr(Column::DeploymentId, Expr::value(holder.0))
        .col_expr(Column::TaskId, Expr::value(holder.1))
        .col_expr(Column::Fence, Expr::value(holder.2))
        .filter(Column::TenantId.eq(tenant))
        .filter(Column::Slot.in_subquery(free));
    if take.clone().exec(txn).await?.rows_affected == 1 {
        return Ok(true);
    }
    let weight = tenant_weight(txn, tenant).await?;
    let limit = i32::try_from(weight.scale(limit)).unwrap_or(i32::MAX);
    let n_slots = Entity::find()
        .filter(Column::TenantId.eq(tenant))
        .filter(Column::Slot.lt(limit))
        .count(txn)
        .await?;
    if n_slots >= u64::try_from(limit).unwrap_or(u64::MAX) {
        return Ok(false);
    }
    let slots = (0..limit).map(|slot| tenant_slots::ActiveModel {
        tenant_id: Set(tenant),
        slot: Set(slot),
        deployment_id: Set(None),
        task_id: Set(None),
        fence: Set(None),
    });
    Entity::insert_many(slots)
        .on_conflict_do_nothing_on([Column::TenantId, Column::Slot])
        .exec(txn)
        .await?;
    Ok(take.exec(txn).await?.rows_affected == 1)
}
