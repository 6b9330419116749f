//! Releases: immutable, versioned snapshots of every component of an app.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::DeploymentId;
use crate::manifest::Component;
use crate::names::{AppName, ComponentName};

/// An immutable snapshot of every component's deployed spec and artifact, made when
/// a deployment succeeds. Versions count 1, 2, 3 … per app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub app: AppName,
    pub version: u32,
    /// The deployment that made it.
    pub deployment: Option<DeploymentId>,
    pub created_at: DateTime<Utc>,
    pub components: BTreeMap<ComponentName, ReleasedComponent>,
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
