//! What steps print: lines appended under the task's fence, read in order.

use super::*;

#[async_trait]
impl TaskLogStore for SeaOrmStore {
    async fn append_task_log(
        &self,
        task: &LeasedTask,
        first: u64,
        lines: &[String],
    ) -> Result<bool, StoreError> {
        if lines.is_empty() {
            return Ok(true);
        }
        let txn = self.db.begin().await?;
        // The fenced no-op update checks the attempt still runs, and holds its row
        // until the lines are in: a claim by another worker waits for them.
        let current = tasks::Entity::update_many()
            .col_expr(tasks::Column::Phase, Expr::col(tasks::Column::Phase))
            .filter(task_key(task.deployment, &task.task))
            .filter(tasks::Column::State.eq(TaskState::Running.as_str()))
            .filter(tasks::Column::Attempt.eq(task.attempt as i32))
            .filter(tasks::Column::Fence.eq(task.fence.0))
            .filter(fence_is_current())
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if !current {
            return Ok(false);
        }
        let rows = lines.iter().enumerate().map(|(i, line)| {
            task_logs::ActiveModel::from(task_logs::Model {
                deployment_id: task.deployment.0,
                task_id: task.task.to_string(),
                attempt: task.attempt as i32,
                seq: i64::try_from(first + i as u64).unwrap_or(i64::MAX),
                line: line.clone(),
            })
        });
        task_logs::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([
                task_logs::Column::DeploymentId,
                task_logs::Column::TaskId,
                task_logs::Column::Attempt,
                task_logs::Column::Seq,
            ])
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    async fn task_log(
        &self,
        tenant: TenantId,
        deployment: DeploymentId,
        task: &TaskId,
        after: Option<(u32, u64)>,
        limit: u64,
    ) -> Result<Option<Vec<LogLine>>, StoreError> {
        use task_logs::Column;
        let owned = deployments::Entity::find_by_id(deployment.0)
            .filter(deployments::Column::TenantId.eq(tenant.0))
            .count(&self.db)
            .await?
            == 1;
        if !owned {
            return Ok(None);
        }
        let mut query = task_logs::Entity::find()
            .filter(Column::DeploymentId.eq(deployment.0))
            .filter(Column::TaskId.eq(task.as_str()));
        if let Some((attempt, seq)) = after {
            let seq = i64::try_from(seq).unwrap_or(i64::MAX);
            query = query.filter(
                Condition::any()
                    .add(Column::Attempt.gt(attempt as i32))
                    .add(
                        Condition::all()
                            .add(Column::Attempt.eq(attempt as i32))
                            .add(Column::Seq.gt(seq)),
                    ),
            );
        }
        let rows = query
            .order_by_asc(Column::Attempt)
            .order_by_asc(Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(Some(
            rows.into_iter()
                .map(|row| LogLine {
                    attempt: u32::try_from(row.attempt).unwrap_or_default(),
                    seq: u64::try_from(row.seq).unwrap_or_default(),
                    line: row.line,
                })
                .collect(),
        ))
    }
}
