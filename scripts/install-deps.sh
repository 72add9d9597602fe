#!/usr/bin/env bash
# Installs what lasp's build and tests need from Debian/Ubuntu packages, skipping what is
# already there: cmake, make, g++, doctest (tests), Google Benchmark (bench).
# The CUDA toolkit and NCCL are not installed here (see the README); without them only the
# host-only parts are built. MPI (libopenmpi-dev) is optional, for examples/mpi_sp.cu.
#
# Usage: scripts/install-deps.sh        (as root, or with sudo available)
set -euo pipefail

packages=(cmake make g++ doctest-dev libbenchmark-dev)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all of ${packages[*]} are installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: missing ${missing[*]}; run as root or install them yourself" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
