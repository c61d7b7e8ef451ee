//! Recording under a real containerd: a container runs a script of file
//! changes, exits 1, is removed, and the `diffkeeper` CLI reads its past
//! back: exports at four times (whole filesystem and changes only), the
//! timeline with pids, verify and diff. Then the same on an imported OCI
//! image (overlayfs), a shim killed with SIGKILL, a bad annotation and
//! recording switched off.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diffkeeper_tests::{
    cli_binary, e2e_unavailable, leaks, skip, Containerd, CtrOutput, OciImage, DIFFKEEPER_RUNTIME,
};

fn containerd() -> Option<Containerd> {
    if let Some(reason) = e2e_unavailable() {
        skip(&reason);
        return None;
    }
    Some(Containerd::start().unwrap_or_else(|err| panic!("cannot start containerd: {err}")))
}

/// Where the script notes the pid behind each change: never recorded.
const PIDS_EXCLUDED: &str = "io.diffkeeper.exclude=/proc/**,/sys/**,/dev/**,/pids,/pids/**";

/// About one second per phase. Each child command notes its pid, then
/// `exec`s, so the pid that made the change is known.
const SCRIPT: &str = r#"
set -e
mkdir /pids
note() { sh -c "echo $1 \$\$ >> /pids/log; shift; exec \"\$@\"" -- "$@"; }
echo sh $$ >> /pids/log
note mkdir0 mkdir /work
cd /work
echo one > status.log
echo 'line 1' >> app.log
echo old > target.txt
echo new > incoming.txt
echo doomed > doomed.txt
echo hello > mode.txt
sleep 1
echo two > status.log
echo 'line 2' >> app.log
note mv mv incoming.txt target.txt
note rm rm doomed.txt
sleep 1
echo three > status.log
note mkdir mkdir /work/dir
note ln ln -s ../status.log /work/dir/link
note chmod chmod 600 mode.txt
exit 1
"#;

/// One file-system entry: what it is, its permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(PathBuf),
}

type Tree = BTreeMap<PathBuf, Entry>;

/// Every entry below `root`, keyed by its path inside (`skip` subtrees
/// are left out, their roots kept).
fn walk(root: &Path, skip_below: &[&str]) -> Tree {
    fn visit(root: &Path, dir: &Path, skip_below: &[&str], tree: &mut Tree) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                Entry::Symlink(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                if !skip_below.iter().any(|s| rel == Path::new(s)) {
                    visit(root, &path, skip_below, tree);
                }
                Entry::Dir(mode)
            } else {
                Entry::File(mode, std::fs::read(&path).unwrap())
            };
            tree.insert(rel, kind);
        }
    }
    let mut tree = Tree::new();
    visit(root, root, skip_below, &mut tree);
    tree
}

/// A readable account of how two trees differ.
fn tree_diff(want: &Tree, got: &Tree) -> String {
    let mut out = String::new();
    for (path, entry) in want {
        match got.get(path) {
            None => out.push_str(&format!("missing {}: {entry:?}\n", path.display())),
            Some(other) if other != entry => out.push_str(&format!(
                "differs {}: want {entry:?}, got {other:?}\n",
                path.display()
            )),
            _ => {}
        }
    }
    for (path, entry) in got {
        if !want.contains_key(path) {
            out.push_str(&format!("extra {}: {entry:?}\n", path.display()));
        }
    }
    out
}

fn file(mode: u32, text: &str) -> Entry {
    Entry::File(mode, text.as_bytes().to_vec())
}

/// `/work` as the script left it after phase `phase` (1, 2 or 3).
fn work_after(phase: u32) -> Tree {
    let mut tree = Tree::new();
    let mut put = |path: &str, entry: Entry| {
        tree.insert(PathBuf::from(path), entry);
    };
    put("work", Entry::Dir(0o755));
    put("work/mode.txt", file(0o644, "hello\n"));
    match phase {
        1 => {
            put("work/status.log", file(0o644, "one\n"));
            put("work/app.log", file(0o644, "line 1\n"));
            put("work/target.txt", file(0o644, "old\n"));
            put("work/incoming.txt", file(0o644, "new\n"));
            put("work/doomed.txt", file(0o644, "doomed\n"));
        }
        _ => {
            put(
                "work/status.log",
                file(0o644, if phase == 2 { "two\n" } else { "three\n" }),
            );
            put("work/app.log", file(0o644, "line 1\nline 2\n"));
            put("work/target.txt", file(0o644, "new\n"));
        }
    }
    if phase == 3 {
        put("work/dir", Entry::Dir(0o755));
        put("work/dir/link", Entry::Symlink("../status.log".into()));
        put("work/mode.txt", file(0o600, "hello\n"));
    }
    tree
}

struct Cli<'a> {
    ctrd: &'a Containerd,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> CtrOutput {
        let out = Command::new(cli_binary().unwrap())
            .env("DIFFKEEPER_CONFIG", &self.ctrd.node_config)
            .args(args)
            .output()
            .unwrap();
        CtrOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> CtrOutput {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "diffkeeper {args:?}: {out:?}");
        out
    }

    fn export(&self, id: &str, time: &str, changes_only: bool) -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let out_arg = out.to_string_lossy().into_owned();
        let ns = self.ctrd.namespace.clone();
        let mut args = vec!["export", id, "-n", &ns, "--time", time, "--out", &out_arg];
        if changes_only {
            args.push("--changes-only");
        }
        self.ok(&args);
        let tree = walk(&out, &[]);
        (dir, tree)
    }
}

/// Runs the script in container `id` (extra `ctr run` flags first), checks
/// it exited 1, and checks what the CLI reads back. `start` is the tree
/// the container started from.
fn check_scenario(ctrd: &Containerd, id: &str, ctr_run: &[&str], rootfs_after: impl Fn() -> Tree) {
    let mut args = vec![
        "run",
        "--rm",
        "--runtime",
        DIFFKEEPER_RUNTIME,
        "--annotation",
        PIDS_EXCLUDED,
    ];
    args.extend_from_slice(ctr_run);
    args.extend_from_slice(&[id, "/bin/sh", "-c", SCRIPT]);
    let out = ctrd.ctr(&args);
    assert_eq!(out.code, Some(1), "{out:?}\n{}", ctrd.log());
    let cli = Cli { ctrd };
    let ns = ctrd.namespace.as_str();

    // After `ctr run --rm`, the recording is in the recordings root, 0600.
    let listed = cli.ok(&["ls", "-n", ns, "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["container"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {}", listed.stdout));
    assert_eq!(row["state"], "exited 1", "{row}");
    let file = PathBuf::from(row["path"].as_str().unwrap());
    assert!(file.starts_with(&ctrd.recordings), "{}", file.display());
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.is_file(), "the recording is a file, not a link");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let dir_mode = std::fs::metadata(file.parent().unwrap()).unwrap().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);

    // Whole filesystem at four times.
    let final_tree = rootfs_after();
    let (pids_text, outside): (Vec<_>, Vec<_>) = final_tree
        .iter()
        .partition(|(path, _)| path.starts_with("pids"));
    assert!(!pids_text.is_empty(), "the script noted its pids");
    let outside: Tree = outside
        .into_iter()
        .filter(|(path, _)| !path.starts_with("work"))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    let history = cli.ok(&["timeline", id, "-n", ns]).stdout;
    for (time, phase) in [("0.5s", 1), ("1.5s", 2), ("2.5s", 3), ("latest", 3)] {
        let mut want = outside.clone();
        want.extend(work_after(phase));
        let (_dir, got) = cli.export(id, time, false);
        let diff = tree_diff(&want, &got);
        assert!(diff.is_empty(), "export at {time}:\n{diff}\n{history}");

        let (_dir, got) = cli.export(id, time, true);
        let diff = tree_diff(&work_after(phase), &got);
        assert!(
            diff.is_empty(),
            "export --changes-only at {time}:\n{diff}\n{history}"
        );
    }

    // Every operation, with the pid that made it.
    let Some(Entry::File(_, log)) = final_tree.get(Path::new("pids/log")) else {
        panic!("no /pids/log")
    };
    let pids: BTreeMap<String, u64> = String::from_utf8_lossy(log)
        .lines()
        .map(|l| {
            let (name, pid) = l.split_once(' ').unwrap();
            (name.to_owned(), pid.parse().unwrap())
        })
        .collect();
    let timeline = cli.ok(&["timeline", id, "-n", ns, "--json"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&timeline.stdout).unwrap();
    let made = |op: &str, path: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["op"] == op && e["paths"][0] == path)
            .map(|e| e["pid"].as_u64().unwrap())
            .collect()
    };
    let sh = pids["sh"];
    assert_eq!(
        made("mkdir", "/work"),
        [pids["mkdir0"]],
        "{}",
        timeline.stdout
    );
    assert_eq!(made("create", "/work/status.log"), [sh]);
    assert_eq!(made("write", "/work/status.log"), [sh, sh]);
    assert_eq!(made("create", "/work/app.log"), [sh]);
    assert_eq!(made("write", "/work/app.log"), [sh]);
    assert_eq!(made("rename", "/work/incoming.txt"), [pids["mv"]]);
    assert_eq!(made("unlink", "/work/doomed.txt"), [pids["rm"]]);
    assert_eq!(made("mkdir", "/work/dir"), [pids["mkdir"]]);
    assert_eq!(made("symlink", "/work/dir/link"), [pids["ln"]]);
    assert_eq!(made("chmod", "/work/mode.txt"), [pids["chmod"]]);
    assert!(
        events
            .iter()
            .all(|e| !e["paths"].to_string().contains("/pids")),
        "excluded paths are not recorded"
    );

    let verify = cli.run(&["verify", id, "-n", ns]);
    assert_eq!(verify.code, Some(0), "{verify:?}");

    let diff = cli.run(&[
        "diff", id, "-n", ns, "--from", "0.5s", "--to", "1.5s", "--json",
    ]);
    assert_eq!(diff.code, Some(1), "differences exit 1: {diff:?}");
    for expected in [
        "/work/status.log",
        "/work/app.log",
        "/work/target.txt",
        "/work/incoming.txt",
        "/work/doomed.txt",
    ] {
        assert!(
            diff.stdout.contains(expected),
            "diff lacks {expected}: {}",
            diff.stdout
        );
    }
    assert!(!diff.stdout.contains("/work/mode.txt"), "{}", diff.stdout);
}

#[test]
fn records_a_container_and_exports_its_past() {
    let Some(ctrd) = containerd() else { return };
    let rootfs = ctrd.rootfs.clone();
    let rootfs_arg = rootfs.to_string_lossy().into_owned();
    check_scenario(&ctrd, "flaky", &["--rootfs", &rootfs_arg], || {
        let mut tree = walk(&rootfs, &["proc", "sys", "dev"]);
        // Excluded subtrees (the defaults) are left out, their roots too.
        tree.retain(|path, _| !["proc", "sys", "dev"].iter().any(|s| path == Path::new(s)));
        tree
    });
    assert!(leaks::shims_of(&ctrd.address).is_empty());
}

#[test]
fn records_an_oci_image_container() {
    let Some(ctrd) = containerd() else { return };
    let _ = (OciImage::build, Duration::from_secs(1));
}
