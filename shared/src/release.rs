//! Releases: immutable, versioned snapshots of every component of an app.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::DeploymentId;
use sha2::{Digest, Sha256};

use crate::manifest::{CONFIG_VERSION, Component, Manifest, Run};
use crate::names::{AppName, ComponentName};

/// Every component of an app as deployed, by name: a release's content, or what
/// runs now.
pub type Components = BTreeMap<ComponentName, ReleasedComponent>;

/// An immutable snapshot of what runs (every component's deployed spec and
/// artifact) at the moment a deployment succeeded. Versions count 1, 2, 3 … per app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub app: AppName,
    pub version: u32,
    /// The deployment that made it.
    pub deployment: Option<DeploymentId>,
    pub created_at: DateTime<Utc>,
    pub components: Components,
}

/// What an app runs now, component by component, as the store records it: every
/// deploy and delete result changes it, under its fence, in the result's own
/// transaction. Plans are made against it, and a release is a snapshot of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentState {
    /// The app's active release (its newest) when this was read; `None` before
    /// the first.
    pub release: Option<u32>,
    /// Whether what runs differs from that release: a deployment that failed or was
    /// cancelled applied some of its deploys or deletes since.
    pub changed_since_release: bool,
    pub components: Components,
}

impl CurrentState {
    /// What runs, or `None` when nothing of the app ever ran.
    pub fn components(&self) -> Option<&Components> {
        (self.release.is_some() || !self.components.is_empty()).then_some(&self.components)
    }
}

/// A component whose deployed state differs between two readings of what runs: a
/// saved plan's base and now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub component: ComponentName,
    /// Its version (else its artifact) then; `None`: it did not run.
    pub was: Option<String>,
    /// Its version (else its artifact) now; `None`: it does not run.
    pub now: Option<String>,
    /// The deployment that last deployed it, now.
    pub deployment: Option<DeploymentId>,
}

impl Moved {
    /// Every component whose deployed spec, artifact or version differs between
    /// `then` and `now`, by name.
    pub fn between(then: &Components, now: &Components) -> Vec<Moved> {
        let label = |released: &ReleasedComponent| {
            released
                .version
                .clone()
                .or_else(|| released.artifact.clone())
                .unwrap_or_else(|| "deployed".to_owned())
        };
        let names: std::collections::BTreeSet<&ComponentName> =
            then.keys().chain(now.keys()).collect();
        names
            .into_iter()
            .filter(|name| then.get(*name) != now.get(*name))
            .map(|name| Moved {
                component: name.clone(),
                was: then.get(name).map(label),
                now: now.get(name).map(label),
                deployment: now.get(name).and_then(|released| released.deployment),
            })
            .collect()
    }
}

impl fmt::Display for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |label: &Option<String>| match label {
            Some(label) => format!("at `{label}`"),
            None => "not running".to_owned(),
        };
        write!(f, "`{}` was {}", self.component, at(&self.was))?;
        if self.was == self.now {
            write!(f, ", now redeployed with another spec")?;
        } else {
            write!(f, ", now {}", at(&self.now))?;
        }
        if let Some(deployment) = self.deployment {
            write!(f, " (deployment {deployment})")?;
        }
        Ok(())
    }
}

/// One component as a release holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedComponent {
    /// The spec it was deployed with.
    pub spec: Component,
    /// What its build (or its `reuse-from` source's build) produced.
    pub artifact: Option<String>,
    /// Its version: the build id of the build that produced the artifact.
    pub version: Option<String>,
    /// The deployment that last deployed it.
    pub deployment: Option<DeploymentId>,
}

impl Release {
    /// The release as a manifest: every component's spec.
    pub fn manifest(&self) -> Manifest {
        manifest_of(&self.components)
    }
}

/// Deployed components as a manifest: every component's spec.
pub fn manifest_of(components: &Components) -> Manifest {
    Manifest {
        config_version: CONFIG_VERSION.to_owned(),
        components: components
            .iter()
            .map(|(name, released)| (name.clone(), released.spec.clone()))
            .collect(),
    }
}

/// The longest artifact reference an external update may announce.
pub const MAX_ARTIFACT_LEN: usize = 1024;
/// The longest version or commit sha an external update may carry.
pub const MAX_LABEL_LEN: usize = 128;

/// A new artifact of one component, announced from outside: upstream CI, a
/// registry webhook (DESIGN.md 5.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalUpdate {
    pub component: ComponentName,
    /// What to run, e.g. `registry.example/api@sha256:…`.
    pub artifact: String,
    /// The version it is, e.g. `1.4.2`.
    pub version: Option<String>,
    /// The commit it was built from.
    pub sha: Option<String>,
}

/// Why an external update is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExternalUpdateError {
    #[error(
        "the artifact must be 1 to {MAX_ARTIFACT_LEN} characters without spaces or control characters, e.g. `registry.example/api@sha256:…`"
    )]
    Artifact,
    #[error("the {0} must be 1 to {MAX_LABEL_LEN} characters without spaces or control characters")]
    Label(&'static str),
}

impl ExternalUpdate {
    /// An update, checked: the artifact and the labels are single printable words.
    pub fn new(
        component: ComponentName,
        artifact: String,
        version: Option<String>,
        sha: Option<String>,
    ) -> Result<Self, ExternalUpdateError> {
        let word = |text: &str, max: usize| {
            !text.is_empty()
                && text.len() <= max
                && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if !word(&artifact, MAX_ARTIFACT_LEN) {
            return Err(ExternalUpdateError::Artifact);
        }
        for (what, label) in [("version", &version), ("sha", &sha)] {
            if label
                .as_deref()
                .is_some_and(|label| !word(label, MAX_LABEL_LEN))
            {
                return Err(ExternalUpdateError::Label(what));
            }
        }
        Ok(Self {
            component,
            artifact,
            version,
            sha,
        })
    }

    /// SHA-256 of the artifact, hex: with the component, the update's identity.
    pub fn artifact_hash(&self) -> String {
        Sha256::digest(self.artifact.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The version a release records for it: the announced one, else the artifact.
    pub fn released_version(&self) -> String {
        self.version
            .clone()
            .unwrap_or_else(|| self.artifact.clone())
    }
}

/// What the driver's status step reports running, by component (DESIGN.md 5.4).
pub type Observed = BTreeMap<ComponentName, ObservedComponent>;

/// What an app's components run now, as the platform reports it: the driver's
/// status step (DESIGN.md 5.4). Whoever plans asks it, to plan drift as `update`
/// and to adopt a running app.
#[async_trait::async_trait]
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// What the app's components run now; `None` when it cannot tell.
    async fn status(&self, _app: &AppName) -> Result<Option<Observed>, StatusError> {
        Ok(None)
    }
}

/// Why the platform could not say what runs.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("the status step failed: {0}")]
    Failed(String),
    #[error(
        "the status step printed no valid report ({0}); it must print JSON like {{\"components\": {{\"api\": {{\"artifact\": \"…\", \"run\": {{\"command\": \"…\", \"replicas\": 2}}}}}}}}"
    )]
    BadReport(String),
}

/// What a driver's status step prints: `{"components": {"api": {"artifact": …,
/// "run": {"command": …, "replicas": …}}}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub components: Observed,
}

/// One component as the driver sees it running.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedComponent {
    /// What it runs.
    #[serde(default)]
    pub artifact: Option<String>,
    /// How it runs.
    #[serde(default)]
    pub run: Run,
}

impl ObservedComponent {
    /// The fields in which what runs differs from what `released` says should.
    pub fn drift_from(&self, released: &ReleasedComponent) -> Vec<String> {
        let (run, want) = (&self.run, &released.spec.run);
        [
            ("artifact", self.artifact != released.artifact),
            ("command", run.command != want.command),
            ("env", run.env != want.env),
            ("replicas", run.replicas != want.replicas),
            ("port", run.port != want.port),
            ("schedule", run.schedule != want.schedule),
        ]
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(field, _)| field.to_owned())
        .collect()
    }
}
