"""FlashInfer in an env: the nvcc its JIT would run, what it would compile for each target arch,
what is prebuilt already, and how it judges its own kernel packages' versions.

Everything is read from the env's files with the rules of its FlashInfer release
(:mod:`pytest_vllm_env.readers.flashinfer_source`): the CUDA home ``get_cuda_path`` finds in
the activated environment; that nvcc's release (``--version``, cached), else
``torch.version.cuda`` (``torch/version.py``), as ``get_cuda_version`` falls back; the arch the
gate ``CompilationContext._normalize_cuda_arch`` turns each target into, or the error it
raises. Prebuilt kernels: ``flashinfer-jit-cache`` (0.6: one wheel for every arch; 0.7: a shim
plus ``flashinfer-jit-cache-smXX`` providers, matched by name as ``flashinfer.collect_env``
does) and AOT modules inside the package (``flashinfer/data/aot``).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.jit_tools import Binary, Facts, release_of, torch_cuda_or_why
from pytest_vllm_env.readers import flashinfer_source as source
from pytest_vllm_env.readers import vllm_settings
from pytest_vllm_env.readers.flashinfer_source import CudaPathRule, VersionCheck

PROVIDER = re.compile(r"^flashinfer-jit-cache-(sm\d{2,3}[af]?)$")
KERNEL_PACKAGES = ("flashinfer-cubin", "flashinfer-jit-cache")


@dataclass(frozen=True)
class FlashInferTarget:
    """What FlashInfer's JIT would do for one target arch."""

    arch: str  # "12.0"
    capability: int  # 120
    compiled_as: str | None  # "120f": FlashInfer's name (sm_120f / compute_120f)
    gate: str = ""  # the RuntimeError its gate raises, when it does
    prebuilt: str = ""  # what provides its kernels already ("" when nothing does)


@dataclass
class FlashInferFacts:
    """FlashInfer's JIT and kernel packages in one env."""

    version: str
    root: str
    rule: CudaPathRule = field(default_factory=CudaPathRule)
    cuda_home: str | None = None
    cuda_home_how: str = ""  # "$CUDA_HOME ([activation.env] in pixi.toml)", "`which nvcc`"
    cuda_home_problem: str = ""
    nvcc: Binary | None = None  # <cuda_home>/bin/nvcc (or $FLASHINFER_NVCC), run
    cuda_version: str | None = None  # what the gate compares: nvcc's, else torch's
    cuda_version_how: str = ""
    torch_cuda: str | None = None
    targets: list[FlashInferTarget] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)  # kernel package -> version
    checks: list[VersionCheck] = field(default_factory=list)
    bypass: str | None = None  # FLASHINFER_DISABLE_VERSION_CHECK after activation
    sampler: bool | None = None  # vLLM's FlashInfer sampler on (None: vLLM does not have it)
    sampler_where: str = ""
    # files the verdict rests on that are there and cannot be read (a FIFO at FlashInfer's
    # cpp_ext.py, at vllm/envs.py, at torch/version.py where no nvcc says the CUDA): each
    # (the package that owns it, "path: cannot be read: why"); the check is then an error
    # naming them, not a guess
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read(env: PixiEnv, archs: list[tuple[str, int]], facts: Facts | None = None):
    """:class:`FlashInferFacts` for the target ``(arch text, capability)`` pairs; None when
    flashinfer-python is not installed."""
    dist = env.dist("flashinfer-python") or env.dist("flashinfer")
    if dist is None:
        return None
    root = dist.location / "flashinfer"
    got = {
        rel: files.read_text_if_present(dist.location / rel, files.SOURCE)
        for rel in (source.CPP_EXT_PY, source.CONTEXT_PY, source.ENV_PY)
    }
    texts = {rel: text for rel, (text, _) in got.items()}
    environ = env.environ()
    out = FlashInferFacts(version=dist.version, root=str(root))
    out.unreadable = [(dist.name, why) for _, why in got.values() if why]
    out.rule = source.cuda_path_rule(texts[source.CPP_EXT_PY])
    _cuda_home(env, environ, out)
    home_nvcc = Path(out.cuda_home) / "bin" / "nvcc" if out.cuda_home else None
    override = environ.get(out.rule.nvcc_variable or "") if out.rule.nvcc_variable else None
    nvcc_path = Path(override) if override else home_nvcc
    if nvcc_path is not None:
        out.nvcc = release_of(nvcc_path, facts, env)
    version_nvcc = release_of(home_nvcc, facts, env) if home_nvcc is not None else None
    out.torch_cuda, torch_why = torch_cuda_or_why(env)
    if version_nvcc is not None and version_nvcc.release:
        out.cuda_version, out.cuda_version_how = version_nvcc.release, f"{home_nvcc} --version"
    elif out.torch_cuda:
        out.cuda_version, out.cuda_version_how = out.torch_cuda, "torch.version.cuda (no nvcc)"
    elif torch_why:  # get_cuda_version falls back on torch.version.cuda: unknown here
        out.unreadable.append(("pytorch" if env.conda("pytorch") else "torch", torch_why))
    out.packages = _kernel_packages(env)
    prebuilt = _prebuilt(env, root, out)
    for arch, cap in archs:
        name, gate = (None, "")
        if texts[source.CONTEXT_PY]:
            name, gate = source.normalize_arch(
                texts[source.CONTEXT_PY], cap // 10, cap % 10, out.cuda_version
            )
        out.targets.append(FlashInferTarget(arch, cap, name, gate, _covers(prebuilt, cap, name)))
    out.bypass = environ.get("FLASHINFER_DISABLE_VERSION_CHECK")
    for package, version in out.packages.items():
        if package in KERNEL_PACKAGES:
            out.checks.append(
                source.version_check(texts[source.ENV_PY], package, dist.version, version, environ)
            )
    _sampler(env, environ, out)
    return out


def _text(path: Path) -> str | None:
    try:
        return files.read_text(path, files.SOURCE)
    except OSError:
        return None


def _cuda_home(env: PixiEnv, environ: dict[str, str], out: FlashInferFacts) -> None:
    """``get_cuda_path``: the first variable set, else ``which nvcc``'s grandparent, else the
    default directory when it exists."""
    sources = env.activation.sources
    for var in out.rule.variables:
        if environ.get(var):
            out.cuda_home = environ[var]
            out.cuda_home_how = f"${var} ({sources.get(var, 'the environment')})"
            return
    if out.rule.uses_which:
        found = env.which("nvcc")
        if found is not None:
            out.cuda_home = str(found.parent.parent)
            out.cuda_home_how = f"`which nvcc` on the activated PATH ({found})"
            return
    default = out.rule.default
    if default and os.path.isdir(default):
        out.cuda_home, out.cuda_home_how = default, f"the default {default}"
        return
    out.cuda_home_problem = (
        f"neither {' nor '.join('$' + v for v in out.rule.variables)} is set, no nvcc is on "
        f"the activated PATH, and {default} does not exist"
    )


def _kernel_packages(env: PixiEnv) -> dict[str, str]:
    out = {}
    for key, dist in env.python_dists.items():
        if key in KERNEL_PACKAGES or PROVIDER.match(key):
            out[key] = dist.version
    return dict(sorted(out.items()))


def _prebuilt(env: PixiEnv, root: Path, out: FlashInferFacts) -> dict[str, str]:
    """Arch tag (``sm90a``; ``*`` for every arch) -> what provides prebuilt kernels for it,
    for the kernel packages FlashInfer accepts."""
    refused = {
        c.package
        for c in (
            source.version_check(
                _text(Path(out.root).parent / source.ENV_PY), p, out.version, v, env.environ()
            )
            for p, v in out.packages.items()
            if p in KERNEL_PACKAGES
        )
        if c.refused
    }
    found: dict[str, str] = {}
    shim = out.packages.get("flashinfer-jit-cache")
    providers = {
        PROVIDER.match(p).group(1): v for p, v in out.packages.items() if PROVIDER.match(p)
    }
    if shim and "flashinfer-jit-cache" not in refused:
        if providers:  # 0.7: the shim finds providers; each must carry the shim's version
            for tag, version in providers.items():
                if version == shim:
                    found[tag] = f"flashinfer-jit-cache-{tag} {version}"
        else:  # 0.6: one wheel, built for every arch FlashInfer publishes
            found["*"] = f"flashinfer-jit-cache {shim}"
    aot = root / "data" / "aot"
    if aot.is_dir() and any(aot.rglob("*.so")):
        found.setdefault("*", f"AOT modules in {aot}")
    return found


def _covers(prebuilt: dict[str, str], capability: int, name: str | None) -> str:
    if "*" in prebuilt:
        return prebuilt["*"]
    for tag, what in prebuilt.items():
        number = "".join(c for c in tag if c.isdigit())
        if name and tag == f"sm{name}":
            return what
        # a family target (sm100f) serves every arch of its family (10.x)
        if tag.endswith("f") and number and int(number) // 10 == capability // 10:
            return what
        if number and int(number) == capability:
            return what
    return ""


def _sampler(env: PixiEnv, environ: dict[str, str], out: FlashInferFacts) -> None:
    """vLLM's FlashInfer sampler (``VLLM_USE_FLASHINFER_SAMPLER``): when on, the engine's
    profile run JIT-compiles FlashInfer's sampling kernels (vllm-project/vllm#49497). Its
    default is read from the env's ``vllm/envs.py`` (0.26.0 and 0.33.0: on; 0.12.0: None, vLLM
    decides)."""
    envs, why = env.package_text_or_why("vllm", "vllm/envs.py")
    if why:
        out.unreadable.append(("vllm", why))
    if not envs:
        return
    try:
        found, default = vllm_settings.default_of(envs, "VLLM_USE_FLASHINFER_SAMPLER")
    except SyntaxError:
        return
    if not found:
        return
    value = environ.get("VLLM_USE_FLASHINFER_SAMPLER")
    if value is None:
        out.sampler = bool(default)
        out.sampler_where = f"vLLM's default ({default!r} in vllm/envs.py)"
    else:
        out.sampler = value.strip() not in ("0", "")
        where = env.activation.sources.get("VLLM_USE_FLASHINFER_SAMPLER", "the environment")
        out.sampler_where = f"VLLM_USE_FLASHINFER_SAMPLER={value} ({where})"
