//! `diffkeeper gc`: retention by count per container, age and total size.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result};
use diffkeeper_runtime_config::{NodeConfig, Retention};

use crate::args::GcArgs;
use crate::locate::{self, Found};
use crate::output::bytes;

pub fn run(root: &Path, args: &GcArgs) -> Result<ExitCode> {
    let rules = if args.keep.is_none() && args.older_than.is_none() && args.max_bytes.is_none() {
        let node = NodeConfig::load(&args.config)?;
        let Some(path) = node.path else {
            anyhow::bail!(
                "no rule given and no {}: say what to delete with --keep N, --older-than DURATION and/or --max-bytes SIZE",
                args.config.display()
            );
        };
        println!("applying the retention in {}", path.display());
        node.config.retention
    } else {
        Retention {
            keep: args.keep,
            max_age: args.older_than,
            max_bytes: args.max_bytes,
        }
    };
    let now = SystemTime::now();
    let mut all: Vec<(Found, u64, SystemTime)> = Vec::new();
    for found in locate::list(root, None)? {
        let meta =
            std::fs::metadata(&found.path).with_context(|| format!("{}", found.path.display()))?;
        all.push((found, meta.len(), meta.modified().unwrap_or(now)));
    }
    let mut doomed = vec![false; all.len()];
    if let Some(keep) = rules.keep {
        // `list` sorts by container then start time: keep each group's tail.
        let mut i = 0;
        while i < all.len() {
            let group_end = (i..all.len())
                .find(|&j| {
                    all[j].0.namespace != all[i].0.namespace
                        || all[j].0.container != all[i].0.container
                })
                .unwrap_or(all.len());
            for flag in &mut doomed[i..group_end.saturating_sub(keep).max(i)] {
                *flag = true;
            }
            i = group_end;
        }
    }
    if let Some(age) = rules.max_age {
        for (flag, (_, _, modified)) in doomed.iter_mut().zip(&all) {
            if now.duration_since(*modified).unwrap_or_default() > age {
                *flag = true;
            }
        }
    }
    if let Some(max) = rules.max_bytes {
        let mut by_age: Vec<usize> = (0..all.len()).collect();
        by_age.sort_by_key(|&i| all[i].2);
        let mut kept: u64 = all
            .iter()
            .zip(&doomed)
            .filter(|(_, d)| !**d)
            .map(|(a, _)| a.1)
            .sum();
        for i in by_age {
            if kept <= max {
                break;
            }
            if !doomed[i] {
                doomed[i] = true;
                kept -= all[i].1;
            }
        }
    }
    let mut freed = 0;
    for ((found, size, _), _) in all.iter().zip(&doomed).filter(|(_, d)| **d) {
        println!(
            "{} {}",
            if args.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            found.path.display()
        );
        if !args.dry_run {
            std::fs::remove_file(&found.path)
                .with_context(|| format!("deleting {}", found.path.display()))?;
            // Drop the container's directory once its last recording is gone.
            if let Some(dir) = found.path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        freed += size;
    }
    println!(
        "{} {}",
        if args.dry_run { "would free" } else { "freed" },
        bytes(freed)
    );
    Ok(ExitCode::SUCCESS)
}
