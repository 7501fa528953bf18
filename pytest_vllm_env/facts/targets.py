"""The one torch and the one CUDA every fix of a run points at.

Each check knows one pin: ``abi.pins`` vLLM's ``torch==2.11.0``, ``xformers.torch-pin``
xformers' ``torch==2.9.0``, ``cuda.nvcc-in-env`` the env's ``cuda-version``, ``cuda.nvcc-torch``
torch's CUDA, ``driver.cuda-runtime`` the driver's ceiling. Left alone they disagree in one run
(``torch==2.13.0`` beside ``torch==2.11.0``, ``cuda-version 12.4`` beside ``12.8``), and a user
who applies one fix undoes another. This fact is computed once per env from everything pinned,
and every check's fix text reads it (checks stay pure: it arrives as a value).

The rules, in order of who decides:

- **torch**: the release vLLM pins (``Requires-Dist: torch==X``: its extensions were built
  against it); without vLLM, the release every other exact torch pin agrees on (xformers,
  torchvision, torchaudio); else the installed torch (a fix keeps what works).
- **CUDA**: a real build of that torch release (the PyTorch index's variants,
  :func:`pytest_vllm_env.tables.torch_archs.index_variants`): the installed torch's CUDA where
  the release has it, else one of the CUDA major the extensions link (``libcudart.so.N``),
  else PyPI's own variant, else the newest; never above the driver's CUDA when
  ``--cuda-driver`` names the driver (a build newer than the driver does not start).
- **index**: the PyTorch index of that variant, where PyPI's torch of that release is another
  variant (pip's ``torch==2.11.0`` is PyPI's cu130 build; a cu128 one comes from
  ``https://download.pytorch.org/whl/cu128``).

- **CUDA libraries**: torch's own ``Requires-Dist`` on ``nvidia-*`` packages, at the exact
  versions it names (``nvidia-cublas-cu12==12.8.4.1``): a fix for a library torch or an
  extension cannot load installs what torch's metadata asks, all of it, rather than one
  unpinned package that satisfies one ``DT_NEEDED`` and leaves ``libtorch_cuda.so`` unable to
  load (issue 21: an unpinned ``nvidia-cuda-runtime-cu12`` did that).

What cannot all hold is said in ``conflicts`` (a vLLM whose extensions link CUDA 13 under a
driver of CUDA 12.4: no torch fixes that; the vLLM build for CUDA 12 does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.pins import marker_environment
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.cuda_libs import TORCH_WHEEL_PACKAGES

# Packages whose exact torch pin is a torch target when vLLM pins none: their compiled code
# was built against that torch (torchvision/torchaudio ops, xformers' _C).
TORCH_PINNERS = ("xformers", "torchvision", "torchaudio")


@dataclass(frozen=True)
class WheelPin:
    """One ``nvidia-*`` requirement of torch's metadata and what the env holds of it."""

    name: str  # "nvidia-cublas-cu12"
    spec: str  # "==12.8.4.1"
    installed: str | None
    holds: bool


@dataclass(frozen=True)
class FixTargets:
    """What every fix of one env points at (module docstring)."""

    torch: str | None = None  # "2.11.0": the release a torch fix installs
    torch_why: str = ""  # "vLLM 0.26.0 requires torch==2.11.0"
    torch_installed: str | None = None  # "2.13.0+cu128" as installed
    cuda: str | None = None  # "12.8": the CUDA a toolkit / cuda-version fix pins
    cuda_why: str = ""
    variant: str | None = None  # "cu128": the torch build of that CUDA
    pypi_variant: str | None = None  # the variant PyPI serves for the torch release
    driver: str | None = None  # "12.4": the driver's CUDA (--cuda-driver), a ceiling
    extension_cuda: dict[str, str] = field(default_factory=dict)  # owner -> libcudart major
    conflicts: tuple[str, ...] = ()
    cuda_wheels: tuple[WheelPin, ...] = ()  # torch's Requires-Dist on nvidia-* packages

    def wheel_for(self, stem: str) -> WheelPin | None:
        """torch's requirement on the package that ships ``lib<stem>.so.N`` (``cublas``)."""
        base = TORCH_WHEEL_PACKAGES.get(stem, "")
        if not base:
            return None
        for pin in self.cuda_wheels:
            if re.fullmatch(re.escape(base) + r"(-cu\d+)?", pin.name):
                return pin
        return None

    def cuda_wheels_fix(self, env: PixiEnv, stems: Iterable[str] = ()) -> str:
        """The fix that gives torch the CUDA libraries its metadata asks for: every
        ``nvidia-*`` requirement of torch that the env does not hold (at torch's exact
        versions), and a reinstall of the package of each of ``stems`` (libraries found
        missing) that the env holds at the right version; "" when torch's metadata names
        none of them."""
        wanted = [p for p in self.cuda_wheels if not p.holds]
        again = [
            pin
            for stem in stems
            if (pin := self.wheel_for(stem)) is not None and pin.holds and pin not in wanted
        ]
        if not wanted and not again:
            return ""
        parts: list[str] = []
        if wanted:
            packages = [Package(p.name, p.spec, pypi=True) for p in wanted]
            parts.append(fixes.add(env, *packages, verb="pin"))
        for pin in dict.fromkeys(again):
            parts.append(fixes.reinstall(env, pin.name, pypi=True))
        return fixes.join(parts, " and ")

    @property
    def index(self) -> str | None:
        """The PyTorch index a torch fix installs from; None where PyPI's wheel is that
        build (or the variant is not known)."""
        if self.variant is None or self.variant == self.pypi_variant:
            return None
        return torch_archs.index_url(self.variant)

    @property
    def cuda_major(self) -> str | None:
        return self.cuda.split(".")[0] if self.cuda else None

    @property
    def torch_changes(self) -> bool:
        """The torch to install differs from the installed one (release or CUDA)."""
        if self.torch is None or self.torch_installed is None:
            return self.torch is not None
        release = self.torch_installed.split("+", 1)[0]
        return release != self.torch or (
            self.variant is not None
            and _variant_of(self.torch_installed) not in (None, self.variant)
        )

    def torch_fix(self, env: PixiEnv) -> str:
        """The fix that installs the target torch in ``env``'s language: PyPI's (from the
        PyTorch index of the target CUDA where PyPI's is another build); conda-forge's
        ``pytorch`` follows ``cuda-version``."""
        if self.torch is None:
            return ""
        if env.conda("pytorch") is not None:
            packages = [Package("pytorch", f"{self.torch}.*")]
            if self.cuda:
                packages.append(Package("cuda-version", f"{self.cuda}.*"))
            return fixes.add(env, *packages, verb="pin")
        torch = Package("torch", f"=={self.torch}", pypi=True)
        return fixes.pin(env, torch, index=self.index or "")

    def describe(self) -> str:
        """One line for evidence: what the fixes aim at and why."""
        parts = []
        if self.torch:
            parts.append(f"torch {self.torch} ({self.torch_why})")
        if self.cuda:
            parts.append(f"CUDA {self.cuda} ({self.cuda_why})")
        return "; ".join(parts) or "nothing pinned"


def _variant_of(version: str) -> str | None:
    local = version.partition("+")[2]
    return local if re.fullmatch(r"cu\d{3,}", local) else None


def _mm(cuda: str | None) -> str | None:
    if not cuda:
        return None
    parts = re.findall(r"\d+", cuda)[:2]
    return ".".join(parts) if len(parts) == 2 else None


def exact_torch_pin(
    requires: Iterable[str], marker_env: dict[str, str] | None = None
) -> str | None:
    """``2.11.0`` from ``torch==2.11.0`` (markers evaluated where given)."""
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != "torch":
            continue
        try:
            if req.marker is not None and not req.marker.evaluate(marker_env or {"extra": ""}):
                continue
        except Exception:  # an odd marker: not a pin we can read
            continue
        for spec in req.specifier:
            if spec.operator in ("==", "===") and "*" not in spec.version:
                return spec.version.split("+", 1)[0]
    return None


def compute(
    env: PixiEnv,
    torch_cuda: str | None = None,
    extension_cuda: dict[str, str] | None = None,
    driver: tuple[int, ...] | None = None,
) -> FixTargets:
    """The targets of ``env``: ``torch_cuda`` is the installed torch's CUDA
    (``torch/version.py``), ``extension_cuda`` the libcudart major of each package's
    extensions (``{"vllm": "13"}``), ``driver`` the driver's CUDA when ``--cuda-driver``
    names it."""
    extension_cuda = dict(extension_cuda or {})
    installed = env.version_of("torch")
    conflicts: list[str] = []
    # -- torch
    torch, why = None, ""
    vllm = env.dist("vllm")
    pin = exact_torch_pin(vllm.requires) if vllm is not None else None
    if pin:
        torch, why = pin, f"vLLM {vllm.version} requires torch=={pin}"  # type: ignore[union-attr]
    else:
        others = {}
        for name in TORCH_PINNERS:
            dist = env.dist(name)
            got = exact_torch_pin(dist.requires) if dist is not None else None
            if got:
                others[name] = got
        if len(set(others.values())) == 1:
            torch = next(iter(others.values()))
            why = " and ".join(f"{n} requires torch=={v}" for n, v in others.items())
        elif installed:
            torch, why = installed.split("+", 1)[0], "the installed torch"
            if others:
                conflicts.append(
                    "exact torch pins disagree: "
                    + ", ".join(f"{n} torch=={v}" for n, v in sorted(others.items()))
                )
    # -- CUDA
    ceiling = tuple(driver[:2]) if driver else None
    have = _mm(torch_cuda) or (_mm(_variant_cuda_text(installed)) if installed else None)
    ext_major = extension_cuda.get("vllm") or next(iter(extension_cuda.values()), None)
    cuda, cuda_why, variant, pypi = None, "", None, None
    if torch:
        pypi = torch_archs.pypi_variant(torch)
        same_release = installed is not None and installed.split("+", 1)[0] == torch
        if have and same_release and (ceiling is None or _tuple(have) <= ceiling):
            variant = f"cu{have.replace('.', '')}"
            cuda, cuda_why = have, f"torch {installed}'s CUDA"
        else:
            for want, major, because in (
                (have, None, f"the installed torch's CUDA {have}"),
                (None, ext_major, f"the extensions link libcudart.so.{ext_major}"),
                (torch_archs.variant_cuda(pypi) if pypi else None, None, "PyPI's build"),
                (None, None, "the newest build"),
            ):
                if want is None and major is None and because != "the newest build":
                    continue
                variant = torch_archs.variant_for(torch, want, major=major, ceiling=ceiling)
                if variant is not None:
                    cuda = torch_archs.variant_cuda(variant)
                    cuda_why = f"torch {torch}'s {variant} build ({because})"
                    break
            if variant is None and have:
                cuda, cuda_why = have, f"torch {installed}'s CUDA"
            if variant is None and ceiling is not None:
                conflicts.append(
                    f"torch {torch} has no build for CUDA <= {ceiling[0]}.{ceiling[1]} (the "
                    "driver) that this suite knows"
                )
    elif env.version_of("cuda-version"):
        cuda = _mm(env.version_of("cuda-version"))
        cuda_why = "the env's cuda-version"
    return FixTargets(
        cuda_wheels=torch_cuda_wheels(env),
        torch=torch,
        torch_why=why,
        torch_installed=installed,
        cuda=cuda,
        cuda_why=cuda_why,
        variant=variant,
        pypi_variant=pypi,
        driver=f"{ceiling[0]}.{ceiling[1]}" if ceiling else None,
        extension_cuda=extension_cuda,
        conflicts=tuple(conflicts),
    )


def _variant_cuda_text(version: str) -> str | None:
    variant = _variant_of(version)
    return torch_archs.variant_cuda(variant) if variant else None


def _tuple(mm: str) -> tuple[int, ...]:
    return tuple(int(p) for p in mm.split(".")[:2])


def torch_cuda_wheels(env: PixiEnv) -> tuple[WheelPin, ...]:
    """torch's ``Requires-Dist`` on ``nvidia-*`` packages that pin a version, markers
    evaluated in the env's own marker environment (Linux, its Python), and whether the env
    holds each."""
    dist = env.dist("torch")
    if dist is None:
        return ()
    marker_env = marker_environment(env)
    out: list[WheelPin] = []
    for line in dist.requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        if not name.startswith("nvidia-") or not str(req.specifier):
            continue
        try:
            if req.marker is not None and not req.marker.evaluate(marker_env):
                continue
            spec = SpecifierSet(str(req.specifier))
        except (InvalidSpecifier, ValueError, TypeError):
            continue
        except Exception:  # an undefined marker name: not a requirement we can judge
            continue
        have = env.version_of(name)
        try:
            holds = have is not None and spec.contains(Version(have), prereleases=True)
        except InvalidVersion:
            holds = False
        out.append(WheelPin(name, str(spec), have, holds))
    return tuple(out)
