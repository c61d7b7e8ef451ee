//! The starting tree, scanned on a thread of its own while the workload
//! already runs (the workload is never delayed by it).

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use diffkeeper_store::{ContentId, ContentRef, RecPath};
use tokio::sync::mpsc::Sender;

use crate::filter::PathFilter;

/// One thing the scan found, or its end.
#[derive(Debug)]
pub enum BaselineItem {
    Entry {
        path: RecPath,
        kind: EntryKind,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// The scan is over; `note` says why it is not a full baseline.
    Done { entries: u64, note: Option<String> },
}

#[derive(Debug)]
pub enum EntryKind {
    /// A regular file and its content.
    File(Vec<u8>),
    /// A regular file's hash and size only (the content budget is spent,
    /// or the file exceeds `max_file_size`).
    FileManifest(ContentRef),
    Dir,
    Symlink(Vec<u8>),
}

/// What to scan and how much content to keep.
#[derive(Clone, Debug)]
pub struct BaselineScan {
    /// Host directory the recorded paths are relative to (a rootfs, or `/`).
    pub root: PathBuf,
    /// Recorded directories to scan below `root` (`/` for everything).
    pub subtrees: Vec<PathBuf>,
    pub filter: PathFilter,
    pub max_file_size: u64,
    /// Content bytes kept in total; past it, files are recorded as hashes.
    pub max_total_bytes: u64,
    /// Store content at all (false: a manifest-only baseline).
    pub with_content: bool,
}

impl BaselineScan {
    /// Scans on a new thread, sending what it finds; the last item is
    /// always `Done` (unless the receiver went away).
    pub fn spawn(self, tx: Sender<BaselineItem>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("diffkeeper-baseline".into())
            .spawn(move || self.run(&tx))
            .expect("spawning the baseline thread")
    }

    fn run(&self, tx: &Sender<BaselineItem>) {
        let mut walk = Walk {
            scan: self,
            tx,
            entries: 0,
            bytes: 0,
            manifest_from: (!self.with_content).then_some(0),
            skipped: 0,
        };
        for subtree in &self.subtrees {
            if walk.visit(subtree).is_err() {
                return; // the receiver is gone: the recording ended
            }
        }
        let mut notes = Vec::new();
        if let Some(at) = walk.manifest_from.filter(|_| self.with_content) {
            notes.push(format!(
                "content budget of {} bytes spent after {at} entries; later files are recorded by hash only",
                self.max_total_bytes
            ));
        }
        if walk.skipped > 0 {
            notes.push(format!("{} entries could not be read", walk.skipped));
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        let _ = tx.blocking_send(BaselineItem::Done {
            entries: walk.entries,
            note,
        });
    }
}

struct Walk<'a> {
    scan: &'a BaselineScan,
    tx: &'a Sender<BaselineItem>,
    entries: u64,
    bytes: u64,
    /// Entry count at which content stopped being kept.
    manifest_from: Option<u64>,
    skipped: u64,
}

struct Gone;

impl Walk<'_> {
    fn visit(&mut self, subtree: &Path) -> Result<(), Gone> {
        let mut stack = vec![subtree.to_path_buf()];
        while let Some(recorded) = stack.pop() {
            let host = self
                .scan
                .root
                .join(recorded.strip_prefix("/").unwrap_or(&recorded));
            let Ok(entries) = std::fs::read_dir(&host) else {
                self.skipped += 1;
                continue;
            };
            let mut names: Vec<_> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for name in names {
                let recorded_child = recorded.join(&name);
                let Ok(path) = RecPath::new(recorded_child.as_os_str().as_bytes()) else {
                    continue;
                };
                let Ok(meta) = std::fs::symlink_metadata(host.join(&name)) else {
                    self.skipped += 1;
                    continue;
                };
                if meta.is_dir() && !self.scan.filter.excludes(&path) {
                    stack.push(recorded_child);
                }
                if !self.scan.filter.accepts(&path) {
                    continue;
                }
                let kind = if meta.is_dir() {
                    EntryKind::Dir
                } else if meta.file_type().is_symlink() {
                    match std::fs::read_link(host.join(&name)) {
                        Ok(target) => EntryKind::Symlink(target.as_os_str().as_bytes().to_vec()),
                        Err(_) => {
                            self.skipped += 1;
                            continue;
                        }
                    }
                } else if meta.is_file() {
                    match self.file(&host.join(&name), meta.len()) {
                        Some(kind) => kind,
                        None => {
                            self.skipped += 1;
                            continue;
                        }
                    }
                } else {
                    continue; // devices, fifos, sockets are not recorded
                };
                self.entries += 1;
                let item = BaselineItem::Entry {
                    path,
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                };
                self.tx.blocking_send(item).map_err(|_| Gone)?;
            }
        }
        Ok(())
    }

    fn file(&mut self, host: &Path, size: u64) -> Option<EntryKind> {
        let keep = self.manifest_from.is_none()
            && size <= self.scan.max_file_size
            && self.bytes + size <= self.scan.max_total_bytes;
        if self.manifest_from.is_none() && !keep && size <= self.scan.max_file_size {
            self.manifest_from = Some(self.entries);
        }
        let file = std::fs::File::open(host).ok()?;
        if keep {
            let mut data = Vec::with_capacity(size as usize);
            file.take(self.scan.max_file_size + 1)
                .read_to_end(&mut data)
                .ok()?;
            self.bytes += data.len() as u64;
            return Some(EntryKind::File(data));
        }
        let mut hasher = blake3::Hasher::new();
        let size = std::io::copy(&mut std::io::BufReader::new(file), &mut hasher).ok()?;
        Some(EntryKind::FileManifest(ContentRef {
            id: ContentId(*hasher.finalize().as_bytes()),
            size,
        }))
    }
}
