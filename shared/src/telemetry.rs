//! The one place that installs the tracing subscriber: log lines on stderr and,
//! built with the `otlp` feature and given `DROVER_OTLP_ENDPOINT`, spans exported
//! over OTLP/HTTP (see [`crate::trace`]).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The variable naming the OTLP/HTTP collector spans are exported to.
pub const OTLP_ENDPOINT: &str = "DROVER_OTLP_ENDPOINT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

/// Why the subscriber could not be installed as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{OTLP_ENDPOINT}=`{endpoint}` cannot be used: {reason}; set it to the \
         collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318"
    )]
    Endpoint { endpoint: String, reason: String },
}

/// What must outlive the process's work: dropping it exports the spans still
/// waiting for their batch.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            // A collector that does not answer costs the export's timeout, once.
            let _ = provider.shutdown();
        }
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber, writing to stderr. The filter comes from
/// `DROVER_LOG` (e.g. `debug`, `worker=trace`) or else `default_filter`; the spans
/// exported over OTLP are drover's own at `info` and above, whatever the filter.
/// Calling it twice is harmless: the second call changes nothing.
pub fn init(format: LogFormat, default_filter: &str) -> Result<Telemetry, TelemetryError> {
    let filter =
        EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines: BoxedLayer = if json {
        lines.json().with_filter(filter).boxed()
    } else {
        lines
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed()
    };
    let endpoint = std::env::var(OTLP_ENDPOINT)
        .ok()
        .filter(|url| !url.is_empty());
    let (spans, telemetry) = export(endpoint.as_deref())?;
    let layers: Vec<BoxedLayer> = std::iter::once(lines).chain(spans).collect();
    // `try_init` fails only when a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    if endpoint.is_some() && cfg!(not(feature = "otlp")) {
        tracing::warn!(
            "{OTLP_ENDPOINT} is set but this drover was built without the `otlp` feature: \
             no spans are exported (build with `cargo build --release --features otlp`)"
        );
    }
    Ok(telemetry)
}

/// The layer exporting spans to `endpoint`, and the guard flushing it.
#[cfg(feature = "otlp")]
fn export(endpoint: Option<&str>) -> Result<(Option<BoxedLayer>, Telemetry), TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    let Some(endpoint) = endpoint else {
        return Ok((None, Telemetry::default()));
    };
    let provider =
        crate::trace::otlp::provider(endpoint).map_err(|reason| TelemetryError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        })?;
    // drover's spans only: not those of the libraries it uses, nor the exporter's.
    let ours = Targets::new().with_targets(
        ["drover", "api", "scheduler", "worker", "shared"]
            .map(|crate_| (crate_, LevelFilter::INFO)),
    );
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("drover"))
        .with_filter(ours)
        .boxed();
    Ok((
        Some(layer),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

#[cfg(not(feature = "otlp"))]
fn export(_: Option<&str>) -> Result<(Option<BoxedLayer>, Telemetry), TelemetryError> {
    Ok((None, Telemetry::default()))
}
