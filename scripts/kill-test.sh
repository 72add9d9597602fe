#!/usr/bin/env bash
# Runs lasp_mpi_kill_test (tests/mpi/kill_test.cu) under mpirun, one process per GPU: one rank
# kills itself mid-run, the survivors' bounded waits must return kCommError within timeout +
# slack. mpirun's own exit code says nothing here (a rank died on purpose, and the survivors
# leave without MPI_Finalize), so this script counts the ranks' lines instead.
#
#   scripts/kill-test.sh BINARY [NP [kill_test options...]]
#     NP: processes (default: the number of GPUs nvidia-smi lists); options: see kill_test.cu
#     (--victim, --kill-step, --timeout-ms, --slack-ms, --n, --schedule).
# Exit: 0 when every survivor printed PASS, 1 otherwise, 77 (skipped) without mpirun or with
# fewer than 2 GPUs. KILL_TEST_TIMEOUT (seconds, default 300) bounds the whole mpirun.
#
# mpirun options that keep the survivors running after a rank died by a signal:
#  - Open MPI 4.x (tried with 4.1.4): --enable-recovery --mca orte_abort_on_non_zero_status 0
#    (without them mpirun kills every rank as soon as one dies);
#  - Open MPI 5.x (PRRTE): --enable-recovery (not tried);
#  - MPICH / Hydra: -disable-auto-cleanup (not tried).
set -uo pipefail
bin="${1:?usage: scripts/kill-test.sh BINARY [NP [options...]]}"
shift
np=''
if [ $# -gt 0 ]; then np="$1"; shift; fi
if ! command -v mpirun >/dev/null 2>&1; then
  echo "kill-test: skipped (no mpirun)"
  exit 77
fi
if [ -z "$np" ]; then np=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); fi
if [ "${np:-0}" -lt 2 ]; then
  echo "kill-test: skipped (needs >= 2 GPUs, found ${np:-0})"
  exit 77
fi
version=$(mpirun --version 2>&1 | head -1)
case "$version" in
  *"Open MPI"*" "[1-4].*) opts=(--allow-run-as-root --oversubscribe --enable-recovery --mca orte_abort_on_non_zero_status 0) ;;
  *"Open MPI"*) opts=(--allow-run-as-root --oversubscribe --enable-recovery) ;;
  *) opts=(-disable-auto-cleanup) ;;
esac
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"  # NVLink multicast stays off on shared machines
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "kill-test: $version; mpirun ${opts[*]} -np $np $bin $*"
timeout "${KILL_TEST_TIMEOUT:-300}" mpirun "${opts[@]}" -np "$np" "$bin" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
pass=$(grep -c '^kill_test rank [0-9]*: PASS' "$log")
fail=$(grep -c '^kill_test rank [0-9]*: FAIL' "$log")
killed=$(grep -c '^kill_test rank [0-9]*: killing itself' "$log")
echo "kill-test: $pass of $((np - 1)) survivors PASS, $fail FAIL, $killed rank(s) killed themselves (mpirun rc $rc)"
if [ "$pass" -eq $((np - 1)) ] && [ "$fail" -eq 0 ] && [ "$killed" -eq 1 ]; then
  echo "kill-test: PASS"
  exit 0
fi
echo "kill-test: FAIL"
exit 1
