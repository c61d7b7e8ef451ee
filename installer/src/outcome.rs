//! What one step did to one thing on the node.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    /// Ours, with other contents (a new binary, another `--node-config`).
    Updated,
    /// Not ours, replaced because of `--force`.
    Replaced,
    Unchanged,
    Removed,
    /// Nothing to remove.
    Absent,
}

impl Outcome {
    /// Whether a file was written or removed.
    pub fn changed(self) -> bool {
        !matches!(self, Outcome::Unchanged | Outcome::Absent)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Added => "added",
            Outcome::Updated => "updated",
            Outcome::Replaced => "replaced (--force)",
            Outcome::Unchanged => "already present, unchanged",
            Outcome::Removed => "removed",
            Outcome::Absent => "not present, nothing to remove",
        })
    }
}
