#!/usr/bin/env bash
# Installs the Debian packages DiffKeeper needs to build and test, idempotently.
# Safe to run repeatedly: apt is only touched when a package is missing.
set -euo pipefail

packages=(
  clang              # compiles the eBPF C programs (probe/bpf)
  llvm               # llvm-strip / llvm-objdump for inspecting BPF objects
  libbpf-dev         # bpf_helpers.h, bpf_core_read.h, bpf_tracing.h
  bpftool            # generates vmlinux.h from the running kernel's BTF
  libseccomp-dev     # libcontainer links libseccomp (seccomp stays on)
  containerd         # the runtime the shim plugs into (1.6 on Debian 12)
  busybox-static     # a self-contained rootfs for test containers
  protobuf-compiler  # protoc, for the CRI client used by the Kubernetes tests
  pkg-config
  e2fsprogs          # mkfs for the small loop filesystems the disk-full tests use
  util-linux
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#packages[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing packages: ${missing[*]}; run this script as root (or with sudo)" >&2
  exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's containerd package starts a system daemon; our tests run private
# instances and must not depend on (or disturb) a system one.
