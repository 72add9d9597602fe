#!/usr/bin/env python3
"""lasp cost model: step time and weak-scaling efficiency of the SP schedules, R = 2..1024.

    python3 bench/model/lasp_model.py [--inputs bench/model/inputs.json] [--out bench/results]
                                      [--card H200] [--no-plot]

Inputs (measured alpha-beta figures, 1-GPU step times, and the network assumptions) come from
bench/model/inputs.json, each with its source. The model (bench/model/README.md):

    step(R) = T1(N) * s(R) + 2 * X(schedule, R)            (forward scan + backward scan)
    eff(R)  = T1(N) / step(R)

T1 the measured 1-GPU step, s(R) the measured slowdown of compute alone with R GPUs at once,
X the exposed communication of one scan, built from a state hop h = alpha + n/beta
(n = B*H*(D*E+1)*4 bytes = 1 MiB), an all-gather of the states, and c, one D x E combine on the
critical path (the only fitted parameter, from one run's chain at 32K per GPU):

    chain       (R-1) (h + c)                       R-1 dependent hops
    all-gather  alpha + (R-1) n/beta_ag + (R-1) c   NCCL-like collective, then the fold of R-1 states
    truncated   h                                   one neighbour shift
    log-scan    K h + (2K-1) c,  K = ceil(log2 R)   Kogge-Stone rounds (two combines per round but
                                                    the last)
    hierarchical  schedule::Hierarchical<LogScan, LogScan> as implemented, nodes of g = 8 GPUs,
                M = R/g, Kg = ceil(log2 g), Km = ceil(log2 M):
                (a) Kogge-Stone inside the node   Kg h_nv + (2Kg-1) c + c   (+ c: the node total)
                (b) log-scan over the M node totals by one GPU per node   Km h_x + (2Km-1) c
                (c) binomial broadcast of the node's incoming state   Kg h_nv + c (the fix-up)
    hier-direct   Hierarchical<AllGather, LogScan>: (a) is g-1 direct exchange rounds,
                (g-1) (h_nv + c) + c; (b), (c) as above
    Both fall back to their inner scan over the whole group when g does not split R into >= 2
    nodes (R <= g, or R % g != 0): the crossovers and the plot use only R that are multiples of
    g (or R <= g) for them.

Scenarios: 'nvlink' (every hop at the measured NVLink figures, any R: an NVLink domain) and
'network' (8 GPUs per node on NVLink, nodes on InfiniBand: any hop or ring step that crosses a
node pays the network figures, which are assumptions).

Writes <out>/model-scaling.png (without matplotlib: skipped, said so) and <out>/model-scaling.txt
(everything printed). Validation: every measured weak-scaling point in bench/results.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

SCHEDULES = ["chain", "all-gather", "truncated", "log-scan", "hierarchical", "hier-direct"]
HIER = {"hierarchical", "hier-direct"}
MODELLED = {"chain", "all-gather", "truncated"}  # the ones measured so far


def val(x):
    return x["value"] if isinstance(x, dict) else x


class Model:
    def __init__(self, inp, card="H200"):
        self.inp = inp
        self.card = card
        st = inp["state"]
        self.n = 4.0 * st["B"] * st["H"] * (st["D"] * st["E"] + 1)  # bytes per state message
        self.gpn = val(inp["topology"]["gpus_per_node"])
        # Single-GPU step per N (ms), per card.
        self.t1 = {c: {int(k): val(v) for k, v in d.items() if not k.startswith("_")}
                   for c, d in inp["single_gpu_step_ms"].items() if not c.startswith("_")}
        # NVLink alpha-beta from the two measured hop sizes (us, bytes/us).
        self.nv = {}
        for c, d in inp["nvlink"].items():
            if c.startswith("_"):
                continue
            h_small, h_big = val(d["hop_4KiB_us"]), val(d["hop_1MiB_us"])
            beta = (2**20 - 4096) / (h_big - h_small)  # bytes per us
            alpha = h_small - 4096 / beta
            ag4 = val(d["allgather_1MiB_R4_us"])
            beta_ag = 3 * 2**20 / (ag4 - alpha)  # NCCL-like: alpha + (R-1) n / beta_ag
            self.nv[c] = dict(alpha=alpha, beta=beta, beta_ag=beta_ag)
        net = inp["network"]
        self.x = dict(alpha=val(net["alpha_us"]), beta=val(net["beta_GBps"]) * 1e3,
                      beta_ag=val(net["allgather_busbw_GBps"]) * 1e3)  # GB/s -> bytes/us
        # Calibration: compute slowdown s(G) and the combine cost c.
        cal = inp["calibration"]
        self.slow = {int(g): float(np.mean(val(v))) for g, v in cal["nocomm_over_1gpu"].items()
                     if g.isdigit()}
        h = self.hop("H200", "nv")
        pts = [(int(g), val(v)) for g, v in cal["chain_exposed_us"].items() if g.isdigit()]
        a = np.array([2.0 * (g - 1) for g, _ in pts])  # exposed = 2 (G-1) (h + c)
        e = np.array([x for _, x in pts])
        self.c = float(np.dot(a, e - a * h) / np.dot(a, a))

    # ---- building blocks (us) ----
    def link(self, card, where):
        return self.nv[card] if where == "nv" else self.x

    def hop(self, card, where):
        L = self.link(card, where)
        return L["alpha"] + self.n / L["beta"]

    def allgather(self, card, R, where):
        if R <= 1:
            return 0.0
        L = self.link(card, where)
        return L["alpha"] + (R - 1) * self.n / L["beta_ag"]

    def slowdown(self, R):
        if R <= 1:
            return 1.0
        if R in self.slow:
            return self.slow[R]
        if R < 4:
            return self.slow[2]
        return self.slow[4]  # assumption: the 4-GPU value beyond 4

    # ---- one scan's exposed communication ----
    def scan_us(self, sched, R, card="H200", scenario="nvlink"):
        if R <= 1:
            return 0.0
        c = self.c
        g = self.gpn
        multi_node = scenario == "network" and R > g
        far = "x" if multi_node else "nv"  # what a hop that crosses nodes costs
        h_nv, h_far = self.hop(card, "nv"), self.hop(card, far)
        K = math.ceil(math.log2(R))
        if sched == "chain":
            nodes = math.ceil(R / g)
            cross = nodes - 1 if multi_node else 0
            return (R - 1 - cross) * (h_nv + c) + cross * (h_far + c)
        if sched == "all-gather":
            return self.allgather(card, R, far) + (R - 1) * c
        if sched == "truncated":
            return h_far
        if sched == "log-scan":
            return K * h_far + (2 * K - 1) * c
        if sched in HIER:
            direct = sched == "hier-direct"

            def inner(n, h):  # the inner scan over n ranks at hop cost h (fallback: the whole group)
                if n <= 1:
                    return 0.0
                if direct:
                    return (n - 1) * (h + c)
                k = math.ceil(math.log2(n))
                return k * h + (2 * k - 1) * c
            if R <= g or R % g != 0:  # one node (fallback): the inner scan over all R ranks
                return inner(R, h_far if R > g else h_nv)
            M = R // g
            Kg = math.ceil(math.log2(g))
            Km = math.ceil(math.log2(M))
            a = inner(g, h_nv) + c                      # (a) + the leader's node total
            b = Km * h_far + (2 * Km - 1) * c           # (b) log-scan over the node totals
            bc = Kg * h_nv + c                          # (c) binomial broadcast + fix-up combine
            return a + b + bc
        raise ValueError(sched)

    def hier_valid(self, sched, R):
        """R where a hierarchical schedule runs as such (not its one-node fallback beyond a node)."""
        return sched not in HIER or R <= self.gpn or R % self.gpn == 0

    def t1_ms(self, card, N):
        d = self.t1[card]
        if N in d:
            return d[N]
        ks = sorted(d)  # log-log interpolation between measured N
        x = np.log([float(k) for k in ks])
        y = np.log([d[k] for k in ks])
        return float(np.exp(np.interp(math.log(N), x, y)))

    def step_ms(self, sched, R, N, card="H200", scenario="nvlink"):
        return self.t1_ms(card, N) * self.slowdown(R) + 2e-3 * self.scan_us(sched, R, card, scenario)

    def eff(self, sched, R, N, card="H200", scenario="nvlink"):
        return self.t1_ms(card, N) / self.step_ms(sched, R, N, card, scenario)


# ---- validation ---------------------------------------------------------------------------------

def measured_points(inp):
    pts = []
    for f in inp["validation"]["files"]:
        path = os.path.join(ROOT, f["file"])
        if not os.path.exists(path):
            print(f"  (missing {f['file']}: skipped)")
            continue
        rows = json.load(open(path))
        for r in rows:
            if r.get("kind") != "weak" or r["schedule"] not in MODELLED:
                continue
            pts.append(dict(card=f["card"], schedule=r["schedule"], G=r["gpus"], N=r["N"],
                            step=r["step_ms"], nocomm=r.get("step_nocomm_ms"),
                            src=os.path.basename(f["file"]), overlap="h100x4-sp-1" in f["file"]))
    for e in inp["validation"]["extra"]:
        step = e["step_ms"] if "step_ms" in e else e["base_ms"] / e["eff"]
        pts.append(dict(card=e["card"], schedule=e["schedule"], G=e["G"], N=e["N"], step=step, nocomm=None,
                        src=e["source"].split(" ")[0].replace("bench/results/", "").replace("bench/", ""),
                        overlap=False))
    return pts


def validate(m, inp, out):
    pts = measured_points(inp)
    out("== validation: predicted vs measured step (forward + backward), every measured point ==")
    out("   exposed = step - step with a no-op communicator (the communication the model predicts);")
    out("   calibration points (fit c) are marked *; H100 round 1 (overlap on, another code path) marked o")
    out(f"  {'source':<26} {'card':<5} {'schedule':<11} {'G':>2} {'N':>7} {'pred ms':>8} {'meas ms':>8} "
        f"{'err':>7} {'pred eff':>8} {'exposed pred/meas us':>21}")
    errs = {"all": [], "h200": [], "h100": [], "exp": []}
    cal_file = "h200x4-sp-final.json"
    for p in pts:
        pred = m.step_ms(p["schedule"], p["G"], p["N"], p["card"])
        err = (pred - p["step"]) / p["step"]
        base = m.t1_ms(p["card"], p["N"])
        exp_pred = 2 * m.scan_us(p["schedule"], p["G"], p["card"])
        exp_meas = 1e3 * (p["step"] - p["nocomm"]) if p["nocomm"] is not None else None
        cal = p["src"] == cal_file and p["schedule"] == "chain" and p["N"] == 32768 and p["G"] > 1
        mark = "*" if cal else ("o" if p["overlap"] else " ")
        es = f"{exp_pred:6.0f} / {exp_meas:6.0f}" if (exp_meas is not None and p["G"] > 1) else ""
        out(f" {mark}{p['src'][:26]:<26} {p['card']:<5} {p['schedule']:<11} {p['G']:>2} {p['N']:>7} {pred:8.3f} "
            f"{p['step']:8.3f} {100 * err:6.1f}% {100 * base / pred:7.1f}% {es:>21}")
        if cal:
            continue
        errs["all"].append(abs(err))
        (errs["h100"] if p["overlap"] else errs["h200"]).append(abs(err))
        if exp_meas is not None and p["G"] > 1 and not p["overlap"]:
            errs["exp"].append((exp_pred, exp_meas, p))
    def summary(name, e):
        if e:
            out(f"  {name}: {len(e)} points, |error| mean {100 * np.mean(e):.1f}%, max {100 * np.max(e):.1f}%, "
                f"within 15%: {sum(x <= 0.15 for x in e)}/{len(e)}")
    out("")
    summary("step time, all validation points", errs["all"])
    summary("step time, H200 (the modelled code)", errs["h200"])
    summary("step time, H100 round 1 (overlap on)", errs["h100"])
    if errs["exp"]:
        d = np.array([a - b for a, b, _ in errs["exp"]])
        r = np.array([abs(a - b) / b for a, b, _ in errs["exp"]])
        out(f"  exposed communication alone (H200, G>1, {len(d)} points): pred - meas mean {d.mean():+.0f} us, "
            f"|pred - meas| max {np.abs(d).max():.0f} us; relative |error| median {100 * np.median(r):.0f}%, "
            f"max {100 * r.max():.0f}% (run-to-run spread of the same row: up to ~50 us)")
    return errs


# ---- projection ---------------------------------------------------------------------------------

def projection(m, out, card, Ns=(8192, 32768, 131072)):
    Rs = [8, 64, 256, 1024]
    res = {}
    for scen in ("nvlink", "network"):
        for N in Ns:
            out(f"== projected weak-scaling efficiency, {card}, {N // 1024}K tokens per GPU, scenario '{scen}' "
                f"(1-GPU step {m.t1_ms(card, N):.3f} ms) ==")
            out(f"  {'schedule':<13}" + "".join(f"{'R=' + str(R):>10}" for R in Rs) +
                f"   {'step ms at R=1024':>18}")
            for s in SCHEDULES:
                effs = [m.eff(s, R, N, card, scen) for R in Rs]
                res[(scen, N, s)] = effs
                out(f"  {s:<13}" + "".join(f"{100 * e:9.1f}%" for e in effs) +
                    f"   {m.step_ms(s, 1024, N, card, scen):18.3f}")
            out("")
    return res


def crossovers(m, out, card, Ns=(8192, 32768, 131072)):
    out("== crossovers (R = 2..1024, every integer R): where one schedule overtakes another for good ==")
    out("   'A > B from R=x': A's step is shorter than B's for every R >= x (below x they may alternate:")
    out("   the log-scan and hierarchical costs step up at each power of two, the others grow smoothly);")
    out(f"   pairs with a hierarchical schedule compare only R <= {m.gpn} or R a multiple of {m.gpn} (else it falls back")
    out("   to its inner scan over the whole group)")
    Rs = np.arange(2, 1025)
    for scen in ("nvlink", "network"):
        seen = {}
        for N in Ns:
            steps = {s: np.array([m.step_ms(s, int(R), N, card, scen) for R in Rs]) for s in SCHEDULES}
            lines = []
            for i, a in enumerate(SCHEDULES):
                for b in SCHEDULES[i + 1:]:
                    ok = np.array([m.hier_valid(a, int(R)) and m.hier_valid(b, int(R)) for R in Rs])
                    d = (steps[a] - steps[b])[ok]
                    Rv = Rs[ok]
                    final = np.sign(d[-1])
                    if final == 0:
                        continue
                    faster, slower = (a, b) if final < 0 else (b, a)
                    bad = np.nonzero(np.sign(d) != final)[0]
                    start = int(Rv[bad[-1] + 1]) if len(bad) else 2
                    if start > 2:
                        lines.append(f"{faster} > {slower} from R={start}")
            best = ", ".join(f"R={R}: " + min((s for s in SCHEDULES if s != "truncated"), key=lambda s: steps[s][R - 2])
                             for R in (2, 4, 8, 16, 64, 256, 1024))
            seen.setdefault(("; ".join(lines), best), []).append(f"{N // 1024}K")
        # The compute term is the same for every schedule, so the crossovers do not depend on N.
        for (lines, best), Nl in seen.items():
            out(f"  {scen} ({'/'.join(Nl)} per GPU): {lines or 'none'}")
            out(f"    fastest exact schedule (truncated aside; it is fastest wherever it applies): {best}")
    out("")


def plot(m, inp, path, card, N=32768):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: plot skipped"
    Rs = np.array([2**k for k in range(1, 11)] + list(range(3, 1024, 3)))
    Rs = np.unique(Rs)
    colors = {"chain": "tab:red", "all-gather": "tab:blue", "truncated": "tab:green", "log-scan": "tab:purple",
              "hierarchical": "tab:orange", "hier-direct": "tab:brown"}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for scen, ls in (("nvlink", "-"), ("network", "--")):
        for s in SCHEDULES:
            Rv = np.array([R for R in Rs if m.hier_valid(s, int(R))])
            e = [100 * m.eff(s, int(R), N, card, scen) for R in Rv]
            ax.plot(Rv, e, ls, color=colors[s], lw=1.6,
                    label=f"{s} ({'NVLink domain' if scen == 'nvlink' else '8-GPU nodes + IB'})")
    # measured points (H200, 32K per GPU)
    for p in measured_points(inp):
        if p["card"] == card and p["N"] == N and p["G"] > 1 and not p["overlap"]:
            ax.plot(p["G"], 100 * m.t1_ms(card, N) / p["step"], "o", color=colors[p["schedule"]], ms=5, mfc="none")
    z = inp["published"]["zeco"]
    ax.plot([z["R"]], [100 * z["efficiency"]], "k*", ms=12)
    ax.annotate("ZeCO: 88% of data-parallel throughput at 256 GPUs\n(published figure; different workload and hardware)",
                (z["R"], 100 * z["efficiency"]), xytext=(40, 50), textcoords="data", fontsize=8,
                arrowprops=dict(arrowstyle="->", lw=0.6))
    ax.text(2.1, 104, "truncated: per-head decay with s_h N > 16.6 on every head only; others fall back",
            fontsize=7, color="tab:green", va="top")
    ax.set_xscale("log", base=2)
    ax.set_xlim(2, 1024)
    ax.set_ylim(0, 106)
    ax.set_xlabel("R (GPUs in the SP group), log2")
    ax.set_ylabel("weak-scaling efficiency (1-GPU step / R-GPU step), %")
    ax.set_title(f"lasp cost model, {card}, {N // 1024}K tokens per GPU (B=1, H=16, D=E=128, bf16), forward+backward\n"
                 f"solid: NVLink figures measured on 4 GPUs; dashed: 8-GPU nodes + 400 Gb/s IB (network ASSUMED); "
                 f"circles: measured", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"wrote {os.path.relpath(path, ROOT)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", default=os.path.join(HERE, "inputs.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--card", default="H200")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    inp = json.load(open(args.inputs))
    m = Model(inp, args.card)
    lines = []

    def out(s=""):
        print(s)
        lines.append(s)

    nv = m.nv[args.card]
    out(f"lasp cost model ({args.card}); state message n = {m.n / 2**20:.4f} MiB")
    out(f"  NVLink (measured): alpha {nv['alpha']:.2f} us, beta {nv['beta'] / 1e3:.0f} GB/s -> hop(1 MiB) "
        f"{m.hop(args.card, 'nv'):.1f} us; all-gather beta_ag {nv['beta_ag'] / 1e3:.0f} GB/s "
        f"(4 GPUs: {m.allgather(args.card, 4, 'nv'):.1f} us)")
    out(f"  network (ASSUMED): alpha {m.x['alpha']:.0f} us, beta {m.x['beta'] / 1e3:.0f} GB/s -> hop(1 MiB) "
        f"{m.hop(args.card, 'x'):.1f} us; all-gather bus bandwidth {m.x['beta_ag'] / 1e3:.0f} GB/s")
    out(f"  fitted combine on the critical path c = {m.c:.2f} us (chain, 32K/GPU, G=2 and 4 of one run)")
    out(f"  compute slowdown with G GPUs (measured, no-op communicator): " +
        ", ".join(f"G={g}: {100 * (s - 1):.1f}%" for g, s in sorted(m.slow.items())) + " (G>4: the G=4 value, assumed)")
    out("")
    validate(m, inp, out)
    out("")
    projection(m, out, args.card)
    crossovers(m, out, args.card)
    os.makedirs(args.out, exist_ok=True)
    if args.no_plot:
        msg = "plot skipped (--no-plot)"
    else:
        msg = plot(m, inp, os.path.join(args.out, "model-scaling.png"), args.card)
    out(msg)
    with open(os.path.join(args.out, "model-scaling.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.relpath(os.path.join(args.out, 'model-scaling.txt'), ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
