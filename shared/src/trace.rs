//! W3C trace context for deployments: one deployment is one trace, whichever
//! process works on it. Its trace id is the deployment id's 128 bits, so every
//! process can name it; the dispatch carries it across the broker as a W3C
//! `traceparent` header (`00-<trace id>-<parent span id>-01`), whose parent is
//! the deployment's root span. Log lines of a deployment's requests and tasks
//! carry `trace_id` (with `--log-format json`, in their span's fields).
//!
//! Built with the `otlp` feature and run with `DROVER_OTLP_ENDPOINT`, drover also
//! exports its spans over OTLP/HTTP (see [`crate::telemetry`]): the API's
//! `submit`, the `dispatch` of each task (by the process whose outbox relay
//! published it), the worker's `task` span of each delivery, all children of the deployment's root span `deployment`, which
//! the process that finishes the deployment exports, from its submission (the
//! time its UUIDv7 id holds) to its end. Without the feature, [`join`] and
//! [`deployment_finished`] do nothing.

#[cfg(feature = "otlp")]
pub(crate) mod otlp;

use crate::ids::{DeploymentId, TenantId};
use crate::model::DeploymentState;

/// The message header that carries the trace context (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// The trace id of a deployment: 32 lowercase hex digits.
pub fn trace_id(deployment: DeploymentId) -> String {
    deployment.0.simple().to_string()
}

/// The span id of a deployment's root span: the low 64 bits of its id, as 16
/// hex digits (never all zeros, which W3C forbids).
fn root_span_id(deployment: DeploymentId) -> String {
    let low = deployment.0.as_u128() as u64;
    format!("{:016x}", low.max(1))
}

/// The `traceparent` of a deployment's work: its trace, parented on its root span,
/// sampled.
pub fn traceparent(deployment: DeploymentId) -> String {
    format!(
        "00-{}-{}-01",
        trace_id(deployment),
        root_span_id(deployment)
    )
}

/// The trace id and parent span id of a `traceparent`; `None` when it is not a
/// valid version-00 one.
pub fn parse_traceparent(header: &str) -> Option<(&str, &str)> {
    let mut parts = header.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && part.bytes().any(|b| b != b'0')
    };
    (parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && hex(parent, 16)
        && flags.len() == 2
        && flags.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some((trace, parent))
}

/// Names the current span's trace (a field `trace_id` it declared as empty).
pub fn record(deployment: DeploymentId) {
    tracing::Span::current().record("trace_id", trace_id(deployment));
}

/// Files `span` (not yet entered) under `deployment`'s trace, as a child of its
/// root span, for the OTLP export.
pub fn join(span: &tracing::Span, deployment: DeploymentId) {
    join_traceparent(span, &traceparent(deployment));
}

/// Files `span` (not yet entered) under the trace a `traceparent` names, as a
/// child of its parent span; a malformed one changes nothing.
#[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
pub fn join_traceparent(span: &tracing::Span, header: &str) {
    #[cfg(feature = "otlp")]
    if let Some((trace, parent)) = parse_traceparent(header) {
        otlp::join(span, trace, parent);
    }
}

/// Links `span` to the span current here: the API's `request` span of the call
/// that made the deployment, which is in its caller's trace when the call
/// carried a `traceparent`, so that the caller's trace leads to the deployment's.
#[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
pub fn link_current(span: &tracing::Span) {
    #[cfg(feature = "otlp")]
    otlp::link_current(span);
}

/// Exports `deployment`'s root span, now that it finished in `state`: from its
/// submission until now.
#[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
pub fn deployment_finished(
    tenant: TenantId,
    deployment: DeploymentId,
    state: DeploymentState,
    release: Option<u32>,
) {
    #[cfg(feature = "otlp")]
    otlp::export_root(tenant, deployment, state, release, root_span_id(deployment));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployments_traceparent_is_w3c_and_names_its_id() {
        let deployment = DeploymentId::generate();
        let header = traceparent(deployment);
        let (trace, parent) = parse_traceparent(&header).expect("a valid traceparent");
        assert_eq!(trace, deployment.0.simple().to_string());
        assert_eq!(parent.len(), 16);
        assert_eq!(header.len(), 55, "{header}");
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some(("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"))
        );
    }
}
