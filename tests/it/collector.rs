//! A stand-in OTLP/HTTP collector (for the tests built with `--features otlp`):
//! it decodes and keeps every span drover exports to it.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// One exported span and the process that exported it.
#[derive(Clone, Debug)]
pub(crate) struct Exported {
    pub(crate) pid: i64,
    pub(crate) span: Span,
}

impl Exported {
    pub(crate) fn attribute(&self, key: &str) -> Option<String> {
        text(&self.span.attributes, key)
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        AnyValue {
            value: Some(any_value::Value::StringValue(text)),
        } => Some(text.clone()),
        AnyValue {
            value: Some(any_value::Value::IntValue(n)),
        } => Some(n.to_string()),
        _ => None,
    }
}

/// An OTLP/HTTP collector on a free port: it keeps every span it is sent.
pub(crate) struct Collector {
    pub(crate) endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Collector {
    pub(crate) async fn start() -> Collector {
        async fn receive(
            State(spans): State<Arc<Mutex<Vec<Exported>>>>,
            body: Bytes,
        ) -> axum::http::StatusCode {
            let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                return axum::http::StatusCode::BAD_REQUEST;
            };
            let mut spans = spans.lock().expect("the collector's spans");
            for resource in request.resource_spans {
                let pid = resource
                    .resource
                    .as_ref()
                    .and_then(|resource| text(&resource.attributes, "process.pid"))
                    .and_then(|pid| pid.parse().ok())
                    .unwrap_or(0);
                for scope in resource.scope_spans {
                    spans.extend(scope.spans.into_iter().map(|span| Exported { pid, span }));
                }
            }
            axum::http::StatusCode::OK
        }
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("failed to bind the collector");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { endpoint, spans }
    }

    /// Every span received so far.
    pub(crate) fn spans(&self) -> Vec<Exported> {
        self.spans.lock().expect("the collector's spans").clone()
    }

    /// The spans of trace `trace` received so far.
    pub(crate) fn trace(&self, trace: &[u8]) -> Vec<Exported> {
        let spans = self.spans.lock().expect("the collector's spans");
        spans
            .iter()
            .filter(|exported| exported.span.trace_id == trace)
            .cloned()
            .collect()
    }
}
