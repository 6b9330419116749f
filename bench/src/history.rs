//! A site's history, written straight into a fleet's PostgreSQL: finished
//! deployments of many apps, their tasks and need edges, their releases, what
//! each app runs and its components' fences, and the outbox churn their dispatches
//! left (rows inserted and deleted, dead until a vacuum). Every row is as drover
//! itself writes it for the same work on the noop driver (the schema of
//! `migrations/src`, the JSON of the store's own columns, the noop driver's
//! artifacts and versions, fences and submission numbers counted as claims and
//! submissions count them; only the worker's name and the failed build's error
//! are made up), made with `INSERT … SELECT … generate_series`. Seeded tenants
//! get their 20 slots, all free.
//!
//! Each app is a diamond (the benchmark's shape) deployed 10 times: created (9
//! tasks), then 9 updates of its `base` image (a build and 2 deploys each), the 5th
//! of which fails (its build fails, its 2 deploys are skipped, no release): 36
//! tasks, 9 releases. Apps are spread over 10 tenants (the benchmark's own and 9
//! more); deployments are 10 s apart, every app's n-th before any app's n+1-th, the
//! last an hour before the seeding.

use std::time::Instant;

use anyhow::{Context as _, Result};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use serde::Serialize;

/// Deployments of each app, and tasks over them.
const ROUNDS: u64 = 10;
const TASKS_PER_APP: u64 = 36;
/// The round whose build fails.
const FAILED: u64 = 6;
/// Tenants the apps are spread over (the first the benchmark's own).
const TENANTS: u64 = 10;
/// Apps written per transaction.
const CHUNK: u64 = 1000;
/// Slots per seeded tenant (`worker.tenant-limit`'s default), all free.
const SLOTS: u64 = 20;

/// What was seeded, and what it took.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Seeded {
    pub(crate) tasks: u64,
    pub(crate) task_needs: u64,
    pub(crate) deployments: u64,
    pub(crate) apps: u64,
    pub(crate) tenants: u64,
    pub(crate) releases: u64,
    /// Outbox rows inserted and then deleted (one per dispatched task).
    pub(crate) outbox_churn: u64,
    /// Writing the rows.
    pub(crate) seconds: f64,
    /// `ANALYZE` (and `VACUUM`) afterwards.
    pub(crate) maintenance_seconds: f64,
    /// Whether `VACUUM` ran with the `ANALYZE` (the server runs no autovacuum).
    pub(crate) vacuumed: bool,
    /// The server's `autovacuum` setting.
    pub(crate) autovacuum: String,
    /// `pg_database_size` before and after, MiB.
    pub(crate) database_mib_before: f64,
    pub(crate) database_mib_after: f64,
}

/// A UUIDv7-shaped id (as drover's ids are) from a time in ms and a seed, both SQL.
fn v7(ms: &str, seed: &str) -> String {
    format!(
        "CAST(lpad(to_hex({ms}), 12, '0') || '7' || substr(md5({seed}), 1, 3) || '8' \
         || substr(md5({seed}), 4, 15) AS uuid)"
    )
}

/// The SQL of the ids and times of app `a`'s round `s`.
struct Ids {
    /// ms of the newest deployment's creation.
    end: i64,
    apps: u64,
    bench_tenant: String,
}

impl Ids {
    /// When round `s` of app `a` was created.
    fn created(&self, a: &str, s: &str) -> String {
        format!(
            "({end} - CAST({total} - (({s} - 1) * {apps} + {a}) AS BIGINT) * 10000)",
            end = self.end,
            total = self.apps * ROUNDS,
            apps = self.apps,
        )
    }

    fn tenant_created(&self) -> String {
        format!("({} - 86400000)", self.created("0", "1"))
    }

    /// The id of tenant `k` (1 to 9; 0 is the benchmark's).
    fn seeded_tenant(&self, k: &str) -> String {
        v7(&self.tenant_created(), &format!("'tenant:' || {k}"))
    }

    fn tenant(&self, a: &str) -> String {
        format!(
            "(CASE WHEN {a} % {TENANTS} = 0 THEN CAST('{bench}' AS uuid) ELSE {seeded} END)",
            bench = self.bench_tenant,
            seeded = self.seeded_tenant(&format!("({a} % {TENANTS})")),
        )
    }

    fn app_id(&self, a: &str) -> String {
        v7(
            &format!("({} - 1)", self.created(a, "1")),
            &format!("'app:' || {a}"),
        )
    }

    fn deployment(&self, a: &str, s: &str) -> String {
        v7(
            &self.created(a, s),
            &format!("'deployment:' || {a} || ':' || {s}"),
        )
    }
}

fn app_name(a: &str) -> String {
    format!("('hist-' || {a})")
}

/// The image `component` (SQL) is built from in round `s`: `base` changes every
/// round, the others never.
fn image(component: &str, s: &str) -> String {
    format!(
        "('registry.example/' || {component} || ':' || CASE WHEN {component} = 'base' THEN {s} ELSE 1 END)"
    )
}

/// The version of an image (SQL): what `Component::version` computes, the first 6
/// bytes of the SHA-256 of its build input's JSON.
fn version(image: &str) -> String {
    format!(
        "substr(encode(sha256(convert_to('{{\"repository\":null,\"git_ref\":null,\"image\":\"' \
         || {image} || '\",\"build_id\":null}}', 'UTF8')), 'hex'), 1, 12)"
    )
}

/// The noop driver's artifact of `source` (SQL) for app `a` in round `s`.
fn artifact(a: &str, source: &str, s: &str) -> String {
    format!(
        "('noop://' || {app} || '/' || {source} || '@' || {version})",
        app = app_name(a),
        version = version(&image(source, s)),
    )
}

/// A component's spec as the store writes it (SQL of `component` and round `s`).
fn spec(component: &str, s: &str) -> String {
    format!(
        "(CASE {component} \
         WHEN 'tail' THEN '{{\"type\":\"one-off\",\"build\":{{\"reuse-from\":\"base\"}},\"run\":{{\"command\":\"tail\"}},\"wait-for\":[\"join\"]}}' \
         ELSE '{{\"type\":\"continuous\",\"build\":{{\"image\":\"' || {image} || '\"}},\"run\":{{\"command\":\"' || {component} || '\"}}' \
         || CASE {component} WHEN 'left' THEN ',\"wait-for\":[\"base\"]' WHEN 'right' THEN ',\"wait-for\":[\"base\"]' \
            WHEN 'join' THEN ',\"wait-for\":[\"left\",\"right\"]' ELSE '' END || '}}' END)",
        image = image(component, s),
    )
}

const COMPONENTS: [&str; 5] = ["base", "join", "left", "right", "tail"];

/// The manifest of round `s`, as the store writes it.
fn manifest(s: &str) -> String {
    let components: Vec<String> = COMPONENTS
        .iter()
        .map(|name| format!("'\"{name}\":' || {}", spec(&format!("'{name}'"), s)))
        .collect();
    format!(
        "('{{\"config-version\":\"0.1\",\"components\":{{' || {} || '}}}}')",
        components.join(" || ',' || ")
    )
}

/// The plans, `@APP@` for the app's name.
const CREATE_PLAN: &str = r#"{"app":"@APP@","actions":{"base":"create","join":"create","left":"create","right":"create","tail":"create"},"tasks":[{"id":"build:base","kind":"build","component":"base","needs":[]},{"id":"build:join","kind":"build","component":"join","needs":[]},{"id":"build:left","kind":"build","component":"left","needs":[]},{"id":"build:right","kind":"build","component":"right","needs":[]},{"id":"deploy:base","kind":"deploy","component":"base","needs":["build:base"]},{"id":"deploy:left","kind":"deploy","component":"left","needs":["build:left","deploy:base"]},{"id":"deploy:right","kind":"deploy","component":"right","needs":["build:right","deploy:base"]},{"id":"deploy:join","kind":"deploy","component":"join","needs":["build:join","deploy:left","deploy:right"]},{"id":"deploy:tail","kind":"deploy","component":"tail","needs":["build:base","deploy:join"]}],"stages":[["build:base","build:join","build:left","build:right"],["deploy:base"],["deploy:left","deploy:right"],["deploy:join"],["deploy:tail"]]}"#;
const UPDATE_PLAN: &str = r#"{"app":"@APP@","actions":{"base":"replace","join":"unchanged","left":"unchanged","right":"unchanged","tail":"replace"},"tasks":[{"id":"build:base","kind":"build","component":"base","needs":[]},{"id":"deploy:base","kind":"deploy","component":"base","needs":["build:base"]},{"id":"deploy:tail","kind":"deploy","component":"tail","needs":["build:base"]}],"stages":[["build:base"],["deploy:base","deploy:tail"]]}"#;

/// The tasks of a round: id, kind, component, the component whose build it deploys,
/// its stage when the app is created, its stage in an update (-1: not in one).
const TASKS: &str = "(VALUES \
    ('build:base', 'build', 'base', 'base', 0, 0), \
    ('build:join', 'build', 'join', 'join', 0, -1), \
    ('build:left', 'build', 'left', 'left', 0, -1), \
    ('build:right', 'build', 'right', 'right', 0, -1), \
    ('deploy:base', 'deploy', 'base', 'base', 1, 1), \
    ('deploy:left', 'deploy', 'left', 'left', 2, -1), \
    ('deploy:right', 'deploy', 'right', 'right', 2, -1), \
    ('deploy:join', 'deploy', 'join', 'join', 3, -1), \
    ('deploy:tail', 'deploy', 'tail', 'base', 4, 1)) \
    AS t(id, kind, component, source, create_stage, update_stage)";

/// The need edges of a round: need, task, whether an update has it.
const NEEDS: &str = "(VALUES \
    ('build:base', 'deploy:base', true), \
    ('build:left', 'deploy:left', false), ('deploy:base', 'deploy:left', false), \
    ('build:right', 'deploy:right', false), ('deploy:base', 'deploy:right', false), \
    ('build:join', 'deploy:join', false), ('deploy:left', 'deploy:join', false), \
    ('deploy:right', 'deploy:join', false), \
    ('build:base', 'deploy:tail', true), ('deploy:join', 'deploy:tail', false)) \
    AS e(need, task, in_update)";

/// The release a round made (none for the failed one), and the app's active
/// release when it was submitted.
fn release_version(s: &str) -> String {
    format!("(CASE WHEN {s} < {FAILED} THEN {s} WHEN {s} = {FAILED} THEN NULL ELSE {s} - 1 END)")
}

fn base_release(s: &str) -> String {
    format!("(CASE WHEN {s} = 1 THEN NULL WHEN {s} <= {FAILED} THEN {s} - 1 ELSE {s} - 2 END)")
}

/// When a round's deployment ended, after its creation: 5 levels of 10 ms when
/// the app is created, 2 in an update, the failed build's end.
fn duration(s: &str) -> String {
    format!("(CASE WHEN {s} = 1 THEN 46 WHEN {s} = {FAILED} THEN 6 ELSE 16 END)")
}

/// The fence a task took (SQL of `t` and round `s`): each claim of a component's
/// task takes its lock's next one; the failed round's build took one, its skipped
/// deploys none.
fn fence(s: &str) -> String {
    format!(
        "(CASE \
         WHEN t.component IN ('left', 'right', 'join') THEN CASE t.kind WHEN 'build' THEN 1 ELSE 2 END \
         WHEN t.component = 'tail' THEN CASE WHEN {s} = {FAILED} THEN NULL WHEN {s} < {FAILED} THEN {s} ELSE {s} - 1 END \
         WHEN t.kind = 'build' THEN CASE WHEN {s} <= {FAILED} THEN 2 * {s} - 1 ELSE 2 * {s} - 2 END \
         ELSE CASE WHEN {s} = {FAILED} THEN NULL WHEN {s} < {FAILED} THEN 2 * {s} ELSE 2 * {s} - 1 END END)"
    )
}

/// The fence of each lock after the last round.
const FENCES: &str = "(VALUES ('base', 19), ('tail', 9), ('left', 2), ('right', 2), ('join', 2)) \
    AS f(component, fence)";

async fn exec(db: &impl ConnectionTrait, sql: &str) -> Result<u64> {
    let result = db
        .execute_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .with_context(|| {
            let start: String = sql.chars().take(120).collect();
            format!("seeding failed at: {start}…")
        })?;
    Ok(result.rows_affected())
}

async fn one_i64(db: &impl ConnectionTrait, sql: &str) -> Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .with_context(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

async fn one_text(db: &impl ConnectionTrait, sql: &str) -> Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .with_context(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index::<String>(0)?)
}

async fn database_mib(db: &DatabaseConnection) -> Result<f64> {
    let bytes = one_i64(
        db,
        "SELECT CAST(pg_database_size(current_database()) AS BIGINT)",
    )
    .await?;
    Ok(bytes as f64 / (1024.0 * 1024.0))
}

/// Seeds at least `tasks` finished tasks' worth of history (whole apps of 36),
/// then does what autovacuum would have done on a site that grew its history over
/// weeks: `ANALYZE`, and, when the server runs no autovacuum, `VACUUM` too (a real
/// site's autovacuum removes the churn's dead rows long before it has this much
/// history; with autovacuum on, they are left to it).
pub(crate) async fn seed(db: &DatabaseConnection, tasks: u64) -> Result<Seeded> {
    let apps = tasks.div_ceil(TASKS_PER_APP).max(1);
    let database_mib_before = database_mib(db).await?;
    let autovacuum = one_text(db, "SELECT current_setting('autovacuum')").await?;
    let bench_tenant = one_text(
        db,
        "SELECT CAST(id AS TEXT) FROM tenants WHERE name = 'bench'",
    )
    .await?;
    let now = one_i64(
        db,
        "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    )
    .await?;
    let ids = Ids {
        end: now - 3_600_000,
        apps,
        bench_tenant,
    };
    // Outbox rows are written claimed by a relay (until a time no relay's claim
    // reaches), so that the site's own relay does not publish them.
    let claimed = now + 86_400_000;
    let started = Instant::now();
    let mut seeded = Seeded {
        tasks: 0,
        task_needs: 0,
        deployments: 0,
        apps: 0,
        tenants: 0,
        releases: 0,
        outbox_churn: 0,
        seconds: 0.0,
        maintenance_seconds: 0.0,
        vacuumed: false,
        autovacuum,
        database_mib_before,
        database_mib_after: 0.0,
    };

    let txn = db.begin().await?;
    seeded.tenants = exec(
        &txn,
        &format!(
            "INSERT INTO tenants (id, name, created_at) \
             SELECT {id}, 'history-' || k, {created} FROM generate_series(1, {last}) AS k",
            id = ids.seeded_tenant("k"),
            created = ids.tenant_created(),
            last = TENANTS - 1,
        ),
    )
    .await?
        + 1;
    exec(
        &txn,
        &format!(
            "INSERT INTO tenant_slots (tenant_id, slot) \
             SELECT {id}, slot FROM generate_series(1, {last}) AS k, generate_series(0, {slots}) AS slot",
            id = ids.seeded_tenant("k"),
            last = TENANTS - 1,
            slots = SLOTS - 1,
        ),
    )
    .await?;
    txn.commit().await?;

    let mut lo = 0;
    while lo < apps {
        let hi = (lo + CHUNK).min(apps) - 1;
        let rounds = format!("generate_series({lo}, {hi}) AS a, generate_series(1, {ROUNDS}) AS s");
        let txn = db.begin().await?;
        seeded.apps += exec(
            &txn,
            &format!(
                "INSERT INTO apps (id, tenant_id, name, release_seq, created_at, deployment_seq) \
                 SELECT {id}, {tenant}, {name}, {releases}, {created}, {ROUNDS} \
                 FROM generate_series({lo}, {hi}) AS a",
                id = ids.app_id("a"),
                tenant = ids.tenant("a"),
                name = app_name("a"),
                releases = ROUNDS - 1,
                created = ids.created("a", "1"),
            ),
        )
        .await?;
        seeded.deployments += exec(
            &txn,
            &format!(
                "INSERT INTO deployments (id, tenant_id, app_id, app, state, n_open, has_failed, \
                 base_release, release_version, manifest, plan, created_at, started_at, finished_at, strategy) \
                 SELECT {id}, {tenant}, {app_id}, {name}, \
                 CASE WHEN s = {FAILED} THEN 'failed' ELSE 'succeeded' END, 0, s = {FAILED}, \
                 {base_release}, {release}, {manifest}, \
                 replace(CASE WHEN s = 1 THEN '{CREATE_PLAN}' ELSE '{UPDATE_PLAN}' END, '@APP@', {name}), \
                 {created}, {created} + 2, {created} + {duration}, 'rolling' \
                 FROM {rounds}",
                id = ids.deployment("a", "s"),
                tenant = ids.tenant("a"),
                app_id = ids.app_id("a"),
                name = app_name("a"),
                base_release = base_release("s"),
                release = release_version("s"),
                manifest = manifest("s"),
                created = ids.created("a", "s"),
                duration = duration("s"),
            ),
        )
        .await?;
        // A task's stage in its round, whether it ran, and when.
        let stage = "(CASE WHEN s = 1 THEN t.create_stage ELSE t.update_stage END)";
        let skipped = format!("(s = {FAILED} AND t.kind = 'deploy')");
        let ran_ok = format!("(s <> {FAILED})");
        let started_at = format!("({} + 10 * {stage} + 2)", ids.created("a", "s"));
        let finished_at = format!("({} + 10 * {stage} + 6)", ids.created("a", "s"));
        seeded.tasks += exec(
            &txn,
            &format!(
                "INSERT INTO tasks (deployment_id, task_id, kind, component, state, attempt, fence, \
                 n_pending, spec, artifact_from, artifact, worker, lease_until, started_at, finished_at, \
                 log, error, tenant_id, lock_key, retry_at, phase, seq, version) \
                 SELECT {id}, t.id, t.kind, t.component, \
                 CASE WHEN {ran_ok} THEN 'succeeded' WHEN t.kind = 'build' THEN 'failed' ELSE 'skipped' END, \
                 1, {fence}, CASE WHEN {skipped} THEN 1 ELSE 0 END, {spec}, \
                 CASE WHEN t.kind = 'deploy' THEN 'build:' || t.source END, \
                 CASE WHEN {ran_ok} THEN {artifact} END, \
                 CASE WHEN {skipped} THEN NULL ELSE 'worker-history' END, NULL, \
                 CASE WHEN {skipped} THEN NULL ELSE {started_at} END, \
                 CASE WHEN {skipped} THEN {created} + 6 ELSE {finished_at} END, \
                 NULL, CASE WHEN NOT {ran_ok} AND t.kind = 'build' THEN 'the build step exited with status 1' END, \
                 {tenant}, {tenant} || '/' || {name} || '/' || t.component, NULL, \
                 CASE WHEN t.kind = 'deploy' AND {ran_ok} THEN 'rollout' END, s, \
                 CASE WHEN t.kind = 'deploy' THEN {version} END \
                 FROM {rounds}, {TASKS} WHERE s = 1 OR t.update_stage >= 0",
                id = ids.deployment("a", "s"),
                fence = fence("s"),
                spec = spec("t.component", "s"),
                artifact = artifact("a", "t.source", "s"),
                created = ids.created("a", "s"),
                tenant = ids.tenant("a"),
                name = app_name("a"),
                version = version(&image("t.source", "s")),
            ),
        )
        .await?;
        seeded.task_needs += exec(
            &txn,
            &format!(
                "INSERT INTO task_needs (deployment_id, need_id, task_id) \
                 SELECT {id}, e.need, e.task FROM {rounds}, {NEEDS} WHERE s = 1 OR e.in_update",
                id = ids.deployment("a", "s"),
            ),
        )
        .await?;
        // A release holds every component: `base` and `tail` as this round put
        // them, `join`, `left` and `right` as the app's creation did.
        let released: Vec<String> = COMPONENTS
            .iter()
            .map(|name| {
                let source = if *name == "tail" { "base" } else { name };
                let round = if matches!(*name, "base" | "tail") {
                    "s"
                } else {
                    "1"
                };
                format!(
                    "'\"{name}\":{{\"spec\":' || {spec} || ',\"artifact\":\"' || {artifact} \
                     || '\",\"version\":\"' || {version} || '\",\"deployment\":\"' || CAST({deployment} AS TEXT) || '\"}}'",
                    spec = spec(&format!("'{name}'"), "s"),
                    artifact = artifact("a", &format!("'{source}'"), "s"),
                    version = version(&image(&format!("'{source}'"), "s")),
                    deployment = ids.deployment("a", round),
                )
            })
            .collect();
        seeded.releases += exec(
            &txn,
            &format!(
                "INSERT INTO releases (app_id, version, deployment_id, components, created_at) \
                 SELECT {app_id}, {release}, {id}, '{{' || {components} || '}}', {created} + {duration} \
                 FROM {rounds} WHERE s <> {FAILED}",
                app_id = ids.app_id("a"),
                release = release_version("s"),
                id = ids.deployment("a", "s"),
                components = released.join(" || ',' || "),
                created = ids.created("a", "s"),
                duration = duration("s"),
            ),
        )
        .await?;
        // What runs: the last round's `base` and `tail`, the creation's others.
        let last = ROUNDS.to_string();
        exec(
            &txn,
            &format!(
                "INSERT INTO deployed_components (app_id, component, spec, artifact, version, \
                 deployment_id, fence, updated_at) \
                 SELECT {app_id}, f.component, {spec}, {artifact}, {version}, \
                 CASE WHEN f.component IN ('base', 'tail') THEN {last_deployment} ELSE {first_deployment} END, \
                 f.fence, CASE f.component WHEN 'left' THEN {first} + 26 WHEN 'right' THEN {first} + 26 \
                 WHEN 'join' THEN {first} + 36 ELSE {final} + 16 END \
                 FROM generate_series({lo}, {hi}) AS a, {FENCES}",
                app_id = ids.app_id("a"),
                spec = spec("f.component", &last),
                artifact = artifact(
                    "a",
                    "(CASE f.component WHEN 'tail' THEN 'base' ELSE f.component END)",
                    &last
                ),
                version = version(&image(
                    "(CASE f.component WHEN 'tail' THEN 'base' ELSE f.component END)",
                    &last
                )),
                last_deployment = ids.deployment("a", &last),
                first_deployment = ids.deployment("a", "1"),
                first = ids.created("a", "1"),
                final = ids.created("a", &last),
            ),
        )
        .await?;
        exec(
            &txn,
            &format!(
                "INSERT INTO fences (lock_key, fence) \
                 SELECT {tenant} || '/' || {name} || '/' || f.component, f.fence \
                 FROM generate_series({lo}, {hi}) AS a, {FENCES}",
                tenant = ids.tenant("a"),
                name = app_name("a"),
            ),
        )
        .await?;
        txn.commit().await?;

        // The dispatches of the tasks that ran: written, claimed by a relay,
        // deleted once published, each in a transaction of its own.
        let inserted = format!(
            "WITH written AS (INSERT INTO outbox (queue, payload, created_at, claimed_until) \
             SELECT 'drover.tasks', '{{\"tenant\":\"' || CAST({tenant} AS TEXT) || '\",\"app\":\"' || {name} \
             || '\",\"deployment\":\"' || CAST({id} AS TEXT) || '\",\"task\":\"' || t.id || '\",\"attempt\":1}}', \
             {started_at} - 1, {claimed} \
             FROM {rounds}, {TASKS} WHERE (s = 1 OR t.update_stage >= 0) AND NOT {skipped} \
             RETURNING id) \
             SELECT CAST(COALESCE(MIN(id), 0) AS BIGINT), CAST(COALESCE(MAX(id), -1) AS BIGINT) FROM written",
            tenant = ids.tenant("a"),
            name = app_name("a"),
            id = ids.deployment("a", "s"),
        );
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), inserted))
            .await?
            .context("the outbox insert returned no row")?;
        let (first, last) = (
            row.try_get_by_index::<i64>(0)?,
            row.try_get_by_index::<i64>(1)?,
        );
        seeded.outbox_churn += exec(
            db,
            &format!(
                "DELETE FROM outbox WHERE id BETWEEN {first} AND {last} AND claimed_until = {claimed}"
            ),
        )
        .await?;
        eprintln!(
            "  history: {} of {} apps ({} tasks)",
            hi + 1,
            apps,
            seeded.tasks
        );
        lo = hi + 1;
    }
    seeded.seconds = started.elapsed().as_secs_f64();
    let maintaining = Instant::now();
    seeded.vacuumed = seeded.autovacuum == "off";
    exec(
        db,
        if seeded.vacuumed {
            "VACUUM ANALYZE"
        } else {
            "ANALYZE"
        },
    )
    .await?;
    seeded.maintenance_seconds = maintaining.elapsed().as_secs_f64();
    seeded.database_mib_after = database_mib(db).await?;
    Ok(seeded)
}

/// The outbox's dead rows and the autovacuum and autoanalyze runs of drover's
/// tables so far, by the statistics collector.
pub(crate) async fn vacuum_state(db: &DatabaseConnection) -> Result<(i64, i64)> {
    let dead = one_i64(
        db,
        "SELECT CAST(COALESCE(SUM(n_dead_tup), 0) AS BIGINT) FROM pg_stat_user_tables \
         WHERE relname = 'outbox'",
    )
    .await?;
    let runs = one_i64(
        db,
        "SELECT CAST(COALESCE(SUM(autovacuum_count + autoanalyze_count), 0) AS BIGINT) \
         FROM pg_stat_user_tables",
    )
    .await?;
    Ok((dead, runs))
}
