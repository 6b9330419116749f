//! The outbox: dispatches written in the transaction of the change that makes
//! them, claimed and deleted by the relay.

use sea_orm::sea_query::JoinType;

use super::*;

impl SeaOrmStore {
    /// The fair claim in one transaction of two statements (SQLite): the rows
    /// ranked by [`fair_turns`], then their tasks handed out.
    async fn claim_fairly(
        &self,
        limit: u64,
        lease: Duration,
        tenant_limit: u32,
        redispatch_after: Duration,
    ) -> Result<Vec<outbox::Model>, StoreError> {
        let now = clock(self.backend());
        let due = Condition::all()
            .add(
                Condition::any()
                    .add(outbox::Column::ClaimedUntil.is_null())
                    .add(Expr::col(outbox::Column::ClaimedUntil).lt(now.clone())),
            )
            .add(
                Condition::any()
                    .add(outbox::Column::NotBefore.is_null())
                    .add(Expr::col(outbox::Column::NotBefore).lte(now.clone())),
            );
        let turns = fair_turns(due.clone(), limit, tenant_limit);
        let txn = self.db.begin().await?;
        let claimed = outbox::Entity::update_many()
            .col_expr(outbox::Column::ClaimedUntil, now.add(millis(lease)))
            .filter(Expr::col(outbox::Column::Id).in_subquery(turns))
            .filter(due)
            .exec_with_returning(&txn)
            .await?;
        let ids: Vec<i64> = claimed.iter().map(|row| row.id).collect();
        let claimed_tasks = Query::select()
            .columns([
                outbox::Column::DeploymentId,
                outbox::Column::TaskId,
                outbox::Column::Attempt,
            ])
            .from(outbox::Entity)
            .and_where(outbox::Column::Id.is_in(ids))
            .to_owned();
        // A ready task's lease, unused until its claim, says until when.
        tasks::Entity::update_many()
            .col_expr(tasks::Column::HandedOut, Expr::value(true))
            .col_expr(
                tasks::Column::LeaseUntil,
                clock(self.backend()).add(millis(redispatch_after)),
            )
            .filter(
                Expr::tuple([
                    Expr::col(tasks::Column::DeploymentId),
                    Expr::col(tasks::Column::TaskId),
                    Expr::col(tasks::Column::Attempt),
                ])
                .in_subquery(claimed_tasks),
            )
            .filter(tasks::Column::State.eq(TaskState::Ready.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(claimed)
    }

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
        tenant_limit: u32,
        redispatch_after: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        // The condition is checked again on each row: on PostgreSQL a relay that
        // picked rows a concurrent one is claiming waits for it, then skips them.
        // The rows and their tasks' hand-out commit together, so a relay sees both
        // or neither: two relays can exceed a tenant's limit only by what became
        // due between their reads, and the claim's tenant slots stay exact.
        let mut claimed = match self.backend() {
            DbBackend::Postgres => {
                let claim = pg_fair_claim(limit, lease, tenant_limit, redispatch_after);
                outbox::Model::find_by_statement(Statement::from_string(DbBackend::Postgres, claim))
                    .all(&self.db)
                    .await?
            }
            _ => {
                self.claim_fairly(limit, lease, tenant_limit, redispatch_after)
                    .await?
            }
        };
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

/// The ids of up to `limit` due outbox rows (those matching `due`), fair across
/// tenants: each tenant's rows in the order they were written, the tenants in turn
/// (every tenant's oldest rows first, as many as its weight, then its next ones,
/// and so on), and no more of a tenant's than it may still have handed out under
/// `tenant_limit` times its weight. Rows of no tenant (written before tenants were
/// recorded) are held back by no tenant's hand-outs, at most `tenant_limit` of them
/// per claim.
fn fair_turns(due: Condition, limit: u64, tenant_limit: u32) -> SelectStatement {
    let (queue, busy) = (Alias::new("queue"), Alias::new("busy"));
    let (rank, weight) = (Alias::new("rank"), Alias::new("weight"));
    let n_handed_out = Alias::new("n_handed_out");
    let queued = Query::select()
        .columns([
            (outbox::Entity, outbox::Column::Id),
            (outbox::Entity, outbox::Column::TenantId),
        ])
        .expr_as(
            Expr::cust("ROW_NUMBER() OVER (PARTITION BY outbox.tenant_id ORDER BY outbox.id)"),
            rank.clone(),
        )
        .expr_as(
            Func::coalesce([
                Expr::col((tenants::Entity, tenants::Column::Weight)),
                Expr::val(1),
            ]),
            weight.clone(),
        )
        .from(outbox::Entity)
        .join(
            JoinType::LeftJoin,
            tenants::Entity,
            Expr::col((tenants::Entity, tenants::Column::Id))
                .equals((outbox::Entity, outbox::Column::TenantId)),
        )
        .cond_where(due)
        .to_owned();
    let handed_out = Query::select()
        .column(tasks::Column::TenantId)
        .expr_as(Expr::cust("COUNT(*)"), n_handed_out.clone())
        .from(tasks::Entity)
        .and_where(Expr::cust(HANDED_OUT_LIVE))
        .group_by_col(tasks::Column::TenantId)
        .to_owned();
    let (tenant, id) = (Alias::new("tenant_id"), Alias::new("id"));
    let rank_of = || Expr::col((queue.clone(), rank.clone()));
    let limit_of = || Expr::col((queue.clone(), weight.clone())).mul(i64::from(tenant_limit));
    Query::select()
        .column((queue.clone(), id.clone()))
        .from_subquery(queued, queue.clone())
        .join_subquery(
            JoinType::LeftJoin,
            handed_out,
            busy.clone(),
            Expr::col((busy.clone(), tenant.clone())).equals((queue.clone(), tenant.clone())),
        )
        // For a tenant's rows implied by the condition after it; it bounds the rows
        // of no tenant too, as PostgreSQL's claim does.
        .and_where(rank_of().lte(limit_of()))
        .cond_where(
            Condition::any()
                .add(Expr::col((queue.clone(), tenant)).is_null())
                .add(
                    rank_of()
                        .add(Func::coalesce([
                            Expr::col((busy, n_handed_out)),
                            Expr::val(0),
                        ]))
                        .lte(limit_of()),
                ),
        )
        .order_by_expr(
            rank_of().sub(1).div(Expr::col((queue.clone(), weight))),
            Order::Asc,
        )
        .order_by((queue, id), Order::Asc)
        .limit(limit)
        .to_owned()
}

/// The fair claim on PostgreSQL ([`fair_turns`]' ranking, reading no more of a
/// tenant's backlog than its limit), in one statement that also hands the claimed
/// rows' tasks out:
/// - the tenants with outbox rows (`owners`), by a skip scan of `outbox_tenant`
///   (one index probe per tenant, however long its backlog);
/// - of each, its oldest due rows, as many as it may still have handed out, in
///   turns of its weight (`LATERAL`, in `outbox_tenant` order); rows of no tenant
///   up to the limit;
/// - the first `limit` by rank, then id, claimed by primary key: `= ANY(ARRAY(…))`,
///   where `IN (…)` would be a hash join over a scan of the whole outbox;
/// - their `ready` tasks handed out, with `lease_until` (unused by a ready task
///   until its claim) `redispatch_after` from now.
///
/// The numbers are formatted into the SQL: they are integers, and the same for
/// every claim of a relay.
fn pg_fair_claim(
    limit: u64,
    lease: Duration,
    tenant_limit: u32,
    redispatch_after: Duration,
) -> String {
    let clock = clock_sql(DbBackend::Postgres);
    let lease = millis(lease);
    let redispatch_after = millis(redispatch_after);
    let due = "(o.claimed_until IS NULL OR o.claimed_until < clock.now) \
               AND (o.not_before IS NULL OR o.not_before <= clock.now)";
    format!(
        "WITH RECURSIVE owners AS ( \
             (SELECT tenant_id FROM outbox WHERE tenant_id IS NOT NULL ORDER BY tenant_id LIMIT 1) \
             UNION ALL \
             SELECT (SELECT o.tenant_id FROM outbox o WHERE o.tenant_id > t.tenant_id \
                     ORDER BY o.tenant_id LIMIT 1) \
             FROM owners t WHERE t.tenant_id IS NOT NULL), \
         clock AS (SELECT {clock} AS now), \
         busy AS (SELECT tenant_id, COUNT(*) AS n FROM tasks WHERE {HANDED_OUT_LIVE} \
                  GROUP BY tenant_id), \
         heads AS ( \
             SELECT q.id, q.turn FROM owners t LEFT JOIN busy b ON b.tenant_id = t.tenant_id \
             LEFT JOIN tenants w ON w.id = t.tenant_id \
             CROSS JOIN LATERAL ( \
                 SELECT o.id, (ROW_NUMBER() OVER (ORDER BY o.id) - 1) / COALESCE(w.weight, 1) \
                        AS turn FROM outbox o, clock \
                 WHERE o.tenant_id = t.tenant_id AND {due} ORDER BY o.id \
                 LIMIT GREATEST({tenant_limit} * COALESCE(w.weight, 1) - COALESCE(b.n, 0), 0)) q \
             WHERE t.tenant_id IS NOT NULL \
             UNION ALL \
             (SELECT o.id, ROW_NUMBER() OVER (ORDER BY o.id) - 1 FROM outbox o, clock \
              WHERE o.tenant_id IS NULL AND {due} ORDER BY o.id LIMIT {tenant_limit})), \
         claimed AS ( \
             UPDATE outbox o SET claimed_until = clock.now + {lease} FROM clock \
             WHERE o.id = ANY(ARRAY(SELECT id FROM heads ORDER BY turn, id LIMIT {limit})) \
             AND {due} RETURNING o.*), \
         handed_out AS ( \
             UPDATE tasks SET handed_out = TRUE, lease_until = clock.now + {redispatch_after} \
             FROM claimed, clock WHERE tasks.deployment_id = claimed.deployment_id \
             AND tasks.task_id = claimed.task_id AND tasks.attempt = claimed.attempt \
             AND tasks.state = 'ready') \
         SELECT * FROM claimed"
    )
}

/// The outbox row of a dispatch, to be published no earlier than `not_before`.
fn outbox_row(now: i64, dispatch: &TaskDispatch, not_before: Option<i64>) -> outbox::ActiveModel {
    let written = TaskDispatch {
        written_at: Some(dispatch.written_at.unwrap_or(now)),
        ..dispatch.clone()
    };
    outbox::ActiveModel {
        queue: Set(TASKS_QUEUE.to_owned()),
        payload: Set(to_json(&written)),
        created_at: Set(now),
        claimed_until: Set(None),
        not_before: Set(not_before),
        tenant_id: Set(Some(dispatch.tenant.0)),
        deployment_id: Set(Some(dispatch.deployment.0)),
        task_id: Set(Some(dispatch.task.to_string())),
        attempt: Set(Some(dispatch.attempt as i32)),
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
