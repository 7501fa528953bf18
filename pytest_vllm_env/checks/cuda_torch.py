"""``cuda.nvcc-torch``: the nvcc a build will use against the CUDA torch was built with.

The failure this exists for (flash-attention#1759, real-world-failures F5.6): conda's torch
2.2.0 built with CUDA 11.8 and a system nvcc 12.9 found through ``CUDA_HOME``; building
flash-attn stops in ``torch.utils.cpp_extension._check_cuda_version`` with::

    RuntimeError:
    The detected CUDA version (12.9) mismatches the version that was used to compile
    PyTorch (11.8). Please make sure to use the same CUDA versions.

What decides it, read from torch's ``cpp_extension.py`` (2.2 to 2.11 alike):

- the nvcc is ``$CUDA_HOME/bin/nvcc`` (``CUDA_HOME``, else ``CUDA_PATH``, else the directory
  above ``which nvcc``, else ``/usr/local/cuda``: ``_find_cuda_home``);
- its ``release X.Y`` is compared with ``torch.version.cuda``: another *major* raises (the
  build stops), another *minor* only warns ("has a minor version mismatch") and builds.

vLLM's own build runs the same ``CUDA_HOME`` through CMake, and a CUDA 12 ``_C`` next to a
CUDA 11 torch then fails at import (``abi.cudart``). The fixes here always name torch's CUDA,
so that a fix never recreates the mismatch (the old default "cuda-version 12.8" did, for a
cu118 torch).

Which nvcc that is, and what it says of itself, is a fact read beforehand
(:func:`pytest_vllm_env.facts.build_nvcc.torch_nvcc`, the same nvcc vLLM's setup.py runs);
:func:`nvcc_torch` judges it.
"""

from __future__ import annotations

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.facts.toolkit import NvccRun
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning
from pytest_vllm_env.tables import torch_archs

CID = "cuda.nvcc-torch"


def _mm(version: str) -> tuple[int, int]:
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def mismatch(nvcc_version: str, torch_cuda: str) -> str | None:
    """How an nvcc's CUDA differs from torch's: ``"major"`` (torch refuses to build an
    extension; a vLLM build links another libcudart major), ``"minor"`` (torch warns and
    builds), None when they agree."""
    if _mm(nvcc_version)[0] != _mm(torch_cuda)[0]:
        return "major"
    return "minor" if _mm(nvcc_version) != _mm(torch_cuda) else None


def pin_line(env: PixiEnv, mm: str) -> str:
    """The toolkit of CUDA ``mm`` in the env's own language: ``cuda-version`` and ``cuda-nvcc``
    in the manifest (or ``conda install``); a venv's toolkit is the system's."""
    channel = ""
    if _mm(mm) < (12, 0) and fixes.kind_of(env) != "venv":
        # conda-forge's cuda-nvcc packages start at 12.0; 11.x comes from the nvidia channel
        channel = ' (CUDA 11 nvcc comes from the nvidia channel: channels = ["nvidia", ...])'
    packages = [Package("cuda-version", f"{mm}.*"), Package("cuda-nvcc", f"{mm}.*")]
    return fixes.add(env, *packages, verb="pin") + channel


def torch_index_line(env: PixiEnv, torch_version: str | None, cuda_mm: str) -> str:
    """torch of the installed release built for CUDA ``cuda_mm``, from the PyTorch index of a
    variant that release really has (:func:`pytest_vllm_env.tables.torch_archs.variant_for`);
    "" where it has none (torch 2.5.1 has no cu115)."""
    release = (torch_version or "").split("+", 1)[0]
    tag = torch_archs.variant_for(release, cuda_mm) if release else None
    if tag is None:
        return ""
    torch = Package("torch", f"=={release}", pypi=True)
    return (
        f"install a torch built for CUDA {torch_archs.variant_cuda(tag)} (torch {release}'s "
        f"{tag} build): " + fixes.pin(env, torch, index=torch_archs.index_url(tag))
    )


def nvcc_torch(
    env: PixiEnv,
    nvcc: NvccRun | None,
    why: str,
    torch_version: str | None,
    torch_cuda: str | None,
    targets: FixTargets | None = None,
    torch_cuda_error: str = "",
) -> Finding:
    """``cuda.nvcc-torch``: the build nvcc's CUDA major equals torch's (failed otherwise, as
    torch refuses); a different minor is a warning (torch warns and builds). The toolkit a
    fix pins is the run's target CUDA (``targets``), torch's where the run keeps torch.
    ``torch_cuda_error``: ``torch/version.py`` is there and unreadable (a FIFO): an error
    naming it, not a CPU-only torch."""
    if not torch_version:
        return skipped(CID, f"torch is not installed in {env.prefix}")
    if torch_cuda_error:
        pkg = "pytorch" if env.conda("pytorch") else "torch"
        again = fixes.reinstall(env, pkg, pypi=pkg == "torch") or fixes.reinstall(
            env, "torch", pypi=True
        )
        return error(
            CID, f"torch {torch_version}'s CUDA is unknown: {torch_cuda_error}",
            f"reinstall {pkg}: " + again,
        )  # fmt: skip
    if not torch_cuda:
        return skipped(CID, f"torch {torch_version} is a CPU-only build: nothing to compare")
    if nvcc is None:
        return skipped(CID, "no nvcc for a build: no CUDA_HOME/CUDA_PATH, none on PATH")
    if nvcc.not_run and not nvcc.known:
        return skipped(
            CID, f"{nvcc.path} ({why}) was not run: {nvcc.not_run}; no file says its version"
        )
    if not nvcc.known:
        return skipped(CID, f"{nvcc.path} ({why}) does not run: {nvcc.problem} (cuda.nvcc-runs)")
    have = nvcc.major_minor or nvcc.version
    ev = {"nvcc": nvcc.path, "chosen_by": why, "torch": torch_version, "torch_cuda": torch_cuda}
    differs = mismatch(have, torch_cuda)
    target = targets.cuda if targets is not None and targets.cuda else torch_cuda
    target = ".".join(target.split(".")[:2])
    if differs == "major":
        other = torch_index_line(env, torch_version, have)
        home = fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}")
        use = fixes.join([pin_line(env, target), home], ", with CUDA_HOME pointing at it: ")
        fix = "use torch's CUDA for the build: " + use
        if fixes.kind_of(env) == "venv":
            fix = (
                f"build with a CUDA {target} toolkit (torch's): install it on the system and "
                f"export `CUDA_HOME=/usr/local/cuda-{target}` where you build"
            )
        return failed(
            CID,
            f"the build's nvcc {nvcc.path} ({why}) is CUDA {have}, torch {torch_version} was "
            f'built with CUDA {torch_cuda}: torch.utils.cpp_extension stops with "The detected '
            f"CUDA version ({have}) mismatches the version that was used to compile PyTorch "
            f'({torch_cuda})", and a vLLM build would link libcudart.so.{_mm(have)[0]} next to '
            f"torch's libcudart.so.{_mm(torch_cuda)[0]}",
            fixes.otherwise(fix, other) if other else fix,
            **ev,
        )
    if differs == "minor":
        return warning(
            CID,
            f"the build's nvcc {nvcc.path} ({why}) is CUDA {have}, torch {torch_version} was "
            f"built with {torch_cuda}: torch builds extensions anyway (it warns of a minor "
            "version mismatch); kernels then need a driver for the newer of the two",
            "to match exactly, " + pin_line(env, target),
            **ev,
        )
    return passed(CID, f"nvcc {nvcc.version} ({why}) matches torch's CUDA {torch_cuda}", **ev)
