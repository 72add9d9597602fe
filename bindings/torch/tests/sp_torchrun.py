"""Sequence-parallel checks of lasp_torch over torch.distributed (run with torchrun, 2 or 4 GPUs;
1 GPU runs too, with LASP_TORCH_NCCL_SINGLE=1 to force the NCCL path on one rank).

  torchrun --nproc_per_node=4 bindings/torch/tests/sp_torchrun.py check
  torchrun --nproc_per_node=2 bindings/torch/tests/sp_torchrun.py train --steps 300

check: every rank builds the SAME full sequence (same seed), runs the 1-GPU result on it
       (group=None, the whole sequence on this GPU), then its own slice with group=WORLD, and
       compares outputs, q/k/v/gate gradients, final state (last rank) and initial-state gradient
       (rank 0) with the 1-GPU result; and with the LASP reference code (`lasp` from PyPI,
       lasp_fuse_parallel over the same group, same inputs and slopes, scale 1) in the same process.
train: a tiny TransNormer-style model (a few layers) trained with SP = world size next to a
       1-GPU replica of the same model on the full sequences (in the same process): the loss
       curves must agree (relative difference < 2% at every logged step).
Exit 0 when every check passes on every rank; prints one JSON line per rank (rank 0 gathers).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from reference import rel  # noqa: E402

import lasp_torch  # noqa: E402


def setup():
    dist.init_process_group("nccl")
    lr = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(lr)
    return dist.get_rank(), dist.get_world_size()


def gather_ok(ok, info):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, {"rank": dist.get_rank(), "ok": bool(ok), **info})
    return out


def check(args):
    rank, R = setup()
    B, Nl, H, D = args.B, args.n, 4, 128
    N = Nl * R
    sl = slice(rank * Nl, (rank + 1) * Nl)
    dev = "cuda"
    results = {}
    ok = True
    for decay in ("perhead", "gate", "none"):
        g = torch.Generator(device=dev).manual_seed(1234)
        q = (torch.randn(B, N, H, D, device=dev, generator=g) * 0.5).bfloat16()
        k = (torch.randn(B, N, H, D, device=dev, generator=g) * 0.5).bfloat16()
        v = torch.randn(B, N, H, D, device=dev, generator=g).bfloat16()
        do = torch.randn(B, N, H, D, device=dev, generator=g).bfloat16()
        gates = torch.nn.functional.logsigmoid(torch.randn(B, N, H, device=dev, generator=g) + 4)
        h0 = torch.randn(B, H, D, D, device=dev, generator=g)
        dht = torch.randn(B, H, D, D, device=dev, generator=g)
        slopes = lasp_torch.tnl_slopes(H)
        kw = {"slopes": slopes} if decay == "perhead" else ({} if decay == "none" else None)

        def run(qq, kk, vv, gg, hh, dd, group):
            leaves = [x.clone().requires_grad_() for x in (qq, kk, vv)]
            gl = gg.clone().requires_grad_() if decay == "gate" else None
            hl = hh.clone().requires_grad_()
            o, ht = lasp_torch.linear_attention(*leaves, slopes=slopes if decay == "perhead" else None, gates=gl,
                                                initial_state=hl, output_final_state=True, group=group)
            (o.float() * dd.float()).sum().add((ht * dht).sum()).backward()
            return o.detach(), ht.detach(), [x.grad for x in leaves], gl.grad if gl is not None else None, hl.grad

        o1, ht1, g1, dg1, dh01 = run(q, k, v, gates, h0, do, None)
        o2, ht2, g2, dg2, dh02 = run(q[:, sl], k[:, sl], v[:, sl], gates[:, sl], h0, do[:, sl], dist.group.WORLD)
        r = {"o": rel(o2, o1[:, sl])}
        for nm, a, b in zip("qkv", g2, g1):
            r["d" + nm] = rel(a, b[:, sl])
        if decay == "gate":
            r["dg"] = rel(dg2, dg1[:, sl])
        if rank == R - 1:
            r["final_state"] = rel(ht2, ht1)
        if rank == 0:
            r["d_initial_state"] = rel(dh02, dh01)
        bad = {kk: vv for kk, vv in r.items() if not vv < 2e-2}
        ok = ok and not bad
        results[decay] = r
    # LASP reference (per-head slopes, scale 1, head-major, its own chain over the same group)
    try:
        import lasp as lasp_ref
        if not lasp_ref.sequence_parallel_is_initialized():
            lasp_ref.initialize_lasp(data_parallel_size=1, sequence_parallel_size=R)
        g = torch.Generator(device=dev).manual_seed(99)
        q = (torch.randn(B, N, H, D, device=dev, generator=g) * 0.1).bfloat16()
        k = (torch.randn(B, N, H, D, device=dev, generator=g) * 0.1).bfloat16()
        v = torch.randn(B, N, H, D, device=dev, generator=g).bfloat16()
        do = torch.randn(B, N, H, D, device=dev, generator=g).bfloat16()
        slopes = lasp_torch.tnl_slopes(H)
        ql, kl, vl = (x[:, sl].transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))  # [B,H,Nl,D]
        KV = torch.zeros(B, H, D, D, device=dev, dtype=torch.float32)
        DKV = torch.zeros(B, H, D, D, device=dev, dtype=torch.float32)
        o_ref = lasp_ref.lasp_fuse_parallel(ql, kl, vl, slopes.cuda().view(H, 1, 1), KV, DKV)
        o_ref.backward(do[:, sl].transpose(1, 2))
        ref_g = [x.grad.transpose(1, 2) for x in (ql, kl, vl)]
        lt = [x[:, sl].clone().requires_grad_() for x in (q, k, v)]
        o_l, _ = lasp_torch.linear_attention(*lt, slopes=slopes, scale=1.0, group=dist.group.WORLD)
        o_l.backward(do[:, sl])
        r = {"o": rel(o_l, o_ref.transpose(1, 2))}
        for nm, a, b in zip("qkv", [x.grad for x in lt], ref_g):
            r["d" + nm] = rel(a, b)
        bad = {kk: vv for kk, vv in r.items() if not vv < 3e-2}
        ok = ok and not bad
        results["lasp_reference"] = r
    except ImportError as ex:
        results["lasp_reference"] = f"skipped: {ex}"
    except Exception as ex:
        ok = False
        results["lasp_reference"] = f"FAILED: {type(ex).__name__}: {str(ex)[:300]}"
    allr = gather_ok(ok, {"results": results})
    if rank == 0:
        for x in allr:
            print(json.dumps(x), flush=True)
        print(json.dumps({"summary": "sp check", "world": R, "n_per_rank": Nl, "ok": all(x["ok"] for x in allr)}))
    all_ok = all(x["ok"] for x in allr)
    dist.destroy_process_group()
    return 0 if all_ok else 1


class Layer(torch.nn.Module):
    def __init__(self, M, H, D, slopes):
        super().__init__()
        self.H, self.D = H, D
        self.n1 = torch.nn.RMSNorm(M)
        self.qkv = torch.nn.Linear(M, 3 * H * D, bias=False)
        self.o = torch.nn.Linear(H * D, M, bias=False)
        self.n2 = torch.nn.RMSNorm(M)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(M, 4 * M), torch.nn.SiLU(), torch.nn.Linear(4 * M, M))
        self.slopes = slopes

    def forward(self, x, group):
        B, N, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, N, 3, self.H, self.D).unbind(2)
        q, k = torch.nn.functional.silu(q), torch.nn.functional.silu(k)
        a, _ = lasp_torch.linear_attention(q, k, v, slopes=self.slopes, group=group)
        x = x + self.o(a.reshape(B, N, self.H * self.D))
        return x + self.mlp(self.n2(x))


class Model(torch.nn.Module):
    def __init__(self, V=256, M=256, L=3, H=4, D=64):
        super().__init__()
        slopes = lasp_torch.tnl_slopes(H)
        self.emb = torch.nn.Embedding(V, M)
        self.layers = torch.nn.ModuleList([Layer(M, H, D, slopes * (0.5 ** l)) for l in range(L)])
        self.norm = torch.nn.RMSNorm(M)
        self.head = torch.nn.Linear(M, V, bias=False)

    def forward(self, tok, group=None):
        x = self.emb(tok)
        for l in self.layers:
            x = l(x, group)
        return self.head(self.norm(x))


def train(args):
    rank, R = setup()
    dev = "cuda"
    B, Nl, V = args.B, args.n, 256
    N = Nl * R
    sl = slice(rank * Nl, (rank + 1) * Nl)
    torch.manual_seed(0)
    m_sp = Model(V=V).to(dev)
    torch.manual_seed(0)
    m_1 = Model(V=V).to(dev)
    opt_sp = torch.optim.AdamW(m_sp.parameters(), lr=1e-3)
    opt_1 = torch.optim.AdamW(m_1.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(7)
    curve = []
    ok = True
    t0 = time.time()
    for step in range(args.steps):
        # periodic random patterns: learnable by a decaying linear attention
        period = 8 + int(torch.randint(0, 24, (1,), generator=gen))
        pat = torch.randint(0, V, (B, period), generator=gen)
        seq = pat.repeat(1, (N + 1) // period + 2)[:, : N + 1].to(dev)
        inp, tgt = seq[:, :-1], seq[:, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lo1 = torch.nn.functional.cross_entropy(m_1(inp).float().reshape(-1, V), tgt.reshape(-1))
            lsp = torch.nn.functional.cross_entropy(m_sp(inp[:, sl], dist.group.WORLD).float().reshape(-1, V),
                                                    tgt[:, sl].reshape(-1), reduction="sum") / (B * N)
        opt_1.zero_grad(set_to_none=True)
        lo1.backward()
        opt_1.step()
        opt_sp.zero_grad(set_to_none=True)
        lsp.backward()
        # parameters are replicated over the SP group: sum the partial gradients (and the loss)
        for p in m_sp.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
        opt_sp.step()
        loss_sp = lsp.detach().clone()
        dist.all_reduce(loss_sp)
        if step % 10 == 0 or step == args.steps - 1:
            a, b = float(loss_sp), float(lo1)
            curve.append((step, a, b))
            if abs(a - b) / abs(b) > 2e-2:
                ok = False
    allr = gather_ok(ok, {"steps": args.steps, "first": curve[0], "last": curve[-1]})
    if rank == 0:
        for s, a, b in curve:
            print(json.dumps({"step": s, "loss_sp": round(a, 5), "loss_1gpu": round(b, 5)}))
        print(json.dumps({"summary": "sp train", "world": R, "n_per_rank": Nl, "steps": args.steps,
                          "seconds": round(time.time() - t0, 1),
                          "max_rel_diff": max(abs(a - b) / abs(b) for _, a, b in curve),
                          "ok": all(x["ok"] for x in allr)}), flush=True)
    all_ok = all(x["ok"] for x in allr)
    dist.destroy_process_group()
    return 0 if all_ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "train"])
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--n", type=int, default=1024, help="tokens per rank")
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    sys.exit(check(a) if a.mode == "check" else train(a))
