//! `GET /v1/deployments/{id}/tasks/{task}/logs`: what a task's step printed, as
//! text, or followed live as Server-Sent Events until the task ends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::ids::{DeploymentId, TaskId, TenantId};
use shared::model::{TaskState, Unknown};
use shared::store::{LogLine, TaskOutput, task_output};
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};

/// How often a followed task's output is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// The header a reconnecting SSE client sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// Whether to follow the output.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Follow the output as Server-Sent Events until the task ends.
    #[serde(default)]
    follow: bool,
}

/// The task's output: every line so far as `text/plain`; with `follow`, as
/// Server-Sent Events, `line` events (`{"attempt", "seq", "line"}`, id
/// `<attempt>:<seq>`) as the step prints them, then one `end` event (`{"state"}`)
/// once the task ended. Reconnect with `Last-Event-ID` to be sent the lines after
/// it.
#[utoipa::path(
    get,
    path = "/v1/deployments/{id}/tasks/{task}/logs",
    params(
        ("id" = String, Path, description = "the deployment's id"),
        ("task" = String, Path, description = "the task's id, e.g. `build:toolhunt-api`"),
        ("Last-Event-ID" = Option<String>, Header, description = "with `follow`: the id of the last event received"),
        LogQuery,
    ),
    responses(
        (status = 200, description = "the output as `text/plain`, or with `follow` as `text/event-stream`", content_type = "text/plain", body = String),
        (status = 400, description = "a bad query or `Last-Event-ID`", body = ErrorBody),
        (status = 401, description = "missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "the token's scope does not allow this", body = ErrorBody),
        (status = 404, description = "no such deployment for this tenant, or no such task in it", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "deployments",
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, task)): Path<(String, String)>,
    query: Result<Query<LogQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let unknown = || {
        ApiError::from(Unknown::Task {
            deployment: id.clone(),
            task: task.clone(),
        })
    };
    let deployment: DeploymentId = id.parse().map_err(|_| unknown())?;
    let task_id: TaskId = task.parse().map_err(|_| unknown())?;
    let after = match headers.get(LAST_EVENT_ID) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(parse_event_id)
                .ok_or_else(|| ApiError::BadHeader {
                    header: "Last-Event-ID",
                    reason: "not the id of a line: `<attempt>:<seq>`".to_owned(),
                })?,
        ),
        None => None,
    };
    let mut reader = Reader {
        state,
        tenant: caller.tenant,
        deployment,
        task: task_id,
        after,
        pending: VecDeque::new(),
        ended: None,
        end_sent: false,
    };
    // The first read says whether the task exists.
    if !reader.read().await? {
        return Err(unknown());
    }
    if !query.follow {
        let mut text = String::new();
        loop {
            while let Some(line) = reader.pending.pop_front() {
                text.push_str(&line.line);
                text.push('\n');
            }
            if reader.ended.is_some() || !reader.read_more().await? {
                break;
            }
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let event = reader.next().await?;
        Some((Ok::<_, Infallible>(event), reader))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `<attempt>:<seq>`.
fn parse_event_id(text: &str) -> Option<(u32, u64)> {
    let (attempt, seq) = text.split_once(':')?;
    Some((attempt.parse().ok()?, seq.parse().ok()?))
}

/// The end of a task's output.
#[derive(Debug, Serialize)]
struct End {
    state: TaskState,
}

/// A reader of one task's output.
struct Reader {
    state: AppState,
    tenant: TenantId,
    deployment: DeploymentId,
    task: TaskId,
    after: Option<(u32, u64)>,
    pending: VecDeque<LogLine>,
    ended: Option<TaskState>,
    end_sent: bool,
}

impl Reader {
    /// Reads what follows; `false` when the deployment or the task is unknown.
    async fn read(&mut self) -> Result<bool, ApiError> {
        let store = self.state.backends.store.as_ref();
        let Some(TaskOutput { lines, ended }) =
            task_output(store, self.tenant, self.deployment, &self.task, self.after).await?
        else {
            return Ok(false);
        };
        if let Some(last) = lines.last() {
            self.after = Some((last.attempt, last.seq));
        }
        self.pending.extend(lines);
        self.ended = ended;
        Ok(true)
    }

    /// Reads what follows, if a full page was read before; `false` when nothing
    /// more is there now.
    async fn read_more(&mut self) -> Result<bool, ApiError> {
        let before = self.after;
        self.read().await?;
        Ok(self.after != before)
    }

    /// The next event; `None` once the end was sent (or the output cannot be read:
    /// the client reconnects, and is sent what follows its last line).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                let id = format!("{}:{}", line.attempt, line.seq);
                return event("line", &line, id);
            }
            if let Some(state) = self.ended {
                if self.end_sent {
                    return None;
                }
                self.end_sent = true;
                // Its id is the last line's: a reconnect after it is sent the end alone.
                let (attempt, seq) = self.after.unwrap_or_default();
                return event("end", &End { state }, format!("{attempt}:{seq}"));
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
            if let Err(err) = self.read().await {
                tracing::warn!(error = %err, deployment = %self.deployment, "failed to read a task's output; the follower reconnects");
                return None;
            }
        }
    }
}

fn event(name: &str, data: &impl Serialize, id: String) -> Option<SseEvent> {
    match SseEvent::default().event(name).id(id).json_data(data) {
        Ok(event) => Some(event),
        Err(err) => {
            tracing::warn!(error = %err, "failed to write an event");
            None
        }
    }
}
