//! The rule planner: spreads rules of one type over as many collectors
//! (`<type>:<id>` connections) as the per-connection API limits require.
//! Pure: takes the current assignment, returns the new one and the moves.
//!
//! Stability first: a rule stays on its collector unless that collector is
//! over the limit; only the overflow (the collector's last rules, by key
//! number) and new rules are placed, first-fit into the lowest collector id
//! with room, opening new ids when all are full. So applying a plan touches as
//! few collectors as possible and only those are notified.

use std::collections::{BTreeMap, BTreeSet};

use crate::rules::{Rule, RuleType};

/// Where a rule lives: collector id and key number (`traptor-<type>:<id>:<n>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub id: u32,
    pub n: u64,
}

/// A rule and where it is now (`None`: not stored yet).
#[derive(Debug, Clone)]
pub struct Placed {
    pub rule: Rule,
    pub at: Option<Slot>,
}

/// One rule that moves (or is written for the first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub rule_id: String,
    pub from: Option<Slot>,
    pub to: Slot,
}

/// The result of planning one rule type.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every rule with its slot after the plan.
    pub assignment: Vec<(Rule, Slot)>,
    pub moves: Vec<Move>,
    /// Units (phrases, ids, boxes) per collector after the plan.
    pub load: BTreeMap<u32, usize>,
    /// Collectors whose rules change (to be notified).
    pub changed: BTreeSet<u32>,
    /// The fewest connections the rule set could fit in.
    pub minimum_connections: usize,
}

/// Plan rules of `rule_type` against its per-connection limit.
pub fn plan(rule_type: RuleType, rules: Vec<Placed>) -> Plan {
    plan_with_limit(rules, rule_type.connection_limit())
}

/// [`plan`] with an explicit limit (tests).
pub fn plan_with_limit(rules: Vec<Placed>, limit: usize) -> Plan {
    let mut out = Plan::default();
    let total: usize = rules.iter().map(|p| p.rule.units()).sum();
    out.minimum_connections = total.div_ceil(limit.max(1));

    // Current collectors, rules in key order.
    let mut by_id: BTreeMap<u32, Vec<(Slot, Rule)>> = BTreeMap::new();
    let mut unplaced: Vec<(Option<Slot>, Rule)> = Vec::new();
    for p in rules {
        match p.at {
            Some(s) => by_id.entry(s.id).or_default().push((s, p.rule)),
            None => unplaced.push((None, p.rule)),
        }
    }
    let mut next_n: BTreeMap<u32, u64> = BTreeMap::new();
    for (&id, list) in &mut by_id {
        list.sort_by_key(|(s, _)| s.n);
        let mut used = 0;
        for (slot, rule) in list.drain(..) {
            next_n.entry(id).and_modify(|n| *n = (*n).max(slot.n + 1)).or_insert(slot.n + 1);
            if used + rule.units() <= limit {
                used += rule.units();
                out.assignment.push((rule, slot));
            } else {
                unplaced.push((Some(slot), rule));
            }
        }
        out.load.insert(id, used);
    }
    // Place the overflow and new rules first-fit, opening collectors as needed.
    for (from, rule) in unplaced {
        let units = rule.units();
        let id = match out.load.iter().find(|(_, used)| **used + units <= limit).map(|(id, _)| *id) {
            Some(id) => id,
            None => {
                let id = out.load.keys().next_back().map_or(0, |m| m + 1);
                out.load.insert(id, 0);
                id
            }
        };
        let n = next_n.entry(id).or_insert(0);
        let to = Slot { id, n: *n };
        *n += 1;
        *out.load.entry(id).or_default() += units;
        out.changed.insert(id);
        if let Some(f) = from {
            out.changed.insert(f.id);
        }
        out.moves.push(Move { rule_id: rule.rule_id().to_owned(), from, to });
        out.assignment.push((rule, to));
    }
    out.load.retain(|_, used| *used > 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: usize, t: &str, value: String) -> Rule {
        Rule::from_fields(
            vec![("rule_id".into(), id.to_string()), ("value".into(), value), ("rule_type".into(), t.into())],
            RuleType::Track,
        )
        .expect("valid")
    }

    #[test]
    fn seed_example_needs_three_connections() {
        // 5,500 follow ids and 352 track phrases: 2 follow + 1 track connections.
        let follow: Vec<Placed> =
            (0..5500).map(|i| Placed { rule: rule(i, "follow", (1000 + i).to_string()), at: None }).collect();
        let track: Vec<Placed> =
            (0..352).map(|i| Placed { rule: rule(i, "track", format!("w{i}")), at: None }).collect();
        let f = plan(RuleType::Follow, follow);
        let t = plan(RuleType::Track, track);
        assert_eq!(f.load, BTreeMap::from([(0, 5000), (1, 500)]));
        assert_eq!(t.load, BTreeMap::from([(0, 352)]));
        assert_eq!(f.load.len() + t.load.len(), 3);
        assert_eq!(f.minimum_connections + t.minimum_connections, 3);
    }

    #[test]
    fn only_the_overflow_moves() {
        let placed: Vec<Placed> = (0..5)
            .map(|i| Placed { rule: rule(i, "track", format!("w{i}")), at: Some(Slot { id: 0, n: i as u64 }) })
            .collect();
        let p = plan_with_limit(placed, 3);
        assert_eq!(p.moves.len(), 2);
        assert_eq!(
            p.moves[0],
            Move { rule_id: "3".into(), from: Some(Slot { id: 0, n: 3 }), to: Slot { id: 1, n: 0 } }
        );
        assert_eq!(p.changed, BTreeSet::from([0, 1]));
    }

    #[test]
    fn new_rules_fill_free_room_and_touch_only_that_collector() {
        let mut placed: Vec<Placed> = (0..3)
            .map(|i| Placed { rule: rule(i, "track", format!("w{i}")), at: Some(Slot { id: 0, n: i as u64 }) })
            .collect();
        placed.push(Placed { rule: rule(9, "track", "x".into()), at: Some(Slot { id: 1, n: 0 }) });
        placed.push(Placed { rule: rule(10, "track", "new".into()), at: None });
        let p = plan_with_limit(placed, 3);
        assert_eq!(p.moves, vec![Move { rule_id: "10".into(), from: None, to: Slot { id: 1, n: 1 } }]);
        assert_eq!(p.changed, BTreeSet::from([1]));
    }
}
