//! The README's `diffkeeper` commands, so that the end-to-end suites run
//! them exactly as a reader would type them. The other commands there are
//! run elsewhere: `make deps/test/demo` by `.ci/run`, the node installer by
//! the CRI suite (`Containerd::start_cri`); `kubectl` and an image from a
//! registry need what CI does not have (a cluster, the network).

use std::path::Path;

/// The README's `sh` blocks that run `diffkeeper`, each as its lines that
/// do, split into words as a shell would (quotes removed, the trailing
/// comment dropped), without the leading `diffkeeper`. A block is meant to
/// be typed in one directory (two blocks may both export to `./debug_fs`).
pub fn diffkeeper_blocks() -> Vec<Vec<Vec<String>>> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme)
        .unwrap_or_else(|e| panic!("reading {}: {e}", readme.display()));
    let mut blocks: Vec<Vec<Vec<String>>> = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let fence = line.trim_start();
        if let Some(info) = fence.strip_prefix("```") {
            in_sh = !in_sh && info.trim() == "sh";
            blocks.push(Vec::new());
            continue;
        }
        if !in_sh {
            continue;
        }
        let words =
            shlex::split(line).unwrap_or_else(|| panic!("README: not a shell line: {line:?}"));
        if let Some((first, rest)) = words.split_first() {
            if first == "diffkeeper" {
                blocks.last_mut().unwrap().push(rest.to_vec());
            }
        }
    }
    blocks.retain(|block| !block.is_empty());
    blocks
}

/// Whether a command picks its recording by Kubernetes pod.
pub fn by_pod(command: &[String]) -> bool {
    command.iter().any(|word| word == "--pod")
}
