#!/usr/bin/env bash
# Builds the lasp_demo example (CUDA when nvcc is available, else host-only) and runs it;
# arguments go to the demo: scripts/demo.sh --help
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A fresh machine gets what it lacks (Debian packages, when run as root); a no-op otherwise.
./scripts/install-deps.sh
build_dir=build

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build_dir" -j"$(nproc)" --target lasp_demo
exec "./$build_dir/examples/lasp_demo" "$@"
