//! `diffkeeper diff`

use std::process::ExitCode;

use anyhow::Result;
use diffkeeper_store::{Node, NodeKind, Recording};
use serde::Serialize;

use crate::output::{bytes, print_json, EXIT_NEGATIVE};

#[derive(Serialize)]
struct ChangeView {
    path: String,
    change: &'static str,
    before: Option<String>,
    after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_diff: Option<String>,
}

pub fn run(
    recording: &Recording,
    from: &str,
    to: &str,
    name_only: bool,
    json: bool,
) -> Result<ExitCode> {
    let (from, to) = (recording.moment(from)?, recording.moment(to)?);
    let changes = recording.diff(&from, &to)?;
    let mut views = Vec::with_capacity(changes.len());
    for change in &changes {
        let text_diff = if name_only {
            None
        } else {
            recording.text_diff(change)?
        };
        views.push(ChangeView {
            path: change.path.to_string(),
            change: change.kind(),
            before: change.before.as_ref().map(describe),
            after: change.after.as_ref().map(describe),
            text_diff,
        });
    }
    if json {
        print_json(&views)?;
    } else {
        for view in &views {
            let what = match (&view.before, &view.after) {
                (Some(b), Some(a)) => format!("{b} -> {a}"),
                (Some(b), None) => b.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => String::new(),
            };
            println!("{:<8} {}  [{what}]", view.change, view.path);
            if let Some(text) = &view.text_diff {
                print!("{text}");
            }
        }
    }
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NEGATIVE)
    })
}

fn describe(node: &Node) -> String {
    match &node.kind {
        NodeKind::File(c) => format!("file {:o} {}", node.mode, bytes(c.size)),
        NodeKind::Dir => format!("dir {:o}", node.mode),
        NodeKind::Symlink(t) => format!("symlink -> {}", String::from_utf8_lossy(t)),
    }
}
