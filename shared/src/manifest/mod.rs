//! The manifest: the YAML that declares an app's components (DESIGN.md section 3).
//!
//! [`Manifest::parse`] is the only way in from text: it bounds size, nesting and
//! aliases, checks every rule, and reports every problem it finds with the
//! component, the field and the line and column.

mod error;
mod parse;
#[cfg(test)]
mod tests;
mod validate;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::names::ComponentName;

pub use error::{ManifestError, ManifestErrors};

/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// The most components one manifest may declare.
pub const MAX_COMPONENTS: usize = 500;
/// The deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 32;
/// The only `config-version` this drover understands.
pub const CONFIG_VERSION: &str = "0.1";

/// A validated manifest. Every `wait-for` and `reuse-from` names a component of
/// this manifest, and neither graph has a cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// Always `0.1`.
    #[schema(example = "0.1")]
    pub config_version: String,
    /// Every component, by name (a DNS label).
    #[schema(value_type = BTreeMap<String, Component>)]
    pub components: BTreeMap<ComponentName, Component>,
}

/// One part of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Component {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: ComponentType,
    pub build: Build,
    /// A stable build id (DESIGN.md 5.4): changing it forces a new build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(default)]
    pub run: Run,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub wait_for: Vec<ComponentName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_update: Option<OnUpdate>,
}

/// How a component runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentType {
    /// A long-running service.
    Continuous,
    /// A cron job.
    Scheduled,
    /// Runs to completion.
    OneOff,
}

impl ComponentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentType::Continuous => "continuous",
            ComponentType::Scheduled => "scheduled",
            ComponentType::OneOff => "one-off",
        }
    }
}

/// Where a component's artifact comes from: exactly one of three sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Build {
    /// Built from source.
    Repository {
        repository: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        git_ref: Option<String>,
    },
    /// The artifact of another component's build.
    ReuseFrom {
        #[serde(rename = "reuse-from")]
        #[schema(value_type = String)]
        reuse_from: ComponentName,
    },
    /// A prebuilt image.
    Image { image: String },
}

/// What runs, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Run {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `continuous` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// `continuous` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A 5-field cron expression; `scheduled` only, and required there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// What to do when an external update announces a new artifact (DESIGN.md 5.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnUpdate {
    #[serde(default)]
    pub deploy: bool,
}

/// What decides whether a component must be built again: its source and build id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildInput<'a> {
    pub repository: Option<&'a str>,
    pub git_ref: Option<&'a str>,
    pub image: Option<&'a str>,
    pub build_id: Option<&'a str>,
}

impl Component {
    /// The component's own build input, or `None` when it reuses another's build.
    pub fn build_input(&self) -> Option<BuildInput<'_>> {
        let build_id = self.build_id.as_deref();
        match &self.build {
            Build::Repository {
                repository,
                git_ref,
            } => Some(BuildInput {
                repository: Some(repository),
                git_ref: git_ref.as_deref(),
                image: None,
                build_id,
            }),
            Build::Image { image } => Some(BuildInput {
                repository: None,
                git_ref: None,
                image: Some(image),
                build_id,
            }),
            Build::ReuseFrom { .. } => None,
        }
    }

    /// The component this one reuses the build of, if any.
    pub fn reuse_from(&self) -> Option<&ComponentName> {
        match &self.build {
            Build::ReuseFrom { reuse_from } => Some(reuse_from),
            _ => None,
        }
    }

    /// The component's version: its `build-id` if set, otherwise a hash of its
    /// build input (DESIGN.md 5.4). `None` for a component that reuses a build.
    pub fn version(&self) -> Option<String> {
        if let Some(build_id) = &self.build_id {
            return Some(build_id.clone());
        }
        let input = self.build_input()?;
        let text = serde_json::to_string(&input).unwrap_or_default();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
        Some(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
    }
}

/// A component named for a partial deployment that the manifest does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown component `{name}`: the manifest has {known}")]
pub struct UnknownComponent {
    pub name: String,
    /// The manifest's components, comma-separated.
    pub known: String,
}

impl Manifest {
    /// The components named for a partial deployment (`--component`), each of
    /// which the manifest must have.
    pub fn select<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<ComponentName>, UnknownComponent> {
        names
            .into_iter()
            .map(|name| {
                self.components
                    .keys()
                    .find(|component| component.as_str() == name)
                    .cloned()
                    .ok_or_else(|| UnknownComponent {
                        name: name.to_owned(),
                        known: self
                            .components
                            .keys()
                            .map(ComponentName::as_str)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect()
    }

    /// Follows `reuse-from` hops from `name` to the component that builds the
    /// artifact (`name` itself when it has its own build).
    ///
    /// Validation guarantees the chain ends; the hop count is bounded anyway so
    /// that a manifest built by hand (in a test) cannot loop forever.
    pub fn artifact_source<'a>(&'a self, name: &'a ComponentName) -> &'a ComponentName {
        let mut current = name;
        for _ in 0..=self.components.len() {
            match self.components.get(current).and_then(Component::reuse_from) {
                Some(next) => current = next,
                None => return current,
            }
        }
        current
    }
}

impl Manifest {
    /// Parses and validates a manifest, reporting every problem found.
    pub fn parse(text: &str) -> Result<Manifest, ManifestErrors> {
        parse::parse(text)
    }
}
