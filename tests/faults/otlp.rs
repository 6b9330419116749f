//! The OTLP export (built with `--features otlp`): a fleet whose every process
//! exports its spans to a collector this test runs, which decodes what it gets.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::collector::{Collector, Exported};
use crate::fleet::FleetOptions;
use crate::lifecycle::one_deployment;

/// The tasks that spans of one name name.
fn tasks(spans: &[Exported], name: &str) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|exported| exported.span.name == name)
        .filter_map(|exported| exported.attribute("task"))
        .collect()
}

/// With `DROVER_OTLP_ENDPOINT`, one deployment is one trace at the collector, its id
/// the deployment's: the root span `deployment` (exported when it finished, from its
/// submission), and under it the API's `submit`, the `dispatch` of each of its 8
/// tasks by the process that published it and the workers' `task` span of each.
/// The caller's own trace holds the API's span of its request, which `submit`
/// links to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_a_deployment_is_one_exported_trace() {
    let collector = Collector::start().await;
    let (fleet, submission) = one_deployment(
        "otlp",
        FleetOptions {
            step_ms: (20, 50),
            otlp: Some(collector.endpoint.clone()),
            ..FleetOptions::default()
        },
    )
    .await;

    let id: uuid::Uuid = submission.id.parse().expect("a deployment id");
    let trace = id.as_bytes().to_vec();
    let root_id = id.as_bytes()[8..].to_vec();
    let all: BTreeSet<String> = submission
        .tasks
        .iter()
        .map(|task| task.id.clone())
        .collect();
    assert_eq!(all.len(), 8, "the shop has 8 tasks");
    let complete = |spans: &[Exported]| {
        spans
            .iter()
            .any(|exported| exported.span.name == "deployment")
            && spans.iter().any(|exported| exported.span.name == "submit")
            && tasks(spans, "dispatch") == all
            && tasks(spans, "task") == all
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = collector.trace(&trace);
        if complete(&spans) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not get the whole trace {id} within 30 s: {:?}\n{}",
            spans
                .iter()
                .map(|exported| (&exported.span.name, exported.attribute("task")))
                .collect::<Vec<_>>(),
            fleet.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let roots: Vec<_> = spans
        .iter()
        .filter(|exported| exported.span.name == "deployment")
        .collect();
    assert_eq!(roots.len(), 1, "one root span: {roots:?}");
    let root = &roots[0];
    assert_eq!(
        root.span.span_id, root_id,
        "the root span's id is the id's low 64 bits"
    );
    assert!(
        root.span.parent_span_id.is_empty(),
        "the root span has no parent"
    );
    assert_eq!(root.attribute("state").as_deref(), Some("succeeded"));
    assert_eq!(
        root.attribute("deployment").as_deref(),
        Some(submission.id.as_str())
    );
    let submitted_ns = u64::try_from(submission.submitted_ns).expect("a time after 1970");
    assert!(
        root.span.start_time_unix_nano <= submitted_ns + 1_000_000_000
            && root.span.start_time_unix_nano + 1_000_000_000 >= submitted_ns,
        "the root span starts at the submission"
    );
    for exported in spans
        .iter()
        .filter(|exported| exported.span.name != "deployment")
    {
        assert_eq!(
            exported.span.parent_span_id,
            root_id,
            "`{}` of {:?} is a child of the root span",
            exported.span.name,
            exported.attribute("task")
        );
    }
    let pids = |name: &str| -> BTreeSet<i64> {
        spans
            .iter()
            .filter(|exported| exported.span.name == name)
            .map(|exported| exported.pid)
            .collect()
    };
    let (api, relays, workers) = (pids("submit"), pids("dispatch"), pids("task"));
    let pid_of = |name: &str| {
        fleet
            .processes()
            .iter()
            .find(|process| process.name == name)
            .map(|process| i64::from(process.pid))
    };
    assert_eq!(
        api,
        pid_of("api").into_iter().collect(),
        "the API submitted it"
    );
    // Every role relays the outbox rows its own commits wrote (the scheduler the
    // ones others left), so any fleet process may have dispatched a task.
    let fleet_pids: BTreeSet<i64> = fleet
        .processes()
        .iter()
        .map(|process| i64::from(process.pid))
        .collect();
    assert!(
        !relays.is_empty() && relays.is_subset(&fleet_pids),
        "fleet processes dispatched its tasks: {relays:?} of {fleet_pids:?}"
    );
    // The caller sent a trace context: the API's `request` span of the call is in
    // the caller's trace, under its span, and `submit` links to it.
    let caller_trace = uuid::Uuid::parse_str(&submission.traceparent[3..35])
        .expect("a trace id")
        .as_bytes()
        .to_vec();
    let caller_span = u64::from_str_radix(&submission.traceparent[36..52], 16)
        .expect("a span id")
        .to_be_bytes()
        .to_vec();
    let deadline = Instant::now() + Duration::from_secs(30);
    let request = loop {
        let request = collector
            .trace(&caller_trace)
            .into_iter()
            .find(|exported| exported.span.name == "request");
        if let Some(request) = request {
            break request;
        }
        assert!(
            Instant::now() < deadline,
            "no `request` span in the caller's trace within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(request.span.parent_span_id, caller_span);
    let submit = spans
        .iter()
        .find(|exported| exported.span.name == "submit")
        .expect("a submit span");
    assert!(
        submit
            .span
            .links
            .iter()
            .any(|link| link.trace_id == caller_trace && link.span_id == request.span.span_id),
        "`submit` links to the request's span: {:?}",
        submit.span.links
    );
    let worker_pids: BTreeSet<i64> = ["worker-1", "worker-2"]
        .into_iter()
        .filter_map(pid_of)
        .collect();
    assert!(
        !workers.is_empty() && workers.is_subset(&worker_pids),
        "the workers ran its tasks: {workers:?} of {worker_pids:?}"
    );
}
