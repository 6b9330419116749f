//! Manifest problems: each names where it is (line, column, component, field) and
//! what to do about it.

use std::fmt;

use serde::Serialize;

/// One problem in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    /// 1-based line of the offending node, when known.
    pub line: Option<u64>,
    /// 1-based column of the offending node, when known.
    pub column: Option<u64>,
    /// The component the problem is in, if it is in one.
    pub component: Option<String>,
    /// The field, as a dotted path within the component (or the document), e.g. `build.reuse-from`.
    pub field: Option<String>,
    /// What is wrong, lower-case, no trailing period.
    pub message: String,
}

impl fmt::Display for ManifestError {
    /// `12:5: component `api`, field `run.port`: expected an integer from 1 to 65535, found "http"`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "{line}:{}: ", self.column.unwrap_or(1))?;
        }
        match (&self.component, &self.field) {
            (Some(component), Some(field)) => {
                write!(f, "component `{component}`, field `{field}`: ")?
            }
            (Some(component), None) => write!(f, "component `{component}`: ")?,
            (None, Some(field)) => write!(f, "field `{field}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a manifest, in document order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ManifestError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ManifestErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (idx, error) in self.0.iter().enumerate() {
            if idx > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
