//! The outbox: dispatches written in the transaction of the change that makes
//! them, claimed and deleted by the relay.

use sea_orm::sea_query::extension::postgres::PgFunc;

use super::*;

impl SeaOrmStore {
    /// Writes a dispatch to the outbox, to be published at once.
    pub(super) async fn enqueue(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        dispatch: &TaskDispatch,
    ) -> Result<(), StoreError> {
        self.enqueue_at(txn, now, dispatch, None).await
    }

    /// Writes a dispatch to the outbox, to be published no earlier than `not_before`.
    pub(super) async fn enqueue_at(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        dispatch: &TaskDispatch,
        not_before: Option<i64>,
    ) -> Result<(), StoreError> {
        outbox::Entity::insert(outbox_row(now, dispatch, not_before))
            .exec_without_returning(txn)
            .await?;
        Ok(())
    }

    /// Writes dispatches to the outbox in one statement.
    pub(super) async fn enqueue_all(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        dispatches: &[TaskDispatch],
    ) -> Result<(), StoreError> {
        if dispatches.is_empty() {
            return Ok(());
        }
        let rows = dispatches
            .iter()
            .map(|dispatch| outbox_row(now, dispatch, None));
        outbox::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for SeaOrmStore {
    async fn outbox_batch(&self, limit: u64) -> Result<Vec<OutboxMessage>, StoreError> {
        outbox::Entity::find()
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(message)
            .collect()
    }

    async fn claim_outbox(
        &self,
        limit: u64,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let now = clock(self.backend());
        // On PostgreSQL, relays in other processes skip the rows this one locks;
        // SQLite has one writer and ignores the clause.
        let mut due = Query::select();
        due.column(outbox::Column::Id)
            .from(outbox::Entity)
            .cond_where(
                Condition::all()
                    .add(
                        Condition::any()
                            .add(outbox::Column::ClaimedUntil.is_null())
                            .add(Expr::col(outbox::Column::ClaimedUntil).lt(now.clone())),
                    )
                    .add(
                        Condition::any()
                            .add(outbox::Column::NotBefore.is_null())
                            .add(Expr::col(outbox::Column::NotBefore).lte(now.clone())),
                    ),
            )
            .order_by(outbox::Column::Id, Order::Asc)
            .limit(limit)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        // On PostgreSQL `IN (subquery)` would be a hash join over a scan of the
        // whole outbox, however long its backlog; `= ANY(ARRAY(subquery))` looks
        // the claimed ids up in the primary key.
        let claims = match self.backend() {
            DbBackend::Postgres => {
                let ids = Func::cust("ARRAY").arg(Expr::SubQuery(None, Box::new(due.into())));
                Expr::col(outbox::Column::Id).eq(PgFunc::any(ids))
            }
            _ => Expr::col(outbox::Column::Id).in_subquery(due),
        };
        let mut claimed = outbox::Entity::update_many()
            .col_expr(outbox::Column::ClaimedUntil, now.add(millis(lease)))
            .filter(claims)
            .exec_with_returning(&self.db)
            .await?;
        claimed.sort_by_key(|row| row.id);
        claimed.into_iter().map(message).collect()
    }

    async fn delete_outbox(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        outbox::Entity::delete_many()
            .filter(outbox::Column::Id.is_in(ids.iter().copied()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_signal.clone()
    }
}

/// A stored strategy; null is the default.
/// The outbox row of a dispatch, to be published no earlier than `not_before`.
fn outbox_row(now: i64, dispatch: &TaskDispatch, not_before: Option<i64>) -> outbox::ActiveModel {
    outbox::ActiveModel {
        queue: Set(TASKS_QUEUE.to_owned()),
        payload: Set(to_json(dispatch)),
        created_at: Set(now),
        claimed_until: Set(None),
        not_before: Set(not_before),
        ..Default::default()
    }
}

/// The message an outbox row holds.
fn message(row: outbox::Model) -> Result<OutboxMessage, StoreError> {
    Ok(OutboxMessage {
        id: row.id,
        queue: row.queue,
        dispatch: from_json("outbox message", &row.payload)?,
    })
}
