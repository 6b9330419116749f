//! Identifiers: newtypes so that a deployment id is never passed where a tenant id is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::TaskKind;
use crate::names::ComponentName;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a tenant.
    TenantId
);
uuid_id!(
    /// Identifies an app.
    AppId
);
uuid_id!(
    /// Identifies a deployment.
    DeploymentId
);
uuid_id!(
    /// Identifies an API token (not the secret: the row that holds its hash).
    TokenId
);
uuid_id!(
    /// Identifies a saved plan.
    PlanId
);
uuid_id!(
    /// Identifies a webhook.
    HookId
);

impl DeploymentId {
    /// When the deployment was submitted: the moment its UUIDv7 was made.
    pub fn submitted_at(&self) -> Option<std::time::SystemTime> {
        let (seconds, nanos) = self.0.get_timestamp()?.to_unix();
        Some(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(seconds, nanos))
    }
}

/// Identifies a task within its deployment: `<kind>:<component>`, e.g. `build:toolhunt-api`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

/// A string that is not `<kind>:<component>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a task id of the form `<build|deploy|delete>:<component>`")]
pub struct TaskIdError(String);

impl TaskId {
    pub fn new(kind: TaskKind, component: &ComponentName) -> Self {
        Self(format!("{}:{component}", kind.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind and component this id names.
    pub fn parts(&self) -> (TaskKind, ComponentName) {
        // Every TaskId was built by `new` or checked by `try_from`, so both parts are valid.
        let (kind, component) = self.0.split_once(':').unwrap_or(("deploy", &self.0));
        let kind = kind.parse().unwrap_or(TaskKind::Deploy);
        let component = ComponentName::new(component)
            .unwrap_or_else(|_| unreachable!("task id `{}` was validated", self.0));
        (kind, component)
    }
}

impl TryFrom<String> for TaskId {
    type Error = TaskIdError;
    fn try_from(s: String) -> Result<Self, TaskIdError> {
        let Some((kind, component)) = s.split_once(':') else {
            return Err(TaskIdError(s));
        };
        if kind.parse::<TaskKind>().is_err() || ComponentName::new(component).is_err() {
            return Err(TaskIdError(s));
        }
        Ok(Self(s))
    }
}

impl FromStr for TaskId {
    type Err = TaskIdError;
    fn from_str(s: &str) -> Result<Self, TaskIdError> {
        Self::try_from(s.to_owned())
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A number that grows each time a component's lock is taken. Every write a task makes
/// carries it, so that a holder whose lock was lost (and taken by someone else) is refused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fence(pub i64);

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fence({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip() {
        let api = ComponentName::new("toolhunt-api").unwrap();
        let id = TaskId::new(TaskKind::Build, &api);
        assert_eq!(id.as_str(), "build:toolhunt-api");
        assert_eq!(id.parts(), (TaskKind::Build, api));
        assert_eq!("build:toolhunt-api".parse::<TaskId>(), Ok(id));
    }

    #[test]
    fn malformed_task_ids_are_refused() {
        for bad in ["toolhunt-api", "push:x", "build:", "build:X"] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad}");
        }
    }
}
