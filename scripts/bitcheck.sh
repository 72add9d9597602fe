#!/usr/bin/env bash
# Bit-identity and speed of the tree against an earlier lasp, on one GPU, in one go:
#   scripts/bitcheck.sh OLD_INCLUDE_DIR [bench filter]     (BITCHECK_PREBUILT=dir: use binaries built elsewhere)
# Builds bench/digest.cu and bench/bench_kernels.cu twice from the same sources, once against
# OLD_INCLUDE_DIR (the include/ of the earlier commit, e.g. from
# `git archive <commit> include | tar -x -C .old`) and once against include/, runs both digests
# and diffs them (identical lines = bit-identical outputs), then runs both benchmarks
# alternately on the same GPU and prints their medians side by side. Logs under $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
old="$1"
filter="${2:-perhead/S32K/|gate/S32K/|none/S32K/}"
out="${OUT:-$PWD/device-out}"
tmp="${TMPDIR:-/tmp}/lasp-bitcheck"
mkdir -p "$out" "$tmp"
nvcc_flags=(-std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo)
build() {  # include dir, source, output, extra libs...
  local inc="$1" src="$2" o="$3"; shift 3
  nvcc "${nvcc_flags[@]}" -I"$inc" "$src" -o "$o" "$@" >"$o.log" 2>&1 || { echo "build of $o failed"; tail -20 "$o.log"; return 1; }
}
t0=$(date +%s)
if [ -n "${BITCHECK_PREBUILT:-}" ]; then  # digest_old/new, bench_old/new built elsewhere (sm_90)
  cp "$BITCHECK_PREBUILT"/digest_old "$BITCHECK_PREBUILT"/digest_new "$BITCHECK_PREBUILT"/bench_old \
     "$BITCHECK_PREBUILT"/bench_new "$tmp"/ || exit 1
else
  build "$old" bench/digest.cu "$tmp/digest_old" & p1=$!
  build include bench/digest.cu "$tmp/digest_new" & p2=$!
  build "$old" bench/bench_kernels.cu "$tmp/bench_old" -lbenchmark -lpthread & p3=$!
  build include bench/bench_kernels.cu "$tmp/bench_new" -lbenchmark -lpthread & p4=$!
  ok=0
  for p in $p1 $p2 $p3 $p4; do wait $p || ok=1; done
  echo "bitcheck builds: $(( $(date +%s) - t0 )) s"
  [ $ok -eq 0 ] || exit 1
fi
"$tmp/digest_old" >"$out/digest_old.txt" 2>&1
"$tmp/digest_new" >"$out/digest_new.txt" 2>&1
if diff "$out/digest_old.txt" "$out/digest_new.txt" >"$out/digest.diff"; then
  echo "digests: IDENTICAL ($(grep -c . "$out/digest_new.txt") lines)"
else
  echo "digests: DIFFER"; cat "$out/digest.diff"
fi
# Same GPU, same run, alternating old/new twice so drift shows up as a spread.
for round in 1 2; do
  for which in old new; do
    "$tmp/bench_$which" --benchmark_filter="$filter" --benchmark_out="$out/bench_${which}_$round.json" \
      --benchmark_out_format=json >"$out/bench_${which}_$round.log" 2>&1
  done
done
printf '%-32s %12s %12s %12s %12s\n' benchmark old_1_ms new_1_ms old_2_ms new_2_ms
for name in $(grep -E "_median" "$out/bench_new_1.log" | awk '{print $1}' | sed 's/_median$//'); do
  row=()
  for f in old_1 new_1 old_2 new_2; do
    row+=("$(grep -E "^${name}_median" "$out/bench_$f.log" | awk '{print $2}')")
  done
  printf '%-32s %12s %12s %12s %12s\n' "${name%%/repeats*}" "${row[@]}"
done
