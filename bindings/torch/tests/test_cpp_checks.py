"""The C++ op's own argument checks, reached directly (torch.ops.lasp_torch.fwd/bwd), without
the Python entry points' checks in front. Each case runs in a subprocess, so a crash inside the
op (a SIGSEGV instead of an exception, seen on H200 with a g of the wrong shape) fails that case
instead of killing the test session."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PRELUDE = """
import faulthandler, sys, torch
faulthandler.enable()
import lasp_torch
B, N, H, D, E = 1, 64, 2, 64, 64
dev = "cuda"
q = torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16)
k = torch.randn(B, N, H, D, device=dev, dtype=torch.bfloat16)
v = torch.randn(B, N, H, E, device=dev, dtype=torch.bfloat16)
fwd = torch.ops.lasp_torch.fwd
def expect(exc, fn):
    try:
        fn()
    except exc as ex:
        print("RAISED", type(ex).__name__, str(ex).splitlines()[0][:200])
        sys.exit(0)
    except BaseException as ex:
        print("WRONG EXCEPTION", type(ex).__name__, str(ex).splitlines()[0][:200])
        sys.exit(3)
    print("NO EXCEPTION")
    sys.exit(4)
"""

CASES = {
    "g_wrong_heads": "expect(ValueError, lambda: fwd(q, k, v, torch.zeros(1, 64, 3, device=dev), None, 1.0, None, False, 0))",
    "g_wrong_rank": "expect(ValueError, lambda: fwd(q, k, v, torch.zeros(1, 64, device=dev), None, 1.0, None, False, 0))",
    "g_wrong_dtype": "expect(TypeError, lambda: fwd(q, k, v, torch.zeros(1, 64, 2, device=dev, dtype=torch.float64), None, 1.0, None, False, 0))",
    "g_on_cpu": "expect(RuntimeError, lambda: fwd(q, k, v, torch.zeros(1, 64, 2), None, 1.0, None, False, 0))",
    "k_float": "expect(TypeError, lambda: fwd(q, k.float(), v, None, None, 1.0, None, False, 0))",
    "k_short": "expect(ValueError, lambda: fwd(q, k[:, :32], v, None, None, 1.0, None, False, 0))",
    "h0_wrong": "expect(ValueError, lambda: fwd(q, k, v, None, None, 1.0, torch.zeros(1, 2, 64, 32, device=dev), False, 0))",
    "slopes_on_gpu": "expect(RuntimeError, lambda: fwd(q, k, v, None, torch.ones(2, device=dev), 1.0, None, False, 0))",
    "bad_comm": "expect(RuntimeError, lambda: fwd(q, k, v, None, None, 1.0, None, False, 12345))",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_check_raises(case):
    code = textwrap.dedent(PRELUDE) + "\n" + CASES[case] + "\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    out = (r.stdout + r.stderr)[-3000:]
    assert r.returncode == 0, f"rc={r.returncode} (negative: killed by signal)\n{out}"
    assert "RAISED" in r.stdout, out
