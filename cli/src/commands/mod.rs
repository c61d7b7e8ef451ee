//! One module per subcommand; each returns the process exit code.

mod cat;
mod diff;
mod export;
mod gc;
mod ls;
mod record;
mod timeline;
mod verify;

use std::process::ExitCode;

use anyhow::{Context, Result};
use diffkeeper_runtime_config::NodeConfig;
use diffkeeper_store::Recording;

use crate::args::{Cli, Command, RecordingArg};
use crate::locate;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let node = NodeConfig::load(&cli.config)?;
    let root = cli.root.unwrap_or(node.config.recordings_root.clone());
    match cli.command {
        Command::Ls {
            namespace,
            pod,
            json,
        } => ls::run(&root, namespace.as_deref(), &pod, json),
        Command::Timeline {
            recording,
            paths,
            pid,
            ops,
            since,
            until,
            json,
        } => {
            let recording = open(&root, &recording)?;
            timeline::run(
                &recording,
                &paths,
                pid,
                &ops,
                since.as_deref(),
                until.as_deref(),
                json,
            )
        }
        Command::Cat {
            recording,
            path,
            time,
        } => cat::run(&open(&root, &recording)?, &path, &time),
        Command::Diff {
            recording,
            from,
            to,
            name_only,
            json,
        } => diff::run(&open(&root, &recording)?, &from, &to, name_only, json),
        Command::Export {
            recording,
            time,
            out,
            changes_only,
            preserve_owner,
        } => export::run(
            &open(&root, &recording)?,
            &time,
            &out,
            changes_only,
            preserve_owner,
        ),
        Command::Verify { recording, json } => verify::run(&open(&root, &recording)?, json),
        Command::Gc(args) => gc::run(&root, &node, &args),
        Command::Record(args) => record::run(&args),
    }
}

fn open(root: &std::path::Path, arg: &RecordingArg) -> Result<Recording> {
    let path = locate::resolve(root, arg)?;
    Recording::open(&path).with_context(|| format!("opening {}", path.display()))
}
