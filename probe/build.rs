//! Compiles `bpf/probe.bpf.c` into the BPF object embedded by `src/probe.rs`,
//! and `bpf/floor.bpf.c`, the benchmark's empty-programs baseline.
//!
//! `vmlinux.h` is generated here from the build machine's kernel BTF rather than
//! committed: the programs read kernel structs through CO-RE, so any kernel
//! with BTF gives a correct header and relocations fix up the rest at load time.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
const LIBBPF_HEADER: &str = "/usr/include/bpf/bpf_helpers.h";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("bpf");
    for file in [
        "probe.bpf.c",
        "floor.bpf.c",
        "dk_event.h",
        "dk_path.h",
        "dk_syscalls.h",
    ] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(file).display());
    }

    require_tool("clang", "clang");
    require_tool("bpftool", "bpftool");
    if !Path::new(LIBBPF_HEADER).exists() {
        fail(&format!(
            "{LIBBPF_HEADER} not found: install the apt package `libbpf-dev` (scripts/deps.sh)"
        ));
    }
    if !Path::new(KERNEL_BTF).exists() {
        fail(&format!(
            "{KERNEL_BTF} not found: the build needs a kernel with CONFIG_DEBUG_INFO_BTF=y"
        ));
    }

    let vmlinux = out.join("vmlinux.h");
    let dump =
        run(Command::new("bpftool").args(["btf", "dump", "file", KERNEL_BTF, "format", "c"]));
    std::fs::write(&vmlinux, dump).unwrap_or_else(|e| fail(&format!("writing vmlinux.h: {e}")));

    let object = compile(&bpf_dir, &out, "probe");
    compile(&bpf_dir, &out, "floor");
    let bytes = std::fs::read(&object).unwrap_or_else(|e| fail(&format!("reading object: {e}")));
    println!(
        "cargo:rustc-env=DIFFKEEPER_PROBE_OBJECT_ID={:016x}",
        fnv1a(&bytes)
    );
}

/// `bpf/<name>.bpf.c` -> `$OUT_DIR/<name>.bpf.o`.
fn compile(bpf_dir: &Path, out: &Path, name: &str) -> PathBuf {
    let object = out.join(format!("{name}.bpf.o"));
    run(Command::new("clang")
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
        ])
        .arg(format!("-D__TARGET_ARCH_{}", target_arch()))
        // The object's id names the shared program set: it must depend on
        // the sources, not on where they or OUT_DIR happen to live.
        .arg(format!(
            "-ffile-prefix-map={}=/diffkeeper/out",
            out.display()
        ))
        .arg(format!(
            "-ffile-prefix-map={}=/diffkeeper/bpf",
            bpf_dir.display()
        ))
        .arg("-I")
        .arg(out)
        .arg("-I")
        .arg(bpf_dir)
        .arg("-c")
        .arg(bpf_dir.join(format!("{name}.bpf.c")))
        .arg("-o")
        .arg(&object));
    object
}

/// libbpf's `__TARGET_ARCH_*` names for the architectures we build for.
fn target_arch() -> &'static str {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => fail(&format!("no eBPF target arch mapping for {other}")),
        Err(_) => fail("CARGO_CFG_TARGET_ARCH is not set"),
    }
}

/// Identifies the object in the bpffs pin directory name, so two builds with
/// different programs never attach to each other's maps.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn require_tool(tool: &str, package: &str) {
    if Command::new(tool).arg("--version").output().is_err() {
        fail(&format!(
            "`{tool}` not found: install the apt package `{package}` (scripts/deps.sh)"
        ));
    }
}

fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|e| fail(&format!("running {command:?}: {e}")));
    if !output.status.success() {
        fail(&format!(
            "{command:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    output.stdout
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("diffkeeper-probe build failed: {message}");
}
