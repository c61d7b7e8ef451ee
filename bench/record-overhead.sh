#!/usr/bin/env bash
# Record-mode overhead: the same write-heavy workload with and without
# `diffkeeper record`, alternating, several rounds; prints a table of
# medians and ratios. Needs root (eBPF). Usage: bench/record-overhead.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}

cargo build --release --quiet -p diffkeeper-cli
dk="$(realpath "${CARGO_TARGET_DIR:-target}")/release/diffkeeper"
scratch=$(mktemp -d /var/tmp/diffkeeper-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# The workload: small-file churn (2,000 files written, half rewritten, half
# deleted), an appending log (20,000 lines), and in-place rewrites of a
# 64 MiB file (100 random 4 KiB pages, 10 times, synced each time).
cat > "$scratch/workload.sh" <<'WORKLOAD'
set -e
dir=$1
mkdir -p "$dir/small"
for i in $(seq 1 2000); do echo "file $i $(date +%s%N)" > "$dir/small/f$i"; done
for i in $(seq 1 2 2000); do echo "rewritten $i" > "$dir/small/f$i"; done
for i in $(seq 2 2 2000); do rm "$dir/small/f$i"; done
for i in $(seq 1 20000); do echo "log line $i" ; done >> "$dir/app.log"
head -c 64M /dev/urandom > "$dir/data.db"
for round in $(seq 1 10); do
  for page in $(seq 1 100); do
    dd if=/dev/urandom of="$dir/data.db" bs=4096 count=1 seek=$((RANDOM % 16384)) conv=notrunc status=none
  done
  sync "$dir/data.db"
done
WORKLOAD

run_plain() {
  rm -rf "$scratch/w"; mkdir "$scratch/w"
  local start end
  start=$(date +%s%N)
  bash "$scratch/workload.sh" "$scratch/w"
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}
run_recorded() {
  rm -rf "$scratch/w" "$scratch/trace"; mkdir "$scratch/w"
  local start end
  start=$(date +%s%N)
  "$dk" record --out "$scratch/trace" --watch "$scratch/w" --no-baseline -- bash "$scratch/workload.sh" "$scratch/w" 2> "$scratch/record.log"
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}

plain=(); recorded=()
for _ in $(seq 1 "$rounds"); do
  plain+=("$(run_plain)")
  recorded+=("$(run_recorded)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(median "${plain[@]}"); r=$(median "${recorded[@]}")
written=$(( $(du -sb "$scratch/w" | cut -f1) ))
trace=$(du -sb "$scratch/trace" | cut -f1)
events=$("$dk" timeline "$scratch/trace" --json | grep -c '"seq"')
gaps=$("$dk" timeline "$scratch/trace" --op gap --json | grep -c '"op": "gap"' || true)

echo
echo "| metric | value |"
echo "|---|---|"
echo "| rounds (alternating) | $rounds |"
echo "| workload, plain (median) | ${p} ms |"
echo "| workload under diffkeeper record (median) | ${r} ms |"
echo "| time ratio (goal ≤ 1.10) | $(awk "BEGIN {printf \"%.2f\", $r / $p}") |"
echo "| events recorded | $events |"
echo "| gaps (events lost) | $gaps |"
echo "| final tree size | $written B |"
echo "| recording size | $trace B |"
