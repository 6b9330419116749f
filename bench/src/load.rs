//! The load: diamond deployments submitted through the API, a burst at once from
//! many clients or one at a time, timed by the database's clock (what drover
//! recorded: each deployment's `created_at` and `finished_at`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde::Serialize;

use crate::site::{Kind, Site};
use crate::stats::Summary;

/// The diamond: 5 components, 9 tasks in 5 levels (4 builds; then deploys
/// 1 → 2 → 1 → 1).
pub(crate) const DIAMOND: &str = "config-version: 0.1
components:
  base:
    type: continuous
    build: {image: registry.example/base:1}
    run: {command: base}
  left:
    type: continuous
    build: {image: registry.example/left:1}
    run: {command: left}
    wait-for: [base]
  right:
    type: continuous
    build: {image: registry.example/right:1}
    run: {command: right}
    wait-for: [base]
  join:
    type: continuous
    build: {image: registry.example/join:1}
    run: {command: join}
    wait-for: [left, right]
  tail:
    type: one-off
    build: {reuse-from: base}
    run: {command: tail}
    wait-for: [join]
";

/// Tasks in one diamond deployment.
pub(crate) const DIAMOND_TASKS: usize = 9;
/// Levels of the diamond's DAG.
pub(crate) const DIAMOND_LEVELS: usize = 5;

/// How a burst went.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Burst {
    pub(crate) deployments: usize,
    pub(crate) failed: usize,
    /// From the first submission to the last end, by the database's clock.
    pub(crate) seconds: f64,
    pub(crate) deployments_per_second: f64,
    pub(crate) tasks_per_second: f64,
    /// Submission to end, per deployment.
    pub(crate) end_to_end: Summary,
    /// From the last of a task's needs ending to the task starting.
    pub(crate) dispatch: Summary,
    /// PostgreSQL transactions committed per task (the fleet only), the benchmark's
    /// own reads taken out.
    pub(crate) transactions_per_task: Option<f64>,
    /// PostgreSQL statements per task, likewise, when the server preloads
    /// `pg_stat_statements`.
    pub(crate) statements_per_task: Option<f64>,
}

/// Submits the diamond as app `{prefix}-{n}` and returns its deployment id.
async fn submit(client: &reqwest::Client, site: &Site, app: &str) -> Result<String> {
    let answer = client
        .post(format!("{}/v1/apps/{app}/deployments", site.api))
        .bearer_auth(&site.token)
        .header("content-type", "application/yaml")
        .body(DIAMOND)
        .send()
        .await
        .context("the API did not answer")?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.context("the API answered no JSON")?;
    if status != reqwest::StatusCode::ACCEPTED {
        bail!("the API answered {status}: {body}");
    }
    Ok(body["id"]
        .as_str()
        .context("no deployment id in the answer")?
        .to_owned())
}

async fn query_i64(db: &DatabaseConnection, sql: &str) -> Result<Vec<Vec<Option<i64>>>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql.to_owned()))
        .await?;
    rows.iter()
        .map(|row| {
            (0..row.column_names().len())
                .map(|n| row.try_get_by_index::<Option<i64>>(n).map_err(Into::into))
                .collect()
        })
        .collect()
}

/// Submits `n` diamonds (apps `{prefix}-…`) from `clients` clients at once.
async fn submit_all(site: &Site, prefix: &str, n: usize, clients: usize) -> Result<()> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let submitters = (0..clients).map(|_| {
        let (client, next) = (client.clone(), next.clone());
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                submit(&client, site, &format!("{prefix}-{i}")).await?;
            }
        }
    });
    for result in futures::future::join_all(submitters).await {
        result?;
    }
    Ok(())
}

/// Durable deployments accepted per second: `n` diamonds from `clients` clients,
/// each answered 202 once written.
pub(crate) async fn accept(site: &Site, prefix: &str, n: usize, clients: usize) -> Result<f64> {
    let started = Instant::now();
    submit_all(site, prefix, n, clients).await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// `n` diamonds submitted at once by `clients` clients, apps `{prefix}-…`, waited
/// for until every one ended.
pub(crate) async fn burst(site: &Site, prefix: &str, n: usize, clients: usize) -> Result<Burst> {
    let db = site.store().await?;
    let commits_before = commits(site, &db).await?;
    let statements_before = statements(site, &db).await?;
    submit_all(site, prefix, n, clients).await?;
    let ended = format!(
        "SELECT COUNT(*) FROM deployments WHERE app LIKE '{prefix}-%' AND finished_at IS NOT NULL"
    );
    let started = Instant::now();
    let mut polls = 0u64;
    loop {
        polls += 1;
        let count = query_i64(&db, &ended).await?[0][0].unwrap_or(0);
        if count as usize >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {count} of {n} deployments ended within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = query_i64(
        &db,
        &format!(
            "SELECT created_at, finished_at, CAST(CASE WHEN state = 'succeeded' THEN 0 ELSE 1 END AS BIGINT) \
             FROM deployments WHERE app LIKE '{prefix}-%'"
        ),
    )
    .await?;
    let first = rows.iter().filter_map(|row| row[0]).min().unwrap_or(0);
    let last = rows.iter().filter_map(|row| row[1]).max().unwrap_or(0);
    let failed = rows.iter().filter(|row| row[2] == Some(1)).count();
    let end_to_end: Vec<Duration> = rows
        .iter()
        .filter_map(|row| {
            Some(Duration::from_millis(
                u64::try_from(row[1]? - row[0]?).ok()?,
            ))
        })
        .collect();
    let seconds = ((last - first).max(1) as f64) / 1000.0;
    // The statistics collector reports a backend's counts within a second.
    if site.kind == Kind::Fleet {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let tasks = (n * DIAMOND_TASKS) as f64;
    // This run's own reads: one per poll, one for the rows, four for the counters.
    let own = polls + 5;
    let per_task = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(before), Some(after)) => {
            Some(after.saturating_sub(before).saturating_sub(own) as f64 / tasks)
        }
        _ => None,
    };
    let transactions_per_task = per_task(commits_before, commits(site, &db).await?);
    let statements_per_task = per_task(statements_before, statements(site, &db).await?);
    let dispatch = dispatch(&db, prefix).await?;
    let _ = db.close().await;
    Ok(Burst {
        deployments: n,
        failed,
        seconds,
        deployments_per_second: n as f64 / seconds,
        tasks_per_second: (n * DIAMOND_TASKS) as f64 / seconds,
        end_to_end: Summary::of(&end_to_end),
        dispatch,
        transactions_per_task,
        statements_per_task,
    })
}

/// Dispatch latency of the deployments of apps `{prefix}-…`: for every task with
/// needs, from the end of the last of them to its own start (the database's clock).
pub(crate) async fn dispatch(db: &DatabaseConnection, prefix: &str) -> Result<Summary> {
    let rows = query_i64(
        db,
        &format!(
            "SELECT t.started_at - MAX(n.finished_at) FROM tasks t \
             JOIN task_needs e ON e.deployment_id = t.deployment_id AND e.task_id = t.task_id \
             JOIN tasks n ON n.deployment_id = e.deployment_id AND n.task_id = e.need_id \
             JOIN deployments d ON d.id = t.deployment_id \
             WHERE d.app LIKE '{prefix}-%' AND t.started_at IS NOT NULL \
             GROUP BY t.deployment_id, t.task_id, t.started_at"
        ),
    )
    .await?;
    let waits: Vec<Duration> = rows
        .iter()
        .filter_map(|row| row[0])
        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        .collect();
    Ok(Summary::of(&waits))
}

/// `pg_stat_statements`' count of statements run in drover's database; `None`
/// unless the server preloads it (`shared_preload_libraries`).
async fn statements(site: &Site, db: &DatabaseConnection) -> Result<Option<u64>> {
    if site.kind != Kind::Fleet
        || db
            .execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .is_err()
    {
        return Ok(None);
    }
    let counted = query_i64(
        db,
        "SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT) FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await;
    Ok(counted
        .ok()
        .and_then(|rows| rows.first().and_then(|row| row[0]))
        .and_then(|n| u64::try_from(n).ok()))
}

/// PostgreSQL's count of committed transactions in drover's database.
async fn commits(site: &Site, db: &DatabaseConnection) -> Result<Option<u64>> {
    if site.kind != Kind::Fleet {
        return Ok(None);
    }
    let rows = query_i64(
        db,
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .await?;
    Ok(rows
        .first()
        .and_then(|row| row[0])
        .and_then(|n| u64::try_from(n).ok()))
}

/// `n` diamonds one after the other (apps `{prefix}-…`): each one's submission to
/// end, and the dispatch latency, by the database's clock.
pub(crate) async fn serial(site: &Site, prefix: &str, n: usize) -> Result<(Summary, Summary)> {
    let db = site.store().await?;
    let client = reqwest::Client::new();
    let mut taken = Vec::with_capacity(n);
    for i in 0..n {
        let id = submit(&client, site, &format!("{prefix}-{i}")).await?;
        // Each deployment has an app of its own.
        let sql = format!(
            "SELECT finished_at - created_at FROM deployments WHERE app = '{prefix}-{i}' AND finished_at IS NOT NULL"
        );
        let started = Instant::now();
        loop {
            if let Some(ms) = query_i64(&db, &sql).await?.first().and_then(|row| row[0]) {
                taken.push(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("deployment {id} did not end within a minute");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let dispatch = dispatch(&db, prefix).await?;
    let _ = db.close().await;
    Ok((Summary::of(&taken), dispatch))
}
