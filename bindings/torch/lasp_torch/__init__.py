"""lasp_torch: lasp's causal linear attention with decay as PyTorch ops (forward and backward,
autograd, torch.compile, CUDA graphs), sequence parallel over a torch.distributed group.

    import lasp_torch
    o, ht = lasp_torch.chunk_simple_gla(q, k, v, g_gamma=-slopes, output_final_state=True,
                                        group=sp_group)        # q, k, v: [B, N_local, H, D]

Decay convention (one token of decay multiplies the state by a_t):
  - lasp / the LASP reference code: per-head SLOPES s_h >= 0, a_t = exp(-s_h);
  - fla `chunk_simple_gla`: per-head LOG decay g_gamma[h] = -s_h <= 0, per-token log-gates g <= 0,
    a_t = exp(g_gamma[h]) or exp(g[b, t, h]).
`chunk_simple_gla` takes fla's signs; `linear_attention` takes lasp's slopes. A positive
g_gamma or a negative slope is refused (ValueError) before anything runs.
"""
import os

import torch

from . import _ops
from ._ops import HAVE_EXTENSION
from .distributed import comm_for, release, sp_dp_groups

__all__ = ["chunk_simple_gla", "linear_attention", "LaspError", "comm_for", "release", "sp_dp_groups",
           "tnl_slopes", "check_last_call", "HAVE_EXTENSION"]
__version__ = "0.3.1"

_CHECK = os.environ.get("LASP_TORCH_CHECK", "0") == "1"


class LaspError(RuntimeError):
    """A lasp Status other than kSuccess; the message carries lasp's sentence and the status name,
    e.g. "[lasp kUnsupportedHeadDim] forward: head dimension D or E not supported by this backend"."""


def tnl_slopes(H, device="cpu"):
    """TransNormerLLM / LASP slopes s_h = 2^(-8(h+1)/H) (>= 0; fla's g_gamma is their negation)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], dtype=torch.float32, device=device)


def _compiling():
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # older torch
        return torch._dynamo.is_compiling()


def _capturing():
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _lay(t):
    """lasp reads a contiguous last dimension with 16-byte aligned strides; anything else is copied."""
    if t.stride(-1) != 1:
        return t.contiguous()
    es = t.element_size()
    for d in range(t.dim() - 1):
        if t.size(d) > 1 and (t.stride(d) * es) % 16:
            return t.contiguous()
    return t


def _host_slopes(slopes):
    s = slopes.detach()
    if s.dtype != torch.float32:
        s = s.float()
    if s.device.type != "cpu":
        s = s.cpu()  # a device->host copy (synchronises): pass CPU slopes to avoid it
    return s.contiguous()


def _run(q, k, v, g, slopes, scale, initial_state, output_final_state, group, check):
    if not HAVE_EXTENSION:
        raise ImportError(f"lasp_torch._C is not built: {_ops._IMPORT_ERROR}")
    comm = comm_for(group)
    if _compiling():  # traced: no try/except around the op (dynamo's fullgraph)
        o, ht, _ = torch.ops.lasp_torch.fwd(q, k, v, g, slopes, scale, initial_state, output_final_state, comm)
        return o, (ht if output_final_state else None)
    try:
        o, ht, reserve = torch.ops.lasp_torch.fwd(q, k, v, g, slopes, scale, initial_state, output_final_state, comm)
    except RuntimeError as ex:
        msg = str(ex)
        if "[lasp " in msg:
            raise LaspError(msg[msg.index("[lasp "):].splitlines()[0]) from None
        raise
    if (check or _CHECK) and not _compiling() and not _capturing():
        check_last_call(reserve)
    return o, (ht if output_final_state else None)


def check_last_call(reserve):
    """Raises LaspError if the device-side verdict of the last call on `reserve` is not success
    (bad gate values, a refusal by another SP rank). Synchronises the current stream."""
    st = int(_ops._C.deferred_status(reserve))
    if st != 0:
        raise LaspError(f"[lasp {_ops._C.status_name(st)}] deferred: {_ops._C.status_sentence(st)}")


def _validate(q, k, v, head_first):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"lasp_torch: {name} must be a 4-d tensor "
                             f"[{'B, H, N, X' if head_first else 'B, N, H, X'}], got "
                             f"{getattr(t, 'shape', type(t))}")
    if q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise TypeError(f"lasp_torch: q, k, v must be bfloat16, float16 or float32, got {q.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"lasp_torch: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(f"lasp_torch: q, k must be [B, N, H, D] and v [B, N, H, E] with the same B, N, H; "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.device == k.device == v.device) or q.device.type != "cuda":
        raise ValueError(f"lasp_torch: q, k, v must be on one CUDA device, got {q.device}, {k.device}, {v.device}")


def _validate_extra(q, v, gates, initial_state, head_first):
    """Shapes of g and initial_state, checked here before the op (the C++ op checks them too;
    on H200 a g of the wrong shape crashed the process inside the op's C++ check instead of
    raising, cause not found yet: bench/RESULTS.md, "lasp_torch on H200")."""
    B, H = q.shape[0], (q.shape[1] if head_first else q.shape[2])
    N = q.shape[2] if head_first else q.shape[1]
    D, E = q.shape[3], v.shape[3]
    if gates is not None:
        want = (B, H, N) if head_first else (B, N, H)
        if not isinstance(gates, torch.Tensor) or tuple(gates.shape) != want:
            raise ValueError(f"lasp_torch: g must be [{'B, H, N' if head_first else 'B, N, H'}] = {list(want)}, "
                             f"got {tuple(getattr(gates, 'shape', ()))}")
        if gates.device != q.device:
            raise ValueError(f"lasp_torch: g is on {gates.device} but q is on {q.device}")
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor) or tuple(initial_state.shape) != (B, H, D, E):
            raise ValueError(f"lasp_torch: initial_state must be [B, H, D, E] = {[B, H, D, E]}, "
                             f"got {tuple(getattr(initial_state, 'shape', ()))}")
        if initial_state.device != q.device:
            raise ValueError(f"lasp_torch: initial_state is on {initial_state.device} but q is on {q.device}")


def linear_attention(q, k, v, slopes=None, gates=None, scale=None, initial_state=None,
                     output_final_state=False, head_first=False, group=None, check=False):
    """Causal linear attention with decay, lasp's convention.

    q, k: [B, N, H, D]; v: [B, N, H, E] (head_first=True: [B, H, N, X]); bf16, fp16 or fp32.
    slopes: [H] decay rates s_h >= 0 (a_t = exp(-s_h)); a CPU tensor avoids a synchronisation.
    gates: [B, N, H] per-token log-decays <= 0 (fla's g); gets a gradient.
    scale: multiplies q k^T (default 1/sqrt(D)). initial_state: [B, H, D, E] (fp32 used).
    group: a torch.distributed group: the sequence is split over its ranks in rank order, each
    passing its own N tokens; initial_state is read on its rank 0, final_state is that of the whole
    sequence on its last rank (zeros elsewhere).
    Returns (o, final_state or None); o has v's shape and dtype.
    """
    if not _compiling():
        _validate(q, k, v, head_first)
        if slopes is not None and gates is not None:
            raise ValueError("lasp_torch: pass slopes (per-head) or gates (per-token), not both")
        _validate_extra(q, v, gates, initial_state, head_first)
    if head_first:
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if gates is not None:
            gates = gates.transpose(1, 2)
    q, k, v = _lay(q), _lay(k), _lay(v)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    s = None
    if slopes is not None:
        s = _host_slopes(slopes)
        if not _compiling() and s.numel() and bool((s < 0).any()):
            raise ValueError("lasp_torch: slopes are decay RATES s_h >= 0 (each token multiplies the state by "
                             "exp(-s_h)); got negative values. fla's g_gamma is the log decay -s_h: pass "
                             "slopes=-g_gamma, or call lasp_torch.chunk_simple_gla(g_gamma=...).")
    g = None
    if gates is not None:
        g = gates if gates.dtype == torch.float32 else gates.float()
        g = _lay(g) if g.stride(-1) == 1 or g.size(-1) == 1 else g.contiguous()
    h0 = None
    if initial_state is not None:
        h0 = initial_state.float().contiguous()
    o, ht = _run(q, k, v, g, s, float(scale), h0, bool(output_final_state), group, check)
    if head_first:
        o = o.transpose(1, 2)
    return o, ht


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None, output_final_state=False,
                     cu_seqlens=None, head_first=False, group=None, check=False, **kwargs):
    """fla's `chunk_simple_gla` signature on lasp, plus `group=` (sequence parallelism).

    g: [B, N, H] per-token log-gates <= 0; g_gamma: [H] per-head log decay <= 0 (= -slopes).
    Layout [B, N, H, X] (fla's; head_first=True takes [B, H, N, X]). Returns (o, final_state).
    cu_seqlens (packed sequences) is not supported yet: NotImplementedError.
    """
    if cu_seqlens is not None:
        raise NotImplementedError("lasp_torch: cu_seqlens (packed variable-length sequences) is not supported yet")
    if kwargs.get("state_v_first"):
        raise NotImplementedError("lasp_torch: state_v_first=True is not supported (states are [B, H, D, E])")
    if g is not None and g_gamma is not None:
        raise ValueError("lasp_torch: only one of g or g_gamma may be given")
    slopes = None
    if g_gamma is not None:
        gg = g_gamma.detach()
        if gg.device.type != "cpu":
            gg = gg.cpu()  # synchronises: pass a CPU g_gamma in hot loops and CUDA graphs
        if not _compiling() and gg.numel() and bool((gg > 0).any()):
            raise ValueError("lasp_torch: g_gamma is a LOG decay (<= 0; each token multiplies the state by "
                             "exp(g_gamma[h])); got positive values. If these are decay rates (LASP/lasp "
                             "slopes s_h >= 0), pass g_gamma=-slopes or lasp_torch.linear_attention(slopes=...).")
        slopes = -gg.float()
    return linear_attention(q, k, v, slopes=slopes, gates=g, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state, head_first=head_first, group=group, check=check)
