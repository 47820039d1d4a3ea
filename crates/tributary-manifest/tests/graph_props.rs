//! Property tests of the dependency graph: waves respect every accepted
//! dependency, hard dependencies are never dropped, and a hard cycle is
//! always found and is a real cycle.

use proptest::prelude::*;
use tributary_manifest::{Dependency, DependencyGraph, DependencyKind};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("E{i:02}")).collect()
}

fn arb_graph() -> impl Strategy<Value = (usize, Vec<(usize, usize, bool)>)> {
    (1usize..12).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec((0..n, 0..n, any::<bool>()), 0..30),
        )
    })
}

fn deps(names: &[String], edges: &[(usize, usize, bool)]) -> Vec<Dependency> {
    edges
        .iter()
        .enumerate()
        .map(|(i, &(from, to, hard))| Dependency {
            from: names[from].clone(),
            to: names[to].clone(),
            rel: format!("r{i}"),
            kind: if hard {
                DependencyKind::Hard
            } else {
                DependencyKind::Soft
            },
        })
        .collect()
}

proptest! {
    #[test]
    fn waves_respect_dependencies((n, edges) in arb_graph()) {
        let names = names(n);
        let deps = deps(&names, &edges);
        match DependencyGraph::build(&names, &deps) {
            Ok(graph) => {
                // every entity in exactly one wave
                let mut seen: Vec<&String> = graph.waves().iter().flatten().collect();
                seen.sort();
                prop_assert_eq!(seen, names.iter().collect::<Vec<_>>());
                // no empty wave
                prop_assert!(graph.waves().iter().all(|w| !w.is_empty()));
                // accepted dependencies point to strictly earlier waves
                for d in graph.dependencies() {
                    prop_assert!(graph.wave_of(&d.from).unwrap() > graph.wave_of(&d.to).unwrap());
                }
                // every hard dependency is accepted; soft ones are accepted or ignored
                for d in &deps {
                    let accepted = graph.dependencies().contains(d);
                    let ignored = graph.ignored().contains(d);
                    match d.kind {
                        DependencyKind::Hard => prop_assert!(accepted),
                        DependencyKind::Soft => prop_assert!(accepted ^ ignored),
                    }
                }
                // waves are as early as possible: an entity in wave k>0 has a dependency in wave k-1
                for (k, wave) in graph.waves().iter().enumerate().skip(1) {
                    for e in wave {
                        prop_assert!(graph.dependencies().iter().any(|d| &d.from == e && graph.wave_of(&d.to) == Some(k - 1)));
                    }
                }
            }
            Err(cycle) => {
                // the reported cycle is closed and made only of hard dependencies given
                prop_assert!(!cycle.cycle.is_empty());
                for pair in cycle.cycle.windows(2) {
                    prop_assert_eq!(&pair[0].to, &pair[1].from);
                }
                prop_assert_eq!(&cycle.cycle.last().unwrap().to, &cycle.cycle[0].from);
                for d in &cycle.cycle {
                    prop_assert_eq!(d.kind, DependencyKind::Hard);
                    prop_assert!(deps.contains(d));
                }
            }
        }
    }

    #[test]
    fn soft_only_graphs_never_fail((n, edges) in arb_graph()) {
        let names = names(n);
        let soft: Vec<(usize, usize, bool)> = edges.into_iter().map(|(a, b, _)| (a, b, false)).collect();
        prop_assert!(DependencyGraph::build(&names, &deps(&names, &soft)).is_ok());
    }

    #[test]
    fn acyclic_hard_graphs_never_fail(n in 1usize..12, raw in prop::collection::vec((0usize..12, 0usize..12), 0..30)) {
        // edges only from higher to lower index: acyclic by construction
        let names = names(n);
        let edges: Vec<(usize, usize, bool)> = raw.into_iter()
            .map(|(a, b)| (a % n, b % n))
            .filter(|(a, b)| a > b)
            .map(|(a, b)| (a, b, true))
            .collect();
        prop_assert!(DependencyGraph::build(&names, &deps(&names, &edges)).is_ok());
    }
}
