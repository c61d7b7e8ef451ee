//! `diffkeeper export`

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use diffkeeper_store::{ExportOptions, Recording};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{bytes, short};

pub fn run(
    recording: &Recording,
    time: &str,
    out: &Path,
    changes_only: bool,
    preserve_owner: bool,
) -> Result<ExitCode> {
    let moment = recording.moment(time)?;
    let options = ExportOptions {
        changes_only,
        preserve_owner,
    };
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {binary_bytes}/{binary_total_bytes} {eta}")
            .expect("valid progress template"),
    );
    let report = recording.export_with_progress(&moment, out, &options, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
    })?;
    bar.finish_and_clear();
    println!(
        "exported {} at {}: {} files, {} directories, {} symlinks, {} to {}",
        short(&recording.meta().subject.id),
        moment,
        report.files,
        report.dirs,
        report.symlinks,
        bytes(report.bytes),
        out.display()
    );
    for (path, why) in &report.skipped {
        eprintln!("skipped {path}: {why}");
    }
    if report.gaps > 0 {
        eprintln!(
            "warning: the recording lost events {} time(s) before this moment; files changed then may be out of date (see `diffkeeper timeline --op gap`)",
            report.gaps
        );
    }
    Ok(ExitCode::SUCCESS)
}
