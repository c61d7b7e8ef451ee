#!/usr/bin/env bash
# The main job: a "flaky service" runs in a container under containerd with
# the DiffKeeper runtime. It writes a lock file, a log and a state file,
# gets a fatal config edit and hangs; we kill it, remove the container, and
# ask its recording what happened. Needs root (containerd, eBPF).
#
# It starts a private containerd in a temporary directory (its own root,
# state and socket; the system's containerd is not touched) with our shim
# on its PATH, and a busybox rootfs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p diffkeeper-shim -p diffkeeper-cli
target="$(realpath "${CARGO_TARGET_DIR:-target}")/release"
dk="$target/diffkeeper"

demo=$(mktemp -d /tmp/diffkeeper-demo.XXXXXX)
ctrd_pid=
cleanup() {
  [ -n "$ctrd_pid" ] && { ctr_ task rm -f flaky >/dev/null 2>&1 || true; ctr_ c rm flaky >/dev/null 2>&1 || true; kill "$ctrd_pid" 2>/dev/null || true; wait "$ctrd_pid" 2>/dev/null || true; }
  rm -rf "$demo"
}
trap cleanup EXIT

mkdir -p "$demo/bin" "$demo/rootfs/bin" "$demo/rootfs/app"
ln -s "$target/containerd-shim-diffkeeper-v1" "$demo/bin/"
cp /bin/busybox "$demo/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$demo/rootfs/bin/$applet"; done
printf 'workers = 4\nmode = "safe"\n' > "$demo/rootfs/app/config.toml"
cat > "$demo/containerd.toml" <<EOF
version = 2
root = "$demo/root"
state = "$demo/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$demo/containerd.sock"
[ttrpc]
  address = "$demo/containerd.sock.ttrpc"
EOF
# The node config: keep recordings next to the demo, not in /var/lib.
export DIFFKEEPER_CONFIG="$demo/diffkeeper.toml"
echo "recordings-root = \"$demo/recordings\"" > "$DIFFKEEPER_CONFIG"
export PATH="$demo/bin:$PATH"
containerd --config "$demo/containerd.toml" > "$demo/containerd.log" 2>&1 &
ctrd_pid=$!
ctr_() { ctr -a "$demo/containerd.sock" -n demo "$@"; }
for _ in $(seq 1 100); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting a flaky service in a container (runtime io.containerd.diffkeeper.v1)"
ctr_ run -d --runtime io.containerd.diffkeeper.v1 --rootfs "$demo/rootfs" flaky /bin/sh -c '
  echo "pid $$" > /app/service.lock
  for i in 1 2 3 4; do
    echo "batch $i processed" >> /app/service.log
    echo "{\"batch\": $i}" > /app/state.json
    sleep 0.3
  done
  sed -i "s/workers = 4/workers = 64/" /app/config.toml   # the fatal edit
  echo "worker pool exhausted; waiting forever" >> /app/service.log
  exec sleep 600'
sleep 2
say "the service hangs; kill it and remove the container"
ctr_ task kill -s KILL flaky
for _ in $(seq 1 100); do ctr_ task ls | grep -q 'flaky.*STOPPED' && break; sleep 0.1; done
ctr_ task rm flaky >/dev/null
ctr_ c rm flaky
echo "the container is gone; its recording is not:"
"$dk" ls

say "timeline: every file change, when, and by which process (pids as the container saw them)"
"$dk" timeline flaky --path '/app/**'

say "what changed around the fatal edit (1.1s -> latest)"
"$dk" diff flaky --from 1.1s --to latest || true

say "the container's whole filesystem as it was at 1.1s, before the fatal edit"
"$dk" export flaky --time 1.1s --out "$demo/before-crash"
ls "$demo/before-crash" "$demo/before-crash/app"
cat "$demo/before-crash/app/config.toml"

say "verify"
"$dk" verify flaky
