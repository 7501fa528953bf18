"""Facts a locked env gives before it is installed: which torch build (its CUDA variant and
where the wheel comes from), which nvcc and CUDA toolkit, which cmake.

These are the same facts an installed env gives through its files (``torch/version.py``,
``nvcc --version``, conda-meta), read instead from pixi.lock's entries, so that the same
check functions can judge them (:mod:`pytest_vllm_env.checks.lock` and its siblings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pytest_vllm_env.facts.toolkit import NvccRun, ToolkitFacts
from pytest_vllm_env.readers.pixilock import LockedEnv, cuda_of_local
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.cuda_libs import CUDA_PACKAGES

_INDEX_VARIANT = re.compile(r"/whl/(?:nightly/|test/)?(cu\d{2,3}|cpu|rocm[\d.]+)/")
_CONDA_BUILD = re.compile(r"^(?:cuda(\d{2})(\d)|(cpu))_")
# torch's CUDA parts in requires_dist: nvidia-cuda-runtime-cu12==12.4.127 (<= 2.10),
# cuda-toolkit[cudart,...]==13.0.2 (2.11+): both measured in PyPI's metadata.
_RUNTIME_PINS = ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime")


@dataclass(frozen=True)
class TorchBuild:
    """The torch a lock pins and the CUDA it was built with."""

    version: str  # "2.6.0+cu124", "2.9.1" (PyPI), "2.8.0" (conda-forge)
    cuda: str | None  # "12.4"; None for a CPU-only build or when unknown
    variant: str | None  # "cu124", "cpu", None when unknown
    where: str  # torch_archs.PYPI, torch_archs.INDEX or "conda-forge"
    how: str  # what told the variant: "local version +cu124", "index .../cu124"...
    location: str
    package: str = "torch"  # the locked package: torch (PyPI), pytorch (conda-forge)

    @property
    def cpu(self) -> bool:
        return self.variant == "cpu"

    @property
    def label(self) -> str:
        """``torch 2.6.0+cu124`` with the variant when the version does not say it."""
        shown = self.version
        if self.variant and "+" not in self.version:
            shown += f" ({self.variant}, {self.how})"
        return f"{self.package} {shown}"


def torch_build(locked: LockedEnv) -> TorchBuild | None:
    """The locked torch (PyPI ``torch``, else conda-forge ``pytorch``/``libtorch``)."""
    pkg = locked.pypi_package("torch")
    if pkg is not None:
        where = torch_archs.INDEX if "download.pytorch.org" in pkg.location else torch_archs.PYPI
        local = pkg.version.partition("+")[2]
        if local == "cpu":
            return TorchBuild(pkg.version, None, "cpu", where, "local version +cpu", pkg.location)
        cuda = cuda_of_local(pkg.version)
        if cuda:
            variant = "cu" + cuda.replace(".", "")
            return TorchBuild(
                pkg.version, cuda, variant, where, f"local version +{variant}", pkg.location
            )
        index = _INDEX_VARIANT.search(urlparse(pkg.location).path + "/")
        if index:
            variant = index.group(1)
            if variant == "cpu" or variant.startswith("rocm"):
                return TorchBuild(pkg.version, None, "cpu", where, f"index {variant}", pkg.location)
            cuda = f"{variant[2:-1]}.{variant[-1]}"
            return TorchBuild(pkg.version, cuda, variant, where, f"index {variant}", pkg.location)
        cuda = _cuda_from_requires(pkg.requires_dist)
        if cuda:
            variant = "cu" + cuda.replace(".", "")
            return TorchBuild(
                pkg.version, cuda, variant, where, "its CUDA wheels in requires_dist", pkg.location
            )
        default = torch_archs.pypi_variant(pkg.version) if where == torch_archs.PYPI else None
        if default:
            cuda = f"{default[2:-1]}.{default[-1]}"
            return TorchBuild(
                pkg.version, cuda, default, where, "PyPI's variant for this release", pkg.location
            )
        return TorchBuild(pkg.version, None, None, where, "unknown", pkg.location)
    for name in ("pytorch", "libtorch"):
        conda = locked.conda_package(name)
        if conda is None:
            continue
        match = _CONDA_BUILD.match(conda.build)
        if match and match.group(3):
            return TorchBuild(
                conda.version,
                None,
                "cpu",
                "conda-forge",
                f"build {conda.build}",
                conda.location,
                name,
            )
        if match:
            cuda = f"{match.group(1)}.{match.group(2)}"
            variant = f"cu{match.group(1)}{match.group(2)}"
            return TorchBuild(
                conda.version,
                cuda,
                variant,
                "conda-forge",
                f"build {conda.build}",
                conda.location,
                name,
            )
        return TorchBuild(
            conda.version, None, None, "conda-forge", f"build {conda.build}", conda.location, name
        )
    return None


def _cuda_from_requires(requires: tuple[str, ...]) -> str | None:
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        if name in _RUNTIME_PINS or (name == "cuda-toolkit" and "cudart" in req.extras):
            for spec in req.specifier:
                if spec.operator in ("==", "~=", ">="):
                    parts = spec.version.split(".")
                    if len(parts) >= 2 and parts[0].isdigit():
                        return f"{parts[0]}.{parts[1]}"
    return None


def nvcc_package(locked: LockedEnv) -> tuple[str, str] | None:
    """``("cuda-nvcc", "12.4.131")``: the conda package that gives the env its nvcc."""
    for name in ("cuda-nvcc", "cuda-nvcc-tools", "cuda-nvcc-impl"):
        pkg = locked.conda_package(name)
        if pkg is not None:
            return name, pkg.version
    return None


def toolkit_facts(locked: LockedEnv, prefix) -> ToolkitFacts:
    """The toolkit as :mod:`pytest_vllm_env.checks.cuda`'s checks see it, from the lock: nvcc's
    version is the locked ``cuda-nvcc``'s (nothing is run: ``--list-gpu-arch`` is left empty,
    so arch checks use the arch table), packages are the locked cuda-* versions."""
    nvcc = nvcc_package(locked)
    run = NvccRun(f"{nvcc[0]} {nvcc[1]} ({locked.path.name})", True, nvcc[1]) if nvcc else None
    packages = {n: locked.conda[n].version for n in CUDA_PACKAGES if n in locked.conda}
    return ToolkitFacts(
        prefix=prefix,
        nvcc_in_env=[],
        nvcc_on_path=None,
        nvcc=run,
        packages=packages,
        broken_records=[],
        include_dirs=[],
        lib_dirs=[],
        headers={},
        libraries={},
        dangling=[],
        ptxas=None,
    )


def cmake_version(locked: LockedEnv) -> tuple[str, str] | None:
    """``("conda", "3.31.6")`` or ``("pypi", "4.1.2")``: the cmake a build in the env runs."""
    conda = locked.conda_package("cmake")
    if conda is not None:
        return "conda", conda.version
    pypi = locked.pypi_package("cmake")
    if pypi is not None:
        return "pypi", pypi.version
    return None


def cxx11_abi(torch: TorchBuild) -> bool | None:
    """torch's ``_GLIBCXX_USE_CXX11_ABI`` for PyPI/PyTorch-index wheels: 1 from 2.7 on, and
    for 2.6.0+cu126; 0 for 2.6.0+cu124 and older (real-world-failures F2.4, F5.3)."""
    if torch.where == "conda-forge":
        return True  # conda-forge builds with the new ABI (its build.sh exports it)
    parts = re.findall(r"\d+", torch.version.split("+", 1)[0])[:2]
    if len(parts) < 2:
        return None
    release = (int(parts[0]), int(parts[1]))
    if release >= (2, 7):
        return True
    if release == (2, 6) and torch.cuda:
        return tuple(int(x) for x in torch.cuda.split(".")) >= (12, 6)
    return False
