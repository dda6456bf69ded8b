"""Build of bfdkern's compiled kernels.

* ``bfdkern._C``: the op schemas and the C++ CPU kernels (ATen + OpenMP); always built.
* ``bfdkern._cuda``: the CUDA kernels; built when torch has CUDA and a CUDA toolkit is found.

Environment:
  BFDKERN_BUILD_CUDA=0|1   force the CUDA extension off / on (on without CUDA torch or toolkit: an error).
  TORCH_CUDA_ARCH_LIST     GPU architectures (default: the visible GPUs, else 9.0).
  MAX_JOBS                 parallel compile jobs (ninja).

The build records the torch it was compiled against in ``bfdkern/_build_info.json``; bfdkern
refuses to load the kernels under another torch (bfdkern/ops/extension.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = Path("csrc")
BUILD_INFO = Path("bfdkern") / "_build_info.json"


def _is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime.h").exists()


def _default_cuda_home() -> None:
    """torch guesses CUDA_HOME as the parent of the directory holding `nvcc`; when that nvcc is a
    wrapper (e.g. /usr/local/bin/nvcc) the guess is /usr/local and linking fails with
    `cannot find -lcudart`. Point CUDA_HOME at a real toolkit before torch looks."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    if nvcc is None or _is_toolkit(Path(nvcc).parent.parent):
        return
    for candidate in (Path(nvcc).resolve().parent.parent, Path("/usr/local/cuda")):
        if _is_toolkit(candidate):
            os.environ["CUDA_HOME"] = str(candidate)
            return


_default_cuda_home()

import torch  # noqa: E402  (after CUDA_HOME is settled: cpp_extension reads it at import)
from torch.utils import cpp_extension  # noqa: E402


def _want_cuda() -> bool:
    """Whether to build bfdkern._cuda (BFDKERN_BUILD_CUDA forces the answer)."""
    forced = os.environ.get("BFDKERN_BUILD_CUDA")
    if forced not in (None, "", "0", "1"):
        sys.exit(f"BFDKERN_BUILD_CUDA must be 0 or 1, got {forced!r}")
    toolkit = cpp_extension.CUDA_HOME is not None and _is_toolkit(Path(cpp_extension.CUDA_HOME))
    if forced == "0":
        return False
    if forced == "1":
        if torch.version.cuda is None:
            sys.exit(
                f"BFDKERN_BUILD_CUDA=1 but torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
            )
        if not toolkit:
            sys.exit(
                "BFDKERN_BUILD_CUDA=1 but no CUDA toolkit was found (nvcc and include/cuda_runtime.h under "
                f"CUDA_HOME={cpp_extension.CUDA_HOME}); set CUDA_HOME to the toolkit root"
            )
        return True
    return torch.version.cuda is not None and toolkit


def _cuda_arch_list() -> str:
    """torch 2.14 fails with `IndexError: list index out of range` when no arch list is given and no
    GPU is visible; default to Hopper (9.0) then."""
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))


WITH_CUDA = _want_cuda()
CUDA_ARCH = _cuda_arch_list() if WITH_CUDA else None

OPENMP = [] if sys.platform == "darwin" else ["-fopenmp"]  # Apple clang has no -fopenmp
CXX_FLAGS = ["-O3", "-fno-math-errno", *OPENMP]

extensions = [
    cpp_extension.CppExtension(
        "bfdkern._C",
        sources=[
            str(CSRC / "registration.cpp"),
            str(CSRC / "cpu" / "multitask_loss.cpp"),
            str(CSRC / "cpu" / "perturb.cpp"),
        ],
        extra_compile_args={"cxx": CXX_FLAGS},
        extra_link_args=OPENMP,
    )
]
if WITH_CUDA:
    extensions.append(
        cpp_extension.CUDAExtension(
            "bfdkern._cuda",
            sources=[
                str(CSRC / "cuda" / "module.cpp"),
                str(CSRC / "cuda" / "multitask_loss.cu"),
                str(CSRC / "cuda" / "perturb.cu"),
            ],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
        )
    )


class BuildExtension(cpp_extension.BuildExtension):
    """Builds with ninja and records what was built in bfdkern/_build_info.json, both in the build
    tree (so wheels and plain installs carry it) and beside the sources (editable installs)."""

    def run(self):
        super().run()
        info = {"torch": torch.__version__, "cuda": WITH_CUDA, "cuda_arch": CUDA_ARCH, "torch_cuda": torch.version.cuda}
        text = json.dumps(info, indent=2) + "\n"
        targets = {ROOT / BUILD_INFO}
        if self.build_lib:
            targets.add(Path(self.build_lib).resolve() / BUILD_INFO)
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def get_outputs(self):
        outputs = super().get_outputs()
        if self.build_lib and not self.inplace:
            outputs.append(str(Path(self.build_lib) / BUILD_INFO))
        return outputs


setup(
    ext_modules=extensions,
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
