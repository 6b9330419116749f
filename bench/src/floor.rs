//! The raw floor: what the services drover stands on cost, measured in the same run
//! as drover itself, with their own clients and nothing of drover's in between.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sea_orm::{ConnectionTrait, Database, Statement, TransactionTrait};
use serde::Serialize;

use crate::stats::Summary;

/// The floor of one service operation and of the per-task chain composed of them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Floor {
    /// A persistent publish to a quorum queue, its confirm, its delivery and ack.
    pub(crate) amqp_round_trip: Summary,
    /// A Redis lock cycle: `SET NX PX`, then a compare-and-delete script.
    pub(crate) redis_lock_cycle: Summary,
    /// One PostgreSQL transaction of one insert, committed.
    pub(crate) postgres_commit: Summary,
    /// One PostgreSQL transaction of 100 inserts, committed, per row.
    pub(crate) postgres_batched_commit_per_row: Summary,
    /// One task's irreducible chain, from the p50s: a broker round trip, a lock cycle
    /// and two commits (the claim and the result).
    pub(crate) chain_ms: f64,
}

/// Measures every floor, `samples` times each.
pub(crate) async fn measure(
    samples: usize,
    postgres: &str,
    amqp: &str,
    redis: &str,
    prefix: &str,
) -> Result<Floor> {
    let amqp_round_trip = amqp_round_trip(amqp, prefix, samples).await?;
    let redis_lock_cycle = redis_lock_cycle(redis, prefix, samples).await?;
    let (postgres_commit, postgres_batched_commit_per_row) =
        postgres_commits(postgres, prefix, samples).await?;
    let chain_ms = amqp_round_trip.p50_ms + redis_lock_cycle.p50_ms + 2.0 * postgres_commit.p50_ms;
    Ok(Floor {
        amqp_round_trip,
        redis_lock_cycle,
        postgres_commit,
        postgres_batched_commit_per_row,
        chain_ms,
    })
}

fn short(text: &str) -> Result<ShortString> {
    ShortString::try_new(text).map_err(|err| anyhow::anyhow!("`{text}`: {err}"))
}

async fn amqp_round_trip(url: &str, prefix: &str, samples: usize) -> Result<Summary> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("failed to connect to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = format!("{prefix}.floor");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            short(&queue)?,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            short(&queue)?,
            short("floor")?,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut taken = Vec::with_capacity(samples);
    for n in 0..samples {
        let started = Instant::now();
        channel
            .basic_publish(
                short("")?,
                short(&queue)?,
                BasicPublishOptions::default(),
                format!("floor {n}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        let delivery = consumer
            .next()
            .await
            .context("the floor consumer closed")??;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        taken.push(started.elapsed());
    }
    channel
        .queue_delete(short(&queue)?, QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(0, "done".into()).await;
    Ok(Summary::of(&taken))
}

async fn redis_lock_cycle(url: &str, prefix: &str, samples: usize) -> Result<Summary> {
    let client = redis::Client::open(url).context("invalid Redis URL")?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .context("failed to connect to Redis")?;
    let release = redis::Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
    );
    let key = format!("{prefix}:floor-lock");
    let mut taken = Vec::with_capacity(samples);
    for n in 0..samples {
        let token = format!("token-{n}");
        let started = Instant::now();
        let acquired: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut connection)
            .await?;
        anyhow::ensure!(acquired.is_some(), "the floor lock was held");
        let released: i64 = release
            .key(&key)
            .arg(&token)
            .invoke_async(&mut connection)
            .await?;
        anyhow::ensure!(released == 1, "the floor lock was lost");
        taken.push(started.elapsed());
    }
    Ok(Summary::of(&taken))
}

async fn postgres_commits(url: &str, prefix: &str, samples: usize) -> Result<(Summary, Summary)> {
    let db = Database::connect(url)
        .await
        .context("failed to connect to PostgreSQL")?;
    let table = format!("floor_{}", prefix.replace(['-', '.'], "_"));
    let backend = db.get_database_backend();
    db.execute_unprepared(&format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)"
    ))
    .await?;
    let insert = format!("INSERT INTO {table} (v) VALUES ('floor')");
    let mut single = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let txn = db.begin().await?;
        txn.execute_raw(Statement::from_string(backend, insert.clone()))
            .await?;
        txn.commit().await?;
        single.push(started.elapsed());
    }
    const BATCH: u32 = 100;
    let values = vec!["('floor')"; BATCH as usize].join(", ");
    let batch = format!("INSERT INTO {table} (v) VALUES {values}");
    let mut per_row = Vec::new();
    for _ in 0..samples.div_ceil(10).max(1) {
        let started = Instant::now();
        let txn = db.begin().await?;
        txn.execute_raw(Statement::from_string(backend, batch.clone()))
            .await?;
        txn.commit().await?;
        per_row.push(started.elapsed() / BATCH);
    }
    db.execute_unprepared(&format!("DROP TABLE {table}"))
        .await?;
    let _ = db.close().await;
    Ok((Summary::of(&single), Summary::of(&per_row)))
}

/// Milliseconds, for reports.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
