//! `diffkeeper gc`: retention by count per container, age and total size.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use diffkeeper_recorder::Archive;
use diffkeeper_runtime_config::{NodeConfig, Retention};

use crate::args::GcArgs;
use crate::output::bytes;

pub fn run(root: &Path, node: &NodeConfig, args: &GcArgs) -> Result<ExitCode> {
    let rules = if args.keep.is_none() && args.older_than.is_none() && args.max_bytes.is_none() {
        let Some(path) = &node.path else {
            anyhow::bail!(
                "no rule given and no node config file: say what to delete with --keep N, --older-than DURATION and/or --max-bytes SIZE, or write retention to --config"
            );
        };
        println!("applying the retention in {}", path.display());
        node.config.retention.clone()
    } else {
        Retention {
            keep: args.keep,
            max_age: args.older_than,
            max_bytes: args.max_bytes,
        }
    };
    let archive = Archive::new(root);
    let mut freed = 0;
    for entry in archive.expired(|_, _| &rules, SystemTime::now())? {
        if args.dry_run {
            println!("would delete {}", entry.path.display());
        } else {
            archive.remove(&entry)?;
            println!("deleted {}", entry.path.display());
        }
        freed += entry.size;
    }
    if !args.dry_run {
        for link in archive.remove_stale_links()? {
            println!(
                "deleted {} (its container's bundle is gone)",
                link.display()
            );
        }
    }
    println!(
        "{} {}",
        if args.dry_run { "would free" } else { "freed" },
        bytes(freed)
    );
    Ok(ExitCode::SUCCESS)
}
