//! Rules across components: every `reuse-from` and `wait-for` names another
//! component of the manifest, `wait-for` names each at most once, and neither
//! graph has a cycle, so that every `reuse-from` chain ends at a component with
//! its own `repository` or `image`.

use std::collections::{HashMap, HashSet};

use super::ManifestError;
use super::parse::closest;
use super::yaml::Pos;

/// The most unknown names given a "did you mean" hint: each is compared with
/// every component name, so hints for thousands would take seconds.
const MAX_HINTS: usize = 100;
/// The most cycles reported for one graph: a dense `wait-for` graph has a great
/// many, and the first few are enough to start fixing it.
const MAX_CYCLES_REPORTED: usize = 20;

/// What one component refers to, with where each reference is.
#[derive(Debug)]
pub(super) struct Refs<'a> {
    pub(super) name: &'a str,
    /// Set only when `reuse-from` is the component's one build source.
    pub(super) reuse_from: Option<Ref<'a>>,
    pub(super) wait_for: Vec<Ref<'a>>,
}

/// A component name as written in another component.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ref<'a> {
    pub(super) name: &'a str,
    pub(super) pos: Pos,
}

/// Checks the references of `components` (in document order, one per name),
/// adding a problem to `errors` for each rule broken.
pub(super) fn check(components: &[Refs<'_>], errors: &mut Vec<ManifestError>) {
    let mut graph = Graph::new(components);
    let reuse_from: Vec<Vec<(usize, Pos)>> = components
        .iter()
        .map(|component| {
            component
                .reuse_from
                .and_then(|reference| {
                    let field = "build.reuse-from";
                    if reference.name == component.name {
                        let message = "a component cannot reuse its own build";
                        graph.error(reference.pos, component.name, field, message.to_owned());
                        return None;
                    }
                    graph.resolve(component.name, field, reference)
                })
                .into_iter()
                .collect()
        })
        .collect();
    graph.report_cycles(&reuse_from, "build.reuse-from", "reuse-from");

    let wait_for: Vec<Vec<(usize, Pos)>> = components
        .iter()
        .map(|component| {
            let mut seen = HashSet::new();
            let mut edges = Vec::new();
            for reference in &component.wait_for {
                if reference.name == component.name {
                    let message = "a component cannot wait for itself".to_owned();
                    graph.error(reference.pos, component.name, "wait-for", message);
                } else if !seen.insert(reference.name) {
                    let message = format!("`{}` is listed more than once", reference.name);
                    graph.error(reference.pos, component.name, "wait-for", message);
                } else if let Some(edge) = graph.resolve(component.name, "wait-for", *reference) {
                    edges.push(edge);
                }
            }
            edges
        })
        .collect();
    graph.report_cycles(&wait_for, "wait-for", "wait-for");
    errors.append(&mut graph.errors);
}

/// The components by name, with the problems found so far.
struct Graph<'c, 'a> {
    components: &'c [Refs<'a>],
    index: HashMap<&'a str, usize>,
    /// Suggestions already computed, by unknown name.
    hints: HashMap<&'a str, Option<&'a str>>,
    errors: Vec<ManifestError>,
}

impl<'c, 'a> Graph<'c, 'a> {
    fn new(components: &'c [Refs<'a>]) -> Self {
        let index = components
            .iter()
            .enumerate()
            .map(|(idx, component)| (component.name, idx))
            .collect();
        Graph {
            components,
            index,
            hints: HashMap::new(),
            errors: Vec::new(),
        }
    }

    fn error(&mut self, pos: Pos, component: &str, field: &str, message: String) {
        self.errors.push(ManifestError {
            line: Some(pos.line),
            column: Some(pos.column),
            component: Some(component.to_owned()),
            field: Some(field.to_owned()),
            message,
        });
    }

    /// The index of the component `reference` names, or a problem saying it has none.
    fn resolve(&mut self, from: &str, field: &str, reference: Ref<'a>) -> Option<(usize, Pos)> {
        if let Some(idx) = self.index.get(reference.name) {
            return Some((*idx, reference.pos));
        }
        let hint = match self.hints.get(reference.name) {
            Some(hint) => *hint,
            None if self.hints.len() < MAX_HINTS => {
                let names = self.components.iter().map(|component| component.name);
                let hint = closest(reference.name, names);
                self.hints.insert(reference.name, hint);
                hint
            }
            None => None,
        };
        let message = match hint {
            Some(near) => format!(
                "unknown component `{}` (did you mean `{near}`?)",
                reference.name
            ),
            None => format!("unknown component `{}`", reference.name),
        };
        self.error(reference.pos, from, field, message);
        None
    }

    /// Reports the cycles of a graph given as edges (target, position of the
    /// reference) per component: each once, starting at its first component in
    /// document order, e.g. `wait-for cycle: a -> b -> a`.
    fn report_cycles(&mut self, edges: &[Vec<(usize, Pos)>], field: &str, what: &str) {
        let (cycles, n_more) = find_cycles(edges, MAX_CYCLES_REPORTED);
        let mut last = None;
        for cycle in &cycles {
            let (Some(&first), Some(&second)) = (cycle.first(), cycle.get(1).or(cycle.first()))
            else {
                continue;
            };
            let Some(pos) = edges[first]
                .iter()
                .find(|(to, _)| *to == second)
                .map(|(_, pos)| *pos)
            else {
                continue;
            };
            let names: Vec<&str> = cycle
                .iter()
                .chain([&first])
                .map(|idx| self.components[*idx].name)
                .collect();
            let message = format!("{what} cycle: {}", names.join(" -> "));
            self.error(pos, self.components[first].name, field, message);
            last = Some((pos, first));
        }
        if let Some((pos, first)) = last
            && n_more > 0
        {
            let message = format!("{n_more} more {what} cycles are not shown");
            self.error(pos, self.components[first].name, field, message);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    OnPath,
    Done,
}

/// The first `limit` cycles a depth-first search meets, each rotated to start at
/// its smallest index, and how many more there are. There is one per back edge,
/// and no two are the same: they differ at least in that edge.
fn find_cycles(edges: &[Vec<(usize, Pos)>], limit: usize) -> (Vec<Vec<usize>>, usize) {
    let mut visit = vec![Visit::New; edges.len()];
    // Where a node is on the path, while it is on it.
    let mut depth_of = vec![0; edges.len()];
    let mut cycles = Vec::new();
    let mut n_more = 0;
    for root in 0..edges.len() {
        if visit[root] != Visit::New {
            continue;
        }
        // The path from `root`, each node with the index of its next edge to follow.
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        visit[root] = Visit::OnPath;
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            let Some(&(to, _)) = edges[node].get(*next) else {
                visit[node] = Visit::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match visit[to] {
                Visit::New => {
                    visit[to] = Visit::OnPath;
                    depth_of[to] = path.len();
                    path.push((to, 0));
                }
                Visit::OnPath if cycles.len() < limit => {
                    let mut cycle: Vec<usize> =
                        path[depth_of[to]..].iter().map(|(idx, _)| *idx).collect();
                    let lowest = (0..cycle.len())
                        .min_by_key(|pos| cycle[*pos])
                        .unwrap_or_default();
                    cycle.rotate_left(lowest);
                    cycles.push(cycle);
                }
                Visit::OnPath => n_more += 1,
                Visit::Done => {}
            }
        }
    }
    (cycles, n_more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(adjacency: &[&[usize]]) -> Vec<Vec<(usize, Pos)>> {
        adjacency
            .iter()
            .map(|targets| {
                targets
                    .iter()
                    .map(|to| (*to, Pos { line: 1, column: 1 }))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn acyclic_graphs_have_no_cycles() {
        assert_eq!(find_cycles(&graph(&[]), 5), (vec![], 0));
        assert_eq!(find_cycles(&graph(&[&[1, 2], &[2], &[]]), 5), (vec![], 0));
    }

    #[test]
    fn each_cycle_is_found_once_from_its_lowest_member() {
        assert_eq!(find_cycles(&graph(&[&[1], &[0]]), 5), (vec![vec![0, 1]], 0));
        assert_eq!(
            find_cycles(&graph(&[&[], &[2], &[3], &[1]]), 5),
            (vec![vec![1, 2, 3]], 0)
        );
        // Entered at 2 (from 0), the cycle 1 -> 2 -> 1 is still listed from 1.
        assert_eq!(
            find_cycles(&graph(&[&[2], &[2], &[1]]), 5),
            (vec![vec![1, 2]], 0)
        );
        // Two cycles through 0: 0 -> 1 -> 0 and 0 -> 1 -> 2 -> 0.
        assert_eq!(
            find_cycles(&graph(&[&[1], &[0, 2], &[0]]), 5),
            (vec![vec![0, 1], vec![0, 1, 2]], 0)
        );
        assert_eq!(
            find_cycles(&graph(&[&[1], &[0, 2], &[0]]), 1),
            (vec![vec![0, 1]], 1)
        );
    }

    #[test]
    fn a_dense_graph_is_searched_quickly() {
        // Every component waits for every other one: 124750 back edges.
        let n = 500;
        let others: Vec<Vec<usize>> = (0..n)
            .map(|from| (0..n).filter(|to| *to != from).collect())
            .collect();
        let adjacency: Vec<&[usize]> = others.iter().map(Vec::as_slice).collect();
        let (cycles, n_more) = find_cycles(&graph(&adjacency), MAX_CYCLES_REPORTED);
        assert_eq!(cycles.len(), MAX_CYCLES_REPORTED);
        assert_eq!(cycles.len() + n_more, n * (n - 1) / 2);
    }
}
