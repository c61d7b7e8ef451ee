# A real build for the record-mode benchmark: `cargo build --offline` (debug)
# of a small program using clap (derive), serde (derive), serde_json and
# regex: 33 crates compiled and linked, ~180 MB of build output. Pinned to
# the versions in DiffKeeper's Cargo.lock, so the registry cache that
# building DiffKeeper fills is all it needs. Usage: sh build-workload.sh DIR
set -e
mkdir -p "$1/src"
cd "$1"
cat > Cargo.toml <<'TOML'
[package]
name = "dk-bench-build"
version = "0.1.0"
edition = "2021"

[dependencies]
clap = { version = "=4.6.7", features = ["derive"] }
regex = "=1.13.1"
serde = { version = "=1.0.229", features = ["derive"] }
serde_json = "=1.0.154"
TOML
cat > src/main.rs <<'RUST'
use clap::Parser;

#[derive(Parser, serde::Serialize)]
struct Args {
    #[arg(default_value = "1-2")]
    text: String,
}

fn main() {
    let args = Args::parse();
    let re = regex::Regex::new(r"(\d+)-(\d+)").unwrap();
    let matched = re.is_match(&args.text);
    println!("{}", serde_json::json!({ "args": args, "matched": matched }));
}
RUST
CARGO_TARGET_DIR="$PWD/target" cargo build --offline -q
