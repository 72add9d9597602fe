"""Build of lasp_torch (torch.utils.cpp_extension; `pip install ./bindings/torch`).

The lasp headers come from the repository (../../include, or $LASP_INCLUDE). Two kinds of
sources, kept apart on purpose:
  csrc/binding.cpp     torch headers, host compiler only (ops, checks, allocation, streams);
  csrc/*.cu            lasp headers only, nvcc (9 TUs, one per element type x decay: parallel).
So the CUDA toolkit (nvcc) only compiles lasp code: a toolkit whose version differs from the one
torch was built with (nvcc 13 next to a cu12x torch) does not meet torch's CUDA headers in nvcc.

Environment:
  TORCH_CUDA_ARCH_LIST   default "8.0;9.0a" (sm_80, and sm_90a for the wgmma kernels; LASP_SM90A
                         is defined when the list has 9.0a)
  MAX_JOBS               parallel compile jobs (default: all cores)
  LASP_TORCH_NCCL=0      build without NCCL (single GPU only; group= then refused)
  NCCL_HOME              where include/nccl.h is (default: torch's nvidia-nccl wheel, then
                         $CUDA_HOME/include, /usr/include)
  LASP_TORCH_STRICT_CUDA=1  keep torch's CUDA version check (by default a major-version mismatch
                         between nvcc and torch.version.cuda is reported, not fatal; see README)
"""
import glob
import os
import sys
import warnings

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0a")
os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))

import torch  # noqa: E402
import torch.utils.cpp_extension as cpp  # noqa: E402

if os.environ.get("LASP_TORCH_STRICT_CUDA", "0") != "1":
    _orig_check = getattr(cpp, "_check_cuda_version", None)

    def _lenient_check(*args, **kwargs):
        try:
            if _orig_check is not None:
                _orig_check(*args, **kwargs)
        except RuntimeError as ex:  # major mismatch: torch raises; we only compile lasp with nvcc
            warnings.warn(f"lasp_torch: {ex} -- continuing: nvcc compiles only the lasp sources (no torch "
                          "headers), the torch-facing sources are built by the host compiler. Set "
                          "LASP_TORCH_STRICT_CUDA=1 to make this fatal.")
    cpp._check_cuda_version = _lenient_check

lasp_include = os.environ.get("LASP_INCLUDE", os.path.join(HERE, "..", "..", "include"))
lasp_include = os.path.abspath(lasp_include)
if not os.path.exists(os.path.join(lasp_include, "lasp", "lasp.cuh")):
    sys.exit(f"lasp_torch: lasp headers not found under {lasp_include} (set LASP_INCLUDE)")


def find_nccl():
    if os.environ.get("LASP_TORCH_NCCL", "1") == "0":
        return None
    cands = []
    if os.environ.get("NCCL_HOME"):
        cands.append(os.environ["NCCL_HOME"])
    try:  # torch's own NCCL (the library torch loads at run time): prefer its header
        import nvidia.nccl  # type: ignore
        for p in getattr(nvidia.nccl, "__path__", []):
            cands.append(p)
    except Exception:
        pass
    cuda_home = cpp.CUDA_HOME or "/usr/local/cuda"
    cands += [cuda_home, "/usr", "/usr/local"]
    for c in cands:
        inc = os.path.join(c, "include")
        if os.path.exists(os.path.join(inc, "nccl.h")):
            libs = []
            for sub in ("lib", "lib64", "lib/x86_64-linux-gnu", "targets/x86_64-linux/lib"):
                libs += glob.glob(os.path.join(c, sub, "libnccl.so*"))
            return inc, sorted(libs, key=len)
    return None


nccl = find_nccl()
define = []
if "9.0a" in os.environ["TORCH_CUDA_ARCH_LIST"].replace(" ", ";").split(";"):
    define.append(("LASP_SM90A", "1"))  # the kernel table may pick the sm_90a family (lasp table.cuh)
include_dirs = [lasp_include, os.path.join(HERE, "csrc")]
extra_link = []
if nccl:
    inc, libs = nccl
    include_dirs.append(inc)
    define.append(("LASP_TORCH_WITH_NCCL", "1"))
    if libs:
        extra_link += [libs[0], f"-Wl,-rpath,{os.path.dirname(libs[0])}"]
    else:
        extra_link.append("-lnccl")
    print(f"lasp_torch: NCCL header {inc}, library {libs[0] if libs else '-lnccl'}")
else:
    define.append(("LASP_TORCH_WITH_NCCL", "0"))
    print("lasp_torch: building WITHOUT NCCL (single GPU only)")

sources = ["csrc/binding.cpp"] + sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "*.cu")))

ext = cpp.CUDAExtension(
    name="lasp_torch._C",
    sources=sources,
    include_dirs=include_dirs,
    define_macros=define,
    extra_compile_args={
        "cxx": ["-O3", "-std=c++17"],
        # torch adds -D__CUDA_NO_HALF_OPERATORS__ (and friends) to every nvcc command; lasp's
        # kernels are written against the plain cuda_fp16/cuda_bf16 headers: undo them.
        "nvcc": ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo",
                 "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                 "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__"],
    },
    extra_link_args=extra_link,
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": cpp.BuildExtension.with_options(use_ninja=True)},
)
