"""Torch wheel <-> arch: which GPU archs each torch release x CUDA variant holds kernels for,
each row with its source, in one table.

Used when torch is not installed yet (judged from pixi.lock): the arch list of a locked
``torch==2.6.0+cu124`` is looked up here and handed to the same coverage check that judges an
installed ``libtorch_cuda.so`` read with the fatbin reader (an arch list is an arch list).

Two kinds of rows:

- **measured**: PyPI's wheel for that release (the variant PyTorch publishes to PyPI),
  ``torch/lib/libtorch_cuda.so`` fetched with HTTP range reads and listed with
  :mod:`pytest_vllm_env.readers.fatbin`; every SASS arch present is recorded, including the few
  arch-specific images (``sm_90a``...) some kernels add. ``tests/test_torch_archs_integration.py``
  re-measures these rows against the real wheels. None of PyPI's torch wheels measured
  holds PTX.
- **documented**: variants this machine cannot download (download.pytorch.org is not
  reachable from it), from PyTorch's own words: the "PyTorch CUDA Support Matrix" in
  ``RELEASE.md`` (pytorch/pytorch#164471 for 2.9/2.10, #175253 for 2.11, #182849 for 2.12)
  and ``.ci/manywheel/build_cuda.sh`` (the stored version, pytorch/pytorch@00c7a380, builds
  12.6/12.8/12.9: the 2.8 matrix; its 12.8 list equals the measured 2.8.0 wheel). These list
  the ``TORCH_CUDA_ARCH_LIST`` archs (SASS), ``+PTX`` adding PTX of the last one.

A release's rows are keyed by ``major.minor`` (patch releases keep their build matrix) and by
where the wheel comes from: PyPI and the PyTorch index can differ (2.11: PyPI's cu130 wheel
has no PTX, measured, while RELEASE.md lists ``12.0+PTX`` for cu130 linux builds).

When a release or variant is not in the table, :func:`toolkit_bound` still answers the
question that matters most: a build made with CUDA < 12.8 cannot contain sm_100/sm_120 SASS
(nvcc could not emit it: :mod:`pytest_vllm_env.tables.cuda_archs`), and PyTorch's wheels carry
no PTX to JIT from (every row measured here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pytest_vllm_env.tables.archs import Arch, FatbinImage, arch_coverage, parse_arch
from pytest_vllm_env.tables.cuda_archs import min_toolkit_for

PYPI = "pypi"
INDEX = "pytorch-index"

_MEASURED = "measured: PyPI wheel torch-{v}-cp312-cp312-manylinux*_x86_64.whl, libtorch_cuda.so"
_MATRIX = "PyTorch RELEASE.md, CUDA support matrix ({pr})"
_BUILD_SCRIPT = "pytorch .ci/manywheel/build_cuda.sh @00c7a380 (the 2.8 matrix: 12.6/12.8/12.9)"


@dataclass(frozen=True)
class TorchArchs:
    """The kernels of one torch release x CUDA variant."""

    release: str  # "2.9": the major.minor the row covers
    variant: str  # "cu128"
    sass: tuple[str, ...]  # "sm_70", "sm_90a" ...
    ptx: tuple[str, ...]  # "compute_120"
    source: str
    where: str = PYPI  # PYPI or INDEX: whose wheel the row describes
    measured: str | None = None  # the exact version measured, for measured rows

    @property
    def cuda(self) -> str:
        """``12.8`` for ``cu128``."""
        digits = self.variant[2:]
        return f"{digits[:-1]}.{digits[-1]}"

    def images(self) -> list[FatbinImage]:
        """The row as fatbin images, for :func:`pytest_vllm_env.checks.coverage_arch.coverage`."""
        out = [FatbinImage("sass", parse_arch(s), False) for s in self.sass]
        out += [FatbinImage("ptx", parse_arch(p), False) for p in self.ptx]
        return out

    def covers(self, targets: Iterable[Arch]) -> bool:
        images = self.images()
        return all(arch_coverage(images, t).covered for t in targets)


def _sm(*ccs: str) -> tuple[str, ...]:
    return tuple(parse_arch(cc).sm for cc in ccs)


def _m(release: str, variant: str, version: str, *sass: str) -> TorchArchs:
    return TorchArchs(release, variant, sass, (), _MEASURED.format(v=version), PYPI, version)


def _d(release: str, variant: str, source: str, archs: str, where: str = INDEX) -> TorchArchs:
    """A documented row from a TORCH_CUDA_ARCH_LIST-style list (``...;12.0+PTX``)."""
    ccs = [a for a in archs.split(";") if a]
    ptx = tuple(parse_arch(a).compute for a in ccs if a.endswith("+PTX"))
    return TorchArchs(release, variant, _sm(*ccs), ptx, source, where)


_LEGACY_126 = "5.0;6.0;7.0;7.5;8.0;8.6;9.0"
_M910 = _MATRIX.format(pr="pytorch/pytorch#164471, #175253: releases 2.9 and 2.10")
_M211 = _MATRIX.format(pr="pytorch/pytorch#175253: release 2.11")
_M212 = _MATRIX.format(pr="pytorch/pytorch#182849: release 2.12")

_CU128 = (
    "sm_70",
    "sm_75",
    "sm_80",
    "sm_86",
    "sm_89",
    "sm_90",
    "sm_90a",
    "sm_100",
    "sm_100a",
    "sm_120",
    "sm_120a",
)
_CU130 = (
    "sm_75",
    "sm_80",
    "sm_86",
    "sm_89",
    "sm_90",
    "sm_90a",
    "sm_100",
    "sm_100a",
    "sm_103a",
    "sm_120",
    "sm_120a",
    "sm_121a",
)
_CU130F = tuple("sm_103f" if a == "sm_103a" else a for a in _CU130)

ROWS: tuple[TorchArchs, ...] = (
    # measured (PyPI, fatbin reader; tests/test_torch_archs_integration.py re-measures them)
    _m("2.6", "cu124", "2.6.0", "sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90",
       "sm_90a"),
    _m("2.7", "cu126", "2.7.1", "sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_89",
       "sm_90", "sm_90a"),
    _m("2.8", "cu128", "2.8.0", *_CU128),
    _m("2.9", "cu128", "2.9.1", *_CU128),
    _m("2.10", "cu128", "2.10.0", *_CU128),
    _m("2.11", "cu130", "2.11.0", *_CU130),
    _m("2.12", "cu130", "2.12.0", *_CU130),
    _m("2.13", "cu130", "2.13.0", *_CU130F),
    _m("2.14", "cu130", "2.14.0", *_CU130F),
    # documented (variants PyPI does not serve)
    _d("2.8", "cu126", _BUILD_SCRIPT, _LEGACY_126),
    _d("2.8", "cu129", _BUILD_SCRIPT, "7.0;7.5;8.0;8.6;9.0;10.0;12.0+PTX"),
    _d("2.9", "cu126", _M910, _LEGACY_126),
    _d("2.9", "cu130", _M910, "7.5;8.0;8.6;9.0;10.0;12.0+PTX"),
    _d("2.10", "cu126", _M910, _LEGACY_126),
    _d("2.10", "cu130", _M910, "7.5;8.0;8.6;9.0;10.0;12.0+PTX"),
    _d("2.11", "cu126", _M211, _LEGACY_126),
    _d("2.11", "cu128", _M211, "7.5;8.0;8.6;9.0;10.0;12.0"),
    _d("2.11", "cu130", _M211, "7.5;8.0;8.6;9.0;10.0;12.0+PTX"),
    _d("2.12", "cu126", _M212, _LEGACY_126),
    _d("2.12", "cu130", _M212, "7.5;8.0;8.6;9.0;10.0;12.0+PTX"),
    _d("2.12", "cu132", _M212, "7.5;8.0;8.6;9.0;10.0;12.0+PTX"),
)  # fmt: skip


def release_of(version: str) -> str:
    """``2.9`` from ``2.9.1+cu128``."""
    return ".".join(re.findall(r"\d+", version.split("+", 1)[0])[:2])


def lookup(version: str, variant: str, where: str = PYPI) -> TorchArchs | None:
    """The row for ``version`` (any patch release) and ``variant``; the row for the other
    source of wheels (PyPI / the PyTorch index) when only that one is known."""
    release = release_of(version)
    rows = [r for r in ROWS if r.release == release and r.variant == variant]
    for row in rows:
        if row.where == where:
            return row
    return rows[0] if rows else None


def pypi_variant(version: str) -> str | None:
    """The CUDA variant PyPI serves for a release, where a measured row says so."""
    release = release_of(version)
    for row in ROWS:
        if row.release == release and row.where == PYPI and row.measured:
            return row.variant
    return None


def toolkit_bound(cuda: str, target: Arch) -> str | None:
    """Why a build made with CUDA ``cuda`` cannot run on ``target``, or None when it could:
    nvcc of that CUDA cannot emit ``target``'s SASS (12.0 needs CUDA 12.8)."""
    need = min_toolkit_for(target)
    if need is None:
        return None
    have = tuple(int(x) for x in re.findall(r"\d+", cuda)[:2])
    want = tuple(int(x) for x in re.findall(r"\d+", need)[:2])
    if have < want:
        return f"CUDA {cuda}'s nvcc cannot generate {target.sm} code (it needs CUDA >= {need})"
    return None


def covering(targets: Iterable[Arch], at_least: str | None = None) -> list[TorchArchs]:
    """Rows whose kernels serve every target, oldest release first, then lowest CUDA."""
    targets = list(targets)
    floor = tuple(int(x) for x in release_of(at_least).split(".")) if at_least else (0, 0)
    rows = [
        r
        for r in ROWS
        if r.covers(targets) and tuple(int(x) for x in r.release.split(".")) >= floor
    ]
    return sorted(
        rows,
        key=lambda r: (
            tuple(int(x) for x in r.release.split(".")),
            tuple(int(x) for x in r.cuda.split(".")),
            r.where != PYPI,
        ),
    )


# -- the PyTorch index: which CUDA variants each release is published for ----------------------
TORCH_INDEX = "https://download.pytorch.org/whl"
_RELEASE_MATRIX = "PyTorch RELEASE.md, Release Compatibility Matrix (@aa6104e2: 2.0 to 2.3)"
_GET_STARTED = "pytorch.org/get-started/previous-versions (the pip commands of each release)"
# release -> (the CUDA variants download.pytorch.org/whl/<variant> serves for it, source). A
# variant name in a fix comes from here or from ROWS, never from a CUDA version alone: torch
# 2.5.1 has no cu115 (a fix once said `--index-url .../whl/cu115`), 2.x no cu90.
INDEX_VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "2.0": (("cu117", "cu118"), _RELEASE_MATRIX),
    "2.1": (("cu118", "cu121"), _RELEASE_MATRIX),
    "2.2": (("cu118", "cu121"), _RELEASE_MATRIX),
    "2.3": (("cu118", "cu121"), _RELEASE_MATRIX),
    "2.4": (("cu118", "cu121", "cu124"), _GET_STARTED),
    "2.5": (("cu118", "cu121", "cu124"), _GET_STARTED),
    "2.6": (("cu118", "cu124", "cu126"), _GET_STARTED),
    "2.7": (("cu118", "cu126", "cu128"), _GET_STARTED),
}


def index_variants(version: str) -> list[str]:
    """The CUDA variants PyTorch publishes ``version``'s release for (``["cu126", "cu128",
    "cu129"]`` for 2.8.0), lowest CUDA first: :data:`INDEX_VARIANTS`, else the rows of
    :data:`ROWS`; empty for a release neither knows."""
    release = release_of(version)
    known = set(INDEX_VARIANTS.get(release, ((), ""))[0])
    known |= {r.variant for r in ROWS if r.release == release}
    return sorted(known, key=_variant_cuda)


def _variant_cuda(variant: str) -> tuple[int, int]:
    """``(12, 8)`` for ``cu128``, ``(11, 8)`` for ``cu118``."""
    digits = variant[2:]
    return int(digits[:-1]), int(digits[-1])


def variant_cuda(variant: str) -> str:
    """``12.8`` for ``cu128``."""
    major, minor = _variant_cuda(variant)
    return f"{major}.{minor}"


def variant_for(
    version: str,
    cuda: str | None = None,
    *,
    major: str | None = None,
    ceiling: tuple[int, ...] | None = None,
) -> str | None:
    """The real variant of torch ``version`` for a CUDA: ``cuda``'s own (``12.8`` ->
    ``cu128``) where the release has it, else the newest of the same ``major`` (or of
    ``cuda``'s major), never above ``ceiling`` (the driver's CUDA); None where the release
    has no such build."""
    variants = index_variants(version)
    if ceiling is not None:
        variants = [v for v in variants if _variant_cuda(v) <= tuple(ceiling[:2])]
    if cuda:
        exact = f"cu{cuda.replace('.', '')}"
        if exact in variants:
            return exact
        major = major or cuda.split(".")[0]
    if major:
        same = [v for v in variants if str(_variant_cuda(v)[0]) == major]
        return same[-1] if same else None
    return variants[-1] if variants else None


def index_url(variant: str) -> str:
    """``https://download.pytorch.org/whl/cu128``."""
    return f"{TORCH_INDEX}/{variant}"


def lowest_variant_at_least(cuda: str) -> str | None:
    """The lowest CUDA variant the PyTorch index serves for any release this table knows
    whose CUDA is ``cuda`` or newer (``cu128`` for 12.8, ``cu121`` for 12.0: there never was
    a cu120); None above every known variant. A fix that needs "a torch built for CUDA >= X"
    names a real index with it, never one made from the number alone."""
    want = tuple(int(p) for p in re.findall(r"\d+", cuda)[:2])
    known = {v for variants, _ in INDEX_VARIANTS.values() for v in variants}
    known |= {r.variant for r in ROWS if re.fullmatch(r"cu\d{3,}", r.variant)}
    at_least = sorted((v for v in known if _variant_cuda(v) >= want), key=_variant_cuda)
    return at_least[0] if at_least else None
