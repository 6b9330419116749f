//! The message that hands a ready task to the workers.

use serde::{Deserialize, Serialize};

use crate::broker::Message;
use crate::ids::{DeploymentId, TaskId, TenantId};
use crate::names::AppName;

/// "Task `task` of `deployment` is ready to run as attempt `attempt`."
///
/// Redelivering or republishing it is harmless: a worker claims a task only while
/// it is `ready` at this attempt. Two dispatches are equal when they say the same
/// (`written_at` is when it was said, not what).
#[derive(Clone, Debug, Eq, Serialize, Deserialize)]
pub struct TaskDispatch {
    pub tenant: TenantId,
    /// The app, so that the worker can name the component's lock before it reads the store.
    pub app: AppName,
    pub deployment: DeploymentId,
    pub task: TaskId,
    pub attempt: u32,
    /// When its outbox row was first written (milliseconds since the epoch, by the
    /// database's clock): a dispatch handed back to wait keeps it, so that a
    /// worker can tell how long the task waited in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<i64>,
}

/// A message body that is not a task dispatch.
#[derive(Debug, thiserror::Error)]
#[error("message `{id}` is not a task dispatch: {reason}")]
pub struct DecodeError {
    pub id: String,
    pub reason: String,
}

impl PartialEq for TaskDispatch {
    fn eq(&self, other: &Self) -> bool {
        (
            self.tenant,
            &self.app,
            self.deployment,
            &self.task,
            self.attempt,
        ) == (
            other.tenant,
            &other.app,
            other.deployment,
            &other.task,
            other.attempt,
        )
    }
}

impl TaskDispatch {
    /// The message id: the same for every copy of this dispatch.
    pub fn message_id(&self) -> String {
        format!("{}/{}/{}", self.deployment, self.task, self.attempt)
    }

    /// The message, with the deployment's trace context in its `traceparent`
    /// header.
    pub fn to_message(&self) -> Message {
        // Serializing plain ids and strings cannot fail.
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut message = Message::new(self.message_id(), body);
        message.headers.insert(
            crate::trace::TRACEPARENT.to_owned(),
            crate::trace::traceparent(self.deployment),
        );
        message
    }

    pub fn from_message(message: &Message) -> Result<Self, DecodeError> {
        serde_json::from_slice(&message.body).map_err(|err| DecodeError {
            id: message.id.clone(),
            reason: err.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_message() {
        let dispatch = TaskDispatch {
            tenant: TenantId::generate(),
            app: "toolhunt".parse().unwrap(),
            deployment: DeploymentId::generate(),
            task: "deploy:api".parse().unwrap(),
            attempt: 2,
            written_at: Some(1_700_000_000_000),
        };
        let message = dispatch.to_message();
        assert_eq!(message.id, format!("{}/deploy:api/2", dispatch.deployment));
        assert_eq!(
            message.headers.get("traceparent"),
            Some(&crate::trace::traceparent(dispatch.deployment))
        );
        let decoded = TaskDispatch::from_message(&message).unwrap();
        assert_eq!(decoded, dispatch);
        assert_eq!(decoded.written_at, dispatch.written_at);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err =
            TaskDispatch::from_message(&Message::new("m1", b"{not json".to_vec())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("message `m1` is not a task dispatch: "),
            "{err}"
        );
    }
}
