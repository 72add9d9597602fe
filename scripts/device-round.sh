#!/usr/bin/env bash
# One whole GPU round on a device machine: build (all cores, sm_90a only), run the GPU suites
# (single-GPU, multi-GPU when there are >= 2 GPUs), compute-sanitizer on small shapes, the
# benchmarks, and print a short table. Full logs and JSON go to $OUT (or ./device-out).
#   scripts/device-round.sh [--bench-filter REGEX] [--no-sanitizer] [--no-bench] [--prebuilt DIR]
# LASP_EMULATED_NET=0 skips the multi-GPU benchmark over NCCL's socket transport (issue 13).
# --prebuilt DIR: use lasp_tests_gpu, lasp_tests_multigpu, lasp_bench, lasp_demo (and, when
# there, lasp_mpi_example, lasp_mpi_kill_test, lasp_train_step, lasp_bench_sp) from DIR
# (built elsewhere) instead of building here.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-$PWD/device-out}"
mkdir -p "$out"
filter='.'
sanitize=1
bench=1
prebuilt=''
while [ $# -gt 0 ]; do
  case "$1" in
    --bench-filter) filter="$2"; shift 2 ;;
    --no-sanitizer) sanitize=0; shift ;;
    --no-bench) bench=0; shift ;;
    --prebuilt) prebuilt="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# NVLink multicast must stay off on these shared machines.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv | tee "$out/gpus.csv"
ngpu=$(nvidia-smi --list-gpus | wc -l)
commit=${LASP_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}  # the device copy has no .git: pass LASP_COMMIT
echo "commit $commit, $(date -u +%Y-%m-%dT%H:%MZ), $ngpu GPU(s)" | tee "$out/round.txt"

if [ -n "$prebuilt" ]; then
  bin="$prebuilt"
else
  bin=build-device
  t0=$(date +%s)
  cmake -S . -B "$bin" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DLASP_CHECK_HEADERS=OFF \
    >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
  cmake --build "$bin" -j"$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$out/round.txt"
  bin="$bin"
fi
find_bin() { find "$bin" -name "$1" -type f -perm -u+x | head -1; }
gpu_tests=$(find_bin lasp_tests_gpu)
mgpu_tests=$(find_bin lasp_tests_multigpu)
bench_bin=$(find_bin lasp_bench)
bench_sp_bin=$(find_bin lasp_bench_sp)
mpi_bin=$(find_bin lasp_mpi_example)
kill_bin=$(find_bin lasp_mpi_kill_test)
train_bin=$(find_bin lasp_train_step)
demo_bin=$(find_bin lasp_demo)

status=0
summary=()
run() {  # name, command...
  local name="$1"; shift
  local t0=$(date +%s)
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && status=1
  summary+=("$(printf '%-22s rc=%-3s %4ss  %s' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$(grep -E 'test cases|ERROR SUMMARY|PASS|FAIL' "$out/$name.log" | tail -1)")")
}
[ -n "$gpu_tests" ] && run gpu "$gpu_tests"
if [ "$ngpu" -ge 2 ] && [ -n "$mgpu_tests" ]; then run multigpu "$mgpu_tests"; fi
if [ $sanitize -eq 1 ] && [ -n "$gpu_tests" ]; then
  run memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$gpu_tests" -tc='*sanitizer*'
  run racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$gpu_tests" -tc='*sanitizer*'
fi
[ -n "$demo_bin" ] && run demo "$demo_bin"
if [ "$ngpu" -ge 2 ] && [ -n "$mpi_bin" ] && command -v mpirun >/dev/null 2>&1; then
  # One process per GPU; MPI only bootstraps the NCCL id. SP x DP when there are 4 GPUs.
  run mpi mpirun --allow-run-as-root --oversubscribe -np "$ngpu" -x NCCL_NVLS_ENABLE "$mpi_bin"
  [ "$ngpu" -ge 4 ] && run mpi_spxdp mpirun --allow-run-as-root --oversubscribe -np "$ngpu" -x NCCL_NVLS_ENABLE "$mpi_bin" --sp 2
fi
if [ "$ngpu" -ge 2 ] && [ -n "$kill_bin" ] && command -v mpirun >/dev/null 2>&1; then
  # Bounded waits (comm::wait): one rank kills itself mid-run; every survivor must get kCommError
  # within timeout (10 s) + slack (5 s). kill-test.sh passes mpirun the options that keep the
  # survivors alive and judges by their PASS lines (mpirun's exit code means nothing here).
  run kill_test scripts/kill-test.sh "$kill_bin" "$ngpu"
  run kill_test_overlap scripts/kill-test.sh "$kill_bin" "$ngpu" --schedule chain-overlap --victim 0
fi
if [ "$ngpu" -ge 2 ] && [ -n "$train_bin" ]; then
  run train_step "$train_bin"                 # SP x DP training step vs the 1-GPU run
  run train_step_gather "$train_bin" --gather
fi
if [ $bench -eq 1 ] && [ -n "$bench_bin" ]; then
  run bench "$bench_bin" --benchmark_filter="$filter" --benchmark_out="$out/bench.json" --benchmark_out_format=json
fi
if [ $bench -eq 1 ] && [ -n "$bench_sp_bin" ] && [ "$ngpu" -ge 2 ]; then
  run bench_sp "$bench_sp_bin" --json "$out/bench_sp.json"
  # Emulated multi-node (issue 13): NCCL kept off NVLink and shared memory, onto its socket
  # transport over loopback, so every hop pays network-like latency and bandwidth; the hop rows
  # of the same run give alpha-beta figures for bench/model.
  if [ "${LASP_EMULATED_NET:-1}" = 1 ]; then
    run bench_sp_net env NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1 NCCL_NET=Socket \
      NCCL_SOCKET_IFNAME=lo "$bench_sp_bin" --no-capacity --json "$out/bench_sp_net.json"
  fi
fi

echo
echo "== round summary (commit $commit) =="
printf '%s\n' "${summary[@]}"
for f in bench_sp bench_sp_net; do
  if [ -f "$out/$f.log" ]; then
    echo
    echo "($f)"
    sed -n '/== weak scaling/,$p' "$out/$f.log"
  fi
done
if [ -f "$out/bench.log" ]; then
  echo
  grep -E "^device:" "$out/bench.log"
  printf '%-34s %10s %10s %10s\n' benchmark median_ms GB/s roofline
  grep -E "_median" "$out/bench.log" | awk '!seen[$1]++' | while read -r name t unit rest; do
    gbs=$(echo "$rest" | grep -oE 'GB/s=[0-9.]+[GTM]?' | head -1 | cut -d= -f2)
    roof=$(echo "$rest" | grep -oE 'roofline=[0-9.]+' | head -1 | cut -d= -f2)
    printf '%-34s %10s %10s %10s\n' "${name%%/repeats*}" "$t" "$gbs" "$roof"
  done
fi
exit $status
