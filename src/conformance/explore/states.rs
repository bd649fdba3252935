//! The state types the alphabet runs with. Every write of an operation adds that operation's
//! unique tag to the state, so the checker can tell from a stored state which writes it holds.

use std::collections::{BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tags a state holds: which writes made it.
pub(super) type Tags = BTreeSet<u32>;

/// Which state type the alphabet runs with; see [`Plan::new`](super::Plan::new) for an
/// example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// A struct: its JSON encoding is canonical.
    Struct,
    /// A `HashMap<String, serde_json::Value>` with a dozen keys: its encoding's key order changes
    /// from one encoding to the next, so bytes say nothing about whether it changed.
    Map,
    /// A struct of floats whose decimal forms are long.
    Floats,
}

impl StateKind {
    /// Every state type.
    pub const ALL: [StateKind; 3] = [StateKind::Struct, StateKind::Map, StateKind::Floats];
}

/// A session state that records which writes made it.
pub(super) trait Tagged: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The state of a new session.
    fn initial() -> Self;
    /// Records the write tagged `tag`.
    fn tag(&mut self, tag: u32);
    /// The tags recorded.
    fn tags(&self) -> Tags;
}

/// The struct state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Plain {
    tags: Vec<u32>,
    last: Option<u32>,
    name: String,
}

impl Tagged for Plain {
    fn initial() -> Self {
        Plain::default()
    }

    fn tag(&mut self, tag: u32) {
        self.tags.push(tag);
        self.last = Some(tag);
        self.name = format!("written by {tag}");
    }

    fn tags(&self) -> Tags {
        self.tags.iter().copied().collect()
    }
}

impl Tagged for HashMap<String, Value> {
    fn initial() -> Self {
        (0..12)
            .map(|i| (format!("key{i}"), Value::from(format!("value {i}"))))
            .collect()
    }

    fn tag(&mut self, tag: u32) {
        self.insert(format!("tag{tag}"), Value::from(tag));
        self.insert("last".to_owned(), Value::from(tag));
    }

    fn tags(&self) -> Tags {
        self.keys()
            .filter_map(|key| key.strip_prefix("tag")?.parse().ok())
            .collect()
    }
}

/// The state with floats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Floats {
    tags: Vec<u32>,
    scores: Vec<f64>,
    ratio: f64,
}

impl Tagged for Floats {
    fn initial() -> Self {
        Floats {
            tags: Vec::new(),
            scores: vec![0.1 + 0.2, 1.0 / 3.0, 1e-7 / 3.0],
            ratio: 2.0_f64.sqrt(),
        }
    }

    fn tag(&mut self, tag: u32) {
        self.tags.push(tag);
        self.scores.push(f64::from(tag) / 7.0 + 0.1);
        self.ratio /= 3.0;
    }

    fn tags(&self) -> Tags {
        self.tags.iter().copied().collect()
    }
}
