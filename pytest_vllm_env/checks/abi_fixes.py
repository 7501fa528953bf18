"""The fixes the ``abi.*`` verdicts share, written in the env's own language
(:mod:`pytest_vllm_env.facts.fixes`): a Pixi manifest's file, line and table, a conda prefix's
``conda install -p``, a venv's pip or ``uv pip`` command. Which torch to install for a CUDA
major comes from the torch wheel table (:mod:`pytest_vllm_env.tables.torch_archs`), which
xformers for a torch from :mod:`pytest_vllm_env.tables.xformers_torch`.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import InvalidVersion, Version

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import TorchFacts, dist_name, owner_of
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.findings import Finding, error
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.cuda_archs import cuda_tag
from pytest_vllm_env.tables.xformers_torch import xformers_for_torch

# The env fixes are written for when a caller knows none: a Pixi env, manifest unknown.
NO_ENV = PixiEnv(prefix=Path(".pixi/envs/default"))

TORCH_INDEX = torch_archs.TORCH_INDEX
VLLM_INDEX = "https://wheels.vllm.ai"  # per release and CUDA: <VLLM_INDEX>/0.26.0/cu130


def unreadable(env: PixiEnv, path: Path, name: str) -> str:
    """The fix for an extension that cannot be read: reinstall its package, or, for a member
    of a wheel judged before install (``--vllm-wheel``), rebuild the wheel."""
    if not path.is_absolute():
        return f"rebuild the wheel (`pip wheel`, `uv build`): its member {name} is not a library"
    owner = dist_name(owner_of(name))
    return f"reinstall {owner}, which installed {name}: {fixes.reinstall(env, owner, pypi=True)}"


def torch_spec(built: str) -> str:
    """``==2.11.0`` for a torch an extension was built for; ``==2.2.*`` for a flash-attn
    wheel's ``torch2.2``; a local label (``+cu126``: an index's build) is left to the index."""
    release = built.split("+", 1)[0]
    return f"=={release}.*" if release.count(".") == 1 else f"=={release}"


def torch_package(env: PixiEnv, spec: str) -> Package:
    """torch at ``spec``: PyPI's ``torch``, or conda-forge's ``pytorch`` where the env's torch
    came from conda-forge (a PyPI pin beside it would install a second torch over it)."""
    if env.conda("pytorch") is not None:
        return Package("pytorch", spec)
    return Package("torch", spec, pypi=True)


def pin_torch(env: PixiEnv, built: str) -> str:
    return fixes.pin(env, torch_package(env, torch_spec(built)))


def torch_for_cuda(env: PixiEnv, release: str | None, major: str) -> str:
    """The fix that installs torch ``release`` built for CUDA ``major``: PyPI's own wheel
    when PyPI's default variant is that CUDA (torch 2.11.0 is cu130 there), else the PyTorch
    index of the newest such variant the arch table knows
    (:mod:`pytest_vllm_env.tables.torch_archs`)."""
    version = (release or "").split("+", 1)[0]
    if env.conda("pytorch") is not None:
        # conda-forge's pytorch builds follow cuda-version (and a CPU one has build `cpu_*`)
        return (
            fixes.pin(env, Package("cuda-version", f"{major}.*"))
            + " and ask for a CUDA build of conda-forge's pytorch (build string `cuda*`)"
        )
    if not version:
        place = fixes.deps_place(env, pypi=True)
        return (
            f"install torch built for CUDA {major} (the release the extension's package pins: "
            f"abi.pins names it) in {place}, from the PyTorch index of its CUDA {major} build "
            f"({TORCH_INDEX}/<variant>: cu118, cu121, cu124, cu126, cu128, cu129, cu130 ...)"
        )
    pypi = torch_archs.pypi_variant(version)
    torch = Package("torch", f"=={version}", pypi=True)
    if pypi and torch_archs.variant_cuda(pypi).split(".")[0] == major:
        return fixes.pin(env, torch) + f" (PyPI's torch {version} is its {pypi} build)"
    variant = torch_archs.variant_for(version, major=major)
    if variant:
        return fixes.pin(env, torch, index=torch_archs.index_url(variant))
    known = torch_archs.index_variants(version)
    return (
        f"torch {torch_archs.release_of(version)} has no CUDA {major} build this suite knows "
        f"({'its builds: ' + ', '.join(known) if known else 'its builds are not in the table'}): "
        f"install the torch release that has one ({fixes.deps_place(env, pypi=True)})"
    )


def for_torch_cuda(
    env: PixiEnv,
    owner: str,
    torch: TorchFacts,
    vllm_version: str | None,
    cuda: str | None = None,
) -> str:
    """Install ``owner``'s build for CUDA ``cuda`` (default: torch's; vLLM's per-release wheel
    index)."""
    cuda = cuda or torch.cuda or ""
    major = cuda.split(".")[0]
    if owner == "vllm":
        tag = cuda_tag(".".join(cuda.split(".")[:2]))
        version = vllm_version or env.version_of("vllm")
        release = Version(version).public if version and is_version(version) else ""
        url = f"{VLLM_INDEX}/{release or '<version>'}/{tag}"
        vllm = Package("vllm", f"=={release}" if release else "", pypi=True)
        return f"vLLM's CUDA {major} wheel: " + fixes.pin(env, vllm, index=url, extra=True)
    if owner == "flash-attn":
        return rebuild(owner, owner, torch, env)
    if owner == "xformers":
        version = env.version_of("xformers")
        tag = torch_archs.variant_for(torch.version, cuda) or cuda_tag(cuda)
        xf = Package("xformers", f"=={version.split('+', 1)[0]}" if version else "", pypi=True)
        return f"the xformers build for CUDA {major}: " + fixes.pin(
            env, xf, index=f"{TORCH_INDEX}/{tag}"
        )
    return f"the {owner} build for CUDA {major} ({fixes.deps_place(env, pypi=True)})"


def is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def vllm_rebuild(env: PixiEnv, torch: TorchFacts) -> str:
    """vLLM's own recipe for an existing torch (docs, "Use an existing PyTorch installation"):
    ``python use_existing_torch.py`` drops the checkout's torch pins, then a build without
    isolation compiles against the env's torch."""
    return (
        f"rebuild vLLM against torch {torch.version}: in a vLLM checkout run `python "
        "use_existing_torch.py`, then " + fixes.rebuild(env, "vllm", source="<vLLM checkout>")
    )


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+", 1)[0])[:3])


def same_release(built: str, installed: str) -> bool:
    """``2.2`` (a flash-attn tag) matches 2.2.x; ``2.7.0+cu126`` matches 2.7.0 (+any)."""
    want, have = _release(built), _release(installed)
    return have[: len(want)] == want


def rebuild(name: str, owner: str, torch: TorchFacts, env: PixiEnv | None = None) -> str:
    """The fix that gives ``owner`` a build made for the env's torch, in ``env``'s language."""
    env = env or NO_ENV
    if owner == "flash-attn":
        minor = ".".join(torch.version.split("+", 1)[0].split(".")[:2])
        flag = "TRUE" if torch.cxx11 else "FALSE"
        py = (env.python_version or "").split(".")[:2]
        cp = f"cp{''.join(py)}" if len(py) == 2 else ""
        tail = f"{cp}-{cp}-linux_x86_64.whl" if cp else "...whl"
        cu = (torch.cuda or "12").split(".")[0]
        asset = f"flash_attn-<version>+cu{cu}torch{minor}cxx11abi{flag}-{tail}"
        url = fixes.pin(env, Package("flash-attn", pypi=True), url="<asset URL>")
        return (
            f"install the flash-attn wheel built for torch {minor} (release assets of "
            f"https://github.com/Dao-AILab/flash-attention/releases are named `{asset}`): {url}; "
            f"or build it against this torch: {fixes.rebuild(env, 'flash-attn')}"
        )
    if owner == "xformers":
        want = xformers_for_torch(torch.version)
        if want:
            line = fixes.pin(env, Package("xformers", f"=={want}", pypi=True))
        else:
            line = f"the xformers release that pins it, in {fixes.deps_place(env, pypi=True)}"
        return (
            f"install the xformers built for torch {torch.version}: {line} (xformers.torch-pin "
            "names the index for CUDA variants)"
        )
    if owner == "vllm":
        return vllm_rebuild(env, torch)
    return f"rebuild {name} against the installed torch {torch.version}: " + fixes.rebuild(
        env, dist_name(owner)
    )


def editable_build(env: PixiEnv) -> str:
    """The editable build of the checkout in the env's own interpreter, named by path (the
    ``python`` on PATH is another one): ``pixi run`` for a Pixi env, ``uv pip --python`` for
    a venv uv made, the env's ``bin/python -m pip`` otherwise."""
    python = env.python or env.prefix / "bin" / "python"
    if fixes.kind_of(env) in ("pixi", "pyproject"):
        return (
            f"`pixi run python -m pip install --no-build-isolation -e .` (or `{python} -m pip ...`)"
        )
    if fixes.made_by_uv(env):
        return f"`uv pip install --python {env.prefix} --no-build-isolation -e .`"
    return f"`{python} -m pip install --no-build-isolation -e .`"


def torch_unreadable(cid: str, name: str, torch: TorchFacts, env: PixiEnv) -> Finding:
    """A library of torch/lib that is there and cannot be read (a FIFO, a dangling link, not
    ELF): what torch exports (and needs) is unknown, so the verdict names it instead of blaming
    the extension's build. ``abi.symbols``, ``abi.cxx11``, ``abi.needed`` and ``abi.undefined``
    say it from the same :attr:`TorchFacts.errors` (one reading of torch/lib)."""
    lib, why = next(iter(sorted(torch.errors.items())))
    again = fixes.reinstall(env, "pytorch") if env.conda("pytorch") else ""
    return error(
        cid,
        f"{name}: what torch exports cannot be read: {torch.root / 'lib' / lib}: {why}",
        "reinstall torch: " + (again or fixes.reinstall(env, "torch", pypi=True)),
        path=str(torch.root / "lib" / lib),
        subject=name,
    )
