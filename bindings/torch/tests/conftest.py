import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

try:
    import lasp_torch
    HAVE = lasp_torch.HAVE_EXTENSION
except Exception:  # pragma: no cover
    HAVE = False

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_ext = pytest.mark.skipif(not HAVE, reason="lasp_torch._C is not built")
