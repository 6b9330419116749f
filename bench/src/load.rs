//! The load: diamond deployments submitted through the API, a burst at once from
//! many clients or one at a time, timed by the database's clock (what drover
//! recorded: each deployment's `created_at` and `finished_at`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;

use crate::floor::ms;
use crate::site::{Kind, Site};
use crate::stats::Summary;

/// The diamond: 5 components, 9 tasks in 5 levels (4 builds; then deploys
/// 1 → 2 → 1 → 1).
const DIAMOND: &str = "config-version: 0.1
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

/// Layers of the layered app, and components per layer.
const LAYERS: usize = 6;
const PER_LAYER: usize = 20;

/// What each deployment of a benchmark app asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Shape {
    /// The diamond, a new app each time.
    Diamond,
    /// One component whose command changes: one deploy task (the app is created,
    /// unmeasured, first).
    OneTask,
    /// 120 components in 6 layers of 20, each waiting for the whole layer before:
    /// 240 tasks in 7 levels, a new app each time.
    Layered,
}

impl Shape {
    pub(crate) fn tasks(self) -> usize {
        match self {
            Shape::Diamond => 9,
            Shape::OneTask => 1,
            Shape::Layered => 2 * LAYERS * PER_LAYER,
        }
    }

    pub(crate) fn levels(self) -> usize {
        match self {
            Shape::Diamond => 5,
            Shape::OneTask => 1,
            Shape::Layered => LAYERS + 1,
        }
    }

    /// Whether each app is created, unmeasured, before its measured deployment.
    fn updates(self) -> bool {
        self == Shape::OneTask
    }

    /// The manifest of an app's deployment number `round` (0 creates the app).
    fn manifest(self, round: usize) -> String {
        match self {
            Shape::Diamond => DIAMOND.to_owned(),
            Shape::OneTask => format!(
                "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    \
                 build: {{image: registry.example/web:1}}\n    run: {{command: web-{round}}}\n"
            ),
            Shape::Layered => {
                let mut manifest = "config-version: 0.1\ncomponents:\n".to_owned();
                for layer in 0..LAYERS {
                    for n in 0..PER_LAYER {
                        manifest.push_str(&format!(
                            "  c{layer}-{n}:\n    type: continuous\n    \
                             build: {{image: registry.example/c{layer}-{n}:1}}\n    \
                             run: {{command: c{layer}-{n}}}\n"
                        ));
                        if layer > 0 {
                            let before: Vec<String> = (0..PER_LAYER)
                                .map(|m| format!("c{}-{m}", layer - 1))
                                .collect();
                            manifest.push_str(&format!("    wait-for: [{}]\n", before.join(", ")));
                        }
                    }
                }
                manifest
            }
        }
    }
}

/// A tenant of the site, as the API knows it.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub(crate) token: String,
}

/// The deployments a figure is about.
#[derive(Debug, Clone)]
enum Selection {
    /// Of the apps `{prefix}-…`, created at or after `since` (the database's clock,
    /// ms; later rounds of updated apps).
    Apps { prefix: String, since: i64 },
    /// These deployments: what a burst submitted. Read by their primary key, so
    /// that a poll costs the same however many rows the tables hold (a history).
    Deployments(Vec<uuid::Uuid>),
}

impl Selection {
    fn apps(prefix: &str) -> Self {
        Selection::Apps {
            prefix: prefix.to_owned(),
            since: 0,
        }
    }

    /// The condition on the `deployments` table named `table` of `db`.
    fn sql_on(&self, table: &str, db: &DatabaseConnection) -> String {
        match self {
            Selection::Apps { prefix, since } => {
                format!("{table}.app LIKE '{prefix}-%' AND {table}.created_at >= {since}")
            }
            Selection::Deployments(ids) if ids.is_empty() => "1 = 0".to_owned(),
            Selection::Deployments(ids) => {
                // A UUID column on PostgreSQL; 16 bytes on SQLite.
                let ids: Vec<String> = match db.get_database_backend() {
                    DbBackend::Sqlite => {
                        ids.iter().map(|id| format!("X'{}'", id.simple())).collect()
                    }
                    _ => ids.iter().map(|id| format!("'{id}'")).collect(),
                };
                format!("{table}.id IN ({})", ids.join(", "))
            }
        }
    }

    fn sql(&self, db: &DatabaseConnection) -> String {
        self.sql_on("deployments", db)
    }
}

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
    /// The raw samples behind `end_to_end` and `dispatch`, for the charts (not in
    /// the JSON: the charts' bins are).
    #[serde(skip)]
    pub(crate) samples: Samples,
}

/// Raw samples of a burst, in milliseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    pub(crate) end_to_end_ms: Vec<f64>,
    pub(crate) dispatch_ms: Vec<f64>,
}

/// Submits `manifest` as app `app` for `tenant`; returns the deployment id.
async fn submit(
    client: &reqwest::Client,
    site: &Site,
    tenant: &Tenant,
    app: &str,
    manifest: &str,
) -> Result<uuid::Uuid> {
    let answer = client
        .post(format!("{}/v1/apps/{app}/deployments", site.api))
        .bearer_auth(&tenant.token)
        .header("content-type", "application/yaml")
        .body(manifest.to_owned())
        .send()
        .await
        .context("the API did not answer")?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.context("the API answered no JSON")?;
    if status != reqwest::StatusCode::ACCEPTED {
        bail!("the API answered {status}: {body}");
    }
    let id = body["id"]
        .as_str()
        .context("no deployment id in the answer")?;
    uuid::Uuid::parse_str(id).with_context(|| format!("the API answered the deployment id `{id}`"))
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

/// Submits round `round` of `n` apps `{prefix}-…` of `shape` from `clients`
/// clients at once; returns the deployments' ids.
async fn submit_all(
    site: &Site,
    tenant: &Tenant,
    load: (&str, Shape, usize),
    n: usize,
    clients: usize,
) -> Result<Vec<uuid::Uuid>> {
    let (prefix, shape, round) = load;
    let client = reqwest::Client::new();
    let manifest = shape.manifest(round);
    let next = Arc::new(AtomicUsize::new(0));
    let submitters = (0..clients).map(|_| {
        let (client, next, manifest) = (client.clone(), next.clone(), &manifest);
        async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(ids);
                }
                ids.push(submit(&client, site, tenant, &format!("{prefix}-{i}"), manifest).await?);
            }
        }
    });
    let mut ids = Vec::with_capacity(n);
    for result in futures::future::join_all(submitters).await {
        ids.extend(result?);
    }
    Ok(ids)
}

/// Waits until `n` deployments of `selection` ended; returns how many polls it took.
async fn wait_ended(db: &DatabaseConnection, selection: &Selection, n: usize) -> Result<u64> {
    let ended = format!(
        "SELECT COUNT(*) FROM deployments WHERE {} AND finished_at IS NOT NULL",
        selection.sql(db)
    );
    let started = Instant::now();
    let mut polls = 0u64;
    loop {
        polls += 1;
        let count = query_i64(db, &ended).await?[0][0].unwrap_or(0);
        if count as usize >= n {
            return Ok(polls);
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("only {count} of {n} deployments ended within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `n` apps `{prefix}-…` of an updated shape, unmeasured, and waits until
/// their deployments ended; returns the selection of what is submitted next.
async fn prepare(
    site: &Site,
    db: &DatabaseConnection,
    load: (&str, Shape),
    n: usize,
    clients: usize,
) -> Result<Selection> {
    let (prefix, shape) = load;
    let mut selection = Selection::apps(prefix);
    if shape.updates() {
        let created = submit_all(site, &site.tenant, (prefix, shape, 0), n, clients).await?;
        let created = Selection::Deployments(created);
        wait_ended(db, &created, n).await?;
        let last = query_i64(
            db,
            &format!(
                "SELECT MAX(finished_at) FROM deployments WHERE {}",
                created.sql(db)
            ),
        )
        .await?;
        // A deployment ends after it was created: the next round is created later.
        selection = Selection::Apps {
            prefix: prefix.to_owned(),
            since: last[0][0].unwrap_or(0),
        };
    }
    Ok(selection)
}

/// Durable deployments accepted per second: `n` diamonds from `clients` clients,
/// each answered 202 once written.
pub(crate) async fn accept(site: &Site, prefix: &str, n: usize, clients: usize) -> Result<f64> {
    let started = Instant::now();
    submit_all(site, &site.tenant, (prefix, Shape::Diamond, 0), n, clients).await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// `n` deployments of `shape` submitted at once by `clients` clients, apps
/// `{prefix}-…`, waited for until every one ended.
pub(crate) async fn burst(
    site: &Site,
    load: (&str, Shape),
    n: usize,
    clients: usize,
) -> Result<Burst> {
    let (prefix, shape) = load;
    let db = site.store().await?;
    prepare(site, &db, load, n, clients).await?;
    let commits_before = commits(site, &db).await?;
    let statements_before = statements(site, &db).await?;
    let submitted = submit_all(site, &site.tenant, (prefix, shape, 1), n, clients).await?;
    let selection = Selection::Deployments(submitted);
    let polls = wait_ended(&db, &selection, n).await?;
    let ended = ended(&db, &selection).await?;
    // The statistics collector reports a backend's counts within a second.
    if site.kind == Kind::Fleet {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let tasks = (n * shape.tasks()) as f64;
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
    let dispatch = dispatch_waits(&db, &selection).await?;
    let _ = db.close().await;
    Ok(Burst {
        deployments: n,
        failed: ended.failed,
        seconds: ended.seconds,
        deployments_per_second: n as f64 / ended.seconds,
        tasks_per_second: tasks / ended.seconds,
        end_to_end: Summary::of(&ended.end_to_end),
        dispatch: Summary::of(&dispatch),
        transactions_per_task,
        statements_per_task,
        samples: Samples {
            end_to_end_ms: ended.end_to_end.iter().copied().map(ms).collect(),
            dispatch_ms: dispatch.iter().copied().map(ms).collect(),
        },
    })
}

/// What the ended deployments of a selection took.
struct Ended {
    failed: usize,
    /// From the first creation to the last end.
    seconds: f64,
    end_to_end: Vec<Duration>,
}

async fn ended(db: &DatabaseConnection, selection: &Selection) -> Result<Ended> {
    let rows = query_i64(
        db,
        &format!(
            "SELECT created_at, finished_at, CAST(CASE WHEN state = 'succeeded' THEN 0 ELSE 1 END AS BIGINT) \
             FROM deployments WHERE {} AND finished_at IS NOT NULL",
            selection.sql(db)
        ),
    )
    .await?;
    let first = rows.iter().filter_map(|row| row[0]).min().unwrap_or(0);
    let last = rows.iter().filter_map(|row| row[1]).max().unwrap_or(0);
    Ok(Ended {
        failed: rows.iter().filter(|row| row[2] == Some(1)).count(),
        seconds: ((last - first).max(1) as f64) / 1000.0,
        end_to_end: rows
            .iter()
            .filter_map(|row| {
                Some(Duration::from_millis(
                    u64::try_from(row[1]? - row[0]?).ok()?,
                ))
            })
            .collect(),
    })
}

/// Dispatch latency of the selected deployments: for every task with needs, from
/// the end of the last of them to its own start (the database's clock).
async fn dispatch_waits(db: &DatabaseConnection, selection: &Selection) -> Result<Vec<Duration>> {
    let rows = query_i64(
        db,
        &format!(
            "SELECT t.started_at - MAX(n.finished_at) FROM tasks t \
             JOIN task_needs e ON e.deployment_id = t.deployment_id AND e.task_id = t.task_id \
             JOIN tasks n ON n.deployment_id = e.deployment_id AND n.task_id = e.need_id \
             JOIN deployments d ON d.id = t.deployment_id \
             WHERE {} AND t.started_at IS NOT NULL \
             GROUP BY t.deployment_id, t.task_id, t.started_at",
            selection.sql_on("d", db)
        ),
    )
    .await?;
    let waits: Vec<Duration> = rows
        .iter()
        .filter_map(|row| row[0])
        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        .collect();
    Ok(waits)
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

/// `n` deployments of `shape` one after the other (apps `{prefix}-…`, or one app
/// updated `n` times): each one's submission to end, and the dispatch latency, by
/// the database's clock.
pub(crate) async fn serial(
    site: &Site,
    load: (&str, Shape),
    n: usize,
) -> Result<(Summary, Summary)> {
    let db = site.store().await?;
    let selection = prepare(site, &db, load, 1, 1).await?;
    let taken = one_at_a_time(site, &site.tenant, &db, load, n, || false).await?;
    let dispatch = dispatch_waits(&db, &selection).await?;
    let _ = db.close().await;
    Ok((Summary::of(&taken), Summary::of(&dispatch)))
}

/// Up to `n` deployments of `tenant`, one after the other, until `stop()`: what
/// each took, submission to end. An updated shape updates app `{prefix}-0`.
async fn one_at_a_time(
    site: &Site,
    tenant: &Tenant,
    db: &DatabaseConnection,
    load: (&str, Shape),
    n: usize,
    stop: impl Fn() -> bool,
) -> Result<Vec<Duration>> {
    let (prefix, shape) = load;
    let client = reqwest::Client::new();
    let mut taken = Vec::with_capacity(n);
    for i in 0..n {
        if stop() {
            break;
        }
        let (app, round) = if shape.updates() {
            (format!("{prefix}-0"), i + 1)
        } else {
            (format!("{prefix}-{i}"), 0)
        };
        let id = submit(&client, site, tenant, &app, &shape.manifest(round)).await?;
        // The newest deployment of its app.
        let sql = format!(
            "SELECT finished_at - created_at FROM deployments WHERE app = '{app}' \
             AND finished_at IS NOT NULL AND created_at = (SELECT MAX(created_at) FROM deployments WHERE app = '{app}')"
        );
        let started = Instant::now();
        loop {
            if let Some(ms) = query_i64(db, &sql).await?.first().and_then(|row| row[0]) {
                taken.push(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("deployment {id} did not end within two minutes");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(taken)
}

/// The noisy neighbour: one tenant submits `flood` diamonds at once; 0.3 s later
/// another tenant runs diamonds one at a time until the flood has ended.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Neighbours {
    pub(crate) flood: usize,
    /// The flood's deployments per second, from its first creation to its last end.
    pub(crate) flood_deployments_per_second: f64,
    /// Every deployment (both tenants') per second over the flood's span.
    pub(crate) total_deployments_per_second: f64,
    /// The quiet tenant's deployments during the flood, submission to end.
    pub(crate) quiet: Summary,
}

pub(crate) async fn neighbours(
    site: &Site,
    quiet: &Tenant,
    flood: usize,
    clients: usize,
) -> Result<Neighbours> {
    let db = site.store().await?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let flooding = async {
        let noisy = submit_all(
            site,
            &site.tenant,
            ("noisy", Shape::Diamond, 0),
            flood,
            clients,
        )
        .await?;
        let noisy = Selection::Deployments(noisy);
        wait_ended(&db, &noisy, flood).await?;
        done.store(true, Ordering::Relaxed);
        ended(&db, &noisy).await
    };
    let quietly = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        one_at_a_time(site, quiet, &db, ("quiet", Shape::Diamond), 10_000, || {
            done.load(Ordering::Relaxed)
        })
        .await
    };
    let (noisy, taken) = futures::future::try_join(flooding, quietly).await?;
    let _ = db.close().await;
    Ok(Neighbours {
        flood,
        flood_deployments_per_second: flood as f64 / noisy.seconds,
        total_deployments_per_second: (flood + taken.len()) as f64 / noisy.seconds,
        quiet: Summary::of(&taken),
    })
}
