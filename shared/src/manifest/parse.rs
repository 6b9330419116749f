//! Parsing and validation: from manifest text to a [`Manifest`], or to every
//! problem found, each with its line, column, component and field.
//!
//! The text is first read into a positioned tree (`yaml.rs`) within strict
//! budgets. The tree is then walked by hand here, so that each unknown key,
//! wrong type, missing field and per-component rule becomes one
//! [`ManifestError`] instead of the first one stopping everything. Rules across
//! components (references and cycles) are in `validate.rs`.

use std::collections::{BTreeMap, HashMap};

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

use super::validate::{self, Ref, Refs};
use super::yaml::{self, Node, Pos, Value};
use super::{
    Build, CONFIG_VERSION, Component, ComponentType, MAX_COMPONENTS, MAX_MANIFEST_BYTES, Manifest,
    ManifestError, ManifestErrors, OnUpdate, Run,
};
use crate::names::{ComponentName, check_dns_label};

const TOP_FIELDS: &[&str] = &["config-version", "components"];
const COMPONENT_FIELDS: &[&str] = &[
    "description",
    "type",
    "build",
    "build-id",
    "run",
    "wait-for",
    "on-update",
];
const BUILD_FIELDS: &[&str] = &["repository", "ref", "reuse-from", "image"];
/// Where an artifact comes from; a build names exactly one.
const BUILD_SOURCES: &[&str] = &["repository", "reuse-from", "image"];
const RUN_FIELDS: &[&str] = &["command", "replicas", "port", "env", "schedule"];
const ON_UPDATE_FIELDS: &[&str] = &["deploy"];
const TYPES: [ComponentType; 3] = [
    ComponentType::Continuous,
    ComponentType::Scheduled,
    ComponentType::OneOff,
];
const CRON_FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

pub(super) fn parse(text: &str) -> Result<Manifest, ManifestErrors> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestErrors(vec![ManifestError {
            line: None,
            column: None,
            component: None,
            field: None,
            message: format!(
                "manifest is {} bytes; at most {MAX_MANIFEST_BYTES} are allowed",
                text.len()
            ),
        }]));
    }
    let root = yaml::load(text).map_err(|err| {
        ManifestErrors(vec![ManifestError {
            line: err.pos.map(|pos| pos.line),
            column: err.pos.map(|pos| pos.column),
            component: err.pos.and_then(|pos| component_near(text, pos.line)),
            field: None,
            message: err.message,
        }])
    })?;
    let mut checker = Checker::default();
    let manifest = checker.document(&root);
    let mut errors = checker.errors;
    match manifest {
        Some(manifest) if errors.is_empty() => Ok(manifest),
        _ => {
            if errors.is_empty() {
                // Every path that leaves a piece out reports why; this is a backstop
                // so that an incomplete manifest is never returned.
                errors.push(ManifestError {
                    line: Some(root.pos.line),
                    column: Some(root.pos.column),
                    component: None,
                    field: None,
                    message: "manifest could not be read completely".to_owned(),
                });
            }
            errors.sort_by_key(|error| (error.line, error.column));
            Err(ManifestErrors(errors))
        }
    }
}

/// The candidate closest to `word`, if one is close enough to be what was meant.
pub(super) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let mut best: Option<(f64, &'c str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(word, candidate);
        let edits = strsim::levenshtein(word, candidate);
        // A couple of edits is a typo only if it leaves something of the word.
        let close = score > 0.8 || (edits <= 2 && edits < word.len().min(candidate.len()));
        if close && best.is_none_or(|(best_score, _)| score > best_score) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// `a`, `a` and `b`, `a`, `b` and `c`: names in backticks, for messages.
fn list(names: &[&str], last_sep: &str) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {last_sep} {last}", rest.join(", ")),
    }
}

/// `found X`, advising quotes for a scalar YAML did not read as a string.
fn found(value: &Value) -> String {
    match value {
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            format!("found {}; quote it", value.kind())
        }
        _ => format!("found {}", value.kind()),
    }
}

/// One entry of a mapping whose key is a string.
#[derive(Clone, Copy, Debug)]
struct Entry<'n> {
    key: &'n str,
    key_pos: Pos,
    value: &'n Node,
}

/// The known fields of a mapping, each the first of its name.
#[derive(Debug)]
struct Fields<'n>(Vec<Entry<'n>>);

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<Entry<'n>> {
        self.0.iter().find(|entry| entry.key == name).copied()
    }
}

/// Walks the tree, collecting every problem.
#[derive(Debug, Default)]
struct Checker {
    errors: Vec<ManifestError>,
}

impl Checker {
    fn error(
        &mut self,
        pos: Pos,
        component: Option<&str>,
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        self.errors.push(ManifestError {
            line: Some(pos.line),
            column: Some(pos.column),
            component: component.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    fn document(&mut self, root: &Node) -> Option<Manifest> {
        let entries = match &root.value {
            Value::Map(entries) => entries,
            Value::Null => {
                self.error(
                    root.pos,
                    None,
                    None,
                    "the manifest is empty; expected `config-version` and `components`",
                );
                return None;
            }
            other => {
                self.error(
                    root.pos,
                    None,
                    None,
                    format!(
                        "expected a mapping with `config-version` and `components`, found {}",
                        other.kind()
                    ),
                );
                return None;
            }
        };
        let fields = self.fields(entries, None, None, TOP_FIELDS);
        let config_version = match fields.get("config-version") {
            Some(entry) => self.config_version(entry.value),
            None => {
                self.error(
                    root.pos,
                    None,
                    None,
                    format!(
                        "missing field `config-version` (this drover supports `{CONFIG_VERSION}`)"
                    ),
                );
                None
            }
        };
        let components = match fields.get("components") {
            Some(entry) => self.components(entry),
            None => {
                self.error(root.pos, None, None, "missing field `components`");
                None
            }
        };
        Some(Manifest {
            config_version: config_version?,
            components: components?,
        })
    }

    fn config_version(&mut self, node: &Node) -> Option<String> {
        let given = match &node.value {
            Value::Str(text) => text.clone(),
            Value::Float(number) => number.to_string(),
            Value::Int(number) => number.to_string(),
            other => {
                self.error(
                    node.pos,
                    None,
                    Some("config-version"),
                    format!("expected `{CONFIG_VERSION}`, found {}", other.kind()),
                );
                return None;
            }
        };
        if given == CONFIG_VERSION {
            return Some(given);
        }
        self.error(
            node.pos,
            None,
            Some("config-version"),
            format!(
                "unsupported config version `{given}`; this drover supports `{CONFIG_VERSION}`"
            ),
        );
        None
    }

    fn components(&mut self, entry: Entry<'_>) -> Option<BTreeMap<ComponentName, Component>> {
        let map = self.map(entry.value, None, Some("components"))?;
        if map.is_empty() {
            self.error(
                entry.key_pos,
                None,
                Some("components"),
                "must declare at least one component",
            );
            return None;
        }
        let entries = self.entries(map, None, Some("components"), "component");
        if entries.len() > MAX_COMPONENTS {
            self.error(
                entry.key_pos,
                None,
                Some("components"),
                format!(
                    "declares {} components; at most {MAX_COMPONENTS} are allowed",
                    entries.len()
                ),
            );
        }
        let mut all_refs = Vec::with_capacity(entries.len());
        let mut built = Vec::with_capacity(entries.len());
        for entry in &entries {
            let (component, refs) = self.component(*entry);
            built.push((entry.key, component));
            all_refs.push(refs);
        }
        validate::check(&all_refs, &mut self.errors);
        built
            .into_iter()
            .map(|(name, component)| Some((ComponentName::new(name).ok()?, component?)))
            .collect()
    }

    /// Checks one component; returns it if it could be built, and what it refers to.
    fn component<'n>(&mut self, entry: Entry<'n>) -> (Option<Component>, Refs<'n>) {
        let name = entry.key;
        let here = Some(name);
        if let Err(err) = check_dns_label(name) {
            self.error(entry.key_pos, here, None, format!("name {err}"));
        }
        let mut refs = Refs {
            name,
            reuse_from: None,
            wait_for: Vec::new(),
        };
        let Some(map) = self.map(entry.value, here, None) else {
            return (None, refs);
        };
        let fields = self.fields(map, here, None, COMPONENT_FIELDS);

        let description = fields
            .get("description")
            .and_then(|field| self.string(field.value, here, "description"))
            .map(str::to_owned);
        let kind = match fields.get("type") {
            Some(field) => self.component_type(field.value, here),
            None => {
                self.error(entry.key_pos, here, None, "missing field `type`");
                None
            }
        };
        let build = match fields.get("build") {
            Some(field) => self.build(field, here, &mut refs),
            None => {
                self.error(entry.key_pos, here, None, "missing field `build`");
                None
            }
        };
        let build_id = fields
            .get("build-id")
            .and_then(|field| self.text(field.value, here, "build-id"));
        let run = match fields.get("run") {
            Some(field) => self.run(field, here, kind),
            None => {
                if kind == Some(ComponentType::Scheduled) {
                    self.error(
                        entry.key_pos,
                        here,
                        None,
                        "missing field `run` (a `scheduled` component needs `run.schedule`)",
                    );
                }
                Some(Run::default())
            }
        };
        if let Some(field) = fields.get("wait-for") {
            self.wait_for(field.value, here, &mut refs);
        }
        let on_update = match fields.get("on-update") {
            Some(field) => self.on_update(field.value, here),
            None => Some(None),
        };

        let wait_for: Option<Vec<ComponentName>> = refs
            .wait_for
            .iter()
            .map(|reference| ComponentName::new(reference.name).ok())
            .collect();
        let component = match (kind, build, run, wait_for, on_update) {
            (Some(kind), Some(build), Some(run), Some(wait_for), Some(on_update)) => {
                Some(Component {
                    description,
                    kind,
                    build,
                    build_id,
                    run,
                    wait_for,
                    on_update,
                })
            }
            _ => None,
        };
        (component, refs)
    }

    fn component_type(&mut self, node: &Node, here: Option<&str>) -> Option<ComponentType> {
        let names: Vec<&str> = TYPES.iter().map(|kind| kind.as_str()).collect();
        let Value::Str(given) = &node.value else {
            self.error(
                node.pos,
                here,
                Some("type"),
                format!(
                    "expected one of {}, found {}",
                    list(&names, "or"),
                    node.value.kind()
                ),
            );
            return None;
        };
        if let Some(kind) = TYPES.into_iter().find(|kind| kind.as_str() == given) {
            return Some(kind);
        }
        let message = match closest(given, names.iter().copied()) {
            Some(near) => format!("unknown type `{given}` (did you mean `{near}`?)"),
            None => format!("unknown type `{given}`; expected {}", list(&names, "or")),
        };
        self.error(node.pos, here, Some("type"), message);
        None
    }

    fn build<'n>(
        &mut self,
        entry: Entry<'n>,
        here: Option<&str>,
        refs: &mut Refs<'n>,
    ) -> Option<Build> {
        let map = self.map(entry.value, here, Some("build"))?;
        let fields = self.fields(map, here, Some("build"), BUILD_FIELDS);
        let given: Vec<&str> = BUILD_SOURCES
            .iter()
            .copied()
            .filter(|source| fields.get(source).is_some())
            .collect();
        let mut values = BTreeMap::new();
        for source in &given {
            if let Some(field) = fields.get(source) {
                let field_path = format!("build.{source}");
                if let Some(value) = self.string(field.value, here, &field_path) {
                    if value.is_empty() {
                        self.error(
                            field.value.pos,
                            here,
                            Some(&field_path),
                            "must not be empty",
                        );
                    } else {
                        values.insert(*source, (value, field.value.pos));
                    }
                }
            }
        }
        let mut git_ref = None;
        if let Some(field) = fields.get("ref") {
            git_ref = self
                .string(field.value, here, "build.ref")
                .map(str::to_owned);
            if given.len() == 1 && !given.contains(&"repository") {
                self.error(
                    field.key_pos,
                    here,
                    Some("build.ref"),
                    "`ref` is only allowed with `repository`",
                );
            }
        }
        let [source] = given.as_slice() else {
            let sources = list(BUILD_SOURCES, "or");
            let message = if given.is_empty() {
                format!("expected one of {sources}")
            } else {
                format!(
                    "expected exactly one of {sources}, found {}",
                    list(&given, "and")
                )
            };
            self.error(entry.key_pos, here, Some("build"), message);
            return None;
        };
        let (value, pos) = values.get(source).copied()?;
        match *source {
            "repository" => Some(Build::Repository {
                repository: value.to_owned(),
                git_ref,
            }),
            "reuse-from" => {
                refs.reuse_from = Some(Ref { name: value, pos });
                Some(Build::ReuseFrom {
                    reuse_from: ComponentName::new(value).ok()?,
                })
            }
            _ => Some(Build::Image {
                image: value.to_owned(),
            }),
        }
    }

    fn run(
        &mut self,
        entry: Entry<'_>,
        here: Option<&str>,
        kind: Option<ComponentType>,
    ) -> Option<Run> {
        let map = self.map(entry.value, here, Some("run"))?;
        let fields = self.fields(map, here, Some("run"), RUN_FIELDS);
        let mut run = Run {
            command: fields
                .get("command")
                .and_then(|field| self.string(field.value, here, "run.command"))
                .map(str::to_owned),
            ..Run::default()
        };
        let continuous = kind.is_none_or(|kind| kind == ComponentType::Continuous);
        let scheduled = kind.is_none_or(|kind| kind == ComponentType::Scheduled);
        for (name, field) in [
            ("replicas", fields.get("replicas")),
            ("port", fields.get("port")),
        ] {
            if let (Some(field), Some(kind)) = (field, kind)
                && !continuous
            {
                self.error(
                    field.key_pos,
                    here,
                    Some(&format!("run.{name}")),
                    format!(
                        "`{name}` is only allowed for `continuous` components, not `{}`",
                        kind.as_str()
                    ),
                );
            }
        }
        if continuous {
            if let Some(field) = fields.get("replicas") {
                let replicas = self.integer(field.value, here, "run.replicas", 1, u32::MAX.into());
                run.replicas = replicas.and_then(|replicas| u32::try_from(replicas).ok());
            }
            if let Some(field) = fields.get("port") {
                let port = self.integer(field.value, here, "run.port", 1, u16::MAX.into());
                run.port = port.and_then(|port| u16::try_from(port).ok());
            }
        }
        if let Some(field) = fields.get("env") {
            run.env = self.env(field.value, here);
        }
        match (fields.get("schedule"), kind) {
            (Some(field), Some(kind)) if !scheduled => self.error(
                field.key_pos,
                here,
                Some("run.schedule"),
                format!(
                    "`schedule` is only allowed for `scheduled` components, not `{}`",
                    kind.as_str()
                ),
            ),
            (Some(field), _) => {
                let schedule = self.string(field.value, here, "run.schedule")?;
                if let Some(problem) = cron_problem(schedule) {
                    self.error(field.value.pos, here, Some("run.schedule"), problem);
                    return None;
                }
                run.schedule = Some(schedule.to_owned());
            }
            (None, Some(ComponentType::Scheduled)) => self.error(
                entry.key_pos,
                here,
                Some("run"),
                "missing field `schedule` (required for `scheduled` components)",
            ),
            (None, _) => {}
        }
        Some(run)
    }

    fn env(&mut self, node: &Node, here: Option<&str>) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(map) = self.map(node, here, Some("run.env")) else {
            return env;
        };
        for entry in self.entries(map, here, Some("run.env"), "variable") {
            if !is_env_name(entry.key) {
                self.error(
                    entry.key_pos,
                    here,
                    Some("run.env"),
                    format!(
                        "invalid environment variable name `{}`: use letters, digits and `_`, \
                         and do not start with a digit",
                        entry.key
                    ),
                );
            }
            if let Some(value) = self.text(entry.value, here, &format!("run.env.{}", entry.key)) {
                env.insert(entry.key.to_owned(), value);
            }
        }
        env
    }

    fn wait_for<'n>(&mut self, node: &'n Node, here: Option<&str>, refs: &mut Refs<'n>) {
        let items = match &node.value {
            Value::Seq(items) => items,
            Value::Str(name) => {
                self.error(
                    node.pos,
                    here,
                    Some("wait-for"),
                    format!(
                        "expected a sequence of component names, found a string; write `[{name}]`"
                    ),
                );
                return;
            }
            other => {
                self.error(
                    node.pos,
                    here,
                    Some("wait-for"),
                    format!("expected a sequence of component names, {}", found(other)),
                );
                return;
            }
        };
        for item in items {
            match &item.value {
                Value::Str(name) => refs.wait_for.push(Ref {
                    name,
                    pos: item.pos,
                }),
                other => self.error(
                    item.pos,
                    here,
                    Some("wait-for"),
                    format!("expected a component name, {}", found(other)),
                ),
            }
        }
    }

    fn on_update(&mut self, node: &Node, here: Option<&str>) -> Option<Option<OnUpdate>> {
        let map = self.map(node, here, Some("on-update"))?;
        let fields = self.fields(map, here, Some("on-update"), ON_UPDATE_FIELDS);
        let deploy = match fields.get("deploy") {
            None => false,
            Some(field) => match &field.value.value {
                Value::Bool(deploy) => *deploy,
                Value::Str(_) => {
                    self.error(
                        field.value.pos,
                        here,
                        Some("on-update.deploy"),
                        "expected a boolean, found a string; write `true` or `false`",
                    );
                    return None;
                }
                other => {
                    self.error(
                        field.value.pos,
                        here,
                        Some("on-update.deploy"),
                        format!("expected a boolean, found {}", other.kind()),
                    );
                    return None;
                }
            },
        };
        Some(Some(OnUpdate { deploy }))
    }

    /// The entries of a mapping with string keys, the first of each key only;
    /// reports other keys and repeated ones. `noun` says what the keys name.
    fn entries<'n>(
        &mut self,
        map: &'n [(Node, Node)],
        here: Option<&str>,
        field: Option<&str>,
        noun: &str,
    ) -> Vec<Entry<'n>> {
        let mut first_lines: HashMap<&str, u64> = HashMap::with_capacity(map.len());
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map {
            let Value::Str(name) = &key.value else {
                self.error(
                    key.pos,
                    here,
                    field,
                    format!("expected a string as a key, {}", found(&key.value)),
                );
                continue;
            };
            if let Some(first_line) = first_lines.get(name.as_str()) {
                self.error(
                    key.pos,
                    here,
                    field,
                    format!("duplicate {noun} `{name}` (first given on line {first_line})"),
                );
                continue;
            }
            first_lines.insert(name, key.pos.line);
            entries.push(Entry {
                key: name,
                key_pos: key.pos,
                value,
            });
        }
        entries
    }

    /// The known fields of a mapping; reports unknown ones, with a hint when one is close.
    fn fields<'n>(
        &mut self,
        map: &'n [(Node, Node)],
        here: Option<&str>,
        field: Option<&str>,
        known: &[&str],
    ) -> Fields<'n> {
        let mut fields = Vec::with_capacity(map.len());
        for entry in self.entries(map, here, field, "field") {
            if known.contains(&entry.key) {
                fields.push(entry);
                continue;
            }
            let message = match closest(entry.key, known.iter().copied()) {
                Some(near) => format!("unknown field `{}` (did you mean `{near}`?)", entry.key),
                None => format!(
                    "unknown field `{}`; expected {}",
                    entry.key,
                    list(known, "or")
                ),
            };
            self.error(entry.key_pos, here, field, message);
        }
        Fields(fields)
    }

    fn map<'n>(
        &mut self,
        node: &'n Node,
        here: Option<&str>,
        field: Option<&str>,
    ) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            other => {
                self.error(
                    node.pos,
                    here,
                    field,
                    format!("expected a mapping, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn string<'n>(&mut self, node: &'n Node, here: Option<&str>, field: &str) -> Option<&'n str> {
        match &node.value {
            Value::Str(text) => Some(text),
            other => {
                self.error(
                    node.pos,
                    here,
                    Some(field),
                    format!("expected a string, {}", found(other)),
                );
                None
            }
        }
    }

    /// A string, or an integer taken as its decimal digits (it loses nothing).
    fn text(&mut self, node: &Node, here: Option<&str>, field: &str) -> Option<String> {
        match &node.value {
            Value::Int(number) => Some(number.to_string()),
            _ => self.string(node, here, field).map(str::to_owned),
        }
    }

    fn integer(
        &mut self,
        node: &Node,
        here: Option<&str>,
        field: &str,
        min: i128,
        max: i128,
    ) -> Option<i128> {
        match node.value {
            Value::Int(number) if (min..=max).contains(&number) => Some(number),
            Value::Int(number) => {
                self.error(
                    node.pos,
                    here,
                    Some(field),
                    format!("expected an integer from {min} to {max}, found {number}"),
                );
                None
            }
            ref other => {
                self.error(
                    node.pos,
                    here,
                    Some(field),
                    format!("expected an integer, found {}", other.kind()),
                );
                None
            }
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what a shell and every container runtime accept.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why `schedule` is not a 5-field cron expression, if it is not.
fn cron_problem(schedule: &str) -> Option<String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let expected = "expected 5 fields (minute hour day-of-month month day-of-week)";
    if let [nickname] = fields.as_slice()
        && nickname.starts_with('@')
    {
        let five = match *nickname {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => return Some(format!("{expected}, found `{nickname}`")),
        };
        return Some(format!("`{nickname}` is not supported; write `{five}`"));
    }
    if fields.len() != 5 {
        let hint = if fields.len() == 6 {
            "; seconds and years are not supported"
        } else {
            ""
        };
        return Some(format!("{expected}, found {}{hint}", fields.len()));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let err = parser.parse(schedule).err()?;
    // Name the field at fault: try each alone, with `*` for the others.
    for (idx, (field, name)) in fields.iter().zip(CRON_FIELDS).enumerate() {
        let mut alone = ["*"; 5];
        alone[idx] = field;
        if let Err(field_err) = parser.parse(&alone.join(" ")) {
            return Some(format!(
                "invalid {name} `{field}` in cron expression `{schedule}`: {}",
                cron_reason(&field_err)
            ));
        }
    }
    Some(format!(
        "invalid cron expression `{schedule}`: {}",
        cron_reason(&err)
    ))
}

/// croner's message in drover's style: lower-case, no trailing period.
fn cron_reason(err: &CronError) -> String {
    let text = match err {
        CronError::ComponentError(text) | CronError::InvalidPattern(text) => text.clone(),
        CronError::IllegalCharacters(_) => "illegal characters".to_owned(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The component whose key is the last one at or before `line`, by a cheap scan
/// of block-style YAML: the keys indented under a top-level `components:`. Used
/// to name the component a YAML syntax error is in; `None` when unsure.
fn component_near(text: &str, line: u64) -> Option<String> {
    let mut in_components = false;
    let mut indent = None;
    let mut found = None;
    for (raw, number) in text.lines().zip(1u64..) {
        if number > line {
            break;
        }
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let this_indent = raw.len() - trimmed.len();
        if this_indent == 0 {
            in_components = trimmed
                .strip_prefix("components:")
                .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'));
            indent = None;
            found = None;
            continue;
        }
        if !in_components || *indent.get_or_insert(this_indent) != this_indent {
            continue;
        }
        if let Some((key, _)) = trimmed.split_once(':') {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            found = Some(key.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_only() {
        let fields = COMPONENT_FIELDS.iter().copied();
        assert_eq!(closest("wait_for", fields.clone()), Some("wait-for"));
        assert_eq!(closest("tpye", fields.clone()), Some("type"));
        assert_eq!(closest("biuld", fields.clone()), Some("build"));
        assert_eq!(closest("replicas", fields.clone()), None);
        assert_eq!(closest("a", ["b"]), None);
        assert_eq!(closest("apu", ["api", "web"]), Some("api"));
    }

    #[test]
    fn lists_read_as_english() {
        assert_eq!(list(&[], "or"), "");
        assert_eq!(list(&["a"], "or"), "`a`");
        assert_eq!(list(&["a", "b"], "and"), "`a` and `b`");
        assert_eq!(list(&["a", "b", "c"], "or"), "`a`, `b` or `c`");
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "LOG_LEVEL", "a1", "_9"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A.B", "Ä", "A B"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn cron_expressions() {
        for ok in ["00 * * * *", "*/5 1-3 * JAN-MAR MON-FRI", "0 0 1,15 * 0"] {
            assert_eq!(cron_problem(ok), None, "{ok}");
        }
        let cases = [
            (
                "",
                "expected 5 fields (minute hour day-of-month month day-of-week), found 0",
            ),
            (
                "0 0 * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), found 4",
            ),
            (
                "0 0 0 * * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), found 6; \
                 seconds and years are not supported",
            ),
            ("@hourly", "`@hourly` is not supported; write `0 * * * *`"),
            ("@daily", "`@daily` is not supported; write `0 0 * * *`"),
            (
                "@often",
                "expected 5 fields (minute hour day-of-month month day-of-week), found `@often`",
            ),
            (
                "61 * * * *",
                "invalid minute `61` in cron expression `61 * * * *`: number out of bounds",
            ),
            (
                "0 24 * * *",
                "invalid hour `24` in cron expression `0 24 * * *`: number out of bounds",
            ),
            (
                "0 0 * 13 *",
                "invalid month `13` in cron expression `0 0 * 13 *`: number out of bounds",
            ),
            (
                "0 0 * * x",
                "invalid day-of-week `x` in cron expression `0 0 * * x`: illegal characters",
            ),
            (
                "*/0 * * * *",
                "invalid minute `*/0` in cron expression `*/0 * * * *`: step cannot be zero",
            ),
        ];
        for (schedule, expected) in cases {
            assert_eq!(
                cron_problem(schedule).as_deref(),
                Some(expected),
                "{schedule}"
            );
        }
    }

    #[test]
    fn component_near_finds_the_enclosing_component() {
        let text = "config-version: 0.1\n\
                    components:\n\
                    \x20 # a comment\n\
                    \x20 api:\n\
                    \x20   type: continuous\n\
                    \x20 \"db\":\n\
                    \x20   type: [\n\
                    other: 1\n";
        let near = |line| component_near(text, line);
        assert_eq!(near(1), None);
        assert_eq!(near(3), None);
        assert_eq!(near(4).as_deref(), Some("api"));
        assert_eq!(near(5).as_deref(), Some("api"));
        assert_eq!(near(7).as_deref(), Some("db"));
        assert_eq!(near(8), None);
    }
}
