#!/usr/bin/env python3
"""Time fla's Triton `chunk_simple_gla` (the fastest single-GPU peer) over a sweep of N.

Standalone: needs only torch and fla (fla-core; einops). Shape: B=1, H=16, D=E=128, bf16,
per-head constant decay passed as fla's `g_gamma` (a LOG decay, <= 0: g_gamma[h] = -s_h with the
TNL slopes s_h = 2^(-8(h+1)/H), so each token decays the state by exp(-s_h), lasp's convention).

Times, with CUDA events after warm-up, the median over --reps runs of
  forward:           o, _ = chunk_simple_gla(q, k, v, g_gamma=..., scale=...)
  forward+backward:  the same, then o.backward(do)   (gradients of q, k, v)
Inputs rotate over several copies when a copy is smaller than ~4x L2 so the timing is not
served from L2 (performance.md "rotate inputs larger than L2").

fwd_ms / step_ms time one call between CUDA events (as lasp_bench does); fwd_ms_b8 / step_ms_b8
time 8 back-to-back calls and divide, which hides the host time before the first kernel.

Prints one JSON object per line:
  {"peer": "fla", "N": 32768, "fwd_ms": ..., "step_ms": ..., ...}
and with --out FILE writes the same lines to FILE.

  python bench/peers/fla_sweep.py --out bench/results/fla-sweep.jsonl
"""
import argparse
import json
import statistics
import sys

import torch

DEFAULT_N = [4096, 8192, 16384, 32768, 65536, 131072, 262144]


def tnl_slopes(H):
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], dtype=torch.float32)


def time_ms(fn, warmup, reps, batch=1):
    """Median, min, max over `reps` of (events around `batch` back-to-back calls) / batch.
    batch = 1 counts the host time before the first kernel starts (Python, the dispatcher,
    Triton's launch path) as lasp_bench's per-call timing does; batch > 1 hides most of it behind
    the previous call's kernels (GPU-bound throughput)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(batch):
            fn()
        e.record()
        e.synchronize()
        out.append(s.elapsed_time(e) / batch)
    return statistics.median(out), min(out), max(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, nargs="*", default=DEFAULT_N, help="sequence lengths")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--D", type=int, default=128, help="D = E")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", type=str, default=None, help="also write the JSON lines to this file")
    a = ap.parse_args()

    if not torch.cuda.is_available():
        print("fla_sweep: no CUDA device", file=sys.stderr)
        return 2
    from fla.ops.simple_gla import chunk_simple_gla

    dev = torch.device("cuda")
    B, H, D = a.B, a.H, a.D
    g_gamma = (-tnl_slopes(H)).to(dev)          # fla: log decay, <= 0
    scale = D ** -0.5
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size if hasattr(
        torch.cuda.get_device_properties(dev), "L2_cache_size") else 50 << 20
    lines = []
    card = torch.cuda.get_device_name(dev)
    try:
        import fla
        fla_ver = getattr(fla, "__version__", "?")
    except Exception:
        fla_ver = "?"
    for N in a.N:
        bytes_one = 4 * B * N * H * D * 2  # q, k, v, do in bf16
        copies = max(1, min(8, (4 * l2 + bytes_one - 1) // bytes_one))
        torch.manual_seed(0)
        sets = []
        try:
            for _ in range(copies):
                q = torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
                k = torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
                v = torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
                do = torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16)
                sets.append((q, k, v, do))
            it = [0]

            def fwd():
                q, k, v, _ = sets[it[0] % copies]
                it[0] += 1
                with torch.no_grad():
                    chunk_simple_gla(q, k, v, g_gamma=g_gamma, scale=scale)

            def step():
                q, k, v, do = sets[it[0] % copies]
                it[0] += 1
                q.grad = k.grad = v.grad = None
                o, _ = chunk_simple_gla(q, k, v, g_gamma=g_gamma, scale=scale)
                o.backward(do)

            f_med, f_min, f_max = time_ms(fwd, a.warmup, a.reps)
            s_med, s_min, s_max = time_ms(step, a.warmup, a.reps)
            f_b8 = time_ms(fwd, 1, a.reps, batch=8)[0]   # back-to-back: host overhead hidden
            s_b8 = time_ms(step, 1, a.reps, batch=8)[0]
            rec = {"peer": "fla", "N": N, "fwd_ms": round(f_med, 4), "step_ms": round(s_med, 4),
                   "fwd_ms_b8": round(f_b8, 4), "step_ms_b8": round(s_b8, 4),
                   "fwd_min_ms": round(f_min, 4), "fwd_max_ms": round(f_max, 4),
                   "step_min_ms": round(s_min, 4), "step_max_ms": round(s_max, 4),
                   "B": B, "H": H, "D": D, "E": D, "dtype": "bf16", "decay": "g_gamma",
                   "reps": a.reps, "copies": copies, "card": card, "fla": fla_ver,
                   "torch": torch.__version__}
        except Exception as ex:  # OOM or a peer failure: say so and go on
            rec = {"peer": "fla", "N": N, "fwd_ms": None, "step_ms": None,
                   "error": f"{type(ex).__name__}: {str(ex).splitlines()[0][:200] if str(ex) else ''}"}
        del sets
        torch.cuda.empty_cache()
        line = json.dumps(rec)
        print(line, flush=True)
        lines.append(line)
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
