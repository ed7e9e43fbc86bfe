//! Rules as a streaming API knows them: the server-side rule id of each local
//! rule.
//!
//! X API v2 attributes a post with `matching_rules: [{"id", "tag"}]`. The tag
//! is our `rule_id` when we created the rule, but a rule created by another
//! tool (or a tag edited on the console) carries only the server's id. The rule
//! sync learns `server id → rule_id` from the list and create responses and
//! publishes it here; workers resolve an entry by id first, then by tag.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError, RwLock};

/// Shared between the source that syncs rules and the workers that attribute.
#[derive(Debug, Default)]
pub struct RemoteRuleIds {
    by_id: RwLock<HashMap<String, String>>,
    /// Server ids already reported as resolving to no local rule.
    reported: Mutex<HashSet<String>>,
}

impl RemoteRuleIds {
    /// Replace the whole map with the server's current rules.
    pub fn replace(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        let map: HashMap<String, String> = pairs.into_iter().collect();
        *self.by_id.write().unwrap_or_else(PoisonError::into_inner) = map;
    }

    /// The local rule a server id stands for, handed to `f` (no allocation).
    pub fn with_local<R>(&self, server_id: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
        let map = self.by_id.read().unwrap_or_else(PoisonError::into_inner);
        f(map.get(server_id).map(String::as_str))
    }

    pub fn len(&self) -> usize {
        self.by_id.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True the first time `key` is reported as resolving to no local rule
    /// (so each is logged once); the set is bounded, after which nothing
    /// more is logged.
    pub fn first_report(&self, key: &str) -> bool {
        const MAX_REPORTED: usize = 10_000;
        let mut seen = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_REPORTED || seen.contains(key) {
            return false;
        }
        seen.insert(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_replaces_and_reports_once() {
        let ids = RemoteRuleIds::default();
        ids.replace([("1500".to_owned(), "r1".to_owned())]);
        assert_eq!(ids.with_local("1500", |l| l.map(str::to_owned)), Some("r1".into()));
        ids.replace([("1501".to_owned(), "r2".to_owned())]);
        assert!(!ids.with_local("1500", |l| l.is_some()));
        assert_eq!(ids.len(), 1);
        assert!(ids.first_report("9"));
        assert!(!ids.first_report("9"));
        assert!(ids.first_report("10"));
    }
}
