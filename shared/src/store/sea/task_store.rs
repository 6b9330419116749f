//! Tasks as workers and the reaper move them: fences, claims, leases, results,
//! and the readying of dependents.

use sea_orm::QueryResult;
use sea_orm::sea_query::UpdateStatement;

use super::*;

impl SeaOrmStore {
    /// Ends or hands out again one task whose lease expired at `now`; `None` when
    /// it moved on meanwhile.
    async fn reap(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        max_attempts: u32,
        task: tasks::Model,
    ) -> Result<Option<Reaped>, StoreError> {
        let task_id: TaskId = parse("task id", &task.task_id)?;
        let deployment = DeploymentId(task.deployment_id);
        let attempt = attempt_of(&task);
        let row = deployment_row(txn, deployment).await?;
        let (tenant, app) = (row.tenant_id, row.app.clone());
        // A cancelled deployment runs nothing again: the task ends `cancelled`.
        let cancelled = row.cancel_requested_at.is_some();
        let out_of_attempts = attempt >= max_attempts;
        let mut update = tasks::Entity::update_many()
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .filter(task_key(deployment, &task_id))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(task.attempt))
            .filter(tasks::Column::LeaseUntil.lt(now));
        update = if cancelled {
            update
                .col_expr(
                    tasks::Column::State,
                    Expr::value(TaskState::Cancelled.as_str()),
                )
                .col_expr(tasks::Column::FinishedAt, Expr::value(now))
                .col_expr(
                    tasks::Column::Error,
                    Expr::value("cancelled; the worker running it stopped answering"),
                )
        } else if out_of_attempts {
            let error = format!(
                "the lease expired {attempt} times: the workers running this task stopped answering"
            );
            update
                .col_expr(
                    tasks::Column::State,
                    Expr::value(TaskState::Failed.as_str()),
                )
                .col_expr(tasks::Column::FinishedAt, Expr::value(now))
                .col_expr(tasks::Column::Error, Expr::value(error))
        } else {
            update
                .col_expr(tasks::Column::State, Expr::value(TaskState::Ready.as_str()))
                .col_expr(tasks::Column::HandedOut, Expr::value(false))
                .col_expr(tasks::Column::Attempt, Expr::value(attempt as i32 + 1))
                .col_expr(tasks::Column::Worker, Expr::value(None::<String>))
        };
        if update.exec(txn).await?.rows_affected != 1 {
            return Ok(None);
        }
        if let Some(fence) = task.fence {
            free_tenant_slot(
                txn,
                task.tenant_id,
                (task.deployment_id, &task.task_id, fence),
            )
            .await?;
        }
        if cancelled || out_of_attempts {
            let state = if cancelled {
                TaskState::Cancelled
            } else {
                TaskState::Failed
            };
            let owner = Owner {
                deployment,
                tenant: TenantId(tenant),
                app: parse("app name", &app)?,
                app_id: row.app_id,
            };
            let (skipped, finished) = self
                .close_task(txn, now, &owner, &task_id, state, None, None)
                .await?;
            Ok(Some(Reaped::Ended {
                tenant: TenantId(tenant),
                deployment,
                task: task_id,
                attempt,
                state,
                skipped,
                finished,
            }))
        } else {
            let dispatch = TaskDispatch {
                tenant: TenantId(tenant),
                app: parse("app name", &app)?,
                deployment,
                task: task_id,
                attempt: attempt + 1,
                written_at: None,
            };
            self.enqueue(txn, now, &dispatch).await?;
            Ok(Some(Reaped::Requeued(dispatch)))
        }
    }

    /// Dispatches again, at the same attempt, every task handed out whose hand-out
    /// lapsed at `now` with no worker's claim: its dispatch was lost (dead-lettered
    /// after too many deliveries, a queue purged), and it would hold its tenant's
    /// place for ever. A dispatch that was only slow makes a duplicate, which its
    /// task's claim makes harmless.
    async fn redispatch_unclaimed(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
    ) -> Result<Vec<Reaped>, StoreError> {
        let mut update = tasks::Entity::update_many()
            .col_expr(tasks::Column::HandedOut, Expr::value(false))
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .filter(tasks::Column::State.eq(TaskState::Ready.as_str()))
            .filter(Expr::cust(HANDED_OUT_LIVE))
            .filter(tasks::Column::LeaseUntil.lt(now))
            .into_query();
        update.returning(Query::returning().exprs([
            Expr::col(tasks::Column::DeploymentId),
            Expr::col(tasks::Column::TaskId),
            Expr::col(tasks::Column::Attempt),
            of_deployment(deployments::Column::TenantId),
            of_deployment(deployments::Column::App),
        ]));
        let mut dispatches = Vec::new();
        for row in txn.query_all(&update).await? {
            let task: String = row.try_get_by_index(1)?;
            let attempt: i32 = row.try_get_by_index(2)?;
            let app: String = row.try_get_by_index(4)?;
            dispatches.push(TaskDispatch {
                tenant: TenantId(row.try_get_by_index(3)?),
                app: parse("app name", &app)?,
                deployment: DeploymentId(row.try_get_by_index(0)?),
                task: parse("task id", &task)?,
                attempt: u32::try_from(attempt).unwrap_or(0),
                written_at: None,
            });
        }
        self.enqueue_all(txn, now, &dispatches).await?;
        Ok(dispatches.into_iter().map(Reaped::Redispatched).collect())
    }

    /// Readies the dependents of `done` whose last need it was, in one statement,
    /// and writes their dispatches in one more; returns them.
    async fn ready_dependents(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        tenant: TenantId,
        app: &AppName,
        deployment: DeploymentId,
        done: &TaskId,
    ) -> Result<Vec<TaskDispatch>, StoreError> {
        let needing = Query::select()
            .column(task_needs::Column::TaskId)
            .from(task_needs::Entity)
            .and_where(task_needs::Column::DeploymentId.eq(deployment.0))
            .and_where(task_needs::Column::NeedId.eq(done.as_str()))
            .to_owned();
        // Every SET sees the row before the update: the last need's end readies it.
        let readied_state = Expr::case(
            Expr::col(tasks::Column::NPending).lte(1),
            TaskState::Ready.as_str(),
        )
        .finally(Expr::col(tasks::Column::State));
        // Locked in the order of their ids first (PostgreSQL): concurrent results of
        // one deployment ready overlapping dependents, and rows locked in an order
        // the plan picks can deadlock.
        let blocked = Query::select()
            .expr(other(tasks::Column::TaskId))
            .from_as(tasks::Entity, Alias::new(OTHER))
            .and_where(other(tasks::Column::DeploymentId).eq(deployment.0))
            .and_where(other(tasks::Column::TaskId).in_subquery(needing))
            .and_where(other(tasks::Column::State).eq(TaskState::Blocked.as_str()))
            .order_by_expr(other(tasks::Column::TaskId), Order::Asc)
            .lock(LockType::NoKeyUpdate)
            .to_owned();
        let updated = tasks::Entity::update_many()
            .col_expr(
                tasks::Column::NPending,
                Expr::col(tasks::Column::NPending).sub(1),
            )
            .col_expr(tasks::Column::State, readied_state.into())
            .col_expr(tasks::Column::HandedOut, Expr::value(false))
            .filter(tasks::Column::DeploymentId.eq(deployment.0))
            .filter(in_once(
                Expr::col(tasks::Column::TaskId),
                blocked,
                self.backend(),
            ))
            .filter(tasks::Column::State.eq(TaskState::Blocked.as_str()))
            .exec_with_returning(txn)
            .await?;
        let mut readied = Vec::new();
        for row in updated {
            if row.state == TaskState::Ready.as_str() {
                readied.push(TaskDispatch {
                    tenant,
                    app: app.clone(),
                    deployment,
                    task: parse("task id", &row.task_id)?,
                    attempt: attempt_of(&row),
                    written_at: None,
                });
            }
        }
        self.enqueue_all(txn, now, &readied).await?;
        Ok(readied)
    }

    /// Marks every task that (transitively) needs `failed` as skipped; returns them.
    async fn skip_dependents(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        deployment: DeploymentId,
        failed: &TaskId,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut skipped = Vec::new();
        let mut frontier = VecDeque::from([failed.clone()]);
        while let Some(task) = frontier.pop_front() {
            for dependent in dependents(txn, deployment, &task).await? {
                let result = tasks::Entity::update_many()
                    .col_expr(
                        tasks::Column::State,
                        Expr::value(TaskState::Skipped.as_str()),
                    )
                    .col_expr(tasks::Column::FinishedAt, Expr::value(now))
                    .filter(task_key(deployment, &dependent))
                    .filter(tasks::Column::State.eq(TaskState::Blocked.as_str()))
                    .exec(txn)
                    .await?;
                if result.rows_affected == 1 {
                    skipped.push(dependent.clone());
                    frontier.push_back(dependent);
                }
            }
        }
        Ok(skipped)
    }

    /// What follows a task's end, in its transaction: a success changes what runs
    /// (a deploy or delete: `applied`), readies its dependents and hands its
    /// artifact to the deploys that use it; a failure skips them; the deployment's
    /// open-task count drops, and the last task finishes the deployment.
    #[allow(clippy::too_many_arguments)]
    async fn close_task(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        owner: &Owner,
        task: &TaskId,
        state: TaskState,
        artifact: Option<&str>,
        applied: Option<&tasks::Model>,
    ) -> Result<(Vec<TaskId>, Option<Finished>), StoreError> {
        let deployment = owner.deployment;
        let mut skipped = Vec::new();
        if state == TaskState::Succeeded {
            if let Some(applied) = applied {
                self.apply_to_running(txn, now, owner.app_id, applied)
                    .await?;
            }
            if let Some(artifact) = artifact {
                // Deploys of this build's artifact learn it now.
                tasks::Entity::update_many()
                    .col_expr(tasks::Column::Artifact, Expr::value(artifact))
                    .filter(tasks::Column::DeploymentId.eq(deployment.0))
                    .filter(tasks::Column::ArtifactFrom.eq(task.as_str()))
                    .exec(txn)
                    .await?;
            }
            self.ready_dependents(txn, now, owner.tenant, &owner.app, deployment, task)
                .await?;
        } else {
            skipped = self.skip_dependents(txn, now, deployment, task).await?;
        }
        // Last, so that the row is locked only until the commit: closing tasks
        // through the deployment's row serializes concurrent results of one
        // deployment, so exactly one of them sees the count reach zero.
        let n_closed = 1 + skipped.len() as i32;
        let mut close = deployments::Entity::update_many().col_expr(
            deployments::Column::NOpen,
            Expr::col(deployments::Column::NOpen).sub(n_closed),
        );
        if state == TaskState::Failed {
            close = close.col_expr(deployments::Column::HasFailed, Expr::value(true));
        }
        let row = close
            .filter(deployments::Column::Id.eq(deployment.0))
            .exec_with_returning(txn)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                id: deployment.to_string(),
            })?;
        let finished = if row.n_open <= 0 {
            Some(self.finish_deployment(txn, now, &row).await?)
        } else {
            None
        };
        Ok((skipped, finished))
    }

    /// Hands a transiently failed task out again as the next attempt, dispatched no
    /// earlier than `after` from now.
    async fn retry_later(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        result: &TaskResult,
        error: &str,
        after: Duration,
    ) -> Result<RecordOutcome, StoreError> {
        let attempt = result.attempt + 1;
        let retried = tasks::Entity::update_many()
            .col_expr(tasks::Column::State, Expr::value(TaskState::Ready.as_str()))
            .col_expr(tasks::Column::HandedOut, Expr::value(false))
            .col_expr(tasks::Column::Attempt, Expr::value(attempt as i32))
            .col_expr(tasks::Column::Worker, Expr::value(None::<String>))
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .col_expr(tasks::Column::Log, Expr::value(result.log.as_str()))
            .col_expr(tasks::Column::Error, Expr::value(error))
            .col_expr(tasks::Column::RetryAt, Expr::value(now + millis(after)))
            .filter(task_key(result.deployment, &result.task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(result.attempt as i32))
            .filter(tasks::Column::Fence.eq(result.fence.0))
            .filter(fence_is_current())
            .exec(txn)
            .await?;
        if retried.rows_affected != 1 {
            return Ok(RecordOutcome::Stale);
        }
        let deployment = deployment_row(txn, result.deployment).await?;
        free_tenant_slot(
            txn,
            Some(deployment.tenant_id),
            (result.deployment.0, result.task.as_str(), result.fence.0),
        )
        .await?;
        let not_before = now + millis(after);
        let dispatch = TaskDispatch {
            tenant: TenantId(deployment.tenant_id),
            app: parse("app name", &deployment.app)?,
            deployment: result.deployment,
            task: result.task.clone(),
            attempt,
            written_at: None,
        };
        self.enqueue_at(txn, now, &dispatch, Some(not_before))
            .await?;
        Ok(RecordOutcome::Retrying {
            attempt,
            at: timestamp(not_before),
        })
    }

    /// Records one result in `txn`. A stale result writes nothing, so that the
    /// results recorded beside it in one transaction stand.
    async fn record_in(
        &self,
        txn: &DatabaseTransaction,
        result: &TaskResult,
    ) -> Result<RecordOutcome, StoreError> {
        let (state, artifact, error) = match &result.outcome {
            TaskOutcome::Succeeded { artifact } => (TaskState::Succeeded, artifact.clone(), None),
            TaskOutcome::Failed { error } => (TaskState::Failed, None, Some(error.clone())),
            TaskOutcome::Cancelled { error } => (TaskState::Cancelled, None, Some(error.clone())),
            TaskOutcome::Retry { error, after } => {
                // A cancelled deployment runs nothing again.
                if self.cancel_requested(txn, result.deployment).await? {
                    (TaskState::Cancelled, None, Some(error.clone()))
                } else {
                    let now = self.now(txn).await?;
                    return self.retry_later(txn, now, result, error, *after).await;
                }
            }
        };
        let mut update = tasks::Entity::update_many()
            .col_expr(tasks::Column::State, Expr::value(state.as_str()))
            .col_expr(tasks::Column::FinishedAt, clock(self.backend()))
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .col_expr(tasks::Column::Log, Expr::value(result.log.as_str()))
            .col_expr(tasks::Column::Error, Expr::value(error));
        if let Some(artifact) = &artifact {
            update = update.col_expr(tasks::Column::Artifact, Expr::value(artifact.as_str()));
        }
        // The task as recorded, then its deployment's tenant, app and app id.
        let n_columns = tasks::Column::iter().count();
        let mut returning: Vec<Expr> = tasks::Column::iter().map(Expr::col).collect();
        returning.extend([
            of_deployment(deployments::Column::TenantId),
            of_deployment(deployments::Column::App),
            of_deployment(deployments::Column::AppId),
            of_fence(fences::Column::Waiters),
        ]);
        let mut update = update
            .filter(task_key(result.deployment, &result.task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(result.attempt as i32))
            .filter(tasks::Column::Fence.eq(result.fence.0))
            .filter(fence_is_current())
            .into_query();
        update.returning(Query::returning().exprs(returning));
        let Some(row) = txn.query_one(&update).await? else {
            return Ok(RecordOutcome::Stale);
        };
        let task = tasks::Model::from_query_result(&row, "")?;
        let app: String = row.try_get_by_index(n_columns + 1)?;
        let waiters: Option<bool> = row.try_get_by_index(n_columns + 3)?;
        let owner = Owner {
            deployment: result.deployment,
            tenant: TenantId(row.try_get_by_index(n_columns)?),
            app: parse("app name", &app)?,
            app_id: row.try_get_by_index(n_columns + 2)?,
        };
        // The time of the task's end is the rest of the transaction's.
        let now = task
            .finished_at
            .ok_or_else(|| StoreError::Database("the recorded task has no end time".into()))?;
        free_tenant_slot(
            txn,
            task.tenant_id,
            (task.deployment_id, &task.task_id, result.fence.0),
        )
        .await?;
        if let (Some(true), Some(lock_key)) = (waiters, &task.lock_key) {
            wake_waiters(txn, lock_key).await?;
        }
        let (skipped, finished) = self
            .close_task(
                txn,
                now,
                &owner,
                &result.task,
                state,
                artifact.as_deref(),
                Some(&task),
            )
            .await?;
        Ok(RecordOutcome::Recorded { skipped, finished })
    }

    /// The running task (under a live lease) of the same component as `task`, if any.
    async fn lock_holder(
        &self,
        conn: &impl ConnectionTrait,
        task: &tasks::Model,
        now: i64,
    ) -> Result<Option<Waiting>, StoreError> {
        let Some(lock_key) = &task.lock_key else {
            return Ok(None);
        };
        let query = lock_holders_query(of_lock(Expr::val(lock_key.as_str())), Expr::val(now));
        Ok(first_task(conn, &query)
            .await?
            .map(|(deployment, task)| Waiting::Lock { deployment, task }))
    }

    /// Claims `claims` (of one worker and lease, one per lock key, each taking its
    /// own fence) in one transaction: the tasks claimed, in the order of `claims`;
    /// `None` for a claim refused, which spent no fence and holds no slot, to be
    /// decided alone.
    async fn claim_together(
        &self,
        claims: &[&Claim],
    ) -> Result<Vec<Option<ClaimedTask>>, StoreError> {
        let backend = self.backend();
        let txn = self.db.begin().await?;
        // The fence rows first, in the order of their keys, so that concurrent
        // claims lock them in one order.
        let fences = take_fences(&txn, claims.iter().map(|claim| claim.lock_key.as_str())).await?;
        let fence_of = |claim: &Claim| fences.get(&claim.lock_key).copied();
        let mut slotted = Vec::with_capacity(claims.len());
        // The claims that took a slot (those under a limit that found one).
        let mut holding = BTreeSet::new();
        for &claim in claims {
            let fence = fence_of(claim)
                .ok_or_else(|| StoreError::Database("taking fences skipped a lock key".into()))?;
            let holds_slot = match claim.tenant_limit {
                Some(limit) => {
                    let took = take_tenant_slot(
                        &txn,
                        claim.tenant.0,
                        limit,
                        (claim.deployment.0, claim.task.as_str(), fence.0),
                    )
                    .await?;
                    if took {
                        holding.insert((claim.deployment.0, claim.task.as_str()));
                    }
                    took
                }
                None => true,
            };
            if holds_slot {
                slotted.push((claim, fence));
            }
        }
        let rows = if slotted.is_empty() {
            Vec::new()
        } else {
            txn.query_all(&claim_update(&slotted, backend)).await?
        };
        let mut claimed = BTreeMap::new();
        for row in &rows {
            let deployment: Uuid = row.try_get_by_index(9)?;
            let task: String = row.try_get_by_index(10)?;
            claimed.insert((deployment, task), row);
        }
        let mut tasks = Vec::with_capacity(claims.len());
        let mut refused = Vec::new();
        for &claim in claims {
            let row = claimed.get(&(claim.deployment.0, claim.task.as_str().to_owned()));
            let fence = fence_of(claim)
                .ok_or_else(|| StoreError::Database("taking fences skipped a lock key".into()))?;
            match row {
                Some(row) => {
                    let task = claimed_task(claim, fence, row)?;
                    if task.tenant != claim.tenant {
                        return Err(other_tenants(claim, task.tenant));
                    }
                    tasks.push(Some(task));
                }
                None => {
                    refused.push((claim, fence));
                    tasks.push(None);
                }
            }
        }
        // A refused claim spends no fence and holds no slot: both are given back
        // (the fence rows stay locked by this transaction, so nobody saw them).
        for (claim, fence) in &refused {
            if holding.contains(&(claim.deployment.0, claim.task.as_str())) {
                free_tenant_slot(
                    &txn,
                    Some(claim.tenant.0),
                    (claim.deployment.0, claim.task.as_str(), fence.0),
                )
                .await?;
            }
        }
        if !refused.is_empty() {
            fences::Entity::update_many()
                .col_expr(
                    fences::Column::Fence,
                    Expr::col(fences::Column::Fence).sub(1),
                )
                .filter(
                    fences::Column::LockKey
                        .is_in(refused.iter().map(|(claim, _)| claim.lock_key.as_str())),
                )
                .exec(&txn)
                .await?;
        }
        let started = start_deployments(&txn, &rows.iter().collect::<Vec<_>>(), backend).await?;
        txn.commit().await?;
        started.iter().for_each(metrics::deployment_started);
        Ok(tasks)
    }

    /// Why `claim` claimed nothing, read in its transaction; `None` when nothing
    /// keeps it from running any more.
    async fn refusal(
        &self,
        txn: &DatabaseTransaction,
        claim: &Claim,
        fence: Fence,
    ) -> Result<Option<ClaimOutcome>, StoreError> {
        let Some(task) = tasks::Entity::find()
            .filter(task_key(claim.deployment, &claim.task))
            .one(txn)
            .await?
        else {
            return Ok(Some(ClaimOutcome::Unknown));
        };
        let not_claimable = ClaimOutcome::NotClaimable {
            state: parse("task state", &task.state)?,
            attempt: attempt_of(&task),
        };
        if task.state != TaskState::Ready.as_str()
            || task.attempt != claim.attempt as i32
            || task.fence.is_some_and(|newest| newest >= fence.0)
            || task
                .lock_key
                .as_ref()
                .is_some_and(|key| *key != claim.lock_key)
        {
            return Ok(Some(not_claimable));
        }
        let now = self.now(txn).await?;
        if self.lock_holder(txn, &task, now).await?.is_some() {
            return Ok(Some(ClaimOutcome::ComponentBusy));
        }
        if older_work(txn, &task).await?.is_some() {
            return Ok(Some(ClaimOutcome::Ordered));
        }
        Ok(None)
    }
}

#[async_trait]
impl TaskStore for SeaOrmStore {
    async fn next_fence(&self, key: &str) -> Result<Fence, StoreError> {
        take_fence(&self.db, key).await
    }

    async fn claim_task(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let backend = self.backend();
        let txn = self.db.begin().await?;
        // First the component's fence row, which stays locked until the commit
        // (PostgreSQL): concurrent claims of one component are decided one after
        // the other, each seeing the ones committed before.
        let fence = match claim.fence {
            Some(fence) => {
                fences::Entity::find_by_id(claim.lock_key.clone())
                    .lock(LockType::NoKeyUpdate)
                    .one(&txn)
                    .await?;
                fence
            }
            None => take_fence(&txn, &claim.lock_key).await?,
        };
        let update = claim_update(&[(claim, fence)], backend);
        // What refused the claim is read after it, and may have ended since (a
        // holder's result, a lease that lapsed): then the claim is tried again, still
        // under the fence row's lock.
        let mut attempts = 0;
        let row = loop {
            if let Some(row) = txn.query_one(&update).await? {
                break row;
            }
            attempts += 1;
            let refusal = match self.refusal(&txn, claim, fence).await? {
                Some(refusal) => refusal,
                None if attempts < 3 => continue,
                None => ClaimOutcome::ComponentBusy,
            };
            if matches!(refusal, ClaimOutcome::ComponentBusy) && claim.fence.is_none() {
                // The lock is ours, yet another task of the component runs: its
                // holder lost the lock. The fence taken stays, so that the lost
                // holder's writes are refused from now on.
                txn.commit().await?;
            } else {
                txn.rollback().await?;
            }
            return Ok(refusal);
        };
        let tenant: Uuid = row.try_get_by_index(4)?;
        if tenant != claim.tenant.0 {
            txn.rollback().await?;
            return Err(other_tenants(claim, TenantId(tenant)));
        }
        // Last: the tenant's slot, whose row stays locked until the commit.
        if let Some(limit) = claim.tenant_limit
            && !take_tenant_slot(
                &txn,
                tenant,
                limit,
                (claim.deployment.0, claim.task.as_str(), fence.0),
            )
            .await?
        {
            txn.rollback().await?;
            return Ok(ClaimOutcome::TenantLimit);
        }
        let started = start_deployments(&txn, &[&row], backend).await?;
        txn.commit().await?;
        started.iter().for_each(metrics::deployment_started);
        Ok(ClaimOutcome::Claimed(Box::new(claimed_task(
            claim, fence, &row,
        )?)))
    }

    async fn claim_tasks(&self, claims: &[Claim]) -> Vec<Result<ClaimOutcome, StoreError>> {
        // Together: the claims that take their own fences, of one worker and lease,
        // one per component; the others, and those refused together, alone after.
        let mut together: Vec<usize> = Vec::new();
        let mut keys = BTreeSet::new();
        for (i, claim) in claims.iter().enumerate() {
            let first = &claims[together.first().copied().unwrap_or(i)];
            if claim.fence.is_none()
                && claim.worker == first.worker
                && claim.lease == first.lease
                && keys.insert(claim.lock_key.as_str())
            {
                together.push(i);
            }
        }
        let mut outcomes: Vec<Option<Result<ClaimOutcome, StoreError>>> =
            claims.iter().map(|_| None).collect();
        if together.len() > 1 {
            let batch: Vec<&Claim> = together.iter().map(|&i| &claims[i]).collect();
            match self.claim_together(&batch).await {
                Ok(claimed) => {
                    for (i, task) in together.into_iter().zip(claimed) {
                        outcomes[i] = task.map(|task| Ok(ClaimOutcome::Claimed(Box::new(task))));
                    }
                }
                Err(err) => tracing::debug!(
                    error = %err,
                    n_claims = batch.len(),
                    "failed to claim tasks together; claiming them one by one"
                ),
            }
        }
        let mut decided = Vec::with_capacity(claims.len());
        for (claim, outcome) in claims.iter().zip(outcomes) {
            decided.push(match outcome {
                Some(outcome) => outcome,
                None => self.claim_task(claim).await,
            });
        }
        decided
    }

    async fn extend_leases(
        &self,
        tasks: &[LeasedTask],
        lease: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        let mut leases = BTreeMap::new();
        for chunk in tasks.chunks(LEASES_PER_STATEMENT) {
            // One statement: the extensions, and whether each deployment was asked
            // to stop.
            let held = chunk.iter().map(|held| {
                ValueTuple::Many(vec![
                    held.deployment.0.into(),
                    held.task.as_str().into(),
                    (held.attempt as i32).into(),
                    held.fence.0.into(),
                ])
            });
            let mut update = tasks::Entity::update_many()
                .col_expr(
                    tasks::Column::LeaseUntil,
                    clock(self.backend()).add(millis(lease)),
                )
                .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
                .filter(
                    Expr::tuple([
                        Expr::col(tasks::Column::DeploymentId),
                        Expr::col(tasks::Column::TaskId),
                        Expr::col(tasks::Column::Attempt),
                        Expr::col(tasks::Column::Fence),
                    ])
                    .in_tuples(held),
                )
                .filter(fence_is_current())
                .into_query();
            update.returning(Query::returning().exprs([
                Expr::col(tasks::Column::DeploymentId),
                Expr::col(tasks::Column::TaskId),
                Expr::col(tasks::Column::Attempt),
                Expr::col(tasks::Column::Fence),
                of_deployment(deployments::Column::CancelRequestedAt),
            ]));
            for row in self.db.query_all(&update).await? {
                let deployment: Uuid = row.try_get_by_index(0)?;
                let task: String = row.try_get_by_index(1)?;
                let attempt: i32 = row.try_get_by_index(2)?;
                let fence: i64 = row.try_get_by_index(3)?;
                let cancel_requested: Option<i64> = row.try_get_by_index(4)?;
                let lease = if cancel_requested.is_some() {
                    Lease::CancelRequested
                } else {
                    Lease::Extended
                };
                leases.insert((deployment, task, attempt, fence), lease);
            }
        }
        // A task not extended is no longer at its attempt and fence.
        Ok(tasks
            .iter()
            .map(|held| {
                let key = (
                    held.deployment.0,
                    held.task.to_string(),
                    held.attempt as i32,
                    held.fence.0,
                );
                leases.get(&key).copied().unwrap_or(Lease::Lost)
            })
            .collect())
    }

    async fn record_phase(
        &self,
        deployment: DeploymentId,
        task: &TaskId,
        attempt: u32,
        fence: Fence,
        phase: &str,
    ) -> Result<bool, StoreError> {
        let result = tasks::Entity::update_many()
            .col_expr(tasks::Column::Phase, Expr::value(phase))
            .filter(task_key(deployment, task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(attempt as i32))
            .filter(tasks::Column::Fence.eq(fence.0))
            .filter(fence_is_current())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    async fn record_results(
        &self,
        results: &[TaskResult],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        // In the order of deployments and tasks, so that transactions recording
        // results of the same deployments take their rows in the same order.
        let mut order: Vec<usize> = (0..results.len()).collect();
        order.sort_by(|&a, &b| {
            let key = |i: usize| (results[i].deployment.0, results[i].task.as_str());
            key(a).cmp(&key(b))
        });
        let txn = self.db.begin().await?;
        let mut outcomes = vec![RecordOutcome::Stale; results.len()];
        for i in order {
            outcomes[i] = self.record_in(&txn, &results[i]).await?;
        }
        txn.commit().await?;
        if outcomes
            .iter()
            .any(|outcome| !matches!(outcome, RecordOutcome::Stale))
        {
            self.outbox_signal.notify_one();
        }
        // A retry is published once its backoff has passed, not at the next poll.
        for (result, outcome) in results.iter().zip(&outcomes) {
            if let (TaskOutcome::Retry { after, .. }, RecordOutcome::Retrying { .. }) =
                (&result.outcome, outcome)
            {
                self.signal_after(*after);
            }
        }
        Ok(outcomes)
    }

    async fn reap_expired(&self, max_attempts: u32) -> Result<Vec<Reaped>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let expired = tasks::Entity::find()
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::LeaseUntil.lt(now))
            .all(&txn)
            .await?;
        let mut reaped = Vec::new();
        for task in expired {
            reaped.extend(self.reap(&txn, now, max_attempts, task).await?);
        }
        reaped.extend(self.redispatch_unclaimed(&txn, now).await?);
        txn.commit().await?;
        if !reaped.is_empty() {
            self.outbox_signal.notify_one();
        }
        Ok(reaped)
    }

    async fn release_lease(&self, task: &LeasedTask) -> Result<Option<Reaped>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        // The lease ends now, under the task's fence: then it is reaped as any
        // expired one is, in the same transaction.
        let held = tasks::Entity::find()
            .filter(task_key(task.deployment, &task.task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(task.attempt as i32))
            .filter(tasks::Column::Fence.eq(task.fence.0))
            .one(&txn)
            .await?;
        let Some(mut held) = held else {
            txn.rollback().await?;
            return Ok(None);
        };
        let expired = now - 1;
        tasks::Entity::update_many()
            .col_expr(tasks::Column::LeaseUntil, Expr::value(expired))
            .filter(task_key(task.deployment, &task.task))
            .filter(tasks::Column::Attempt.eq(task.attempt as i32))
            .exec(&txn)
            .await?;
        held.lease_until = Some(expired);
        let reaped = self.reap(&txn, now, u32::MAX, held).await?;
        txn.commit().await?;
        if reaped.is_some() {
            self.outbox_signal.notify_one();
        }
        Ok(reaped)
    }

    async fn hand_back(
        &self,
        dispatch: &TaskDispatch,
        after: Duration,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        // First the component's fence row, as a claim takes it: the result of the
        // component's running task makes this one due at once.
        let (_, component) = dispatch.task.parts();
        let lock_key = component_lock_key(dispatch.tenant, &dispatch.app, &component);
        fences::Entity::update_many()
            .col_expr(fences::Column::Waiters, Expr::value(true))
            .filter(fences::Column::LockKey.eq(lock_key))
            .exec(&txn)
            .await?;
        let handed_back = tasks::Entity::update_many()
            .col_expr(tasks::Column::HandedOut, Expr::value(false))
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .filter(task_key(dispatch.deployment, &dispatch.task))
            .filter(tasks::Column::State.eq(TaskState::Ready.as_str()))
            .filter(tasks::Column::Attempt.eq(dispatch.attempt as i32))
            .exec(&txn)
            .await?;
        if handed_back.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        self.enqueue_at(&txn, now, dispatch, Some(now + millis(after)))
            .await?;
        txn.commit().await?;
        // The tenant may have another task handed out in its place; this one, once
        // its delay has passed.
        self.outbox_signal.notify_one();
        self.signal_after(after);
        Ok(true)
    }

    async fn redispatch_ready(&self) -> Result<usize, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let ready = tasks::Entity::find()
            .filter(tasks::Column::State.eq(TaskState::Ready.as_str()))
            .all(&txn)
            .await?;
        // Dispatched again: none of them counts as handed out until a relay claims
        // its new dispatch.
        tasks::Entity::update_many()
            .col_expr(tasks::Column::HandedOut, Expr::value(false))
            .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
            .filter(tasks::Column::State.eq(TaskState::Ready.as_str()))
            .exec(&txn)
            .await?;
        let deployment_ids: BTreeSet<Uuid> = ready.iter().map(|task| task.deployment_id).collect();
        let owners: BTreeMap<Uuid, (Uuid, String)> = deployments::Entity::find()
            .filter(deployments::Column::Id.is_in(deployment_ids))
            .all(&txn)
            .await?
            .into_iter()
            .map(|deployment| (deployment.id, (deployment.tenant_id, deployment.app)))
            .collect();
        let mut dispatches = Vec::with_capacity(ready.len());
        for task in &ready {
            let Some((tenant, app)) = owners.get(&task.deployment_id) else {
                continue;
            };
            dispatches.push(TaskDispatch {
                tenant: TenantId(*tenant),
                app: parse("app name", app)?,
                deployment: DeploymentId(task.deployment_id),
                task: parse("task id", &task.task_id)?,
                attempt: attempt_of(task),
                written_at: None,
            });
        }
        self.enqueue_all(&txn, now, &dispatches).await?;
        txn.commit().await?;
        if !ready.is_empty() {
            self.outbox_signal.notify_one();
        }
        Ok(ready.len())
    }
}

/// The deployment of a closing task, as closing it needs it.
struct Owner {
    deployment: DeploymentId,
    tenant: TenantId,
    app: AppName,
    app_id: Uuid,
}

/// For a deploy, the first phase of `strategy` (a deployment's stored strategy,
/// none for the default): the claim notes it, so that the worker need not. None for
/// other kinds.
fn first_phase(strategy: Expr) -> Expr {
    let first = |strategy: Strategy| Expr::val(strategy.phases().first().map(|p| p.to_string()));
    let mut phases =
        CaseStatement::new().case(strategy.clone().is_null(), first(Strategy::default()));
    for known in Strategy::ALL {
        phases = phases.case(strategy.clone().eq(known.as_str()), first(*known));
    }
    Expr::case(
        Expr::col((tasks::Entity, tasks::Column::Kind)).eq(TaskKind::Deploy.as_str()),
        phases.finally(Expr::val(None::<String>)),
    )
    .finally(Expr::val(None::<String>))
    .into()
}

/// The claims of `claims`, in one statement: each task is ready at its attempt,
/// under an older fence, no other task of its component runs, and no deploy of its
/// component submitted before waits. It returns what the worker needs (see
/// [`claimed_task`]), then the task's deployment and id. The claims share their
/// worker and lease (those of the first); `claims` is not empty.
fn claim_update(claims: &[(&Claim, Fence)], backend: DbBackend) -> UpdateStatement {
    let key = Expr::col((tasks::Entity, tasks::Column::LockKey));
    let seq = Expr::col((tasks::Entity, tasks::Column::Seq));
    let now = clock(backend);
    let (first, _) = claims[0];
    let mut each = Condition::any();
    for (claim, fence) in claims {
        each = each.add(
            Condition::all()
                .add(task_key(claim.deployment, &claim.task))
                .add(tasks::Column::Attempt.eq(claim.attempt as i32))
                .add(
                    Condition::any()
                        .add(tasks::Column::Fence.is_null())
                        .add(tasks::Column::Fence.lt(fence.0)),
                )
                .add(
                    Condition::any()
                        .add(tasks::Column::LockKey.is_null())
                        .add(tasks::Column::LockKey.eq(claim.lock_key.as_str())),
                ),
        );
    }
    let fence = match claims {
        [(_, fence)] => Expr::val(fence.0),
        _ => {
            let mut fences = CaseStatement::new();
            for (claim, fence) in claims {
                fences = fences.case(task_key(claim.deployment, &claim.task), fence.0);
            }
            fences.into()
        }
    };
    Query::update()
        .table(tasks::Entity)
        .value(tasks::Column::State, TaskState::Running.as_str())
        // A running task counts against its tenant, however it was dispatched.
        .value(tasks::Column::HandedOut, true)
        .value(tasks::Column::Fence, fence)
        .value(tasks::Column::Worker, first.worker.as_str())
        .value(
            tasks::Column::LeaseUntil,
            now.clone().add(millis(first.lease)),
        )
        .value(tasks::Column::StartedAt, now.clone())
        .value(tasks::Column::RetryAt, None::<i64>)
        .value(
            tasks::Column::Phase,
            first_phase(of_deployment(deployments::Column::Strategy)),
        )
        .cond_where(
            Condition::all()
                .add(each)
                .add(tasks::Column::State.eq(TaskState::Ready.as_str()))
                .add(Expr::not_exists(lock_holders_query(
                    of_lock(key.clone()),
                    now,
                )))
                .add(
                    Condition::any()
                        .add(tasks::Column::Kind.is_not_in(ORDERED_KINDS))
                        .add(Expr::not_exists(older_work_query(of_lock(key), seq))),
                ),
        )
        .returning(Query::returning().exprs([
            Expr::col(tasks::Column::Kind),
            Expr::col(tasks::Column::Component),
            Expr::col(tasks::Column::Spec),
            Expr::col(tasks::Column::Artifact),
            of_deployment(deployments::Column::TenantId),
            of_deployment(deployments::Column::App),
            of_deployment(deployments::Column::Strategy),
            of_deployment(deployments::Column::State),
            Expr::col(tasks::Column::Phase),
            Expr::col(tasks::Column::DeploymentId),
            Expr::col(tasks::Column::TaskId),
        ]))
        .to_owned()
}

/// The task a claim took, from the row [`claim_update`] returned.
fn claimed_task(claim: &Claim, fence: Fence, row: &QueryResult) -> Result<ClaimedTask, StoreError> {
    let kind: String = row.try_get_by_index(0)?;
    let component: String = row.try_get_by_index(1)?;
    let spec: String = row.try_get_by_index(2)?;
    let tenant: Uuid = row.try_get_by_index(4)?;
    let app: String = row.try_get_by_index(5)?;
    let strategy: Option<String> = row.try_get_by_index(6)?;
    Ok(ClaimedTask {
        tenant: TenantId(tenant),
        app: parse("app name", &app)?,
        deployment: claim.deployment,
        task: claim.task.clone(),
        kind: parse("task kind", &kind)?,
        component: parse("component name", &component)?,
        spec: from_json("task spec", &spec)?,
        artifact: row.try_get_by_index(3)?,
        attempt: claim.attempt,
        fence,
        strategy: strategy_of(strategy.as_deref())?,
        phase: row.try_get_by_index(8)?,
    })
}

/// A claim whose dispatch names another tenant than its task's.
fn other_tenants(claim: &Claim, tenant: TenantId) -> StoreError {
    StoreError::Database(format!(
        "the dispatch of {} in deployment {} names tenant {}, but the deployment is tenant {tenant}'s",
        claim.task, claim.deployment, claim.tenant
    ))
}

/// Takes the next fence of the lock `key` (the first is 1); on PostgreSQL the key's
/// row stays locked until `conn`'s transaction ends.
async fn take_fence(conn: &impl ConnectionTrait, key: &str) -> Result<Fence, StoreError> {
    take_fences(conn, [key])
        .await?
        .remove(key)
        .ok_or_else(|| StoreError::Database("taking a fence returned no row".into()))
}

/// Takes the next fence of each of `keys` (distinct) in one statement, locking
/// their rows in the order of the keys (PostgreSQL) until `conn`'s transaction
/// ends.
async fn take_fences<'a>(
    conn: &impl ConnectionTrait,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, Fence>, StoreError> {
    let keys: BTreeSet<&str> = keys.into_iter().collect();
    let mut insert = Query::insert()
        .into_table(fences::Entity)
        .columns([fences::Column::LockKey, fences::Column::Fence])
        .to_owned();
    for key in &keys {
        insert.values_panic([(*key).into(), 1i64.into()]);
    }
    insert
        .on_conflict(
            OnConflict::column(fences::Column::LockKey)
                .value(
                    fences::Column::Fence,
                    Expr::col((fences::Entity, fences::Column::Fence)).add(1),
                )
                .to_owned(),
        )
        .returning(Query::returning().columns([fences::Column::LockKey, fences::Column::Fence]));
    let mut fences = BTreeMap::new();
    for row in conn.query_all(&insert).await? {
        fences.insert(
            row.try_get::<String>("", "lock_key")?,
            Fence(row.try_get::<i64>("", "fence")?),
        );
    }
    Ok(fences)
}

/// Marks `running` the deployments still `pending` of the tasks claimed (`claimed`,
/// rows of [`claim_update`]). A deployment whose row another transaction holds is
/// skipped (PostgreSQL): that is another claim of it, which marks it, or a cancel.
/// Returns how long each deployment marked had waited since its submission.
async fn start_deployments(
    txn: &DatabaseTransaction,
    claimed: &[&QueryResult],
    backend: DbBackend,
) -> Result<Vec<Duration>, StoreError> {
    let mut pending = BTreeSet::new();
    for row in claimed {
        let state: String = row.try_get_by_index(7)?;
        if state == DeploymentState::Pending.as_str() {
            pending.insert(row.try_get_by_index::<Uuid>(9)?);
        }
    }
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let free = Query::select()
        .column(deployments::Column::Id)
        .from(deployments::Entity)
        .and_where(deployments::Column::Id.is_in(pending))
        .and_where(deployments::Column::State.eq(DeploymentState::Pending.as_str()))
        .order_by(deployments::Column::Id, Order::Asc)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let mut update = deployments::Entity::update_many()
        .col_expr(
            deployments::Column::State,
            Expr::value(DeploymentState::Running.as_str()),
        )
        .col_expr(deployments::Column::StartedAt, clock(backend))
        .filter(in_once(Expr::col(deployments::Column::Id), free, backend))
        .into_query();
    update.returning(Query::returning().expr(clock(backend).sub(Expr::col((
        deployments::Entity,
        deployments::Column::CreatedAt,
    )))));
    let mut waited = Vec::new();
    for row in txn.query_all(&update).await? {
        let ms: i64 = row.try_get_by_index(0)?;
        waited.push(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    }
    Ok(waited)
}

/// Makes due at once the dispatches of the tasks handed back to wait for the
/// component of `lock_key`, whose running task just ended.
async fn wake_waiters(txn: &DatabaseTransaction, lock_key: &str) -> Result<(), StoreError> {
    let waiting = Query::select()
        .columns([tasks::Column::DeploymentId, tasks::Column::TaskId])
        .from(tasks::Entity)
        .and_where(tasks::Column::LockKey.eq(lock_key))
        .and_where(tasks::Column::State.eq(TaskState::Ready.as_str()))
        .to_owned();
    outbox::Entity::update_many()
        .col_expr(outbox::Column::NotBefore, Expr::value(None::<i64>))
        .filter(outbox::Column::NotBefore.is_not_null())
        .filter(
            Expr::tuple([
                Expr::col(outbox::Column::DeploymentId),
                Expr::col(outbox::Column::TaskId),
            ])
            .in_subquery(waiting),
        )
        .exec(txn)
        .await?;
    fences::Entity::update_many()
        .col_expr(fences::Column::Waiters, Expr::value(false))
        .filter(fences::Column::LockKey.eq(lock_key))
        .exec(txn)
        .await?;
    Ok(())
}

/// A column of the fence row of the task's component.
fn of_fence(column: fences::Column) -> Expr {
    Expr::SubQuery(
        None,
        Box::new(
            Query::select()
                .column((fences::Entity, column))
                .from(fences::Entity)
                .and_where(
                    Expr::col((fences::Entity, fences::Column::LockKey))
                        .equals((tasks::Entity, tasks::Column::LockKey)),
                )
                .to_owned()
                .into(),
        ),
    )
}

/// The task's fence is its component's newest: nobody took the component's lock
/// since (tasks written before tasks knew their lock key are exempt).
pub(super) fn fence_is_current() -> Condition {
    let newest = Query::select()
        .column((fences::Entity, fences::Column::Fence))
        .from(fences::Entity)
        .and_where(
            Expr::col((fences::Entity, fences::Column::LockKey))
                .equals((tasks::Entity, tasks::Column::LockKey)),
        )
        .to_owned();
    Condition::any()
        .add(tasks::Column::LockKey.is_null())
        .add(tasks::Column::Fence.in_subquery(newest))
}

/// The task kinds that change what runs, and so apply in submission order.
pub(super) const ORDERED_KINDS: [&str; 2] = [TaskKind::Deploy.as_str(), TaskKind::Delete.as_str()];

/// The states of a task not yet ended.
pub(super) const OPEN_STATES: [&str; 3] = [
    TaskState::Blocked.as_str(),
    TaskState::Ready.as_str(),
    TaskState::Running.as_str(),
];

/// The most leases one statement extends (four parameters each; SQLite takes at
/// most 32,766).
const LEASES_PER_STATEMENT: usize = 1_000;

/// The alias of the other task in the claim's subqueries.
const OTHER: &str = "other";

pub(super) fn other(column: tasks::Column) -> Expr {
    Expr::col((Alias::new(OTHER), column))
}

/// The other task's lock key is `lock_key`.
fn of_lock(lock_key: Expr) -> Expr {
    other(tasks::Column::LockKey).eq(lock_key)
}

/// The other task's lock key is one of `lock_keys`.
pub(super) fn of_locks<'a>(lock_keys: impl IntoIterator<Item = &'a str>) -> Expr {
    other(tasks::Column::LockKey).is_in(lock_keys)
}

/// The deploys and deletes of the locks `of`, in deployments submitted before
/// `seq`, that have not ended, oldest first: a deploy or delete waits for them
/// (deploys of one component apply in submission order). Rows are `(deployment,
/// task, lock key)`.
pub(super) fn older_work_query(of: Expr, seq: Expr) -> SelectStatement {
    Query::select()
        .expr(other(tasks::Column::DeploymentId))
        .expr(other(tasks::Column::TaskId))
        .expr(other(tasks::Column::LockKey))
        .from_as(tasks::Entity, Alias::new(OTHER))
        .and_where(of)
        .and_where(other(tasks::Column::State).is_in(OPEN_STATES))
        .and_where(other(tasks::Column::Kind).is_in(ORDERED_KINDS))
        .and_where(other(tasks::Column::Seq).lt(seq))
        .order_by_expr(other(tasks::Column::Seq), Order::Asc)
        .to_owned()
}

/// The tasks of the locks `of` running under a lease live at `now`. Rows are
/// `(deployment, task, lock key)`.
pub(super) fn lock_holders_query(of: Expr, now: Expr) -> SelectStatement {
    Query::select()
        .expr(other(tasks::Column::DeploymentId))
        .expr(other(tasks::Column::TaskId))
        .expr(other(tasks::Column::LockKey))
        .from_as(tasks::Entity, Alias::new(OTHER))
        .and_where(of)
        .and_where(other(tasks::Column::State).eq(TaskState::Running.as_str()))
        .and_where(other(tasks::Column::LeaseUntil).gt(now))
        .to_owned()
}

/// The first `(deployment, task)` row `query` returns, by lock key.
pub(super) async fn first_task_by_lock(
    conn: &impl ConnectionTrait,
    query: &SelectStatement,
) -> Result<BTreeMap<String, (DeploymentId, TaskId)>, StoreError> {
    let mut first = BTreeMap::new();
    for row in conn.query_all(query).await? {
        let deployment: Uuid = row.try_get_by_index(0)?;
        let task: String = row.try_get_by_index(1)?;
        let lock_key: String = row.try_get_by_index(2)?;
        if let std::collections::btree_map::Entry::Vacant(entry) = first.entry(lock_key) {
            entry.insert((DeploymentId(deployment), parse("task id", &task)?));
        }
    }
    Ok(first)
}

/// The first `(deployment, task)` row `query` returns.
async fn first_task(
    conn: &impl ConnectionTrait,
    query: &SelectStatement,
) -> Result<Option<(DeploymentId, TaskId)>, StoreError> {
    let Some(row) = conn.query_one(&query.clone().limit(1).to_owned()).await? else {
        return Ok(None);
    };
    let deployment: Uuid = row.try_get_by_index(0)?;
    let task: String = row.try_get_by_index(1)?;
    Ok(Some((DeploymentId(deployment), parse("task id", &task)?)))
}

/// For a deploy or delete: the oldest deploy or delete of its component, in a
/// deployment of the app submitted before its own, that has not ended. `None` when
/// it may run.
async fn older_work(
    conn: &impl ConnectionTrait,
    task: &tasks::Model,
) -> Result<Option<(DeploymentId, TaskId)>, StoreError> {
    let Some(lock_key) = &task.lock_key else {
        return Ok(None);
    };
    if !ORDERED_KINDS.contains(&task.kind.as_str()) {
        return Ok(None);
    }
    first_task(
        conn,
        &older_work_query(of_lock(Expr::val(lock_key.as_str())), Expr::val(task.seq)),
    )
    .await
}

/// The tasks of `deployment` that need `task`.
pub(super) async fn dependents(
    conn: &impl ConnectionTrait,
    deployment: DeploymentId,
    task: &TaskId,
) -> Result<Vec<TaskId>, StoreError> {
    task_needs::Entity::find()
        .filter(task_needs::Column::DeploymentId.eq(deployment.0))
        .filter(task_needs::Column::NeedId.eq(task.as_str()))
        .all(conn)
        .await?
        .into_iter()
        .map(|edge| parse("task id", &edge.task_id))
        .collect()
}
