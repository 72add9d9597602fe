"""float64 PyTorch reference of the operator (math.md): S_t = a_t S_{t-1} + k_t v_t^T,
o_t = scale S_t^T q_t, a_t = exp(logdecay[b, t, h]), S_{-1} = initial_state."""
import torch


def reference(q, k, v, logdecay=None, scale=1.0, initial_state=None):
    """q, k [B,N,H,D], v [B,N,H,E], logdecay [B,N,H] (or None). Differentiable (float64).
    Returns (o [B,N,H,E], final_state [B,H,D,E])."""
    q, k, v = q.double(), k.double(), v.double()
    B, N, H, D = q.shape
    E = v.shape[-1]
    if logdecay is None:
        logdecay = q.new_zeros(B, N, H)
    c = logdecay.double().cumsum(1)                      # [B,N,H]
    ct = c.permute(0, 2, 1)                              # [B,H,N]
    diff = ct[..., :, None] - ct[..., None, :]           # c_t - c_j
    mask = torch.ones(N, N, dtype=torch.bool, device=q.device).tril()
    w = torch.where(mask, diff, torch.full_like(diff, float("-inf"))).exp()
    qh, kh, vh = (x.permute(0, 2, 1, 3) for x in (q, k, v))  # [B,H,N,X]
    o = scale * ((qh @ kh.transpose(-1, -2)) * w) @ vh
    # final state: sum_j exp(c_N - c_j) k_j v_j^T + exp(c_N) S0
    wl = (ct[..., -1:] - ct).exp()                        # [B,H,N]
    S = (kh * wl[..., None]).transpose(-1, -2) @ vh       # [B,H,D,E]
    if initial_state is not None:
        s0 = initial_state.double()
        o = o + scale * ct.exp()[..., None] * (qh @ s0)
        S = S + ct[..., -1].exp()[..., None, None] * s0
    return o.permute(0, 2, 1, 3), S


def rel(a, b):
    """Norm-wise relative error ||a - b|| / ||b||."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
