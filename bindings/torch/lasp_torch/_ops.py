"""The ops: lasp_torch::fwd / lasp_torch::bwd (CUDA kernels registered in C++ by _C), their fake
(meta) implementations for torch.compile, and autograd."""
import torch

try:
    from . import _C  # noqa: F401  (registers the ops and the CUDA kernels)
    HAVE_EXTENSION = True
    _IMPORT_ERROR = None
except ImportError as ex:  # a source checkout without a build: the Python API stays importable
    _C = None
    HAVE_EXTENSION = False
    _IMPORT_ERROR = ex

_DTYPE_CODE = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}
_SIZE_CACHE = {}


def _decay_code(g, slopes):
    return 2 if g is not None else (1 if slopes is not None else 0)


def comm_size(comm):
    if comm == 0:
        return 1
    return int(_C.comm_info(comm)[1])


def reserve_bytes(dtype, decay, B, N, H, D, E, R):
    """Bytes of lasp's reserve for this problem on the current device (cached)."""
    key = (dtype, decay, B, N, H, D, E, R, torch.cuda.current_device() if torch.cuda.is_available() else -1)
    r = _SIZE_CACHE.get(key)
    if r is None:
        r = int(_C.workspace_sizes(_DTYPE_CODE[dtype], decay, B, N, H, D, E, R)[0])
        _SIZE_CACHE[key] = r
    return r


def _concrete(x):
    return int(x)  # specialises a SymInt: lasp's reserve size is a function of the shape


if HAVE_EXTENSION:
    @torch.library.register_fake("lasp_torch::fwd")
    def _fwd_fake(q, k, v, g, slopes, scale, initial_state, output_final_state, comm):
        B, N, H, D = (_concrete(s) for s in q.shape)
        E = _concrete(v.shape[-1])
        o = torch.empty_like(v)
        if output_final_state:
            ht = q.new_empty((B, H, D, E), dtype=torch.float32)
        else:
            ht = q.new_empty((0,), dtype=torch.float32)
        rb = reserve_bytes(q.dtype, _decay_code(g, slopes), B, N, H, D, E, comm_size(comm))
        reserve = q.new_empty((rb,), dtype=torch.uint8)
        return o, ht, reserve

    @torch.library.register_fake("lasp_torch::bwd")
    def _bwd_fake(q, k, v, g, slopes, scale, reserve, do, d_final_state, need_d_initial_state, comm):
        B, N, H, D = (_concrete(s) for s in q.shape)
        E = _concrete(v.shape[-1])
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = torch.empty_like(g) if g is not None else q.new_empty((0,), dtype=torch.float32)
        if need_d_initial_state:
            dh0 = q.new_empty((B, H, D, E), dtype=torch.float32)
        else:
            dh0 = q.new_empty((0,), dtype=torch.float32)
        return dq, dk, dv, dg, dh0

    def _setup_context(ctx, inputs, output):
        q, k, v, g, slopes, scale, initial_state, output_final_state, comm = inputs
        _, _, reserve = output
        ctx.save_for_backward(q, k, v, g, slopes, reserve)
        ctx.scale = scale
        ctx.comm = comm
        ctx.has_h0 = initial_state is not None
        ctx.output_final_state = output_final_state

    def _backward(ctx, do, dht, _dreserve):
        q, k, v, g, slopes, reserve = ctx.saved_tensors
        if not ctx.output_final_state:
            dht = None
        if do is None:
            do = torch.zeros_like(v)
        dq, dk, dv, dg, dh0 = torch.ops.lasp_torch.bwd(q, k, v, g, slopes, ctx.scale, reserve, do, dht,
                                                        ctx.has_h0, ctx.comm)
        return (dq, dk, dv, dg if g is not None else None, None, None,
                dh0 if ctx.has_h0 else None, None, None)

    torch.library.register_autograd("lasp_torch::fwd", _backward, setup_context=_setup_context)
