#!/usr/bin/env bash
# lasp_torch on a GPU machine (no network), from the repository root:
#   bash bindings/torch/device-test.sh            # logs and JSON into $OUT (default ./device-out)
# 1. installs the carried wheels offline (.wheels/: fla-core, flash-linear-attention, lasp
#    reference, einops; ninja/pytest only when missing), 2. builds and installs the binding with
#    all cores (no build isolation, sm_80 + sm_90), 3. runs the 1-GPU pytest suite, 4. the SP script
#    on as many GPUs as are visible (torchrun; on one GPU: one rank over a forced NCCL communicator),
#    5. bench.py, 6. prints a summary. Budget: about 6 minutes on 16 cores.
set -uo pipefail
OUT=${OUT:-./device-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
T0=$(date +%s)
say() { echo "[device-test $(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/summary.txt"
nvcc --version | tail -1 >> "$OUT/summary.txt" 2>&1

# 1. wheels (offline)
whl=()
for w in .wheels/*.whl; do
  case "$(basename "$w")" in
    ninja-*)   python -c "import ninja" 2>/dev/null || command -v ninja >/dev/null || whl+=("$w") ;;
    pytest-*|pluggy-*|iniconfig-*) python -c "import pytest" 2>/dev/null || whl+=("$w") ;;
    einops-*)  python -c "import einops" 2>/dev/null || whl+=("$w") ;;
    *) whl+=("$w") ;;
  esac
done
python -m pip install --no-index --no-deps "${whl[@]}" > "$OUT/pip-wheels.log" 2>&1 && say "wheels installed: ${#whl[@]}" || say "wheel install FAILED (see pip-wheels.log)"

# 2. build + install (all cores, no network, no isolation)
export MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0a"}
if python -m pip install --no-index --no-build-isolation --no-deps -v ./bindings/torch > "$OUT/build.log" 2>&1; then
  say "build OK ($(grep -c '^\[' "$OUT/build.log" || true) ninja steps)"
else
  say "build FAILED: tail of build.log:"; tail -40 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1
fi
rm -rf bindings/torch/build
(cd /tmp && python -c "import lasp_torch; print('lasp_torch', lasp_torch.__version__, 'extension', lasp_torch.HAVE_EXTENSION)") | tee -a "$OUT/summary.txt"

# 3. pytest (1 GPU)
(cd /tmp && timeout 240 python -m pytest -q -rs "$OLDPWD/bindings/torch/tests" --junitxml="$OUT/pytest.xml") > "$OUT/pytest.log" 2>&1
say "pytest rc=$?: $(tail -1 "$OUT/pytest.log")"

# 4. sequence parallel (torchrun)
G=$(nvidia-smi -L 2>/dev/null | wc -l)
NP=$(( G >= 4 ? 4 : (G >= 2 ? 2 : 1) ))
export LASP_TORCH_NCCL_SINGLE=$([ "$NP" = 1 ] && echo 1 || echo 0)
timeout 120 torchrun --standalone --nproc_per_node=$NP bindings/torch/tests/sp_torchrun.py check > "$OUT/sp-check-np$NP.log" 2>&1
say "sp check np=$NP rc=$?: $(grep summary "$OUT/sp-check-np$NP.log" | tail -1)"
if [ "$NP" -ge 2 ]; then
  timeout 150 torchrun --standalone --nproc_per_node=2 bindings/torch/tests/sp_torchrun.py train --steps 300 > "$OUT/sp-train-np2.log" 2>&1
  say "sp train np=2 rc=$?: $(grep summary "$OUT/sp-train-np2.log" | tail -1)"
fi
unset LASP_TORCH_NCCL_SINGLE

# 5. bench
timeout 300 python bindings/torch/bench.py --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
say "bench rc=$?"
cat "$OUT/bench.log" | tail -25 | tee -a "$OUT/summary.txt"
say "done; logs in $OUT"
