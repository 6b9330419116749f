//! A positioned YAML tree: the manifest text read into mappings, sequences and
//! scalars that each remember their line and column, within strict budgets.
//!
//! serde-saphyr does the parsing; [`Node`]'s own `Deserialize` asks it for any
//! value wrapped in [`serde_saphyr::Spanned`], so the checks in `parse.rs` can
//! walk the tree by hand and report every problem with its position instead of
//! stopping at the first one a derived `Deserialize` would meet.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{DuplicateKeyPolicy, Error, MessageFormatter, NonFiniteFloatPolicy, Spanned};

use super::MAX_DEPTH;

/// The most alias (`*name`) uses one manifest may contain.
const MAX_ALIASES: usize = 1_000;
/// The most anchors (`&name`) one manifest may define.
const MAX_ANCHORS: usize = 1_000;
/// The most YAML events all alias uses together may replay. This, not the number
/// of aliases, is what bounds the work: a few aliases of a wide anchor, or nested
/// aliases (a "billion laughs"), would otherwise expand to millions of nodes.
const MAX_REPLAYED_EVENTS: usize = 5_000;
/// The most times one anchor may be used.
const MAX_EXPANSIONS_PER_ANCHOR: usize = 500;
/// The deepest nesting of aliases inside anchored nodes that are themselves replayed.
const MAX_REPLAY_DEPTH: usize = 8;
/// The most YAML nodes (mappings, sequences and scalars) one manifest may have:
/// 100 per component on average, several times what a real one needs. Reading
/// takes up to about 1.7 µs a node, so this, not the size limit, is what keeps a
/// 1 MiB manifest of tiny nodes (`[1,1,1,...]`) within the time budget.
const MAX_NODES: usize = 50_000;

/// A 1-based line and column in the manifest text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pos {
    pub(super) line: u64,
    pub(super) column: u64,
}

/// A YAML node and where it is (for a node replayed by an alias, where the alias is).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Node {
    pub(super) value: Value,
    pub(super) pos: Pos,
}

/// The content of a YAML node, with YAML 1.2 core-schema scalars.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    /// Key and value nodes in document order, duplicates included.
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
}

impl Value {
    /// What the value is, for "expected X, found Y" messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Map(_) => "a mapping",
            Value::Seq(_) => "a sequence",
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
        }
    }
}

/// Why the text is not a YAML tree within budget, with a one-line message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct YamlError {
    pub(super) pos: Option<Pos>,
    pub(super) message: String,
}

/// Reads `text` as one YAML document.
///
/// Booleans are YAML 1.2's (`yes` and `no` stay strings), numbers with leading
/// zeros or underscores stay strings, unknown tags are refused, and duplicate keys
/// are passed through so that the caller reports them with their component.
pub(super) fn load(text: &str) -> Result<Node, YamlError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_documents: 1,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ANCHORS,
            max_nodes: MAX_NODES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            max_alias_expansions_per_anchor: MAX_EXPANSIONS_PER_ANCHOR,
            max_replay_stack_depth: MAX_REPLAY_DEPTH,
        },
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
        reject_unsupported_tags: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|err| YamlError {
        pos: err.location().map(|location| Pos {
            line: location.line(),
            column: location.column(),
        }),
        message: message(&err),
    })
}

/// The one-line message of a serde-saphyr error, without its location (the caller
/// reports that) and in drover's words for the limits drover sets.
fn message(err: &Error) -> String {
    let mut err = err;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = err {
        err = error;
    }
    let text = match err {
        Error::AliasReplayLimitExceeded { .. } => format!(
            "aliases expand to more than {MAX_REPLAYED_EVENTS} YAML events; \
             the alias expansion budget is small"
        ),
        Error::AliasExpansionLimitExceeded { .. } => format!(
            "an anchor is used more than {MAX_EXPANSIONS_PER_ANCHOR} times; \
             the alias expansion budget is small"
        ),
        Error::AliasReplayStackDepthExceeded { .. } => format!(
            "aliases are nested more than {MAX_REPLAY_DEPTH} deep; \
             the alias expansion budget is small"
        ),
        Error::MultipleDocuments { .. } => multiple_documents(),
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => {
                format!("nesting is deeper than {MAX_DEPTH} levels")
            }
            BudgetBreach::Nodes { .. } => {
                format!("more than {MAX_NODES} YAML nodes; the manifest is too large")
            }
            BudgetBreach::Documents { .. } => multiple_documents(),
            BudgetBreach::Aliases { .. } => {
                format!("more than {MAX_ALIASES} aliases; the alias budget is small")
            }
            BudgetBreach::Anchors { .. } => {
                format!("more than {MAX_ANCHORS} anchors; the alias budget is small")
            }
            BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
                "{aliases} aliases of {anchors} anchors are too many; the alias budget is small"
            ),
            _ => serde_saphyr::DefaultMessageFormatter
                .format_message(err)
                .into_owned(),
        },
        _ => serde_saphyr::DefaultMessageFormatter
            .format_message(err)
            .into_owned(),
    };
    // Messages are one line; a scanner message may quote a line break.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn multiple_documents() -> String {
    "a manifest is a single YAML document; remove the second `---`".to_owned()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Content>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value.0,
            pos: Pos {
                line: spanned.referenced.line(),
                column: spanned.referenced.column(),
            },
        })
    }
}

/// A node's content without its position, which the `Spanned` wrapper adds.
struct Content(Value);

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Content, E> {
        Ok(Content(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Content, E> {
        Ok(Content(Value::Int(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Content, E> {
        Ok(Content(Value::Int(v.into())))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Content, E> {
        Ok(Content(Value::Int(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Content, E> {
        Ok(Content(Value::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
        Ok(Content(Value::Str(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
        Ok(Content(Value::Str(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Content(Value::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Content(Value::Map(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u64, column: u64, value: Value) -> Node {
        Node {
            value,
            pos: Pos { line, column },
        }
    }

    fn str(text: &str) -> Value {
        Value::Str(text.to_owned())
    }

    #[test]
    fn keys_and_values_carry_their_positions() {
        let root = load("a: 1\nb:\n  - x\n  - {c: true}\n").expect("valid yaml");
        let expected = at(
            1,
            1,
            Value::Map(vec![
                (at(1, 1, str("a")), at(1, 4, Value::Int(1))),
                (
                    at(2, 1, str("b")),
                    at(
                        3,
                        3,
                        Value::Seq(vec![
                            at(3, 5, str("x")),
                            at(
                                4,
                                5,
                                Value::Map(vec![(at(4, 6, str("c")), at(4, 9, Value::Bool(true)))]),
                            ),
                        ]),
                    ),
                ),
            ]),
        );
        assert_eq!(root, expected);
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let root = load(
            "[yes, no, true, 0.1, '0.1', 007, 1_000, 0x1F, ~, -3, .inf, 18446744073709551615]",
        )
        .expect("valid yaml");
        let Value::Seq(items) = root.value else {
            panic!("expected a sequence, found {root:?}");
        };
        let values: Vec<Value> = items.into_iter().map(|item| item.value).collect();
        assert_eq!(
            values,
            vec![
                str("yes"),
                str("no"),
                Value::Bool(true),
                Value::Float(0.1),
                str("0.1"),
                str("007"),
                str("1_000"),
                Value::Int(31),
                Value::Null,
                Value::Int(-3),
                Value::Float(f64::INFINITY),
                Value::Int(18_446_744_073_709_551_615),
            ]
        );
    }

    #[test]
    fn aliases_are_replayed_at_the_alias() {
        let root = load("a: &x {k: v}\nb: *x\n").expect("valid yaml");
        let Value::Map(entries) = root.value else {
            panic!("expected a mapping, found {root:?}");
        };
        assert_eq!(
            entries[1].1,
            at(
                2,
                4,
                Value::Map(vec![(at(2, 4, str("k")), at(2, 4, str("v")))])
            )
        );
    }

    #[test]
    fn duplicate_keys_are_passed_through() {
        let root = load("a: 1\na: 2\n").expect("valid yaml");
        assert_eq!(
            root.value,
            Value::Map(vec![
                (at(1, 1, str("a")), at(1, 4, Value::Int(1))),
                (at(2, 1, str("a")), at(2, 4, Value::Int(2))),
            ])
        );
    }

    #[test]
    fn errors_are_one_line_with_a_position() {
        let cases = [
            (
                "a: [1, 2\nb: 3\n",
                2,
                2,
                "illegal placement of ':' indicator",
            ),
            ("a: \"open\n", 1, 4, "unclosed quote"),
            ("a: *nope\n", 1, 4, "alias references unknown anchor"),
            (
                "a: 1\n---\nb: 2\n",
                2,
                1,
                "a manifest is a single YAML document; remove the second `---`",
            ),
            ("a: !custom x\n", 1, 12, "unsupported tag `!custom`"),
        ];
        for (text, line, column, message) in cases {
            let expected = YamlError {
                pos: Some(Pos { line, column }),
                message: message.to_owned(),
            };
            assert_eq!(load(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn nodes_are_bounded() {
        let items = vec!["1"; MAX_NODES].join(",");
        let err = load(&format!("[{items}]")).expect_err("too many nodes");
        assert_eq!(
            err.message,
            "more than 50000 YAML nodes; the manifest is too large"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(load(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = load(&deep).expect_err("too deep");
        assert_eq!(err.message, "nesting is deeper than 32 levels");
    }
}
