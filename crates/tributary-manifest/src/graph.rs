//! The entity dependency graph and its topological waves.
//!
//! A *hard* dependency (an Email belongs to a Person) must be synced first; a
//! *soft* one (a Person's primary Campus) is preferred first but never
//! blocks. Hard cycles are errors naming the cycle; a soft dependency that
//! would close a cycle is ignored (and reported), so soft cycles never fail.
//! Entities land in *waves*: wave `n` holds every entity whose dependencies
//! all sit in earlier waves, and the entities of one wave sync in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

pub use crate::spec::DependencyKind;

/// One dependency: `from` depends on `to` through relationship `rel`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dependency {
    /// The dependent entity.
    pub from: String,
    /// The entity it depends on.
    pub to: String,
    /// The relationship's name.
    pub rel: String,
    /// Hard or soft.
    pub kind: DependencyKind,
}

/// A cycle of hard dependencies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hard dependency cycle: {}", self.describe())]
pub struct CycleError {
    /// The dependencies around the cycle, each one's `to` being the next
    /// one's `from`.
    pub cycle: Vec<Dependency>,
}

impl CycleError {
    /// `A -(rel)-> B -(rel)-> A`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, dep) in self.cycle.iter().enumerate() {
            if i == 0 {
                out.push_str(&dep.from);
            }
            let _ = write!(out, " -[{}]-> {}", dep.rel, dep.to);
        }
        out
    }
}

/// The dependency graph of a manifest's entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyGraph {
    entities: Vec<String>,
    /// Dependencies that order the waves (all hard ones and the soft ones
    /// that close no cycle).
    accepted: Vec<Dependency>,
    /// Soft dependencies dropped because they would close a cycle.
    ignored: Vec<Dependency>,
    waves: Vec<Vec<String>>,
}

impl DependencyGraph {
    /// Builds the graph. Dependencies on entities not in `entities` are
    /// ignored (the manifest validation reports them).
    pub fn build<S: AsRef<str>>(
        entities: &[S],
        dependencies: &[Dependency],
    ) -> Result<Self, CycleError> {
        let names: BTreeSet<String> = entities.iter().map(|e| e.as_ref().to_owned()).collect();
        let entities: Vec<String> = names.iter().cloned().collect();
        let index: BTreeMap<&str, usize> = entities
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let known = |d: &Dependency| {
            index.contains_key(d.from.as_str()) && index.contains_key(d.to.as_str())
        };

        let mut hard: Vec<Dependency> = dependencies
            .iter()
            .filter(|d| d.kind == DependencyKind::Hard && known(d))
            .cloned()
            .collect();
        hard.sort();
        hard.dedup();
        let mut soft: Vec<Dependency> = dependencies
            .iter()
            .filter(|d| d.kind == DependencyKind::Soft && known(d))
            .cloned()
            .collect();
        soft.sort();
        soft.dedup();

        // adjacency: node -> dependencies (edges from dependent to dependency)
        let mut adjacency: Vec<Vec<(usize, usize)>> = vec![Vec::new(); entities.len()];
        for (edge, dep) in hard.iter().enumerate() {
            adjacency[index[dep.from.as_str()]].push((index[dep.to.as_str()], edge));
        }
        if let Some(cycle) = find_cycle(&adjacency) {
            return Err(CycleError {
                cycle: cycle.into_iter().map(|edge| hard[edge].clone()).collect(),
            });
        }

        let mut accepted = hard;
        let mut ignored = Vec::new();
        for dep in soft {
            let from = index[dep.from.as_str()];
            let to = index[dep.to.as_str()];
            if from == to || reaches(&adjacency, to, from) {
                ignored.push(dep);
            } else {
                adjacency[from].push((to, accepted.len()));
                accepted.push(dep);
            }
        }

        // Longest-path layering: a node's wave is one past its deepest
        // dependency. The graph is acyclic, so a depth-first walk ends; it
        // keeps its own stack (a chain of thousands of entities would
        // overflow a thread's).
        let level = levels(&adjacency);
        let mut waves: Vec<Vec<String>> = Vec::new();
        for (node, name) in entities.iter().enumerate() {
            let l = level[node];
            if waves.len() <= l {
                waves.resize_with(l + 1, Vec::new);
            }
            waves[l].push(name.clone());
        }
        Ok(Self {
            entities,
            accepted,
            ignored,
            waves,
        })
    }

    /// Every entity, sorted by name.
    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// The waves, first to last; names sorted within a wave.
    pub fn waves(&self) -> &[Vec<String>] {
        &self.waves
    }

    /// The 0-based wave of an entity.
    pub fn wave_of(&self, entity: &str) -> Option<usize> {
        self.waves
            .iter()
            .position(|wave| wave.iter().any(|e| e == entity))
    }

    /// The dependencies that order the waves.
    pub fn dependencies(&self) -> &[Dependency] {
        &self.accepted
    }

    /// Soft dependencies ignored because they would close a cycle.
    pub fn ignored(&self) -> &[Dependency] {
        &self.ignored
    }

    /// The hard dependencies of `entity` (what must have synced first).
    pub fn hard_dependencies_of<'a>(
        &'a self,
        entity: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.accepted
            .iter()
            .filter(move |d| d.from == entity && d.kind == DependencyKind::Hard)
            .map(|d| d.to.as_str())
    }

    /// A plain-text rendering: the waves, then the dependencies.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, wave) in self.waves.iter().enumerate() {
            let _ = writeln!(out, "wave {}: {}", i + 1, wave.join(", "));
        }
        if !self.accepted.is_empty() {
            out.push_str("\ndependencies:\n");
            for d in &self.accepted {
                let _ = writeln!(
                    out,
                    "  {} -> {} ({}, {})",
                    d.from,
                    d.to,
                    d.rel,
                    kind_name(d.kind)
                );
            }
        }
        if !self.ignored.is_empty() {
            out.push_str("\nignored soft dependencies (they would close a cycle):\n");
            for d in &self.ignored {
                let _ = writeln!(out, "  {} -> {} ({})", d.from, d.to, d.rel);
            }
        }
        out
    }

    /// Mermaid flowchart source; arrows point in sync order (dependency
    /// first), solid for hard, dotted for soft.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, wave) in self.waves.iter().enumerate() {
            let _ = writeln!(out, "  subgraph wave{}[\"wave {}\"]", i + 1, i + 1);
            for e in wave {
                let _ = writeln!(out, "    {e}");
            }
            out.push_str("  end\n");
        }
        for d in &self.accepted {
            match d.kind {
                DependencyKind::Hard => {
                    let _ = writeln!(out, "  {} -->|{}| {}", d.to, d.rel, d.from);
                }
                DependencyKind::Soft => {
                    let _ = writeln!(out, "  {} -.->|{}| {}", d.to, d.rel, d.from);
                }
            }
        }
        out
    }

    /// Graphviz DOT source; the same conventions as [`Self::to_mermaid`].
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph dependencies {\n  rankdir=LR;\n  node [shape=box];\n");
        for (i, wave) in self.waves.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_wave{} {{\n    label=\"wave {}\";",
                i + 1,
                i + 1
            );
            for e in wave {
                let _ = writeln!(out, "    \"{e}\";");
            }
            out.push_str("  }\n");
        }
        for d in &self.accepted {
            let style = match d.kind {
                DependencyKind::Hard => "solid",
                DependencyKind::Soft => "dashed",
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\", style={}];",
                d.to, d.from, d.rel, style
            );
        }
        out.push_str("}\n");
        out
    }
}

fn kind_name(kind: DependencyKind) -> &'static str {
    match kind {
        DependencyKind::Hard => "hard",
        DependencyKind::Soft => "soft",
    }
}

/// Each node's longest path to a node without dependencies, in an acyclic
/// graph.
fn levels(adjacency: &[Vec<(usize, usize)>]) -> Vec<usize> {
    let mut level: Vec<Option<usize>> = vec![None; adjacency.len()];
    for root in 0..adjacency.len() {
        if level[root].is_some() {
            continue;
        }
        // (node, next dependency to look at)
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(dependency, _)) = adjacency[node].get(*next) {
                *next += 1;
                if level[dependency].is_none() {
                    stack.push((dependency, 0));
                }
            } else {
                level[node] = Some(
                    adjacency[node]
                        .iter()
                        .map(|&(dependency, _)| level[dependency].map_or(0, |l| l + 1))
                        .max()
                        .unwrap_or(0),
                );
                stack.pop();
            }
        }
    }
    level.into_iter().map(|l| l.unwrap_or(0)).collect()
}

/// Whether `to` is reachable from `from`.
fn reaches(adjacency: &[Vec<(usize, usize)>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; adjacency.len()];
    let mut stack = vec![from];
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        if std::mem::replace(&mut seen[node], true) {
            continue;
        }
        stack.extend(adjacency[node].iter().map(|&(next, _)| next));
    }
    false
}

/// A cycle as a list of edge indexes, if there is one.
fn find_cycle(adjacency: &[Vec<(usize, usize)>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; adjacency.len()];
    for root in 0..adjacency.len() {
        if color[root] != Color::White {
            continue;
        }
        // Stack of (node, next child position); `path` holds the edges taken.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        let mut path: Vec<usize> = Vec::new();
        color[root] = Color::Grey;
        while let Some(&mut (node, ref mut pos)) = stack.last_mut() {
            if let Some(&(next, edge)) = adjacency[node].get(*pos) {
                *pos += 1;
                match color[next] {
                    Color::White => {
                        color[next] = Color::Grey;
                        path.push(edge);
                        stack.push((next, 0));
                    }
                    Color::Grey => {
                        // The cycle is the part of the path from `next` on.
                        let start = stack.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[start..].to_vec();
                        cycle.push(edge);
                        return Some(cycle);
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(from: &str, to: &str, kind: DependencyKind) -> Dependency {
        Dependency {
            from: from.into(),
            to: to.into(),
            rel: to.to_lowercase(),
            kind,
        }
    }

    #[test]
    fn waves_follow_hard_and_soft_dependencies() {
        let g = DependencyGraph::build(
            &["Person", "Email", "Campus", "Household", "Membership"],
            &[
                dep("Email", "Person", DependencyKind::Hard),
                dep("Person", "Campus", DependencyKind::Soft),
                dep("Membership", "Household", DependencyKind::Hard),
                dep("Membership", "Person", DependencyKind::Hard),
                dep("Household", "Person", DependencyKind::Soft),
            ],
        )
        .unwrap();
        assert_eq!(
            g.waves(),
            &[
                vec!["Campus".to_string()],
                vec!["Person".to_string()],
                vec!["Email".to_string(), "Household".to_string()],
                vec!["Membership".to_string()],
            ]
        );
        assert_eq!(g.wave_of("Membership"), Some(3));
        assert_eq!(
            g.hard_dependencies_of("Membership").collect::<Vec<_>>(),
            ["Household", "Person"]
        );
    }

    #[test]
    fn hard_cycle_is_named() {
        let err = DependencyGraph::build(
            &["A", "B", "C"],
            &[
                dep("A", "B", DependencyKind::Hard),
                dep("B", "C", DependencyKind::Hard),
                dep("C", "A", DependencyKind::Hard),
            ],
        )
        .unwrap_err();
        assert_eq!(err.describe(), "A -[b]-> B -[c]-> C -[a]-> A");
        assert_eq!(
            err.to_string(),
            "hard dependency cycle: A -[b]-> B -[c]-> C -[a]-> A"
        );
    }

    #[test]
    fn soft_cycles_are_broken_not_rejected() {
        let g = DependencyGraph::build(
            &["Person", "Household"],
            &[
                dep("Household", "Person", DependencyKind::Soft),
                dep("Person", "Household", DependencyKind::Soft),
                dep("Person", "Person", DependencyKind::Soft),
            ],
        )
        .unwrap();
        assert_eq!(g.waves().len(), 2);
        assert_eq!(g.ignored().len(), 2);
        assert!(g.to_text().contains("ignored soft dependencies"));
    }

    #[test]
    fn self_hard_dependency_is_a_cycle() {
        let err =
            DependencyGraph::build(&["A"], &[dep("A", "A", DependencyKind::Hard)]).unwrap_err();
        assert_eq!(err.describe(), "A -[a]-> A");
    }

    #[test]
    fn renderings_mention_every_edge() {
        let g = DependencyGraph::build(
            &["Person", "Email", "Campus"],
            &[
                dep("Email", "Person", DependencyKind::Hard),
                dep("Person", "Campus", DependencyKind::Soft),
            ],
        )
        .unwrap();
        let mermaid = g.to_mermaid();
        assert!(mermaid.starts_with("flowchart LR\n"));
        assert!(mermaid.contains("Person -->|person| Email"));
        assert!(mermaid.contains("Campus -.->|campus| Person"));
        let dot = g.to_dot();
        assert!(dot.contains("\"Person\" -> \"Email\" [label=\"person\", style=solid];"));
        assert!(dot.contains("\"Campus\" -> \"Person\" [label=\"campus\", style=dashed];"));
        assert!(dot.trim_end().ends_with('}'));
    }
}
