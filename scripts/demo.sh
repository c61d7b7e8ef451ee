#!/usr/bin/env bash
# The main job: record a "flaky service" that writes its config, a lock file,
# a log and a state file, gets a fatal config edit and crashes; then ask the
# recording what happened. Uses the real eBPF probe (root required).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p diffkeeper-cli
dk="$(realpath "${CARGO_TARGET_DIR:-target}")/release/diffkeeper"

demo=$(mktemp -d /tmp/diffkeeper-demo.XXXXXX)
trap 'rm -rf "$demo"' EXIT
cd "$demo"
mkdir app
printf 'workers = 4\nmode = "safe"\n' > app/config.toml

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "running a flaky service under 'diffkeeper record' (it will crash)"
set +e
"$dk" record --out trace --watch app -- sh -c '
  echo "pid $$" > app/service.lock
  for i in 1 2 3 4; do
    echo "batch $i processed" >> app/service.log
    echo "{\"batch\": $i}" > app/state.json
    sleep 0.3
  done
  sed -i "s/workers = 4/workers = 64/" app/config.toml   # the fatal edit
  echo "panic: worker pool exhausted" >> app/service.log
  sleep 0.1
  kill -SEGV $$'
code=$?
set -e
echo "the service died with exit code $code (128 + SIGSEGV)"

say "timeline: every file change, when, and by which process"
"$dk" timeline trace --path "$demo/app/**"

say "what changed in the last half second before the crash (1.2s -> latest)"
"$dk" diff trace --from 1.2s --to latest || true

say "the filesystem as it was at 1.2s, before the fatal edit"
"$dk" export trace --time 1.2s --out before-crash
cat "before-crash$demo/app/config.toml"

say "verify"
"$dk" verify trace
