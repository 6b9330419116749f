//! Prometheus metrics: the one recorder of a process, and every metric drover
//! records, by name. `GET /metrics` on every role renders them (README.md lists
//! them with their labels; ARCHITECTURE.md, "Metrics", says where each is counted).
//!
//! Counters and histograms count what this process did: sum them over the fleet.
//! The `drover_store_*` gauges are read from the store by each scheduler: take
//! their `max` over the fleet.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::events::Event;
use crate::ids::TenantId;
use crate::model::{DeploymentState, TaskKind, TaskState};
use crate::store::StoreFigures;

/// Deployments that ended, by `state`.
pub const DEPLOYMENTS_FINISHED: &str = "drover_deployments_finished_total";
/// Seconds from a deployment's submission to its end, by `state`.
pub const DEPLOYMENT_DURATION: &str = "drover_deployment_duration_seconds";
/// Seconds from a deployment's submission to its first step.
pub const DEPLOYMENT_FIRST_STEP: &str = "drover_deployment_first_step_seconds";
/// Steps started, by `kind` and `tenant`.
pub const TASKS_STARTED: &str = "drover_tasks_started_total";
/// Tasks that ended, by `kind` and `state`.
pub const TASKS_FINISHED: &str = "drover_tasks_finished_total";
/// Transiently failed steps that will run again.
pub const TASKS_RETRIED: &str = "drover_tasks_retried_total";
/// Seconds a step ran, by `kind` and `tenant`.
pub const TASK_DURATION: &str = "drover_task_duration_seconds";
/// Seconds from a task's dispatch being written to its claim by a worker, by
/// `kind` and `tenant` (across machines, as far as their clocks agree).
pub const TASK_QUEUE_WAIT: &str = "drover_task_queue_wait_seconds";
/// Dispatches whose component lock was held by another task.
pub const LOCK_WAITS: &str = "drover_lock_waits_total";
/// Tasks handed back to wait, by `reason`: `component_lock`, `ordered` (an older
/// deployment deploys the component first), `tenant_limit`, `component_busy`.
pub const TASKS_PARKED: &str = "drover_tasks_parked_total";
/// Results refused because the task had moved to another attempt or fence.
pub const STALE_RESULTS: &str = "drover_stale_results_total";
/// What the reaper did, by `action`: `requeued` (a lease expired), `redispatched`
/// (a dispatch was lost), `ended` (out of attempts, or cancelled).
pub const REAPER_HAND_OUTS: &str = "drover_reaper_hand_outs_total";
/// Tasks a shutting-down worker handed back.
pub const TASKS_HANDED_BACK: &str = "drover_tasks_handed_back_total";
/// Deliveries that were delivered before.
pub const REDELIVERIES: &str = "drover_redeliveries_total";
/// Messages this process moved to the dead-letter queue.
pub const DEAD_LETTERED: &str = "drover_dead_lettered_total";
/// RabbitMQ's answers to publishes, by `outcome`: `ack`, `nack`, `unroutable`,
/// `timeout` (none in time), `lost` (the channel closed first).
pub const PUBLISH_CONFIRMS: &str = "drover_publish_confirms_total";
/// Dispatches the outbox relay published.
pub const OUTBOX_PUBLISHED: &str = "drover_outbox_published_total";
/// API requests, by `method`, `route` (its pattern) and `status`.
pub const HTTP_REQUESTS: &str = "drover_http_requests_total";
/// Seconds an API request took, by `method` and `route`.
pub const HTTP_DURATION: &str = "drover_http_request_duration_seconds";
/// Deployments in the store, by `state`.
pub const STORE_DEPLOYMENTS: &str = "drover_store_deployments";
/// Tasks in the store, by `state`.
pub const STORE_TASKS: &str = "drover_store_tasks";
/// Dispatches in the outbox, waiting to be published (or due later).
pub const STORE_OUTBOX: &str = "drover_store_outbox_messages";
/// Seconds the oldest due dispatch has waited in the outbox (0 when none).
pub const STORE_OUTBOX_LAG: &str = "drover_store_outbox_lag_seconds";

/// Tenants named in labels, at most; the others are `other`.
pub const MAX_TENANT_LABELS: usize = 50;

/// Installs this process's recorder (once; later calls return the same handle).
/// Metrics recorded before it are not kept.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 120.0, 300.0, 600.0, 1800.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &seconds)
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Fails only when another recorder is installed: then this one
                // renders nothing, which is what that process asked for.
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("a metrics recorder was already installed");
                }
                handle
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to configure the metrics buckets");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// This process's metrics in Prometheus' text format.
pub fn render() -> String {
    install().render()
}

/// The label of `tenant`: its id, for the first [`MAX_TENANT_LABELS`] tenants this
/// process saw, else `other` (so that a fleet of many tenants keeps its series few).
pub fn tenant_label(tenant: TenantId) -> String {
    static SEEN: OnceLock<Mutex<BTreeSet<TenantId>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let Ok(mut seen) = seen.lock() else {
        return "other".to_owned();
    };
    if seen.contains(&tenant) || seen.len() < MAX_TENANT_LABELS {
        seen.insert(tenant);
        tenant.to_string()
    } else {
        "other".to_owned()
    }
}

/// Counts what a progress event says happened (its publisher did it).
pub fn observe(event: &Event) {
    match event {
        Event::TaskStarted { tenant, task, .. } => {
            counter!(TASKS_STARTED, "kind" => kind_of(task), "tenant" => tenant_label(*tenant))
                .increment(1);
        }
        Event::TaskFinished { task, state, .. } => {
            counter!(TASKS_FINISHED, "kind" => kind_of(task), "state" => state.as_str())
                .increment(1);
        }
        Event::TaskSkipped { task, .. } => {
            counter!(TASKS_FINISHED, "kind" => kind_of(task), "state" => TaskState::Skipped.as_str())
                .increment(1);
        }
        Event::TaskRetrying { .. } => counter!(TASKS_RETRIED).increment(1),
        Event::DeploymentFinished {
            deployment, state, ..
        } => {
            counter!(DEPLOYMENTS_FINISHED, "state" => state.as_str()).increment(1);
            let took = deployment
                .submitted_at()
                .and_then(|at| at.elapsed().ok())
                .unwrap_or_default();
            histogram!(DEPLOYMENT_DURATION, "state" => state.as_str()).record(took.as_secs_f64());
        }
        Event::CancelRequested { .. } => {}
    }
}

/// A deployment's first step was claimed `waited` after its submission.
pub fn deployment_started(waited: &Duration) {
    histogram!(DEPLOYMENT_FIRST_STEP).record(waited.as_secs_f64());
}

/// A step that ran for `took`.
pub fn step_ran(kind: TaskKind, tenant: TenantId, took: Duration) {
    histogram!(TASK_DURATION, "kind" => kind.as_str(), "tenant" => tenant_label(tenant))
        .record(took.as_secs_f64());
}

/// A task claimed `waited` after its dispatch was written.
pub fn task_claimed(kind: TaskKind, tenant: TenantId, waited: Duration) {
    histogram!(TASK_QUEUE_WAIT, "kind" => kind.as_str(), "tenant" => tenant_label(tenant))
        .record(waited.as_secs_f64());
}

/// One more of a plain counter (`name` is one of this module's constants).
pub fn count(name: &'static str) {
    counter!(name).increment(1);
}

/// One more of a counter with one label.
pub fn count_by(name: &'static str, label: &'static str, value: &'static str) {
    counter!(name, label => value).increment(1);
}

/// `n` more dispatches published.
pub fn published(n: usize) {
    counter!(OUTBOX_PUBLISHED).increment(n as u64);
}

/// One API request answered.
pub fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(took.as_secs_f64());
}

/// The store's figures, as gauges.
pub fn store_figures(figures: &StoreFigures) {
    for state in DeploymentState::ALL {
        let n = figures.deployments.get(state).copied().unwrap_or(0);
        gauge!(STORE_DEPLOYMENTS, "state" => state.as_str()).set(n as f64);
    }
    for state in TaskState::ALL {
        let n = figures.tasks.get(state).copied().unwrap_or(0);
        gauge!(STORE_TASKS, "state" => state.as_str()).set(n as f64);
    }
    gauge!(STORE_OUTBOX).set(figures.outbox as f64);
    gauge!(STORE_OUTBOX_LAG).set(figures.outbox_lag.as_secs_f64());
}

fn kind_of(task: &crate::ids::TaskId) -> &'static str {
    task.parts().0.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_labels_stop_growing_at_the_bound() {
        let tenants: Vec<TenantId> = (0..MAX_TENANT_LABELS + 10)
            .map(|_| TenantId::generate())
            .collect();
        let labels: Vec<String> = tenants.iter().map(|tenant| tenant_label(*tenant)).collect();
        let named = labels.iter().filter(|label| *label != "other").count();
        assert_eq!(named, MAX_TENANT_LABELS, "{labels:?}");
        assert_eq!(labels[0], tenants[0].to_string());
        assert_eq!(labels[MAX_TENANT_LABELS], "other");
        // A tenant named once keeps its name.
        assert_eq!(tenant_label(tenants[0]), tenants[0].to_string());
    }

    #[test]
    fn rendered_metrics_carry_what_was_recorded() {
        install();
        count_by(TASKS_PARKED, "reason", "ordered");
        http_request("GET", "/v1/apps/{app}", 200, Duration::from_millis(30));
        let text = render();
        assert!(
            text.contains("drover_tasks_parked_total{reason=\"ordered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("drover_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/apps/{app}\""),
            "durations are histograms with buckets: {text}"
        );
    }
}
