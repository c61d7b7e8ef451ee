//! `diffkeeper timeline`

use std::process::ExitCode;

use anyhow::{Context, Result};
use diffkeeper_store::{OpKind, Recording, TimelineFilter};

use crate::output::{print_json, rfc3339, short, EventView};

pub fn run(
    recording: &Recording,
    paths: &[String],
    pid: Option<u32>,
    ops: &[String],
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let mut filter = TimelineFilter::default().with_path_globs(paths)?;
    if let Some(pid) = pid {
        filter = filter.pid(pid);
    }
    let kinds = ops
        .iter()
        .map(|name| {
            OpKind::from_name(name).with_context(|| {
                let all: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown operation {name:?}; expected one of: {}",
                    all.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    filter = filter.ops(kinds);
    if let Some(since) = since {
        filter = filter.since(recording.moment(since)?);
    }
    if let Some(until) = until {
        filter = filter.until(recording.moment(until)?);
    }
    let events = recording.timeline(&filter)?;
    let views: Vec<EventView> = events
        .iter()
        .map(|e| EventView::new(recording, e))
        .collect();
    if json {
        print_json(&views)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_header(recording)?;
    for view in &views {
        println!("{}", view.line());
    }
    Ok(ExitCode::SUCCESS)
}

/// What was recorded, how, and where the recording is known to be blind.
pub fn print_header(recording: &Recording) -> Result<()> {
    let meta = recording.meta();
    let status = recording.status()?;
    println!(
        "# {} {} ({}{}), started {}",
        meta.subject.kind,
        short(&meta.subject.id),
        if meta.subject.namespace.is_empty() {
            "-"
        } else {
            &meta.subject.namespace
        },
        if meta.subject.image.is_empty() {
            String::new()
        } else {
            format!(", image {}", meta.subject.image)
        },
        rfc3339(meta.started_unix_ns)
    );
    println!("# captured by {}", meta.capture.backend);
    for limit in &meta.capture.limits {
        println!("#   cannot see: {limit}");
    }
    for reason in &status.incomplete {
        println!("# INCOMPLETE: {reason}");
    }
    Ok(())
}
