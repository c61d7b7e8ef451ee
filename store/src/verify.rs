//! Checking a recording end to end: every piece re-hashed, every version
//! rebuilt and re-hashed, every event decoded and its content present.

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;

use crate::content::{ContentId, ContentRef, PieceId};
use crate::error::{contained, Result};
use crate::event::Event;
use crate::format::{self, BASELINE, CONTENT, EVENTS, PIECES};
use crate::meta::BaselineMode;
use crate::path::RecPath;
use crate::recording::{decode_event, Recording};
use crate::state::Node;

/// What `verify` found. `problems` is empty for a sound recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub pieces: u64,
    pub versions: u64,
    pub events: u64,
    pub baseline_entries: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong, located as precisely as the damage allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A stored piece does not match its hash or cannot be decoded.
    Piece { id: String, detail: String },
    /// A file version cannot be rebuilt or fails its hash; `used_by` lists
    /// the events (`#seq path`) and baseline paths that refer to it.
    Version {
        content: ContentId,
        detail: String,
        used_by: Vec<String>,
    },
    /// An event cannot be decoded, or refers to content that is missing.
    Event { seq: u64, detail: String },
    /// A baseline entry cannot be decoded or refers to missing content.
    Baseline { path: String, detail: String },
    /// A table could not be read to the end.
    Table { table: &'static str, detail: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Piece { id, detail } => write!(f, "piece {id}: {detail}"),
            Problem::Version {
                content,
                detail,
                used_by,
            } => write!(
                f,
                "version {content}: {detail}; used by {}",
                used_by.join(", ")
            ),
            Problem::Event { seq, detail } => write!(f, "event #{seq}: {detail}"),
            Problem::Baseline { path, detail } => write!(f, "baseline {path}: {detail}"),
            Problem::Table { table, detail } => write!(f, "table {table}: {detail}"),
        }
    }
}

impl Recording {
    /// Re-hashes every stored piece and version and decodes every event.
    /// Reports every problem found instead of stopping at the first.
    pub fn verify(&self) -> Result<VerifyReport> {
        contained(self.path(), || self.verify_inner())
    }

    fn verify_inner(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let txn = self.begin()?;
        let manifest_only = self.status()?.baseline.mode == BaselineMode::Manifest;

        let reader = self.content_reader()?;
        let pieces = txn.open_table(PIECES).map_err(|e| self.storage(e))?;
        scan(
            &pieces,
            "pieces",
            &mut report,
            |report, key: &[u8; 32], _location: &[u8]| {
                report.pieces += 1;
                if let Err(fault) = reader.pieces().verify(&PieceId(*key)) {
                    report.problems.push(Problem::Piece {
                        id: ContentId(*key).to_string(),
                        detail: fault.to_string(),
                    });
                }
            },
        );

        // Who uses each version, so a bad version is reported with its events.
        let mut users: BTreeMap<ContentId, Vec<String>> = BTreeMap::new();
        let mut referenced: Vec<(ContentRef, String, Option<u64>)> = Vec::new();
        let events = txn.open_table(EVENTS).map_err(|e| self.storage(e))?;
        let mut expected_seq = 0;
        scan(
            &events,
            "events",
            &mut report,
            |report, seq: u64, value: &[u8]| {
                report.events += 1;
                if seq != expected_seq {
                    report.problems.push(Problem::Event {
                        seq,
                        detail: format!(
                            "sequence jumps from #{} to #{seq}",
                            expected_seq.saturating_sub(1)
                        ),
                    });
                }
                expected_seq = seq + 1;
                match decode_event(seq, value) {
                    Ok(event) => {
                        if let Some(content) = event.op.content() {
                            let who = describe(&event);
                            users.entry(content.id).or_default().push(who.clone());
                            referenced.push((*content, who, Some(seq)));
                        }
                    }
                    Err(e) => report.problems.push(Problem::Event {
                        seq,
                        detail: e.to_string(),
                    }),
                }
            },
        );

        let baseline = txn.open_table(BASELINE).map_err(|e| self.storage(e))?;
        scan(
            &baseline,
            "baseline",
            &mut report,
            |report, key: &[u8], value: &[u8]| {
                report.baseline_entries += 1;
                let shown = String::from_utf8_lossy(key).into_owned();
                let decoded = RecPath::new(key.to_vec())
                    .map_err(|e| e.to_string())
                    .and_then(|_| format::from_bytes::<Node>(value));
                match decoded {
                    Ok(node) => {
                        if let Some(content) = node.content() {
                            let who = format!("baseline {shown}");
                            users.entry(content.id).or_default().push(who.clone());
                            if !manifest_only {
                                referenced.push((*content, who, None));
                            }
                        }
                    }
                    Err(detail) => report.problems.push(Problem::Baseline {
                        path: shown,
                        detail,
                    }),
                }
            },
        );

        let contents = txn.open_table(CONTENT).map_err(|e| self.storage(e))?;
        let mut bad_versions = BTreeSet::new();
        scan(
            &contents,
            "content",
            &mut report,
            |report, key: &[u8; 32], value: &[u8]| {
                report.versions += 1;
                let id = ContentId(*key);
                let size = match format::from_bytes::<crate::content::ContentRecord>(value) {
                    Ok(record) => record.size,
                    Err(detail) => {
                        bad_versions.insert(id);
                        report.problems.push(Problem::Version {
                            content: id,
                            detail: format!("record unreadable: {detail}"),
                            used_by: users.get(&id).cloned().unwrap_or_default(),
                        });
                        return;
                    }
                };
                if let Err(e) = reader.read(&ContentRef { id, size }) {
                    bad_versions.insert(id);
                    report.problems.push(Problem::Version {
                        content: id,
                        detail: self.fault(&ContentRef { id, size }, e).to_string(),
                        used_by: users.get(&id).cloned().unwrap_or_default(),
                    });
                }
            },
        );

        for (content, who, seq) in referenced {
            if bad_versions.contains(&content.id) {
                continue;
            }
            let missing = contents
                .get(&content.id.0)
                .map_err(|e| self.storage(e))?
                .is_none();
            if missing {
                let detail = format!("{who}: content {} is not stored", content.id);
                report.problems.push(match seq {
                    Some(seq) => Problem::Event { seq, detail },
                    None => Problem::Baseline { path: who, detail },
                });
            }
        }
        Ok(report)
    }
}

fn describe(event: &Event) -> String {
    let paths: Vec<String> = event.op.paths().iter().map(|p| p.to_string()).collect();
    format!("#{} {}", event.seq, paths.join(" -> "))
}

/// Visits every row of a table; a read error ends the scan with a problem
/// instead of aborting the whole verification.
fn scan<K, V, T, F>(table: &T, name: &'static str, report: &mut VerifyReport, mut visit: F)
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    T: ReadableTable<K, V>,
    F: FnMut(&mut VerifyReport, K::SelfType<'_>, V::SelfType<'_>),
{
    let iter = match table.iter() {
        Ok(iter) => iter,
        Err(e) => {
            report.problems.push(Problem::Table {
                table: name,
                detail: e.to_string(),
            });
            return;
        }
    };
    for item in iter {
        match item {
            Ok((k, v)) => visit(report, k.value(), v.value()),
            Err(e) => {
                report.problems.push(Problem::Table {
                    table: name,
                    detail: e.to_string(),
                });
                return;
            }
        }
    }
}
