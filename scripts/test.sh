#!/usr/bin/env bash
# Configures, builds and tests lasp: the README's test command and what CI runs.
#   build/ (or $LASP_BUILD_DIR), Release, all cores; then ctest. Extra arguments go to ctest,
#   e.g. scripts/test.sh -L cpu, scripts/test.sh -R package.
# When nvcc exists (on PATH or in /usr/local/cuda/bin) the CUDA tests, benchmarks and examples
# are compiled too, so a CUDA compile error fails the run; without a GPU the GPU suites are
# reported as skipped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A fresh machine gets what it lacks (Debian packages, when run as root); a no-op otherwise.
./scripts/install-deps.sh
build_dir="${LASP_BUILD_DIR:-build}"

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

cuda_args=()
if command -v nvcc >/dev/null 2>&1; then
  cuda_args=(-DLASP_ENABLE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$(command -v nvcc)")
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build "$build_dir" -j"$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure "$@"
