//! Reading what the user hands drover: manifest files and app names.

use std::path::Path;

use anyhow::anyhow;
use shared::manifest::{MAX_MANIFEST_BYTES, Manifest};
use shared::names::AppName;

use crate::Failure;

/// Reads and validates the manifest at `path`; every problem is reported, each as
/// `path:line:column: …`.
pub(crate) fn read_manifest(path: &Path) -> Result<Manifest, Failure> {
    let shown = path.display();
    let bad = |message: String| Failure::BadInput(anyhow!(message));
    let size = std::fs::metadata(path)
        .map_err(|err| bad(format!("failed to read manifest `{shown}`: {err}")))?
        .len();
    // Refuse before reading: the limit protects memory, not just the parser.
    if size > MAX_MANIFEST_BYTES as u64 {
        return Err(bad(format!(
            "manifest `{shown}` is {size} bytes; at most {MAX_MANIFEST_BYTES} are allowed"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|err| bad(format!("failed to read manifest `{shown}`: {err}")))?;
    Manifest::parse(&text).map_err(|errors| {
        let n_errors = errors.len();
        let lines: Vec<String> = errors
            .iter()
            .map(|error| match error.line {
                Some(_) => format!("  {shown}:{error}"),
                None => format!("  {shown}: {error}"),
            })
            .collect();
        let problems = if n_errors == 1 { "problem" } else { "problems" };
        bad(format!(
            "invalid manifest `{shown}` ({n_errors} {problems}):\n{}",
            lines.join("\n")
        ))
    })
}

/// The app name: `--app`, or else the manifest file's stem.
pub(crate) fn app_name(explicit: Option<&str>, manifest: &Path) -> Result<AppName, Failure> {
    let (name, source) = match explicit {
        Some(name) => (name.to_owned(), "--app"),
        None => (
            manifest
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
            "the manifest file name; pass --app NAME to choose another",
        ),
    };
    AppName::new(&name).map_err(|err| {
        Failure::BadInput(anyhow!("invalid app name `{name}` (from {source}): {err}"))
    })
}

/// An app named on the command line (`drover releases APP`).
pub(crate) fn app_argument(name: &str) -> Result<AppName, Failure> {
    AppName::new(name).map_err(|err| Failure::BadInput(anyhow!("invalid app name `{name}`: {err}")))
}
