#!/usr/bin/env bash
# Record-mode overhead: each workload plain, under `diffkeeper record` with
# eBPF, and under the fanotify and inotify fallbacks, alternating, several rounds; prints
# a table of medians and ratios to the plain run, and the recording's size
# per byte the workload wrote (write(2) bytes, children included, from
# /proc/PID/io). Needs root (eBPF). Usage:
#   bench/record-overhead.sh [ROUNDS] [WORKLOAD...]    (files, sqlite, build)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
workloads=("$@")
if [ ${#workloads[@]} -eq 0 ]; then
  workloads=(files)
  if command -v sqlite3 > /dev/null; then workloads+=(sqlite); fi
  if command -v cargo > /dev/null; then workloads+=(build); fi
fi

cargo build --release --quiet -p diffkeeper-cli
dk="$(realpath "${CARGO_TARGET_DIR:-target}")/release/diffkeeper"
scratch=$(mktemp -d /var/tmp/diffkeeper-bench.XXXXXX)
# A fresh journaled ext4 where loop mounts work: on an ext4 without a
# journal, each run's file creates scan past the inodes the runs before
# deleted (see docs/benchmarks.md, "A recorded container vs runc").
image="$scratch.img"
if truncate -s 4G "$image" && mkfs.ext4 -qF "$image" 2> /dev/null \
   && mount -o loop "$image" "$scratch" 2> /dev/null; then
  trap 'umount "$scratch"; rm -rf "$scratch" "$image"' EXIT
else
  echo "no scratch ext4 (loop mount refused): measuring on $(df --output=source /var/tmp | tail -1)"
  rm -f "$image"
  trap 'rm -rf "$scratch"' EXIT
fi
cp bench/workload.sh bench/sqlite-workload.sh bench/build-workload.sh "$scratch/"

# The workload as one shell whose /proc/self/io, read last, counts the
# bytes its reaped children wrote too.
command_for() {
  case $1 in
    files) echo "sh $scratch/workload.sh $scratch/w > /dev/null; grep wchar /proc/\$\$/io > $scratch/io" ;;
    sqlite) echo "sh $scratch/sqlite-workload.sh $scratch/w; grep wchar /proc/\$\$/io > $scratch/io" ;;
    build) echo "sh $scratch/build-workload.sh $scratch/w; grep wchar /proc/\$\$/io > $scratch/io" ;;
  esac
}

# Runs workload $1 under variant $2 (plain, ebpf, fanotify, inotify); prints ms.
run() {
  rm -rf "$scratch/w" "$scratch/trace"; mkdir "$scratch/w"
  local cmd start end
  cmd=$(command_for "$1")
  start=$(date +%s%N)
  case $2 in
    plain) sh -c "$cmd" ;;
    *) "$dk" record --backend "$2" --out "$scratch/trace" --watch "$scratch/w" --no-baseline \
         -- sh -c "$cmd" 2> "$scratch/record.log" ;;
  esac
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk "BEGIN {printf \"%.2f\", $1 / $2}"; }

echo
echo "| workload | plain (median ms) | eBPF (ms, ratio) | fanotify (ms, ratio) | inotify (ms, ratio) | written | recording (eBPF) | recording / written | events | gaps | export = tree |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for workload in "${workloads[@]}"; do
  plain=(); ebpf=(); fanotify=(); inotify=()
  for _ in $(seq 1 "$rounds"); do
    plain+=("$(run "$workload" plain)")
    inotify+=("$(run "$workload" inotify)")
    fanotify+=("$(run "$workload" fanotify)")
    ebpf+=("$(run "$workload" ebpf)")
  done
  # The last run was recorded with eBPF: its recording and its bytes.
  written=$(awk '{print $2}' "$scratch/io")
  size=$(du -sb "$scratch/trace" | cut -f1)
  events=$("$dk" timeline "$scratch/trace" --json | grep -c '"seq"')
  gaps=$("$dk" timeline "$scratch/trace" --op gap --json | grep -c '"op": "gap"' || true)
  # The recording's last moment, exported, must be the tree the workload left.
  rm -rf "$scratch/export"
  "$dk" export --out "$scratch/export" "$scratch/trace" > /dev/null
  if diff -r --no-dereference "$scratch/w" "$scratch/export$scratch/w" > /dev/null; then exact=yes; else exact=NO; fi
  rm -rf "$scratch/export"
  p=$(median "${plain[@]}"); e=$(median "${ebpf[@]}"); i=$(median "${inotify[@]}")
  f=$(median "${fanotify[@]}")
  echo "| $workload | $p | $e ($(ratio "$e" "$p")) | $f ($(ratio "$f" "$p")) | $i ($(ratio "$i" "$p")) | $(( written / 1048576 )) MiB | $(( size / 1048576 )) MiB | $(ratio "$size" "$written") | $events | $gaps | $exact |"
done
echo
echo "rounds: $rounds, alternating; goal for eBPF ≤ 1.10×"
