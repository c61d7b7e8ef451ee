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

cp bench/workload.sh "$scratch/workload.sh"

run_plain() {
  rm -rf "$scratch/w"; mkdir "$scratch/w"
  local start end
  start=$(date +%s%N)
  sh "$scratch/workload.sh" "$scratch/w" > /dev/null
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}
run_recorded() {
  rm -rf "$scratch/w" "$scratch/trace"; mkdir "$scratch/w"
  local start end
  start=$(date +%s%N)
  "$dk" record --out "$scratch/trace" --watch "$scratch/w" --no-baseline -- sh "$scratch/workload.sh" "$scratch/w" > /dev/null 2> "$scratch/record.log"
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
