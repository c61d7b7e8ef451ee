#!/usr/bin/env bash
# The steps of the GitHub Action (action.yml), kept here so they can be
# tested outside GitHub. Inputs arrive as INPUT_* variables.
#
#   action.sh build    install the build dependencies and build the CLI from
#                      this checkout (nothing prebuilt is downloaded)
#   action.sh record   run INPUT_RUN under `diffkeeper record`; exit with its
#                      code, the recording readable by the calling user
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo -E"; fi

output() {
	if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "$1=$2" >>"$GITHUB_OUTPUT"; fi
}

case "${1:-}" in
build)
	$sudo bash "$here/scripts/deps.sh"
	target="${RUNNER_TEMP:-/tmp}/diffkeeper-target"
	(cd "$here" && CARGO_TARGET_DIR="$target" cargo build --release --locked -p diffkeeper-cli)
	bin="$target/release/diffkeeper"
	if [ -n "${GITHUB_ENV:-}" ]; then echo "DIFFKEEPER=$bin" >>"$GITHUB_ENV"; fi
	echo "built $bin"
	;;
record)
	: "${INPUT_RUN:?the run input is required}"
	bin="${DIFFKEEPER:?run the build step first}"
	out="${INPUT_OUT:-diffkeeper-trace}"
	args=(record --out "$out")
	while IFS= read -r dir; do
		if [ -n "$dir" ]; then args+=(--watch "$dir"); fi
	done <<<"${INPUT_WATCH:-}"
	# One flag per line, taken as written (no quoting, no globbing).
	while IFS= read -r arg; do
		if [ -n "$arg" ]; then args+=("$arg"); fi
	done <<<"${INPUT_ARGS:-}"
	# Recording needs root; the command itself runs as the calling user,
	# with its PATH, so what it builds stays theirs.
	run=(bash -c "$INPUT_RUN")
	as_root=()
	if [ -n "$sudo" ]; then
		run=(setpriv --reuid="$(id -u)" --regid="$(id -g)" --init-groups "${run[@]}")
		as_root=(sudo -E env "PATH=$PATH")
	fi
	set +e
	"${as_root[@]}" "$bin" "${args[@]}" -- "${run[@]}"
	code=$?
	set -e
	# Recordings are root-only (0700/0600); the runner's user uploads them.
	if [ -d "$out" ]; then "${as_root[@]}" chown -R "$(id -u):$(id -g)" "$out"; fi
	output exit-code "$code"
	output recording "$out"
	exit "$code"
	;;
*)
	echo "usage: $0 build|record" >&2
	exit 2
	;;
esac
