//! Deployments: submission, reading (with why each task waits), cancellation,
//! retry, external updates, adoption, automatic rollbacks and retention.

use super::*;
use crate::store::NewTaskRow;

impl SeaOrmStore {
    /// Creates the deployment's app if needed, numbers the deployment in the app's
    /// submission order and applies the policies the submission sets. Returns the
    /// app, and the strategy the deployment runs with.
    async fn number_deployment(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        new: &NewDeployment,
    ) -> Result<(apps::Model, Strategy), StoreError> {
        let app_name = new.plan.app.as_str();
        // One upsert makes the app on its first deployment, numbers the deployment
        // and notes the policies the request names. Numbering locks the app's row:
        // submissions of one app commit one after the other, in the order of their
        // numbers.
        let named = |column: apps::Column| {
            Func::coalesce([
                Expr::col((Alias::new("excluded"), column)),
                Expr::col((apps::Entity, column)),
            ])
        };
        let app = apps::Entity::insert(apps::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(new.tenant.0),
            name: Set(app_name.to_owned()),
            release_seq: Set(0),
            created_at: Set(now),
            concurrency: Set(new.concurrency.map(|policy| policy.as_str().to_owned())),
            strategy: Set(new.strategy.map(|strategy| strategy.as_str().to_owned())),
            deployment_seq: Set(1),
        })
        .on_conflict(
            OnConflict::columns([apps::Column::TenantId, apps::Column::Name])
                .value(
                    apps::Column::DeploymentSeq,
                    Expr::col((apps::Entity, apps::Column::DeploymentSeq)).add(1),
                )
                .value(apps::Column::Concurrency, named(apps::Column::Concurrency))
                .value(apps::Column::Strategy, named(apps::Column::Strategy))
                .to_owned(),
        )
        .exec_with_returning(txn)
        .await?;
        let strategy = strategy_of(app.strategy.as_deref())?;
        Ok((app, strategy))
    }

    /// Writes a deployment's tasks and their needs, and the dispatches of those
    /// that need nothing.
    async fn insert_tasks(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        new: &NewDeployment,
        app: &apps::Model,
        rows: &[NewTaskRow],
    ) -> Result<(), StoreError> {
        let task_models = rows.iter().map(|row| tasks::ActiveModel {
            deployment_id: Set(new.id.0),
            task_id: Set(row.id.to_string()),
            kind: Set(row.kind.as_str().to_owned()),
            component: Set(row.component.to_string()),
            state: Set(if row.needs.is_empty() {
                TaskState::Ready
            } else {
                TaskState::Blocked
            }
            .as_str()
            .to_owned()),
            attempt: Set(1),
            fence: Set(None),
            n_pending: Set(row.needs.len() as i32),
            spec: Set(to_json(&row.spec)),
            artifact_from: Set(row.artifact_from.as_ref().map(TaskId::to_string)),
            artifact: Set(row.artifact.clone()),
            worker: Set(None),
            lease_until: Set(None),
            started_at: Set(None),
            finished_at: Set(None),
            log: Set(None),
            error: Set(None),
            retry_at: Set(None),
            phase: Set(None),
            seq: Set(app.deployment_seq),
            version: Set(row.version.clone()),
            handed_out: Set(false),
            tenant_id: Set(Some(new.tenant.0)),
            lock_key: Set(Some(component_lock_key(
                new.tenant,
                &new.plan.app,
                &row.component,
            ))),
        });
        tasks::Entity::insert_many(task_models)
            .exec_without_returning(txn)
            .await?;
        let edges: Vec<_> = rows
            .iter()
            .flat_map(|row| {
                row.needs.iter().map(|need| task_needs::ActiveModel {
                    deployment_id: Set(new.id.0),
                    need_id: Set(need.to_string()),
                    task_id: Set(row.id.to_string()),
                })
            })
            .collect();
        if !edges.is_empty() {
            task_needs::Entity::insert_many(edges)
                .exec_without_returning(txn)
                .await?;
        }
        let first: Vec<TaskDispatch> = rows
            .iter()
            .filter(|row| row.needs.is_empty())
            .map(|row| TaskDispatch {
                tenant: new.tenant,
                app: new.plan.app.clone(),
                deployment: new.id,
                task: row.id.clone(),
                attempt: 1,
                written_at: None,
            })
            .collect();
        self.enqueue_all(txn, now, &first).await?;

        Ok(())
    }

    async fn deployment_by_idempotency_key_in(
        &self,
        conn: &impl ConnectionTrait,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<(DeploymentId, String)>, StoreError> {
        let row = deployments::Entity::find()
            .filter(deployments::Column::TenantId.eq(tenant.0))
            .filter(deployments::Column::IdempotencyKey.eq(key))
            .one(conn)
            .await?;
        Ok(row.map(|row| (DeploymentId(row.id), row.request_hash.unwrap_or_default())))
    }

    /// Whether someone asked the deployment to stop.
    pub(super) async fn cancel_requested(
        &self,
        conn: &impl ConnectionTrait,
        deployment: DeploymentId,
    ) -> Result<bool, StoreError> {
        Ok(deployments::Entity::find_by_id(deployment.0)
            .select_only()
            .column(deployments::Column::CancelRequestedAt)
            .into_tuple::<Option<i64>>()
            .one(conn)
            .await?
            .flatten()
            .is_some())
    }

    /// Ends a deployment whose last open task just closed, writing its release
    /// when it succeeded.
    pub(super) async fn finish_deployment(
        &self,
        txn: &DatabaseTransaction,
        now: i64,
        deployment: &deployments::Model,
    ) -> Result<Finished, StoreError> {
        let state = if deployment.cancel_requested_at.is_some() {
            DeploymentState::Cancelled
        } else if deployment.has_failed {
            DeploymentState::Failed
        } else {
            DeploymentState::Succeeded
        };
        let release = match state {
            DeploymentState::Succeeded => Some(
                self.write_release(txn, now, deployment.app_id, Some(deployment.id))
                    .await?,
            ),
            _ => None,
        };
        if state == DeploymentState::Succeeded
            && let Some(replaced) = deployment.replaces
        {
            // The deployment a rollback replaced: it succeeded, or failed (an
            // automatic rollback).
            deployments::Entity::update_many()
                .col_expr(
                    deployments::Column::State,
                    Expr::value(DeploymentState::RolledBack.as_str()),
                )
                .filter(deployments::Column::Id.eq(replaced))
                .filter(deployments::Column::State.is_in([
                    DeploymentState::Succeeded.as_str(),
                    DeploymentState::Failed.as_str(),
                ]))
                .exec(txn)
                .await?;
        }
        deployments::Entity::update_many()
            .col_expr(deployments::Column::State, Expr::value(state.as_str()))
            .col_expr(deployments::Column::FinishedAt, Expr::value(now))
            .col_expr(
                deployments::Column::ReleaseVersion,
                Expr::value(release.map(|version| version as i32)),
            )
            .filter(deployments::Column::Id.eq(deployment.id))
            .exec(txn)
            .await?;
        Ok(Finished { state, release })
    }

    /// Why each task of a deployment that is neither running nor finished waits.
    async fn why_waiting(
        &self,
        tenant: Uuid,
        plan: &Plan,
        tasks: &[tasks::Model],
    ) -> Result<BTreeMap<String, Waiting>, StoreError> {
        let states: BTreeMap<&str, &str> = tasks
            .iter()
            .map(|task| (task.task_id.as_str(), task.state.as_str()))
            .collect();
        let succeeded =
            |id: &TaskId| states.get(id.as_str()) == Some(&TaskState::Succeeded.as_str());
        let mut waiting = BTreeMap::new();
        let mut tenant_running = None;
        let now = self.now(&self.db).await?;
        // What keeps the ready tasks' components, read for all of them at once: the
        // oldest older deploy of each, and the running task of each.
        let ready: Vec<&tasks::Model> = tasks
            .iter()
            .filter(|task| task.state == TaskState::Ready.as_str())
            .filter(|task| task.retry_at.is_none_or(|at| at <= now))
            .collect();
        let ordered: BTreeMap<i64, Vec<&str>> = ready
            .iter()
            .filter(|task| ORDERED_KINDS.contains(&task.kind.as_str()))
            .fold(BTreeMap::new(), |mut by_seq, task| {
                if let Some(key) = &task.lock_key {
                    by_seq.entry(task.seq).or_default().push(key.as_str());
                }
                by_seq
            });
        let mut older = BTreeMap::new();
        for (seq, keys) in ordered {
            let query = older_work_query(of_locks(keys), Expr::val(seq));
            older.insert(seq, first_task_by_lock(&self.db, &query).await?);
        }
        let keys: BTreeSet<&str> = ready
            .iter()
            .filter_map(|task| task.lock_key.as_deref())
            .collect();
        let holders = if keys.is_empty() {
            BTreeMap::new()
        } else {
            let query = lock_holders_query(of_locks(keys), Expr::val(now));
            first_task_by_lock(&self.db, &query).await?
        };
        for task in tasks {
            let key = task.lock_key.as_deref().unwrap_or_default();
            let reason = if task.state == TaskState::Blocked.as_str() {
                let unmet = plan
                    .task(&parse("task id", &task.task_id)?)
                    .map(|planned| {
                        planned
                            .needs
                            .iter()
                            .filter(|need| !succeeded(need))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                Waiting::Needs { tasks: unmet }
            } else if task.state != TaskState::Ready.as_str() {
                continue;
            } else if let Some(until) = task.retry_at.filter(|at| *at > now) {
                Waiting::RetryBackoff {
                    until: timestamp(until),
                }
            } else if let Some((deployment, task)) = ORDERED_KINDS
                .contains(&task.kind.as_str())
                .then(|| older.get(&task.seq)?.get(key))
                .flatten()
            {
                Waiting::Order {
                    deployment: *deployment,
                    task: task.clone(),
                }
            } else if let Some((deployment, task)) = holders.get(key) {
                Waiting::Lock {
                    deployment: *deployment,
                    task: task.clone(),
                }
            } else {
                let (running, weight) = match tenant_running {
                    Some(running) => running,
                    None => {
                        let running = tasks::Entity::find()
                            .filter(tasks::Column::TenantId.eq(tenant))
                            .filter(Expr::cust(HANDED_OUT_LIVE))
                            .count(&self.db)
                            .await?;
                        let weight = tenant_weight(&self.db, tenant).await?.get();
                        *tenant_running.insert((running, weight))
                    }
                };
                Waiting::Queued {
                    tenant_running: running,
                    tenant_weight: weight,
                }
            };
            waiting.insert(task.task_id.clone(), reason);
        }
        Ok(waiting)
    }

    async fn load_deployment(&self, row: deployments::Model) -> Result<Deployment, StoreError> {
        let plan: Plan = from_json("plan", &row.plan)?;
        let task_rows = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(row.id))
            .all(&self.db)
            .await?;
        let mut waiting = self.why_waiting(row.tenant_id, &plan, &task_rows).await?;
        let mut by_id: BTreeMap<String, tasks::Model> = task_rows
            .into_iter()
            .map(|task| (task.task_id.clone(), task))
            .collect();
        // Tasks in plan order, which puts every task after its needs.
        let tasks = plan
            .tasks
            .iter()
            .filter_map(|planned| {
                let task = by_id.remove(planned.id.as_str())?;
                Some(Ok(TaskView {
                    id: planned.id.clone(),
                    kind: planned.kind,
                    component: planned.component.clone(),
                    state: match parse("task state", &task.state) {
                        Ok(state) => state,
                        Err(err) => return Some(Err(err)),
                    },
                    attempts: attempts_made(&task),
                    needs: planned.needs.clone(),
                    started_at: task.started_at.map(timestamp),
                    finished_at: task.finished_at.map(timestamp),
                    artifact: task.artifact,
                    error: task.error,
                    log: task.log,
                    waiting: waiting.remove(planned.id.as_str()),
                    phase: task.phase,
                }))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let state: DeploymentState = parse("deployment state", &row.state)?;
        let partially_applied = state.is_terminal()
            && row.release_version.is_none()
            && tasks.iter().any(|task| {
                task.state == TaskState::Succeeded
                    && matches!(task.kind, TaskKind::Deploy | TaskKind::Delete)
            });
        let rolled_back_by = deployments::Entity::find()
            .filter(deployments::Column::TenantId.eq(row.tenant_id))
            .filter(deployments::Column::Replaces.eq(row.id))
            .order_by_desc(deployments::Column::CreatedAt)
            .one(&self.db)
            .await?
            .map(|rollback| DeploymentId(rollback.id));
        Ok(Deployment {
            id: DeploymentId(row.id),
            tenant: TenantId(row.tenant_id),
            app: parse("app name", &row.app)?,
            state,
            created_at: timestamp(row.created_at),
            started_at: row.started_at.map(timestamp),
            finished_at: row.finished_at.map(timestamp),
            base_release: row.base_release.map(|version| version as u32),
            release: row.release_version.map(|version| version as u32),
            partially_applied,
            strategy: strategy_of(row.strategy.as_deref())?,
            rolled_back_by,
            plan,
            tasks,
        })
    }
}

#[async_trait]
impl DeploymentStore for SeaOrmStore {
    async fn deployments(
        &self,
        tenant: TenantId,
        filter: &DeploymentFilter,
        PageRequest { after, limit }: PageRequest<DeploymentId>,
    ) -> Result<Page<DeploymentSummary>, StoreError> {
        use deployments::Column;
        let mut held = Condition::all().add(Column::TenantId.eq(tenant.0));
        if let Some(app) = &filter.app {
            held = held.add(Column::App.eq(app.as_str()));
        }
        if let Some(state) = filter.state {
            held = held.add(Column::State.eq(state.as_str()));
        }
        if let Some(since) = filter.since {
            held = held.add(Column::CreatedAt.gte(since.timestamp_millis()));
        }
        let total = deployments::Entity::find()
            .filter(held.clone())
            .count(&self.db)
            .await?;
        if let Some(after) = after {
            held = held.add(Column::Id.lt(after.0));
        }
        // Ids are time-ordered (UUIDv7): newest first is by id, on the index
        // `deployments_tenant`. The manifest and plan are not read.
        let rows = deployments::Entity::find()
            .select_only()
            .columns([
                Column::Id,
                Column::App,
                Column::State,
                Column::CreatedAt,
                Column::StartedAt,
                Column::FinishedAt,
                Column::BaseRelease,
                Column::ReleaseVersion,
                Column::Strategy,
            ])
            .filter(held)
            .order_by_desc(Column::Id)
            .limit(limit.saturating_add(1))
            .into_model::<SummaryRow>()
            .all(&self.db)
            .await?;
        let items = rows
            .into_iter()
            .map(SummaryRow::summary)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(items, limit, total, |deployment| {
            deployment.id.to_string()
        }))
    }

    async fn deployment_by_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<(DeploymentId, String)>, StoreError> {
        self.deployment_by_idempotency_key_in(&self.db, tenant, key)
            .await
    }

    async fn create_deployment(&self, new: &NewDeployment) -> Result<Creation, StoreError> {
        let rows = new.task_rows()?;
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        if let Some(idempotency) = &new.idempotency
            && let Some(existing) = self
                .deployment_by_idempotency_key_in(&txn, new.tenant, &idempotency.key)
                .await?
        {
            txn.rollback().await?;
            return Ok(existing_creation(existing, idempotency));
        }

        let (app, strategy) = self.number_deployment(&txn, now, new).await?;

        let state = if rows.is_empty() {
            DeploymentState::Succeeded
        } else {
            DeploymentState::Pending
        };
        // A deployment that changes nothing leaves the active release active, unless
        // what runs moved away from it (a deployment applied only partly): then it
        // records what runs as a new release, so that its release is true.
        let release_version = if rows.is_empty() {
            let active = self.newest_release(&txn, &app).await?;
            let running = self.running_components(&txn, app.id).await?;
            match active {
                Some(active) if active.components == running => Some(active.version as i32),
                None if running.is_empty() => None,
                _ => Some(
                    self.write_release(&txn, now, app.id, Some(new.id.0))
                        .await? as i32,
                ),
            }
        } else {
            None
        };
        let inserted = deployments::Entity::insert(deployments::ActiveModel {
            id: Set(new.id.0),
            tenant_id: Set(new.tenant.0),
            app_id: Set(app.id),
            app: Set(app.name.clone()),
            state: Set(state.as_str().to_owned()),
            n_open: Set(rows.len() as i32),
            has_failed: Set(false),
            base_release: Set(new.current.release.map(|version| version as i32)),
            release_version: Set(release_version),
            manifest: Set(to_json(&new.manifest)),
            plan: Set(to_json(&new.plan)),
            created_at: Set(now),
            started_at: Set(rows.is_empty().then_some(now)),
            finished_at: Set(rows.is_empty().then_some(now)),
            idempotency_key: Set(new.idempotency.as_ref().map(|i| i.key.clone())),
            request_hash: Set(new.idempotency.as_ref().map(|i| i.request_hash.clone())),
            cancel_requested_at: Set(None),
            rollback_to: Set(new.rollback_to.map(|version| version as i32)),
            replaces: Set(new.replaces.map(|id| id.0)),
            auto_rollback: Set(new.auto_rollback.then(|| AUTO_ROLLBACK_ARMED.to_owned())),
            external_update: Set(new.external_update.as_ref().map(to_json)),
            strategy: Set(Some(strategy.as_str().to_owned())),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = inserted {
            // Two requests with one idempotency key raced: the other one won.
            if let (Some(idempotency), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) =
                (&new.idempotency, err.sql_err())
            {
                txn.rollback().await?;
                if let Some(existing) = self
                    .deployment_by_idempotency_key(new.tenant, &idempotency.key)
                    .await?
                {
                    return Ok(existing_creation(existing, idempotency));
                }
            }
            return Err(err.into());
        }

        if !rows.is_empty() {
            self.insert_tasks(&txn, now, new, &app, &rows).await?;
        }
        txn.commit().await?;
        self.outbox_signal.notify_one();
        Ok(Creation::Created)
    }

    async fn deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Deployment>, StoreError> {
        let row = deployments::Entity::find_by_id(id.0)
            .filter(deployments::Column::TenantId.eq(tenant.0))
            .one(&self.db)
            .await?;
        match row {
            Some(row) => Ok(Some(self.load_deployment(row).await?)),
            None => Ok(None),
        }
    }

    async fn concurrency_policy(
        &self,
        tenant: TenantId,
        app: &AppName,
    ) -> Result<ConcurrencyPolicy, StoreError> {
        match self
            .app_by_name(&self.db, tenant, app)
            .await?
            .and_then(|app| app.concurrency)
        {
            Some(policy) => parse("concurrency policy", &policy),
            None => Ok(ConcurrencyPolicy::Queue),
        }
    }

    async fn superseded_by(
        &self,
        tenant: TenantId,
        newer: DeploymentId,
        components: &[ComponentName],
    ) -> Result<Vec<DeploymentId>, StoreError> {
        // The newer deployment's number and app, from one of its tasks.
        let Some(newer_task) = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(newer.0))
            .filter(tasks::Column::TenantId.eq(tenant.0))
            .one(&self.db)
            .await?
        else {
            return Ok(Vec::new());
        };
        let Some(app) = deployments::Entity::find_by_id(newer.0)
            .select_only()
            .column(deployments::Column::App)
            .into_tuple::<String>()
            .one(&self.db)
            .await?
        else {
            return Ok(Vec::new());
        };
        let app: AppName = parse("app name", &app)?;
        let lock_keys = components
            .iter()
            .map(|component| component_lock_key(tenant, &app, component));
        let touching: BTreeSet<Uuid> = tasks::Entity::find()
            .select_only()
            .column(tasks::Column::DeploymentId)
            .filter(tasks::Column::LockKey.is_in(lock_keys))
            .filter(tasks::Column::State.is_in(OPEN_STATES))
            .filter(tasks::Column::Seq.lt(newer_task.seq))
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        Ok(touching.into_iter().map(DeploymentId).collect())
    }

    async fn record_external_update(
        &self,
        tenant: TenantId,
        app: &AppName,
        update: &ExternalUpdate,
        as_release: bool,
    ) -> Result<Option<Recorded>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let Some(app) = self.app_by_name(&txn, tenant, app).await? else {
            return Ok(None);
        };
        let hash = update.artifact_hash();
        let key = (app.id, update.component.to_string(), hash.clone());
        let inserted = external_updates::Entity::insert(external_updates::ActiveModel {
            app_id: Set(app.id),
            component: Set(update.component.to_string()),
            artifact_hash: Set(hash),
            artifact: Set(update.artifact.clone()),
            version: Set(update.version.clone()),
            sha: Set(update.sha.clone()),
            release_version: Set(None),
            created_at: Set(now),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        if !matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
            let earlier = external_updates::Entity::find_by_id(key)
                .one(&txn)
                .await?
                .ok_or_else(|| StoreError::Database("an external update vanished".into()))?;
            txn.rollback().await?;
            return Ok(Some(Recorded {
                release: earlier.release_version.map(|version| version as u32),
                duplicate: true,
            }));
        }
        if !as_release {
            txn.commit().await?;
            return Ok(Some(Recorded {
                release: None,
                duplicate: false,
            }));
        }
        // The announced artifact is what the component runs from now on: the
        // platform announced it, drover deploys nothing.
        let announced = deployed_components::Entity::update_many()
            .col_expr(
                deployed_components::Column::Artifact,
                Expr::value(update.artifact.as_str()),
            )
            .col_expr(
                deployed_components::Column::Version,
                Expr::value(update.released_version()),
            )
            .col_expr(
                deployed_components::Column::DeploymentId,
                Expr::value(None::<Uuid>),
            )
            .col_expr(deployed_components::Column::UpdatedAt, Expr::value(now))
            .filter(deployed_components::Column::AppId.eq(app.id))
            .filter(deployed_components::Column::Component.eq(update.component.as_str()))
            .exec(&txn)
            .await?;
        if announced.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(None);
        }
        let version = self.write_release(&txn, now, app.id, None).await?;
        external_updates::Entity::update_many()
            .col_expr(
                external_updates::Column::ReleaseVersion,
                Expr::value(version as i32),
            )
            .filter(external_updates::Column::AppId.eq(key.0))
            .filter(external_updates::Column::Component.eq(key.1))
            .filter(external_updates::Column::ArtifactHash.eq(key.2))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(Recorded {
            release: Some(version),
            duplicate: false,
        }))
    }

    async fn retry_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Retry>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let Some((deployment, state)) = tenant_deployment(&txn, tenant, id).await? else {
            return Ok(None);
        };
        if state != DeploymentState::Failed {
            return Ok(Some(Retry::NotFailed(state)));
        }
        let active = releases::Entity::find()
            .select_only()
            .column(releases::Column::Version)
            .filter(releases::Column::AppId.eq(deployment.app_id))
            .order_by_desc(releases::Column::Version)
            .into_tuple::<i32>()
            .one(&txn)
            .await?;
        if active.is_some() && active != deployment.base_release {
            return Ok(Some(Retry::Superseded {
                active: active.map_or(0, |version| version as u32),
            }));
        }
        if let Some(by) = overtaken(&txn, id).await? {
            return Ok(Some(Retry::Overtaken { by }));
        }
        // Claiming the deployment's row first: a second retry at once waits, then
        // finds it running.
        let reopened_deployment = deployments::Entity::update_many()
            .col_expr(
                deployments::Column::State,
                Expr::value(DeploymentState::Running.as_str()),
            )
            .col_expr(deployments::Column::HasFailed, Expr::value(false))
            .col_expr(deployments::Column::FinishedAt, Expr::value(None::<i64>))
            .filter(deployments::Column::Id.eq(id.0))
            .filter(deployments::Column::State.eq(DeploymentState::Failed.as_str()))
            .exec(&txn)
            .await?;
        if reopened_deployment.rows_affected != 1 {
            txn.rollback().await?;
            return Box::pin(self.retry_deployment(tenant, id)).await;
        }
        let reopened: Vec<tasks::Model> = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(id.0))
            .filter(
                tasks::Column::State
                    .is_in([TaskState::Failed.as_str(), TaskState::Skipped.as_str()]),
            )
            .all(&txn)
            .await?;
        let reopened_ids: BTreeSet<&str> =
            reopened.iter().map(|task| task.task_id.as_str()).collect();
        // A reopened task waits for its needs that are reopened too; the others
        // succeeded.
        let mut pending: BTreeMap<String, i32> = BTreeMap::new();
        for edge in task_needs::Entity::find()
            .filter(task_needs::Column::DeploymentId.eq(id.0))
            .all(&txn)
            .await?
        {
            if reopened_ids.contains(edge.task_id.as_str())
                && reopened_ids.contains(edge.need_id.as_str())
            {
                *pending.entry(edge.task_id).or_default() += 1;
            }
        }
        let app: AppName = parse("app name", &deployment.app)?;
        let mut tasks = Vec::new();
        for task in &reopened {
            let failed = task.state == TaskState::Failed.as_str();
            let n_pending = pending.get(&task.task_id).copied().unwrap_or(0);
            let state = if n_pending == 0 {
                TaskState::Ready
            } else {
                TaskState::Blocked
            };
            let attempt = if failed {
                task.attempt + 1
            } else {
                task.attempt
            };
            let task_id: TaskId = parse("task id", &task.task_id)?;
            tasks::Entity::update_many()
                .col_expr(tasks::Column::State, Expr::value(state.as_str()))
                .col_expr(tasks::Column::HandedOut, Expr::value(false))
                .col_expr(tasks::Column::Attempt, Expr::value(attempt))
                .col_expr(tasks::Column::NPending, Expr::value(n_pending))
                .col_expr(tasks::Column::Worker, Expr::value(None::<String>))
                .col_expr(tasks::Column::LeaseUntil, Expr::value(None::<i64>))
                .col_expr(tasks::Column::RetryAt, Expr::value(None::<i64>))
                .col_expr(tasks::Column::StartedAt, Expr::value(None::<i64>))
                .col_expr(tasks::Column::FinishedAt, Expr::value(None::<i64>))
                .col_expr(tasks::Column::Error, Expr::value(None::<String>))
                .filter(task_key(id, &task_id))
                .filter(tasks::Column::State.eq(task.state.as_str()))
                .exec(&txn)
                .await?;
            if state == TaskState::Ready {
                let dispatch = TaskDispatch {
                    tenant,
                    app: app.clone(),
                    deployment: id,
                    task: task_id.clone(),
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    written_at: None,
                };
                self.enqueue(&txn, now, &dispatch).await?;
            }
            tasks.push(task_id);
        }
        deployments::Entity::update_many()
            .col_expr(deployments::Column::NOpen, Expr::value(tasks.len() as i32))
            .filter(deployments::Column::Id.eq(id.0))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.outbox_signal.notify_one();
        Ok(Some(Retry::Reopened { tasks }))
    }

    async fn cancel_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Cancellation>, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        let Some((_, state)) = tenant_deployment(&txn, tenant, id).await? else {
            return Ok(None);
        };
        if state.is_terminal() {
            return Ok(Some(Cancellation::AlreadyFinished(state)));
        }
        // Tasks first, then the deployment's row: the order results take, so that a
        // result recorded meanwhile and this cancellation cannot deadlock.
        let cancelled: Vec<TaskId> = tasks::Entity::update_many()
            .col_expr(
                tasks::Column::State,
                Expr::value(TaskState::Cancelled.as_str()),
            )
            .col_expr(tasks::Column::FinishedAt, Expr::value(now))
            .col_expr(tasks::Column::RetryAt, Expr::value(None::<i64>))
            .filter(tasks::Column::DeploymentId.eq(id.0))
            .filter(
                tasks::Column::State
                    .is_in([TaskState::Blocked.as_str(), TaskState::Ready.as_str()]),
            )
            .exec_with_returning(&txn)
            .await?
            .into_iter()
            .map(|task| parse("task id", &task.task_id))
            .collect::<Result<_, _>>()?;
        let Some(deployment) = deployments::Entity::update_many()
            .col_expr(
                deployments::Column::NOpen,
                Expr::col(deployments::Column::NOpen).sub(cancelled.len() as i32),
            )
            .col_expr(
                deployments::Column::CancelRequestedAt,
                Expr::expr(Func::coalesce([
                    Expr::col(deployments::Column::CancelRequestedAt),
                    Expr::value(now),
                ])),
            )
            .filter(deployments::Column::Id.eq(id.0))
            .filter(deployments::Column::State.is_in([
                DeploymentState::Pending.as_str(),
                DeploymentState::Running.as_str(),
            ]))
            .exec_with_returning(&txn)
            .await?
            .pop()
        else {
            // It ended between the two reads.
            txn.rollback().await?;
            return Box::pin(self.cancel_deployment(tenant, id)).await;
        };
        let finished = if deployment.n_open <= 0 {
            Some(self.finish_deployment(&txn, now, &deployment).await?)
        } else {
            None
        };
        let running: Vec<TaskId> = tasks::Entity::find()
            .filter(tasks::Column::DeploymentId.eq(id.0))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .all(&txn)
            .await?
            .into_iter()
            .map(|task| parse("task id", &task.task_id))
            .collect::<Result<_, _>>()?;
        txn.commit().await?;
        Ok(Some(Cancellation::Requested {
            cancelled,
            running,
            finished,
        }))
    }

    async fn adopt(
        &self,
        tenant: TenantId,
        app: &AppName,
        components: BTreeMap<ComponentName, ReleasedComponent>,
    ) -> Result<Adoption, StoreError> {
        let txn = self.db.begin().await?;
        let now = self.now(&txn).await?;
        apps::Entity::insert(apps::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.0),
            name: Set(app.to_string()),
            release_seq: Set(0),
            created_at: Set(now),
            concurrency: Set(None),
            strategy: Set(None),
            deployment_seq: Set(0),
        })
        .on_conflict_do_nothing_on([apps::Column::TenantId, apps::Column::Name])
        .exec_without_returning(&txn)
        .await?;
        // Bumping the sequence locks the app's row: concurrent adoptions and
        // deployments of the app are decided one after the other.
        let row =
            self.app_by_name(&txn, tenant, app)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "app",
                    id: app.to_string(),
                })?;
        let bumped = self.bump_release_seq(&txn, row.id).await?;
        if bumped.release_seq > 1 {
            txn.rollback().await?;
            let first =
                self.release(tenant, app, 1)
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        what: "release",
                        id: format!("{app} 1"),
                    })?;
            return Ok(Adoption {
                release: first,
                existing: true,
            });
        }
        // What the driver reports running is what runs.
        for (name, running) in &components {
            let row = deployed_components::ActiveModel {
                app_id: Set(row.id),
                component: Set(name.to_string()),
                spec: Set(to_json(&running.spec)),
                artifact: Set(running.artifact.clone()),
                version: Set(running.version.clone()),
                deployment_id: Set(None),
                fence: Set(None),
                updated_at: Set(now),
            };
            put_running(&txn, row, None).await?;
        }
        let components = self.running_components(&txn, row.id).await?;
        releases::Entity::insert(releases::ActiveModel {
            app_id: Set(row.id),
            version: Set(1),
            deployment_id: Set(None),
            components: Set(to_json(&components)),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(Adoption {
            release: Release {
                app: app.clone(),
                version: 1,
                deployment: None,
                created_at: timestamp(now),
                components,
            },
            existing: false,
        })
    }

    async fn armed_auto_rollbacks(&self) -> Result<Vec<AutoRollback>, StoreError> {
        deployments::Entity::find()
            .filter(deployments::Column::AutoRollback.eq(AUTO_ROLLBACK_ARMED))
            .filter(deployments::Column::State.eq(DeploymentState::Failed.as_str()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                Ok(AutoRollback {
                    tenant: TenantId(row.tenant_id),
                    app: parse("app name", &row.app)?,
                    deployment: DeploymentId(row.id),
                    to: row.base_release.map(|version| version as u32),
                })
            })
            .collect()
    }

    async fn disarm_auto_rollback(&self, deployment: DeploymentId) -> Result<(), StoreError> {
        deployments::Entity::update_many()
            .col_expr(
                deployments::Column::AutoRollback,
                Expr::value(AUTO_ROLLBACK_DONE),
            )
            .filter(deployments::Column::Id.eq(deployment.0))
            .filter(deployments::Column::AutoRollback.eq(AUTO_ROLLBACK_ARMED))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn prune_finished(&self, older_than: Duration, limit: u64) -> Result<u64, StoreError> {
        let ended: Vec<&str> = DeploymentState::ALL
            .iter()
            .filter(|state| state.is_terminal())
            .map(|state| state.as_str())
            .collect();
        let not_armed = Condition::any()
            .add(deployments::Column::State.ne(DeploymentState::Failed.as_str()))
            .add(deployments::Column::AutoRollback.is_null())
            .add(deployments::Column::AutoRollback.ne(AUTO_ROLLBACK_ARMED));
        let old = Query::select()
            .column(deployments::Column::Id)
            .from(deployments::Entity)
            .and_where(Expr::col(deployments::Column::State).is_in(ended))
            .and_where(
                Expr::col(deployments::Column::FinishedAt)
                    .lt(clock(self.backend()).sub(millis(older_than))),
            )
            .cond_where(not_armed)
            .limit(limit)
            .to_owned();
        // Their tasks and task needs go with them (`ON DELETE CASCADE`).
        let deleted = deployments::Entity::delete_many()
            .filter(deployments::Column::Id.in_subquery(old))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }
}

/// A deployment submitted after `id` whose deploys or deletes (not skipped or
/// cancelled) touch a component one of `id`'s failed or skipped deploys or deletes
/// would deploy again: retrying `id` would undo it.
async fn overtaken(
    conn: &impl ConnectionTrait,
    id: DeploymentId,
) -> Result<Option<DeploymentId>, StoreError> {
    let again: Vec<(Option<String>, i64)> = tasks::Entity::find()
        .select_only()
        .column(tasks::Column::LockKey)
        .column(tasks::Column::Seq)
        .filter(tasks::Column::DeploymentId.eq(id.0))
        .filter(tasks::Column::Kind.is_in(ORDERED_KINDS))
        .filter(
            tasks::Column::State.is_in([TaskState::Failed.as_str(), TaskState::Skipped.as_str()]),
        )
        .into_tuple()
        .all(conn)
        .await?;
    let Some(seq) = again.first().map(|(_, seq)| *seq) else {
        return Ok(None);
    };
    let lock_keys: Vec<String> = again.into_iter().filter_map(|(key, _)| key).collect();
    let by = tasks::Entity::find()
        .select_only()
        .column(tasks::Column::DeploymentId)
        .filter(tasks::Column::LockKey.is_in(lock_keys))
        .filter(tasks::Column::Kind.is_in(ORDERED_KINDS))
        .filter(tasks::Column::Seq.gt(seq))
        .filter(
            tasks::Column::State
                .is_not_in([TaskState::Skipped.as_str(), TaskState::Cancelled.as_str()]),
        )
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(by.map(DeploymentId))
}

/// A deployment's row, which must exist.
pub(super) async fn deployment_row(
    conn: &impl ConnectionTrait,
    id: DeploymentId,
) -> Result<deployments::Model, StoreError> {
    deployments::Entity::find_by_id(id.0)
        .one(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "deployment",
            id: id.to_string(),
        })
}

/// The tenant's deployment row with its state; `None` for another tenant's.
async fn tenant_deployment(
    conn: &impl ConnectionTrait,
    tenant: TenantId,
    id: DeploymentId,
) -> Result<Option<(deployments::Model, DeploymentState)>, StoreError> {
    let Some(row) = deployments::Entity::find_by_id(id.0)
        .filter(deployments::Column::TenantId.eq(tenant.0))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    let state = parse("deployment state", &row.state)?;
    Ok(Some((row, state)))
}

/// `deployments.auto_rollback`: roll back if it fails.
const AUTO_ROLLBACK_ARMED: &str = "armed";

/// `deployments.auto_rollback`: its rollback was submitted (or there was none to do).
const AUTO_ROLLBACK_DONE: &str = "done";

fn existing_creation((id, request_hash): (DeploymentId, String), asked: &Idempotency) -> Creation {
    Creation::Existing {
        id,
        same_request: request_hash == asked.request_hash,
    }
}

/// Attempts made so far: the current attempt counts once a worker claimed it (a
/// claim sets the worker; handing the task out again clears it).
fn attempts_made(row: &tasks::Model) -> u32 {
    let attempt = attempt_of(row);
    if row.worker.is_some() {
        attempt
    } else {
        attempt.saturating_sub(1)
    }
}

/// The columns of a deployment a list shows.
#[derive(Debug, FromQueryResult)]
struct SummaryRow {
    id: Uuid,
    app: String,
    state: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    base_release: Option<i32>,
    release_version: Option<i32>,
    strategy: Option<String>,
}

impl SummaryRow {
    fn summary(self) -> Result<DeploymentSummary, StoreError> {
        Ok(DeploymentSummary {
            id: DeploymentId(self.id),
            app: parse("app name", &self.app)?,
            state: parse("deployment state", &self.state)?,
            created_at: timestamp(self.created_at),
            started_at: self.started_at.map(timestamp),
            finished_at: self.finished_at.map(timestamp),
            base_release: self.base_release.map(|version| version as u32),
            release: self.release_version.map(|version| version as u32),
            strategy: strategy_of(self.strategy.as_deref())?,
        })
    }
}
