"""DeepGEMM in an env: the copy vLLM imports, the archs vLLM uses it on, its JIT header trees,
and the nvcc its JIT runs.

Read from the env's own files, with the rules of its releases:

- ``vllm/utils/deep_gemm.py``, ``_import_deep_gemm``: an installed ``deep_gemm`` package first,
  else the copy vLLM vendors (``vllm/third_party/deep_gemm``); a failing import is logged and
  DeepGEMM left unused (0.26.0, 0.33.0: ``except Exception``);
- ``vllm/platforms/cuda.py``, ``support_deep_gemm``: the capabilities vLLM uses it on (0.26.0
  and 0.33.0: exactly 9.0, the 10.x family, the 12.x family), evaluated for each target;
  ``VLLM_USE_DEEP_GEMM`` (its default read from ``vllm/envs.py``) turns it off;
- ``deep_gemm/__init__.py``, ``_find_cuda_home``: ``$CUDA_HOME``/``$CUDA_PATH``, ``which nvcc``,
  ``/usr/local/cuda`` (asserting one is found);
- the JIT's header tree, ``deep_gemm/include/deep_gemm/impls/sm90_*.cuh`` (``sm100_``,
  ``sm120_``), compiled at the first GEMM of each shape;
- the compiled module's own requirements, read as strings from its ``_C*.so``: 0.26.0's
  ``"NVCC version should be >= 12.3"`` (an assertion) and ``"please use at least NVCC 12.9 for
  the best DeepGEMM performance"``; 0.33.0's ``"NVCC version must be at least 12.9"`` (its
  CUDA-home search moved into the module, same order: CUDA_HOME, CUDA_PATH, which nvcc,
  /usr/local/cuda); and ``DG_JIT_NVCC_COMPILER`` / ``DG_JIT_USE_NVRTC``.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.jit_tools import Binary, Facts, release_of
from pytest_vllm_env.readers import flashinfer_source, vllm_settings
from pytest_vllm_env.readers.pyrules import Evaluator, Unknown

_MIN = re.compile(rb"NVCC version (?:should be >=|must be at least) (\d+\.\d+)")
_BEST = re.compile(rb"at least NVCC (\d+\.\d+) for the best")
_SO_LIMIT = 512 * files.MiB


@dataclass(frozen=True)
class DeepGemmTarget:
    """DeepGEMM for one target arch."""

    arch: str
    capability: int
    used: bool | None  # vLLM's support_deep_gemm; None when it could not be read
    headers: list[str] = field(default_factory=list)  # impls/sm90_*.cuh for this arch


@dataclass
class DeepGemmFacts:
    """The DeepGEMM vLLM would import, and what its JIT needs."""

    vllm: str
    root: str  # the deep_gemm package folder
    origin: str  # "vendored in vllm 0.26.0" / "the deep_gemm package"
    enabled: bool = True
    enabled_where: str = ""
    targets: list[DeepGemmTarget] = field(default_factory=list)
    cuda_home: str | None = None
    cuda_home_how: str = ""
    cuda_home_problem: str = ""
    nvcc: Binary | None = None
    nvcc_variable: str | None = None  # DG_JIT_NVCC_COMPILER after activation
    nvrtc: bool = False  # DG_JIT_USE_NVRTC set: NVRTC compiles, not nvcc
    min_nvcc: str | None = None  # "12.3"
    best_nvcc: str | None = None  # "12.9"
    include_ok: bool = True  # include/cute and include/cutlass are there
    # files the verdict rests on that are there and cannot be read (a FIFO at vllm/envs.py,
    # vllm/platforms/cuda.py, deep_gemm/__init__.py): (package that owns it, "path: why")
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read(env: PixiEnv, archs: list[tuple[str, int]], facts: Facts | None = None):
    """:class:`DeepGemmFacts`; None when vLLM is not installed or ships no DeepGEMM."""
    vllm = env.dist("vllm")
    if vllm is None:
        return None
    external = env.dist("deep_gemm") or env.dist("deep-gemm")
    owner = "vllm"
    if external is not None and files.lexists(external.location / "deep_gemm" / "__init__.py"):
        root, origin = external.location / "deep_gemm", f"the deep_gemm package {external.version}"
        owner = external.name
    else:
        root = vllm.location / "vllm" / "third_party" / "deep_gemm"
        origin = f"vendored in vllm {vllm.version} (vllm/third_party/deep_gemm)"
    init, init_why = files.read_text_if_present(root / "__init__.py", files.SOURCE)
    if init is None and not init_why:
        return None  # no DeepGEMM here (absent, not unreadable)
    environ = env.environ()
    out = DeepGemmFacts(vllm.version, str(root), origin)
    if init_why:
        out.unreadable.append((owner, init_why))
    envs, why = env.package_text_or_why("vllm", "vllm/envs.py")
    if why:
        out.unreadable.append(("vllm", why))
    envs = envs or ""
    found, default = (False, None)
    try:
        found, default = vllm_settings.default_of(envs, "VLLM_USE_DEEP_GEMM")
    except SyntaxError:
        pass
    value = environ.get("VLLM_USE_DEEP_GEMM")
    if value is not None:
        out.enabled = value.strip() not in ("0", "")
        where = env.activation.sources.get("VLLM_USE_DEEP_GEMM", "the environment")
        out.enabled_where = f"VLLM_USE_DEEP_GEMM={value} ({where})"
    elif found:
        out.enabled = bool(default)
        out.enabled_where = f"vLLM's default ({default!r} in vllm/envs.py)"
    platform, why = env.package_text_or_why("vllm", "vllm/platforms/cuda.py")
    if why:
        out.unreadable.append(("vllm", why))
    gate = _gate(platform)
    impls = root / "include" / "deep_gemm" / "impls"
    listed = sorted(p.name for p in impls.glob("sm*.cuh")) if impls.is_dir() else []
    for arch, cap in archs:
        prefix = f"sm{cap // 10 * 10}_"
        out.targets.append(
            DeepGemmTarget(arch, cap, gate(cap), [n for n in listed if n.startswith(prefix)])
        )
    out.include_ok = all((root / "include" / d).is_dir() for d in ("cute", "cutlass"))
    rule = flashinfer_source.cuda_path_rule(init, "_find_cuda_home")
    _cuda_home(env, environ, rule, out)
    out.nvcc_variable = environ.get("DG_JIT_NVCC_COMPILER")
    out.nvrtc = environ.get("DG_JIT_USE_NVRTC", "0").strip() not in ("0", "")
    nvcc = (
        Path(out.nvcc_variable)
        if out.nvcc_variable
        else (Path(out.cuda_home) / "bin" / "nvcc" if out.cuda_home else None)
    )
    if nvcc is not None:
        out.nvcc = release_of(nvcc, facts, env)
    out.min_nvcc, out.best_nvcc = _requirements(root, facts)
    return out


def _gate(source: str | None):
    """``capability -> bool | None``: vLLM's ``support_deep_gemm`` evaluated."""
    try:
        tree = ast.parse(source) if source else None
    except SyntaxError:
        tree = None

    def used(cap: int) -> bool | None:
        if tree is None:
            return None
        ev = Evaluator(
            tree,
            calls={
                "cls.is_device_capability": lambda n: cap == n,
                "cls.is_device_capability_family": lambda n: cap // 10 == n // 10,
            },
        )
        try:
            return bool(ev.call("support_deep_gemm", "cls"))
        except Unknown:
            return None

    return used


def _cuda_home(env: PixiEnv, environ: dict[str, str], rule: Any, out: DeepGemmFacts) -> None:
    sources = env.activation.sources
    for var in rule.variables:
        if environ.get(var):
            out.cuda_home = environ[var]
            out.cuda_home_how = f"${var} ({sources.get(var, 'the environment')})"
            return
    found = env.which("nvcc")
    if found is not None:
        out.cuda_home, out.cuda_home_how = str(found.parent.parent), f"`which nvcc` ({found})"
        return
    default = rule.default or flashinfer_source.DEFAULT_CUDA_HOME
    if os.path.isdir(default):
        out.cuda_home, out.cuda_home_how = default, f"the default {default}"
        return
    out.cuda_home_problem = (
        f"no ${'/$'.join(rule.variables)}, no nvcc on the activated PATH, no {default}"
    )


def _requirements(root: Path, facts: Facts | None) -> tuple[str | None, str | None]:
    """The nvcc floor and the recommended nvcc, from the strings of the compiled module."""
    libs = sorted(root.glob("_C*.so"))
    if not libs:
        return None, None

    def compute() -> list[str | None]:
        for lib in libs:
            try:
                data = files.read_bytes(lib, _SO_LIMIT)
            except OSError:
                continue
            low, best = _MIN.search(data), _BEST.search(data)
            if low or best:
                return [
                    low.group(1).decode() if low else None,
                    best.group(1).decode() if best else None,
                ]
        return [None, None]

    value = facts("deepgemm-nvcc-floor", compute, [str(p) for p in libs]) if facts else compute()
    return value[0], value[1]
