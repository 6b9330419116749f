//! `drover-bench`: drover's benchmark.
//!
//! It starts drover itself (a fleet on the configured PostgreSQL, RabbitMQ and Redis,
//! in a database and namespace of its own, and the embedded default), with the noop
//! driver, loads it through the HTTP API with diamond deployments, and times them by
//! the database's clock. In the same run it measures the raw floor of the services
//! (a broker round trip, a lock cycle, a commit) and reports every figure also as a
//! ratio of that floor. Output: a Markdown report on stdout, and JSON, Markdown and
//! SVG charts under `--out`.

mod charts;
mod floor;
mod history;
mod load;
mod site;
mod stats;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use serde::Serialize;

use crate::floor::Floor;
use crate::load::{Burst, Neighbours, Shape};
use crate::site::{Kind, Services, Site};
use crate::stats::Summary;

#[derive(Debug, Parser)]
#[command(
    name = "drover-bench",
    about = "Benchmarks drover against the raw floor of its services"
)]
struct Args {
    /// The drover binary (default: `drover` beside this program).
    #[arg(long)]
    drover: Option<PathBuf>,
    /// What to run.
    #[arg(long = "site", value_enum, default_values_t = [Kind::Fleet, Kind::Embedded])]
    sites: Vec<Kind>,
    /// PostgreSQL, as a user that may create databases (the fleet gets one of its own).
    #[arg(
        long,
        env = "DROVER_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    #[arg(
        long,
        env = "DROVER_BENCH_AMQP",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp: String,
    #[arg(
        long,
        env = "DROVER_BENCH_REDIS",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    /// Deployments submitted at once in the burst.
    #[arg(long, default_value_t = 200)]
    burst: usize,
    /// Clients submitting the burst.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Deployments run one at a time.
    #[arg(long, default_value_t = 50)]
    serial: usize,
    /// Worker processes on the fleet; a list runs one fleet each (scaling).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    workers: Vec<usize>,
    /// Deployments submitted to an API with no worker running (the accept rate).
    #[arg(long, default_value_t = 500)]
    accept: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Deployments of the 120-component layered app in its burst (and a third as
    /// many one at a time); 0 skips it.
    #[arg(long, default_value_t = 6)]
    layered: usize,
    /// Diamonds one tenant floods the site with while another deploys one at a time
    /// (the noisy neighbour); 0 skips it.
    #[arg(long, default_value_t = 300)]
    flood: usize,
    /// Every site's `tenant-limit` (default: what the site's workers run at once, at
    /// least drover's default of 20).
    #[arg(long)]
    tenant_limit: Option<usize>,
    /// Samples of each floor.
    #[arg(long, default_value_t = 300)]
    floor_samples: usize,
    /// Finished tasks' worth of history to seed the first fleet's PostgreSQL with
    /// after its other loads, before running its diamond burst again (whole apps
    /// of 36 tasks); 0 skips it.
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// Where `latest.json`, `latest.md` and the charts (`*.svg`) go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

/// One site's figures.
#[derive(Debug, Serialize)]
struct SiteResult {
    site: Kind,
    workers: usize,
    concurrency: usize,
    burst: Burst,
    serial: Summary,
    /// Dispatch latency with one deployment at a time.
    serial_dispatch: Summary,
    /// The other shapes (the first fleet and the embedded default only).
    shapes: Vec<ShapeResult>,
    neighbours: Option<Neighbours>,
    /// The burst again on a PostgreSQL holding a history (the first fleet, with
    /// `--history`).
    history: Option<HistoryResult>,
}

/// The diamond burst on a database holding a seeded history, against the same
/// site's burst before.
#[derive(Debug, Serialize)]
struct HistoryResult {
    seeded: history::Seeded,
    /// The outbox's dead rows when the measured burst started (the statistics
    /// collector's count).
    outbox_dead_rows: i64,
    /// Autovacuum and autoanalyze runs on drover's tables during the burst.
    autovacuum_runs_during_burst: i64,
    /// The same burst just before the seeding (after the site's other loads): what
    /// the site does without the history at that point of the run.
    control: Burst,
    burst: Burst,
    /// Its deployments/s over the site's burst on the database without the history.
    ratio: f64,
    /// The target: no more than 10% slower (`ratio` ≥ 0.9).
    within_10_percent: bool,
}

/// A burst and a serial run of one shape.
#[derive(Debug, Serialize)]
struct ShapeResult {
    shape: Shape,
    burst: Burst,
    serial: Summary,
}

#[derive(Debug, Serialize)]
struct Report {
    floor: Floor,
    /// Durable 202s per second from the fleet's API alone (no scheduler, no worker).
    accepted_per_second: Option<f64>,
    sites: Vec<SiteResult>,
    /// The SVG charts written beside `latest.json`, with the data each plots.
    charts: Vec<charts::Chart>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let drover = match &args.drover {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program has no directory")?
            .join("drover"),
    };
    anyhow::ensure!(
        drover.exists(),
        "no drover binary at {}: build it (cargo build --release) or pass --drover",
        drover.display()
    );
    let services = Services {
        postgres_admin: args.postgres.clone(),
        amqp: args.amqp.clone(),
        redis: args.redis.clone(),
    };
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    eprintln!("measuring the floor ({} samples each)", args.floor_samples);
    let floor = floor::measure(
        args.floor_samples,
        &args.postgres,
        &args.amqp,
        &args.redis,
        &prefix,
    )
    .await?;
    let mut accepted_per_second = None;
    let mut sites = Vec::new();
    // The history is seeded once, on the first fleet.
    let mut seeded = false;
    for kind in &args.sites {
        if *kind == Kind::Fleet && args.accept > 0 {
            eprintln!("{} submissions to an API alone", args.accept);
            let site = Site::start(
                *kind,
                &drover,
                &services,
                0,
                args.concurrency,
                args.tenant_limit,
            )
            .await?;
            let accepted = load::accept(&site, "accept", args.accept, args.clients).await;
            site.stop().await;
            accepted_per_second = Some(accepted?);
        }
        let fleets = if *kind == Kind::Fleet {
            args.workers.clone()
        } else {
            vec![1]
        };
        for (n, workers) in fleets.into_iter().enumerate() {
            let with_history = *kind == Kind::Fleet && n == 0 && args.history > 0 && !seeded;
            seeded |= with_history;
            eprintln!(
                "starting the {kind:?} site ({workers} × {})",
                args.concurrency
            );
            let site = Site::start(
                *kind,
                &drover,
                &services,
                workers,
                args.concurrency,
                args.tenant_limit,
            )
            .await?;
            let detailed = kind == &Kind::Embedded || Some(&workers) == args.workers.first();
            let measured = async {
                // A few first, unmeasured: connections, caches and queues warm up.
                load::burst(&site, ("warmup", Shape::Diamond), 20, args.clients).await?;
                eprintln!("burst of {}", args.burst);
                let burst =
                    load::burst(&site, ("burst", Shape::Diamond), args.burst, args.clients).await?;
                eprintln!("{} one at a time", args.serial);
                let serial = load::serial(&site, ("serial", Shape::Diamond), args.serial).await?;
                let mut shapes = Vec::new();
                let mut neighbours = None;
                if detailed {
                    for (shape, n) in [(Shape::OneTask, args.burst), (Shape::Layered, args.layered)]
                    {
                        if n == 0 {
                            continue;
                        }
                        let name = format!("{shape:?}").to_lowercase();
                        eprintln!(
                            "{shape:?}: burst of {n}, then {} one at a time",
                            n.div_ceil(3)
                        );
                        let burst =
                            load::burst(&site, (&format!("{name}-burst"), shape), n, args.clients)
                                .await?;
                        let (serial, _) =
                            load::serial(&site, (&format!("{name}-serial"), shape), n.div_ceil(3))
                                .await?;
                        shapes.push(ShapeResult {
                            shape,
                            burst,
                            serial,
                        });
                    }
                    if args.flood > 0 {
                        eprintln!("noisy neighbour: a flood of {}", args.flood);
                        let quiet = site.create_tenant("quiet")?;
                        neighbours =
                            Some(load::neighbours(&site, &quiet, args.flood, args.clients).await?);
                    }
                }
                let history = if with_history {
                    Some(
                        history_burst(&site, &burst, args.history, args.burst, args.clients)
                            .await?,
                    )
                } else {
                    None
                };
                anyhow::Ok((burst, serial, shapes, neighbours, history))
            }
            .await;
            site.stop().await;
            let (burst, (serial, serial_dispatch), shapes, neighbours, history) = measured?;
            sites.push(SiteResult {
                site: *kind,
                workers,
                concurrency: args.concurrency,
                burst,
                serial,
                serial_dispatch,
                shapes,
                neighbours,
                history,
            });
        }
    }
    if args.history > 0 && !seeded {
        eprintln!("--history needs a fleet site: skipped");
    }
    let mut report = Report {
        floor,
        accepted_per_second,
        sites,
        charts: Vec::new(),
    };
    report.charts = draw_charts(&report, &args)?;
    let markdown = markdown(&report, &args);
    print!("{markdown}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("failed to create {}", args.out.display()))?;
    let write = |name: &str, content: &str| {
        let path = args.out.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("failed to write {}", path.display()))
    };
    write("latest.json", &serde_json::to_string_pretty(&report)?)?;
    write("latest.md", &markdown)?;
    for chart in &report.charts {
        write(&chart.file, &chart.svg)?;
    }
    eprintln!("written to {}", args.out.display());
    Ok(())
}

/// Runs the diamond burst once more (the control), seeds the site's PostgreSQL
/// with `tasks` finished tasks' worth of history and runs the burst again (after a
/// warm-up like the first's), against `empty`, the site's first burst.
async fn history_burst(
    site: &Site,
    empty: &Burst,
    tasks: u64,
    n: usize,
    clients: usize,
) -> Result<HistoryResult> {
    eprintln!("history: the burst of {n} again, before seeding");
    let db = site.store().await?;
    let measured = async {
        let control = load::burst(site, ("control-burst", Shape::Diamond), n, clients).await?;
        eprintln!("history: seeding {tasks} finished tasks");
        let seeded = history::seed(&db, tasks).await?;
        eprintln!(
            "history: {} tasks seeded in {:.1} s (maintenance {:.1} s); burst of {n} again",
            seeded.tasks, seeded.seconds, seeded.maintenance_seconds
        );
        load::burst(site, ("history-warmup", Shape::Diamond), 20, clients).await?;
        let (outbox_dead_rows, runs_before) = history::vacuum_state(&db).await?;
        let burst = load::burst(site, ("history-burst", Shape::Diamond), n, clients).await?;
        let (_, runs_after) = history::vacuum_state(&db).await?;
        let ratio = burst.deployments_per_second / empty.deployments_per_second;
        anyhow::Ok(HistoryResult {
            seeded,
            outbox_dead_rows,
            autovacuum_runs_during_burst: runs_after - runs_before,
            control,
            burst,
            ratio,
            within_10_percent: ratio >= 0.9,
        })
    }
    .await;
    let _ = db.close().await;
    measured
}

/// The charts of the run: tasks/s against workers (the fleets' diamond bursts, the
/// embedded default's as a reference), and the first fleet's burst latencies (with
/// the history's burst beside them, if it ran).
fn draw_charts(report: &Report, args: &Args) -> Result<Vec<charts::Chart>> {
    let fleets: Vec<&SiteResult> = report
        .sites
        .iter()
        .filter(|site| site.site == Kind::Fleet)
        .collect();
    let Some(first) = fleets.first() else {
        return Ok(Vec::new());
    };
    let points: Vec<(usize, f64)> = fleets
        .iter()
        .map(|site| (site.workers, site.burst.tasks_per_second))
        .collect();
    let embedded = report
        .sites
        .iter()
        .find(|site| site.site == Kind::Embedded)
        .map(|site| site.burst.tasks_per_second);
    let mut drawn = vec![charts::throughput(
        "throughput.svg",
        &points,
        embedded,
        args.concurrency,
    )?];
    let fleet = format!("fleet {} × {}", first.workers, first.concurrency);
    let with_history = first.history.as_ref().map(|history| {
        (
            format!("with {} finished tasks in PostgreSQL", history.seeded.tasks),
            &history.burst.samples,
        )
    });
    let burst_label = if with_history.is_some() {
        "empty database"
    } else {
        "burst"
    };
    for (file, what, counted, pick) in [
        (
            "burst-end-to-end.svg",
            "end-to-end latency per deployment",
            "deployments",
            (|samples: &load::Samples| samples.end_to_end_ms.as_slice())
                as fn(&load::Samples) -> &[f64],
        ),
        (
            "burst-dispatch.svg",
            "dispatch latency (last need ended → started)",
            "tasks",
            |samples: &load::Samples| samples.dispatch_ms.as_slice(),
        ),
    ] {
        let mut sets = vec![(burst_label, pick(&first.burst.samples))];
        if let Some((label, samples)) = &with_history {
            sets.push((label.as_str(), pick(samples)));
        }
        let title = format!(
            "{fleet}, burst of {} diamonds: {what}",
            first.burst.deployments
        );
        drawn.push(charts::latency(file, &title, counted, &sets)?);
    }
    Ok(drawn)
}

fn per_task(figure: Option<f64>) -> String {
    figure.map_or("–".to_owned(), |n| format!("{n:.1}"))
}

/// The report as Markdown. Ratios: a latency against the floor chain once per DAG
/// level (the least a serial deployment can take), a throughput against one chain
/// at a time (what one worker slot could do with no overhead at all).
fn markdown(report: &Report, args: &Args) -> String {
    let floor = &report.floor;
    let (diamond_tasks, diamond_levels) = (Shape::Diamond.tasks(), Shape::Diamond.levels());
    let mut out = String::new();
    let _ = writeln!(out, "## Floor (the services alone, this run)\n");
    let _ = writeln!(out, "| operation | p50 ms | p99 ms |\n|---|---|---|");
    for (name, summary) in [
        (
            "RabbitMQ persistent publish + confirm + deliver + ack",
            &floor.amqp_round_trip,
        ),
        (
            "Redis lock cycle (SET NX PX + compare-and-delete)",
            &floor.redis_lock_cycle,
        ),
        ("PostgreSQL commit of one insert", &floor.postgres_commit),
        (
            "PostgreSQL commit of 100 inserts, per row",
            &floor.postgres_batched_commit_per_row,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {:.3} | {:.3} |",
            summary.p50_ms, summary.p99_ms
        );
    }
    let chain = floor.chain_ms;
    let _ = writeln!(
        out,
        "\nPer-task chain (round trip + lock cycle + 2 commits, p50s): **{chain:.2} ms**, \
         i.e. {:.0} tasks/s one at a time; a serial diamond ({diamond_levels} levels) at \
         least {:.1} ms.\n",
        1000.0 / chain,
        Shape::Diamond.levels() as f64 * chain
    );
    let limit = match args.tenant_limit {
        Some(limit) => format!("each site's `tenant-limit` is {limit}"),
        None => "each site's `tenant-limit` is what its workers run at once, at least 20, so \
                 that the one tenant loading it is not held back by its limit"
            .to_owned(),
    };
    let _ = writeln!(
        out,
        "## drover (noop driver; diamond: {diamond_tasks} tasks in {diamond_levels} levels; \
         burst {} from {} clients; serial {}; {limit})\n",
        args.burst, args.clients, args.serial
    );
    let _ = writeln!(
        out,
        "| site | workers × concurrency | deployments/s | tasks/s | × floor | burst p50 / p99 ms | serial p50 / p99 ms | serial × floor | PG transactions/task | PG statements/task | failed |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for site in &report.sites {
        let burst = &site.burst;
        let _ = writeln!(
            out,
            "| {:?} | {} × {} | {:.1} | {:.0} | {:.2} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} | {} | {} | {} |",
            site.site,
            site.workers,
            site.concurrency,
            burst.deployments_per_second,
            burst.tasks_per_second,
            burst.tasks_per_second * chain / 1000.0,
            burst.end_to_end.p50_ms,
            burst.end_to_end.p99_ms,
            site.serial.p50_ms,
            site.serial.p99_ms,
            site.serial.p50_ms / (Shape::Diamond.levels() as f64 * chain),
            per_task(burst.transactions_per_task),
            per_task(burst.statements_per_task),
            burst.failed,
        );
    }
    let _ = writeln!(
        out,
        "\nDispatch latency (a task's last need ended → the task started, ms):\n\n| site | workers × concurrency | serial p50 / p99 | burst p50 / p99 |\n|---|---|---|---|"
    );
    for site in &report.sites {
        let _ = writeln!(
            out,
            "| {:?} | {} × {} | {:.0} / {:.0} | {:.0} / {:.0} |",
            site.site,
            site.workers,
            site.concurrency,
            site.serial_dispatch.p50_ms,
            site.serial_dispatch.p99_ms,
            site.burst.dispatch.p50_ms,
            site.burst.dispatch.p99_ms,
        );
    }
    let _ = writeln!(
        out,
        "\nOther shapes (a burst of `n` from {} clients, then a third as many one at a time; \
         one-task: an app's update that deploys one component; layered: 120 components in \
         6 layers of 20, 240 tasks in 7 levels):\n\n| site | workers × concurrency | shape | n | deployments/s | tasks/s | × floor | burst p50 / p99 ms | serial p50 / p99 ms | serial × floor | PG statements/task |\n|---|---|---|---|---|---|---|---|---|---|---|",
        args.clients
    );
    for site in &report.sites {
        for shape in &site.shapes {
            let burst = &shape.burst;
            let _ = writeln!(
                out,
                "| {:?} | {} × {} | {:?} | {} | {:.1} | {:.0} | {:.2} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} | {} |",
                site.site,
                site.workers,
                site.concurrency,
                shape.shape,
                burst.deployments,
                burst.deployments_per_second,
                burst.tasks_per_second,
                burst.tasks_per_second * chain / 1000.0,
                burst.end_to_end.p50_ms,
                burst.end_to_end.p99_ms,
                shape.serial.p50_ms,
                shape.serial.p99_ms,
                shape.serial.p50_ms / (shape.shape.levels() as f64 * chain),
                per_task(burst.statements_per_task),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nNoisy neighbour (one tenant submits a flood of diamonds at once; 0.3 s later another \
         deploys diamonds one at a time until the flood has ended):\n\n| site | workers × concurrency | flood | flood deployments/s | all deployments/s | × the burst alone | quiet tenant p50 / p99 ms | × its serial p50 |\n|---|---|---|---|---|---|---|---|"
    );
    for site in &report.sites {
        let Some(neighbours) = &site.neighbours else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {:?} | {} × {} | {} | {:.1} | {:.1} | {:.2} | {:.0} / {:.0} | {:.1} |",
            site.site,
            site.workers,
            site.concurrency,
            neighbours.flood,
            neighbours.flood_deployments_per_second,
            neighbours.total_deployments_per_second,
            neighbours.total_deployments_per_second / site.burst.deployments_per_second,
            neighbours.quiet.p50_ms,
            neighbours.quiet.p99_ms,
            neighbours.quiet.p50_ms / site.serial.p50_ms,
        );
    }
    if let Some(accepted) = report.accepted_per_second {
        let _ = writeln!(
            out,
            "\nAPI alone (no scheduler or worker; {} clients): **{accepted:.0} diamond deployments accepted per second** (durable 202s).",
            args.clients
        );
    }
    let _ = writeln!(
        out,
        "\n`× floor`: tasks/s over one chain at a time ({:.0}/s); `serial × floor`: the \
         serial p50 over {diamond_levels} chains. Times are the database's (each \
         deployment's `created_at` to `finished_at`, in milliseconds). PostgreSQL \
         statements are counted by `pg_stat_statements` when the server preloads it \
         (`–` otherwise).",
        1000.0 / chain
    );
    for site in &report.sites {
        if let Some(history) = &site.history {
            history_markdown(&mut out, site, history);
        }
    }
    if !report.charts.is_empty() {
        let _ = writeln!(out, "\n## Charts\n");
        for chart in &report.charts {
            let _ = writeln!(out, "![{}]({})\n", chart.title, chart.file);
        }
    }
    out
}

/// The history section: what was seeded, and the burst with and without it.
fn history_markdown(out: &mut String, site: &SiteResult, history: &HistoryResult) {
    let seeded = &history.seeded;
    let _ = writeln!(
        out,
        "\n## History ({:?} {} × {})\n\n\
         Seeded after the site's other loads, straight into PostgreSQL: {} finished tasks \
         ({} need edges) in {} deployments of {} apps over {} tenants, {} releases, and {} \
         outbox rows inserted and deleted; {:.1} s, then {} {:.1} s. \
         Database {:.0} → {:.0} MiB. Server `autovacuum`: {}; the outbox's dead rows at the \
         burst's start: {}; autovacuum/autoanalyze runs during it: {}. The first and the \
         last burst each follow a warm-up of 20.\n",
        site.site,
        site.workers,
        site.concurrency,
        seeded.tasks,
        seeded.task_needs,
        seeded.deployments,
        seeded.apps,
        seeded.tenants,
        seeded.releases,
        seeded.outbox_churn,
        seeded.seconds,
        if seeded.vacuumed {
            "`VACUUM ANALYZE` (the server runs no autovacuum, which on a real site removes \
             the churn's dead rows long before it has this history)"
        } else {
            "`ANALYZE` (the churn's dead rows left to autovacuum)"
        },
        seeded.maintenance_seconds,
        seeded.database_mib_before,
        seeded.database_mib_after,
        seeded.autovacuum,
        history.outbox_dead_rows,
        history.autovacuum_runs_during_burst,
    );
    let _ = writeln!(
        out,
        "| diamond burst | deployments/s | tasks/s | end-to-end p50 / p99 ms | dispatch p50 / p99 ms | PG statements/task | failed |\n|---|---|---|---|---|---|---|"
    );
    for (name, burst) in [
        ("the site's first (empty database)", &site.burst),
        ("again before seeding (control)", &history.control),
        ("with the history", &history.burst),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {:.1} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {} | {} |",
            burst.deployments_per_second,
            burst.tasks_per_second,
            burst.end_to_end.p50_ms,
            burst.end_to_end.p99_ms,
            burst.dispatch.p50_ms,
            burst.dispatch.p99_ms,
            per_task(burst.statements_per_task),
            burst.failed,
        );
    }
    let _ = writeln!(
        out,
        "\nWith the history: **{:.2}×** the deployments/s of the empty database's burst \
         (target: no more than 10% slower: **{}**); {:.2}× the control's.",
        history.ratio,
        if history.within_10_percent {
            "met"
        } else {
            "not met"
        },
        history.burst.deployments_per_second / history.control.deployments_per_second,
    );
}
