"""1-GPU tests of lasp_torch: float64 reference (forward and gradients), dtypes x decays x
layouts x states, fla parity (bf16), torch.compile(fullgraph=True), CUDA-graph capture of
forward+backward, errors. Every test needs a GPU and the built extension: skipped otherwise."""
import os

import pytest
import torch

from conftest import needs_ext, needs_gpu
from reference import reference, rel

pytestmark = [needs_gpu, needs_ext]

TOL = {torch.bfloat16: 2.5e-2, torch.float16: 1.5e-2, torch.float32: 1.5e-2}  # fp32 runs bf16 tensor cores


def make(B, N, H, D, E, dtype, decay, seed=0, h0=False):
    import lasp_torch
    g = torch.Generator(device="cuda").manual_seed(seed)
    dev = "cuda"
    q = (torch.randn(B, N, H, D, device=dev, generator=g) * 0.5).to(dtype).requires_grad_()
    k = (torch.randn(B, N, H, D, device=dev, generator=g) * 0.5).to(dtype).requires_grad_()
    v = torch.randn(B, N, H, E, device=dev, generator=g).to(dtype).requires_grad_()
    slopes = gates = None
    if decay == "perhead":
        slopes = lasp_torch.tnl_slopes(H) * 4  # strong enough to matter over N tokens
    elif decay == "gate":
        gates = torch.nn.functional.logsigmoid(torch.randn(B, N, H, device=dev, generator=g) + 3).requires_grad_()
    s0 = torch.randn(B, H, D, E, device=dev, generator=g).requires_grad_() if h0 else None
    return q, k, v, slopes, gates, s0


def ref_logdecay(q, slopes, gates):
    B, N, H, _ = q.shape
    if gates is not None:
        return gates
    if slopes is not None:
        return (-slopes.to(q.device).double()).expand(B, N, H)
    return None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("decay", ["none", "perhead", "gate"])
@pytest.mark.parametrize("head_first", [False, True])
@pytest.mark.parametrize("states", [False, True])
def test_matches_float64_reference(dtype, decay, head_first, states):
    import lasp_torch
    B, N, H, D, E = 2, 200, 2, 64, 64
    q, k, v, slopes, gates, s0 = make(B, N, H, D, E, dtype, decay, h0=states)
    scale = D ** -0.5
    # reference (float64) on the same values, gradients by autograd
    qr, kr, vr = (x.detach().double().requires_grad_() for x in (q, k, v))
    gr = gates.detach().double().requires_grad_() if gates is not None else None
    s0r = s0.detach().double().requires_grad_() if s0 is not None else None
    o_ref, ht_ref = reference(qr, kr, vr, ref_logdecay(qr, slopes, gr), scale, s0r)
    do = torch.randn_like(o_ref)
    dht = torch.randn_like(ht_ref) if states else None
    loss = (o_ref * do).sum() + ((ht_ref * dht).sum() if states else 0)
    loss.backward()

    if head_first:
        args = [x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v)]
        gl = gates.detach().transpose(1, 2).contiguous().requires_grad_() if gates is not None else None
    else:
        args, gl = [q, k, v], gates
    o, ht = lasp_torch.linear_attention(*args, slopes=slopes, gates=gl, scale=scale, initial_state=s0,
                                        output_final_state=states, head_first=head_first)
    o_bnhe = o.transpose(1, 2) if head_first else o
    assert o.dtype == dtype and o.shape == args[2].shape
    assert rel(o_bnhe, o_ref) < TOL[dtype], rel(o_bnhe, o_ref)
    if states:
        assert rel(ht, ht_ref) < 5e-3, rel(ht, ht_ref)
    dol = do.to(dtype).transpose(1, 2) if head_first else do.to(dtype)
    l2 = (o.double() * dol.double()).sum() + ((ht.double() * dht).sum() if states else 0)
    l2.backward()
    grads = [a.grad.transpose(1, 2) if head_first else a.grad for a in args]
    for name, gt, gref in zip("qkv", grads, (qr.grad, kr.grad, vr.grad)):
        assert rel(gt, gref) < TOL[dtype] * 1.5, (name, rel(gt, gref))
    if gates is not None:
        dg = gl.grad.transpose(1, 2) if head_first else gl.grad
        assert rel(dg, gr.grad) < 5e-2, rel(dg, gr.grad)
    if states:
        assert rel(s0.grad, s0r.grad) < 1e-2, rel(s0.grad, s0r.grad)


@pytest.mark.parametrize("D,E", [(128, 128), (64, 128), (128, 64)])
def test_head_dims(D, E):
    import lasp_torch
    q, k, v, slopes, _, _ = make(1, 300, 2, D, E, torch.bfloat16, "perhead")
    o, _ = lasp_torch.linear_attention(q, k, v, slopes=slopes)
    o_ref, _ = reference(q, k, v, ref_logdecay(q, slopes, None), D ** -0.5)
    assert rel(o, o_ref) < TOL[torch.bfloat16]


def test_decay_conventions_agree():
    """slopes s (lasp/LASP) == g_gamma = -s (fla) == per-token gates g = -s."""
    import lasp_torch
    q, k, v, slopes, _, _ = make(1, 256, 4, 64, 64, torch.bfloat16, "perhead")
    with torch.no_grad():
        a, _ = lasp_torch.linear_attention(q, k, v, slopes=slopes)
        b, _ = lasp_torch.chunk_simple_gla(q, k, v, g_gamma=-slopes)
        c, _ = lasp_torch.chunk_simple_gla(q, k, v, g_gamma=(-slopes).cuda())  # device g_gamma: copied
        g = (-slopes).cuda().expand(1, 256, 4).contiguous()
        d, _ = lasp_torch.chunk_simple_gla(q, k, v, g=g)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert rel(d, a) < 1e-2


def test_fla_parity_bf16():
    fla_simple = pytest.importorskip("fla.ops.simple_gla")
    import lasp_torch
    B, N, H, D = 1, 2048, 4, 128
    q, k, v, slopes, _, _ = make(B, N, H, D, D, torch.bfloat16, "perhead", seed=3)
    g_gamma = (-slopes).cuda()
    do = torch.randn_like(v)
    o1, h1 = lasp_torch.chunk_simple_gla(q, k, v, g_gamma=g_gamma.cpu(), output_final_state=True)
    o1.backward(do)
    g1 = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    o2, h2 = fla_simple.chunk_simple_gla(q, k, v, g_gamma=g_gamma, output_final_state=True)
    o2.backward(do)
    g2 = [x.grad.clone() for x in (q, k, v)]
    assert rel(o1, o2) < 2e-2, rel(o1, o2)
    assert rel(h1, h2) < 1e-2, rel(h1, h2)
    for name, a, b in zip("qkv", g1, g2):
        assert rel(a, b) < 3e-2, (name, rel(a, b))


@pytest.mark.skipif(os.environ.get("LASP_TORCH_FLA_GATES", "0") != "1",
                    reason="opt-in (LASP_TORCH_FLA_GATES=1): on H200 with Triton 3.6 fla's gated "
                           "chunk_simple_gla did not return within the suite's 240 s (performance.md: its "
                           "gated backward fails on Hopper with Triton 3.6)")
def test_fla_parity_gates_bf16():
    fla_simple = pytest.importorskip("fla.ops.simple_gla")
    import lasp_torch
    B, N, H, D = 1, 1024, 4, 128
    q, k, v, _, gates, _ = make(B, N, H, D, D, torch.bfloat16, "gate", seed=4)
    do = torch.randn_like(v)
    o1, _ = lasp_torch.chunk_simple_gla(q, k, v, g=gates)
    o1.backward(do)
    r1 = [x.grad.clone() for x in (q, k, v, gates)]
    for x in (q, k, v, gates):
        x.grad = None
    try:
        o2, _ = fla_simple.chunk_simple_gla(q, k, v, g=gates)
        o2.backward(do)
    except Exception as ex:  # performance.md: fla's gated backward fails on Hopper with Triton 3.6
        pytest.skip(f"fla gated chunk_simple_gla failed here: {type(ex).__name__}: {str(ex)[:200]}")
    r2 = [x.grad.clone() for x in (q, k, v, gates)]
    assert rel(o1, o2) < 2e-2
    for name, a, b in zip(["q", "k", "v", "g"], r1, r2):
        assert rel(a, b) < 5e-2, (name, rel(a, b))


class TinyLayer(torch.nn.Module):
    def __init__(self, M=128, H=2, D=64, slopes=None):
        super().__init__()
        self.H, self.D = H, D
        self.qkv = torch.nn.Linear(M, 3 * H * D, bias=False)
        self.out = torch.nn.Linear(H * D, M, bias=False)
        self.register_buffer("g_gamma", -slopes, persistent=False)  # CPU buffer: no device sync

    def forward(self, x):
        import lasp_torch
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.H, self.D).unbind(2)
        q = torch.nn.functional.silu(q)
        o, _ = lasp_torch.chunk_simple_gla(q, k, v, g_gamma=self.g_gamma)
        return self.out(o.reshape(B, N, self.H * self.D))


def test_torch_compile_fullgraph():
    import lasp_torch
    torch.manual_seed(0)
    slopes = lasp_torch.tnl_slopes(2)
    m = TinyLayer(slopes=slopes).cuda().to(torch.bfloat16)
    x = torch.randn(2, 256, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y_e = m(x)
    y_e.float().square().mean().backward()
    ge = [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    m.zero_grad(), x.grad.zero_()
    torch._dynamo.reset()
    mc = torch.compile(m, fullgraph=True)
    y_c = mc(x)
    y_c.float().square().mean().backward()
    gc = [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    assert rel(y_c, y_e) < 2e-2
    for a, b in zip(gc, ge):
        assert rel(a, b) < 3e-2


def test_cuda_graph_forward_backward():
    import lasp_torch
    B, N, H, D = 1, 512, 4, 64
    q, k, v, slopes, _, _ = make(B, N, H, D, D, torch.bfloat16, "perhead", seed=5)
    do = torch.randn_like(v)

    def step():
        for x in (q, k, v):
            x.grad = None
        o, _ = lasp_torch.chunk_simple_gla(q, k, v, g_gamma=-slopes)
        o.backward(do)
        return o.detach(), q.grad, k.grad, v.grad

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm-up: makes the plan (make_plan synchronises: not capturable)
            step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    for x in (q, k, v):
        x.grad = None
    with torch.cuda.graph(graph):
        out = step()
    # new inputs in place, replay, compare with eager
    with torch.no_grad():
        for x in (q, k, v):
            x.copy_(torch.randn_like(x) * 0.5)
        do.copy_(torch.randn_like(do))
    graph.replay()
    torch.cuda.synchronize()
    got = [t.clone() for t in out]
    qe, ke, ve = (x.detach().clone().requires_grad_() for x in (q, k, v))
    oe, _ = lasp_torch.chunk_simple_gla(qe, ke, ve, g_gamma=-slopes)
    oe.backward(do)
    for a, b in zip(got, [oe.detach(), qe.grad, ke.grad, ve.grad]):
        assert rel(a, b) < 1e-5, rel(a, b)  # same kernels, same inputs: expected bit-identical


def test_fake_tensor_shapes():
    import lasp_torch  # noqa: F401
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(2, 128, 4, 64, device="cuda", dtype=torch.bfloat16)
        v = torch.empty(2, 128, 4, 128, device="cuda", dtype=torch.bfloat16)
        o, ht, res = torch.ops.lasp_torch.fwd(q, q, v, None, None, 0.125, None, True, 0)
        assert o.shape == v.shape and ht.shape == (2, 4, 64, 128) and res.dtype == torch.uint8
        dq, dk, dv, dg, dh0 = torch.ops.lasp_torch.bwd(q, q, v, None, None, 0.125, res, o, ht, True, 0)
        assert dq.shape == q.shape and dv.shape == v.shape and dh0.shape == (2, 4, 64, 128)


def test_opcheck():
    import lasp_torch
    q, k, v, slopes, _, _ = make(1, 128, 2, 64, 64, torch.bfloat16, "perhead")
    torch.library.opcheck(torch.ops.lasp_torch.fwd.default,
                          (q, k, v, None, slopes, 0.125, None, True, 0),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


# ---- errors: refused before any launch, with lasp's sentence ----------------------------------

def test_error_wrong_sign_g_gamma():
    import lasp_torch
    q, k, v, slopes, _, _ = make(1, 64, 2, 64, 64, torch.bfloat16, "perhead")
    with pytest.raises(ValueError, match="LOG decay"):
        lasp_torch.chunk_simple_gla(q, k, v, g_gamma=slopes)


def test_error_negative_slopes():
    import lasp_torch
    q, k, v, slopes, _, _ = make(1, 64, 2, 64, 64, torch.bfloat16, "perhead")
    with pytest.raises(ValueError, match="decay RATES"):
        lasp_torch.linear_attention(q, k, v, slopes=-slopes)


def test_error_status_becomes_exception():
    import lasp_torch
    q, k, v, _, _, _ = make(1, 64, 2, 96, 96, torch.bfloat16, "none")
    with pytest.raises(lasp_torch.LaspError, match="kUnsupportedHeadDim.*head dimension"):
        lasp_torch.linear_attention(q, k, v)


def test_error_mismatches():
    import lasp_torch
    q, k, v, _, _, _ = make(1, 64, 2, 64, 64, torch.bfloat16, "none")
    with pytest.raises(TypeError):
        lasp_torch.linear_attention(q, k.float(), v)
    with pytest.raises(ValueError):
        lasp_torch.linear_attention(q, k[:, :32], v)
    with pytest.raises(ValueError):
        lasp_torch.linear_attention(q.cpu(), k.cpu(), v.cpu())
    with pytest.raises(ValueError, match="g must be"):
        lasp_torch.linear_attention(q, k, v, gates=torch.zeros(1, 64, 3, device="cuda"))
    with pytest.raises(ValueError, match="initial_state"):
        lasp_torch.linear_attention(q, k, v, initial_state=torch.zeros(1, 2, 64, 32, device="cuda"))
    with pytest.raises(NotImplementedError):
        lasp_torch.chunk_simple_gla(q, k, v, cu_seqlens=torch.tensor([0, 64], device="cuda"))


def test_error_positive_gates_deferred():
    import lasp_torch
    q, k, v, _, _, _ = make(1, 64, 2, 64, 64, torch.bfloat16, "none")
    g = torch.full((1, 64, 2), 0.5, device="cuda")
    with pytest.raises(lasp_torch.LaspError, match="kInvalidDecay"):
        lasp_torch.chunk_simple_gla(q, k, v, g=g, check=True)
