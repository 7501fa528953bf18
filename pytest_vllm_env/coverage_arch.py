"""``arch.coverage``: does each binary hold kernels for the target GPU?

The failure this exists for: torch ``+cu124`` on an RTX 5090 (sm_120) imports fine and
then fails at the first kernel with "no kernel image is available for execution on the
device", because CUDA 12.4 could not emit sm_120 and the wheel ships no PTX.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from . import findings as F
from .archs import Arch
from .fatbin import FatbinImage, arch_coverage, arch_specific_only, describe
from .findings import Finding

CID = "arch.coverage"


def _fix(label: str, target: Arch) -> str:
    if "libtorch" in label:
        return (
            f"install a torch built with {target.sm} kernels: for 12.x GPUs a CUDA >= 12.8 build "
            "(torch from the cu128/cu130 index; `torch` under [pypi-dependencies] with that index)"
        )
    return (
        f"rebuild with TORCH_CUDA_ARCH_LIST containing {target.cc} (nvcc >= 12.8 for 12.x), "
        f"or install a build of {label.split('/')[0]} made for {target.sm}"
    )


def coverage(
    label: str, images: list[FatbinImage] | None, targets: Iterable[Arch], error: str = ""
) -> list[Finding]:
    """One finding per target arch for the binary ``label`` (a site-packages-relative name)."""
    targets = list(targets)
    if error:
        return [F.error(CID, f"{label}: {error}", f"reinstall the package that owns {label}")]
    if not targets:
        return [
            F.skipped(
                CID, "no target arch known: pass --cuda-arch=12.0 or set TORCH_CUDA_ARCH_LIST"
            )
        ]
    if not images:
        return [F.skipped(CID, f"{label} holds no GPU code (.nv_fatbin absent)")]
    held = describe(images)
    out = []
    for target in targets:
        cov = arch_coverage(images, target)
        if cov.covered and cov.via is not None:
            how = f"PTX {cov.via.name} (JIT on first use)" if cov.jit else f"SASS {cov.via.name}"
            out.append(F.passed(CID, f"{label} runs on {target.sm} via {how}", holds=held))
        elif arch_specific_only(images):
            out.append(
                F.passed(
                    CID,
                    f"{label} holds only arch-specific kernels ({held}): used only on those "
                    f"GPUs, not needed for {target.sm}",
                    holds=held,
                )
            )
        else:
            out.append(
                F.failed(
                    CID,
                    f"{label} has no kernels for {target.sm} ({target.cc}): it holds {held}",
                    _fix(label, target),
                    holds=held,
                )
            )
    return out


def label_of(path: Path) -> str:
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return path.name
