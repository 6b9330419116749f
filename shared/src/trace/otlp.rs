//! The OTLP export (the `otlp` feature): the tracer provider [`crate::telemetry`]
//! installs, the parenting of spans on a deployment's trace, and its root span.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::ids::{DeploymentId, TenantId};
use crate::model::DeploymentState;

/// The tracer of this process's root spans, once the export is set up.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

thread_local! {
    /// The ids the next span built on this thread takes: a root span's, whose ids
    /// every process derives from its deployment's (see [`export_root`]).
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for a deployment's root span, whose are given.
#[derive(Debug, Default)]
struct DeploymentIds(RandomIdGenerator);

impl IdGenerator for DeploymentIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS
            .get()
            .map_or_else(|| self.0.new_trace_id(), |(trace, _)| trace)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS
            .get()
            .map_or_else(|| self.0.new_span_id(), |(_, span)| span)
    }
}

/// The tracer provider exporting to the OTLP/HTTP collector at `endpoint` (its
/// base URL: spans go to `<endpoint>/v1/traces`), in batches.
pub(crate) fn provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|err| err.to_string())?;
    // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are read by the builder.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("drover");
    }
    let resource = resource
        .with_attribute(KeyValue::new("process.pid", i64::from(std::process::id())))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(DeploymentIds::default())
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let _ = TRACER.set(opentelemetry::trace::TracerProvider::tracer(
        &provider, "drover",
    ));
    Ok(provider)
}

/// Makes `span` a child of the span `parent` of trace `trace` (both hex, as a
/// `traceparent` holds them).
pub(super) fn join(span: &tracing::Span, trace: &str, parent: &str) {
    let (Ok(trace), Ok(parent)) = (TraceId::from_hex(trace), SpanId::from_hex(parent)) else {
        return;
    };
    let remote = SpanContext::new(
        trace,
        parent,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // Refused only when no OTLP layer is installed or the span already started.
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// Links `span` to the span current on this thread, if it is exported.
pub(super) fn link_current(span: &tracing::Span) {
    let current = tracing::Span::current().context();
    let context = current.span().span_context().clone();
    if context.is_valid() {
        span.add_link(context);
    }
}

/// Exports the root span of `deployment`, which finished now in `state`.
pub(super) fn export_root(
    tenant: TenantId,
    deployment: DeploymentId,
    state: DeploymentState,
    release: Option<u32>,
    span_id: String,
) {
    let Some(tracer) = TRACER.get() else {
        return;
    };
    let (Ok(trace), Ok(span)) = (
        TraceId::from_hex(&super::trace_id(deployment)),
        SpanId::from_hex(&span_id),
    ) else {
        return;
    };
    // A UUIDv7 holds the moment it was made: the deployment's submission.
    let submitted = deployment.submitted_at().unwrap_or_else(SystemTime::now);
    let mut attributes = vec![
        KeyValue::new("tenant", tenant.to_string()),
        KeyValue::new("deployment", deployment.to_string()),
        KeyValue::new("state", state.as_str()),
    ];
    if let Some(release) = release {
        attributes.push(KeyValue::new("release", i64::from(release)));
    }
    let builder = tracer
        .span_builder("deployment")
        .with_start_time(submitted)
        .with_attributes(attributes);
    NEXT_IDS.set(Some((trace, span)));
    let mut root = tracer.build_with_context(builder, &Context::new());
    NEXT_IDS.set(None);
    if matches!(state, DeploymentState::Failed | DeploymentState::RolledBack) {
        opentelemetry::trace::Span::set_status(&mut root, Status::error(state.as_str()));
    }
    opentelemetry::trace::Span::end(&mut root);
}
