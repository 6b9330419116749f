//! Picks the adapters behind the three ports from the configuration.

use std::fmt;
use std::sync::Arc;

use crate::broker::{AmqpBroker, AmqpOptions, Broker, BrokerError, MemoryBroker};
use crate::config::{Config, redact_url};
use crate::events::Event;
use crate::locks::{LockError, Locks, MemoryLocks, RedisLocks};
use crate::store::{SeaOrmStore, Store, StoreError};

/// The database kinds drover speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres,
    Sqlite,
}

impl DatabaseKind {
    /// The kind of database a URL names.
    pub fn of_url(url: &str) -> Option<DatabaseKind> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(DatabaseKind::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(DatabaseKind::Sqlite)
        } else {
            None
        }
    }
}

/// Why the backends could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "unsupported database URL `{0}`: use `postgres://…` or `sqlite:…` (or leave it unset for the embedded SQLite)"
    )]
    UnsupportedDatabase(String),
    #[error("failed to create the data directory `{path}`: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the database `{url}` lacks {} migration(s) ({}): run `drover migrate` first",
        pending.len(),
        pending.join(", ")
    )]
    NotMigrated { url: String, pending: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Locks(#[from] LockError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The adapters behind the three ports.
#[derive(Clone)]
pub struct Backends {
    pub broker: Arc<dyn Broker>,
    pub locks: Arc<dyn Locks>,
    pub store: Arc<dyn Store>,
    /// Whether the broker loses its messages with the process (the embedded default):
    /// the scheduler then re-dispatches ready tasks from the store at start-up.
    pub broker_is_volatile: bool,
}

impl Backends {
    /// Publishes a progress event (best effort), and counts in this process's
    /// metrics what it says happened.
    pub async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
        crate::metrics::observe(event);
        if let Event::DeploymentFinished {
            tenant,
            deployment,
            state,
            release,
        } = event
        {
            crate::trace::deployment_finished(*tenant, *deployment, *state, *release);
        }
        self.broker.publish_event(event).await
    }

    /// Publishes progress events, best effort: one that fails is logged and
    /// dropped (the store stays the truth; followers read it).
    pub async fn announce(&self, events: &[Event]) {
        for event in events {
            if let Err(err) = self.publish_event(event).await {
                tracing::debug!(
                    error = %err,
                    event = event.name(),
                    deployment = %event.deployment(),
                    "failed to publish a progress event"
                );
            }
        }
    }
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backends")
            .field("broker", &self.broker)
            .field("locks", &self.locks)
            .field("store", &self.store)
            .finish()
    }
}

/// Whether connecting to the store applies pending migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    /// Apply them (`drover migrate`; always done for the embedded SQLite).
    Apply,
    /// Refuse a database with pending migrations: a shared database is migrated
    /// once, by `drover migrate`, not by every process that starts.
    Require,
}

/// Connects the store named by the configuration, applying or requiring its
/// migrations; the embedded SQLite is always migrated.
pub async fn connect_store(
    config: &Config,
    migrations: Migrations,
) -> Result<SeaOrmStore, BackendError> {
    let url = config.effective_database_url();
    let kind = DatabaseKind::of_url(&url)
        .ok_or_else(|| BackendError::UnsupportedDatabase(redact_url(&url)))?;
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BackendError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    }
    let store = SeaOrmStore::connect(&url).await?;
    if migrations == Migrations::Apply || kind == DatabaseKind::Sqlite {
        store.migrate().await?;
    } else {
        let pending = store.pending_migrations().await?;
        if !pending.is_empty() {
            return Err(BackendError::NotMigrated {
                url: redact_url(&url),
                pending,
            });
        }
    }
    Ok(store)
}

/// Connects every backend the configuration names; the embedded default for the rest.
pub async fn connect(config: &Config) -> Result<Backends, BackendError> {
    let store = connect_store(config, Migrations::Require).await?;
    let locks: Arc<dyn Locks> = match &config.redis_url {
        Some(url) => Arc::new(RedisLocks::connect(url, &config.redis_prefix()).await?),
        None => Arc::new(MemoryLocks::new()),
    };
    let (broker, broker_is_volatile): (Arc<dyn Broker>, bool) = match &config.amqp_url {
        Some(url) => {
            let options = AmqpOptions {
                prefix: config.amqp_prefix(),
                connection_name: format!("drover-{}", std::process::id()),
                ..AmqpOptions::default()
            };
            (Arc::new(AmqpBroker::connect(url, options).await?), false)
        }
        None => (Arc::new(MemoryBroker::new()), true),
    };
    Ok(Backends {
        broker,
        locks,
        store: Arc::new(store),
        broker_is_volatile,
    })
}
