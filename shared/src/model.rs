//! The states and kinds of the deploy domain, with their string forms (used in the
//! plan JSON, the API and the store alike).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that names no variant of a state or kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownVariant {
    pub what: &'static str,
    pub value: String,
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Its OpenAPI schema: a string, one of its forms.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, UnknownVariant> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant { what: $what, value: s.to_owned() }),
                }
            }
        }
    };
}

string_enum!(
    /// What a deployment does when an older one of its app still works on one of
    /// its components (DESIGN.md 5.3).
    ConcurrencyPolicy, "concurrency policy" {
        /// Wait for the component's lock: the older one finishes first.
        Queue = "queue",
        /// Cancel the older deployment, like CI concurrency groups.
        CancelInProgress = "cancel-in-progress",
    }
);

string_enum!(
    /// How a deploy rolls out (DESIGN.md 5.8): the phases the engine drives each
    /// deploy step through, telling the driver which one it is in.
    #[derive(Default)]
    Strategy, "strategy" {
        /// Replace instances a few at a time: one phase, `rollout`.
        #[default]
        Rolling = "rolling",
        /// Stop the old, then start the new: `stop`, `start`.
        Recreate = "recreate",
        /// Stage the new beside the old, switch traffic, retire the old: `stage`,
        /// `switch`, `retire`; `abort` when one fails.
        BlueGreen = "blue-green",
        /// Start the new for a share of traffic, then promote it: `start 10%`,
        /// `promote`; `abort` when one fails.
        Canary = "canary",
    }
);

impl Strategy {
    /// The phases of a deploy step, in order.
    pub fn phases(self) -> &'static [&'static str] {
        match self {
            Strategy::Rolling => &["rollout"],
            Strategy::Recreate => &["stop", "start"],
            Strategy::BlueGreen => &["stage", "switch", "retire"],
            Strategy::Canary => &["start 10%", "promote"],
        }
    }

    /// The phase run after a phase failed, to undo what the step started.
    pub fn abort_phase(self) -> Option<&'static str> {
        match self {
            Strategy::BlueGreen | Strategy::Canary => Some("abort"),
            Strategy::Rolling | Strategy::Recreate => None,
        }
    }
}

string_enum!(
    /// What a task does to its component.
    TaskKind, "task kind" {
        Build = "build",
        Deploy = "deploy",
        Delete = "delete",
    }
);

string_enum!(
    /// The life of a task: `blocked → ready → running → succeeded / failed / cancelled / skipped`.
    TaskState, "task state" {
        /// Waits for tasks it needs.
        Blocked = "blocked",
        /// Every need is met; dispatched to the workers.
        Ready = "ready",
        /// Claimed by a worker holding the component's lock.
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Not run because a task it needs failed.
        Skipped = "skipped",
    }
);

impl TaskState {
    /// Whether the task will never change state again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Skipped
        )
    }
}

string_enum!(
    /// What an API token may do. Each scope grants the ones before it: `deploy`
    /// reads too, `admin` deploys and manages the tenant's tokens.
    Scope, "token scope" {
        /// Read apps, deployments, releases and logs.
        Read = "read",
        /// Start, cancel, retry and roll back deployments; adopt; record updates.
        Deploy = "deploy",
        /// Create, list and revoke the tenant's tokens.
        Admin = "admin",
    }
);

impl Scope {
    /// Whether a token of this scope may do what `needed` allows.
    pub fn grants(self, needed: Scope) -> bool {
        self >= needed
    }
}

string_enum!(
    /// What the audit trail records, done through the API.
    AuditAction, "audit action" {
        /// A deployment was submitted (its id is the target).
        DeploymentStarted = "deployment.started",
        DeploymentCancelled = "deployment.cancelled",
        DeploymentRetried = "deployment.retried",
        /// A rollback deployment was started (its id is the target).
        RolledBack = "release.rolled_back",
        /// A saved plan's deployment was started (its id is the target).
        PlanApplied = "plan.applied",
        /// An app's running components were recorded as release 1 (the app).
        Adopted = "app.adopted",
        /// A component's new artifact was recorded (`app/component`).
        ExternalUpdate = "component.external_update",
        TokenCreated = "token.created",
        TokenRevoked = "token.revoked",
        /// A webhook was made, its secret rotated, or it was removed (its id).
        HookCreated = "hook.created",
        HookRotated = "hook.rotated",
        HookDeleted = "hook.deleted",
        /// A signed webhook delivery started a deployment (its id) or recorded an
        /// update (`app/component`); no token asked.
        HookDelivered = "hook.delivered",
    }
);

string_enum!(
    /// Who calls a webhook, and so how its deliveries are signed and read.
    HookKind, "hook kind" {
        /// GitHub: `X-Hub-Signature-256`, `X-GitHub-Delivery`; a `push` to the
        /// hook's branch rebuilds the components built from the pushed repository.
        Github = "github",
        /// A container registry's push notifications, signed with a timestamp
        /// (`X-Drover-Timestamp`, `X-Drover-Signature`); an image push is an
        /// external update of the components that run that image.
        Registry = "registry",
    }
);

string_enum!(
    /// The life of a deployment: `pending → running → succeeded / failed / cancelled / rolled_back`.
    DeploymentState, "deployment state" {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        RolledBack = "rolled_back",
    }
);

impl DeploymentState {
    /// Whether the deployment has finished.
    pub fn is_terminal(self) -> bool {
        !matches!(self, DeploymentState::Pending | DeploymentState::Running)
    }
}

string_enum!(
    /// What a plan does to one component.
    Action, "action" {
        /// Not in the current state: build (if it has its own build) and deploy.
        Create = "create",
        /// Same build, different run spec: deploy in place, no new version.
        Update = "update",
        /// New build input or build id: build (if it has its own build) and deploy a new version.
        Replace = "replace",
        /// Nothing to do; satisfies `wait-for` at once.
        Unchanged = "unchanged",
        /// In the current state but not in the manifest (with `--prune`).
        Delete = "delete",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>(), Ok(*state));
            assert_eq!(
                serde_json::to_string(state).unwrap(),
                format!("\"{state}\"")
            );
        }
        assert_eq!(DeploymentState::RolledBack.as_str(), "rolled_back");
        assert!("done".parse::<TaskState>().is_err());
    }
}

/// Something a request names that does not exist, for the caller's tenant (another
/// tenant's is as absent as one never made): one text for the CLI and the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("unknown deployment `{0}`")]
    Deployment(String),
    #[error("unknown app `{0}`: nothing was ever deployed under that name")]
    App(String),
    #[error("app `{app}` has no release {version} (`drover releases {app}` lists them)")]
    Release { app: String, version: String },
    #[error("app `{app}` has no component `{component}`")]
    Component { app: String, component: String },
    #[error("unknown token `{0}` (`drover token list` lists them)")]
    Token(String),
    #[error("unknown plan `{0}` (`drover plan --save` saves one)")]
    Plan(String),
    #[error("unknown hook `{0}` (`drover hook list` lists them)")]
    Hook(String),
    #[error(
        "deployment `{deployment}` has no task `{task}` (`drover status {deployment}` lists them)"
    )]
    Task { deployment: String, task: String },
}
