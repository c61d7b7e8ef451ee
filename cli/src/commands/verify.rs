//! `diffkeeper verify`

use std::process::ExitCode;

use anyhow::Result;
use diffkeeper_store::Recording;
use serde::Serialize;

use crate::output::{print_json, EXIT_NEGATIVE};

#[derive(Serialize)]
struct Report {
    path: String,
    ok: bool,
    events: u64,
    versions: u64,
    pieces: u64,
    baseline_entries: u64,
    problems: Vec<String>,
}

pub fn run(recording: &Recording, json: bool) -> Result<ExitCode> {
    let report = recording.verify()?;
    let view = Report {
        path: recording.path().display().to_string(),
        ok: report.is_ok(),
        events: report.events,
        versions: report.versions,
        pieces: report.pieces,
        baseline_entries: report.baseline_entries,
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
    };
    if json {
        print_json(&view)?;
    } else {
        for problem in &view.problems {
            println!("BAD  {problem}");
        }
        println!(
            "{}: {} events, {} versions, {} pieces, {} baseline entries: {}",
            view.path,
            view.events,
            view.versions,
            view.pieces,
            view.baseline_entries,
            if view.ok {
                "ok".to_string()
            } else {
                format!("{} problem(s)", view.problems.len())
            }
        );
    }
    Ok(if view.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NEGATIVE)
    })
}
