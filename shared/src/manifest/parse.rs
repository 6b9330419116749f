//! Parsing and validation (placeholder).
use super::{Manifest, ManifestErrors};

pub(super) fn parse(_text: &str) -> Result<Manifest, ManifestErrors> {
    Err(ManifestErrors(vec![]))
}
