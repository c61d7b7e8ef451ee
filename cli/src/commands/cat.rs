//! `diffkeeper cat`

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use diffkeeper_store::{RecPath, Recording};

pub fn run(recording: &Recording, path: &str, time: &str) -> Result<ExitCode> {
    let moment = recording.moment(time)?;
    let path = RecPath::new(path)?;
    let bytes = recording.cat(&path, &moment)?;
    std::io::stdout().lock().write_all(&bytes)?;
    Ok(ExitCode::SUCCESS)
}
