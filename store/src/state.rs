//! The file-system tree a recording describes at one moment, and how each
//! event changes it. The recorder and every reader share this one
//! definition, so "state at T" means the same thing everywhere.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::content::ContentRef;
use crate::event::Op;
use crate::path::RecPath;

/// Permission bits given to a file first seen through a write (no create or
/// baseline entry told us its mode).
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File(ContentRef),
    Dir,
    Symlink(Vec<u8>),
}

impl Node {
    pub fn file(content: ContentRef, mode: u32) -> Node {
        Node::new(NodeKind::File(content), mode)
    }

    pub fn dir(mode: u32) -> Node {
        Node::new(NodeKind::Dir, mode)
    }

    pub fn symlink(target: Vec<u8>) -> Node {
        Node::new(NodeKind::Symlink(target), 0o777)
    }

    fn new(kind: NodeKind, mode: u32) -> Node {
        Node {
            kind,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
        }
    }

    pub fn content(&self) -> Option<&ContentRef> {
        match &self.kind {
            NodeKind::File(c) => Some(c),
            _ => None,
        }
    }
}

/// A tree: every path the recording knows of and what it is. Parent
/// directories that were never recorded themselves are implied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsState {
    entries: BTreeMap<RecPath, Node>,
}

impl FsState {
    pub fn new() -> FsState {
        FsState::default()
    }

    pub fn get(&self, path: &RecPath) -> Option<&Node> {
        self.entries.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RecPath, &Node)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn insert(&mut self, path: RecPath, node: Node) {
        self.entries.insert(path, node);
    }

    /// Applies one operation. Operations on paths the state does not know
    /// (their history was not recorded) follow the rules in
    /// docs/recording-format.md: they never invent content.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Create {
                path,
                mode,
                content,
            } => {
                self.remove_below(path);
                let node = match self.entries.get(path) {
                    Some(old) if matches!(old.kind, NodeKind::File(_)) => Node {
                        kind: NodeKind::File(*content),
                        ..old.clone()
                    },
                    _ => Node::file(*content, *mode),
                };
                self.entries.insert(path.clone(), node);
            }
            Op::Write { path, content } | Op::Truncate { path, content } => {
                self.remove_below(path);
                let node = match self.entries.get(path) {
                    Some(old) if matches!(old.kind, NodeKind::File(_)) => Node {
                        kind: NodeKind::File(*content),
                        ..old.clone()
                    },
                    _ => Node::file(*content, DEFAULT_FILE_MODE),
                };
                self.entries.insert(path.clone(), node);
            }
            Op::Rename { from, to } => self.rename(from, to),
            Op::Unlink { path } | Op::Rmdir { path } => self.remove_tree(path),
            Op::Mkdir { path, mode } => {
                self.remove_tree(path);
                self.entries.insert(path.clone(), Node::dir(*mode));
            }
            Op::Symlink { path, target } => {
                self.remove_tree(path);
                self.entries
                    .insert(path.clone(), Node::symlink(target.clone()));
            }
            Op::Link { existing, new } => {
                let source = self.entries.get(existing).cloned();
                self.remove_tree(new);
                if let Some(node) = source.filter(|n| !matches!(n.kind, NodeKind::Dir)) {
                    self.entries.insert(new.clone(), node);
                }
            }
            Op::Chmod { path, mode } => {
                if let Some(node) = self.entries.get_mut(path) {
                    if !matches!(node.kind, NodeKind::Symlink(_)) {
                        node.mode = mode & 0o7777;
                    }
                }
            }
            Op::Chown { path, uid, gid } => {
                if let Some(node) = self.entries.get_mut(path) {
                    node.uid = *uid;
                    node.gid = *gid;
                }
            }
            Op::SetXattr { .. } | Op::Exec { .. } | Op::Exit { .. } | Op::Gap { .. } => {}
        }
    }

    /// `rename(2)`: `to` (and anything below it) is replaced by `from` and
    /// everything below `from`. An unknown `from` leaves `to` unknown too.
    fn rename(&mut self, from: &RecPath, to: &RecPath) {
        if from == to || to.is_within(from) {
            return;
        }
        let moved = self.take_tree(from);
        self.remove_tree(to);
        for (path, node) in moved {
            self.entries.insert(path.rebased(from, to), node);
        }
    }

    fn take_tree(&mut self, root: &RecPath) -> Vec<(RecPath, Node)> {
        let below: Vec<RecPath> = self.paths_below(root).collect();
        let mut taken = Vec::with_capacity(below.len() + 1);
        if let Some(node) = self.entries.remove(root) {
            taken.push((root.clone(), node));
        }
        for path in below {
            if let Some(node) = self.entries.remove(&path) {
                taken.push((path, node));
            }
        }
        taken
    }

    fn remove_tree(&mut self, root: &RecPath) {
        self.entries.remove(root);
        self.remove_below(root);
    }

    fn remove_below(&mut self, root: &RecPath) {
        let below: Vec<RecPath> = self.paths_below(root).collect();
        for path in below {
            self.entries.remove(&path);
        }
    }

    /// Paths strictly below `root`. They sort right after `root + "/"`.
    fn paths_below<'a>(&'a self, root: &'a RecPath) -> impl Iterator<Item = RecPath> + 'a {
        let mut start = root.as_bytes().to_vec();
        start.push(b'/');
        self.entries
            .range::<[u8], _>((Bound::Included(start.as_slice()), Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(move |p| p.is_within(root))
            .cloned()
    }
}
