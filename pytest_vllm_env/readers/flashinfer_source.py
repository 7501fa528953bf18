"""Static reads of the env's own FlashInfer source: the nvcc its JIT finds, the arch gate, and
the version checks of its kernel packages. Read with :mod:`ast` and
:mod:`pytest_vllm_env.readers.pyrules` from the installed copy, never imported.

- ``flashinfer/jit/cpp_ext.py``, ``get_cuda_path``: ``$CUDA_HOME`` or ``$CUDA_PATH``, else the
  directory above ``which nvcc``, else ``/usr/local/cuda`` when it exists (else "Could not find
  nvcc"); ``get_cuda_version``: that ``bin/nvcc --version``, else ``torch.version.cuda``; the
  build line runs ``$FLASHINFER_NVCC`` (default ``$cuda_home/bin/nvcc``);
- ``flashinfer/compilation_context.py``, ``CompilationContext._normalize_cuda_arch(major,
  minor)``: the arch FlashInfer compiles for, or the ``RuntimeError`` it raises (0.6.14: "SM
  12.x requires CUDA >= 12.9"; 0.7.2.post1: 12.0 from CUDA 12.8 with ``0a``, 12.1+ from 12.9),
  evaluated here for the target with ``is_cuda_version_at_least`` bound to the nvcc found;
- ``flashinfer/jit/env.py``: the version checks of ``flashinfer-cubin`` (``_get_cubin_dir`` /
  ``_check_cubin_version``: exact) and ``flashinfer-jit-cache`` (``_get_aot_dir`` /
  ``_check_jit_cache_version``: the version, optionally ``+cuXXX``), evaluated with the
  installed versions, and whether a mismatch raises at import (0.6.14) or is logged and the
  package ignored (0.7.2.post1: "Ignoring incompatible flashinfer-cubin package").
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_vllm_env.readers.pyrules import (
    Evaluator,
    Raised,
    Unknown,
    dotted,
    module_constants,
    scope_before,
)
from pytest_vllm_env.readers.pyrules import (
    function_named as _function,
)
from pytest_vllm_env.readers.pyrules import (
    parse_or_none as _parse,
)

CPP_EXT_PY = "flashinfer/jit/cpp_ext.py"
CONTEXT_PY = "flashinfer/compilation_context.py"
ENV_PY = "flashinfer/jit/env.py"
DEFAULT_CUDA_HOME = "/usr/local/cuda"


@dataclass(frozen=True)
class CudaPathRule:
    """How ``get_cuda_path`` finds the CUDA home: variables in order, then ``which nvcc``,
    then a default directory; and the variable that overrides the nvcc binary."""

    variables: tuple[str, ...] = ("CUDA_HOME", "CUDA_PATH")
    uses_which: bool = True
    default: str | None = DEFAULT_CUDA_HOME
    nvcc_variable: str | None = "FLASHINFER_NVCC"
    found: bool = False  # read from the source (False: these defaults, from 0.6.14/0.7.2)


def cuda_path_rule(cpp_ext_src: str | None, function: str = "get_cuda_path") -> CudaPathRule:
    """The rule of ``get_cuda_path`` in the installed ``cpp_ext.py`` (or of another function of
    the same shape: DeepGEMM's ``_find_cuda_home``)."""
    tree = _parse(cpp_ext_src)
    func = _function(tree, function) if tree else None
    if tree is None or func is None:
        return CudaPathRule()
    variables: list[str] = []
    uses_which = False
    default = None
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and dotted(node.func) in ("os.environ.get", "os.getenv"):
            if node.args and isinstance(node.args[0], ast.Constant):
                variables.append(str(node.args[0].value))
        if isinstance(node, ast.Constant) and node.value == "which":
            uses_which = True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("/") and "cuda" in node.value:
                default = node.value
    nvcc_variable = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and dotted(node.func) in ("os.environ.get", "os.getenv"):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).endswith("_NVCC"):
                nvcc_variable = str(arg.value)
    return CudaPathRule(tuple(variables), uses_which, default, nvcc_variable, True)


def normalize_arch(
    context_src: str, major: int, minor: int, cuda_version: str | None
) -> tuple[str | None, str]:
    """``(arch, "")`` as FlashInfer names it (``"120f"``, ``"90a"``), or ``(None, message)``
    when its gate raises; ``(None, "")`` when the gate could not be read."""
    tree = _parse(context_src)
    if tree is None:
        return None, ""

    def at_least(version: str) -> bool:
        if cuda_version is None:
            raise Unknown("no CUDA version")
        return _ver(cuda_version) >= _ver(version)

    ev = Evaluator(tree, calls={"is_cuda_version_at_least": at_least})
    try:
        value = ev.call("_normalize_cuda_arch", major, minor)
    except Raised as exc:
        return None, exc.message
    except Unknown:
        return None, ""
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]}{value[1]}", ""
    return None, ""


@dataclass(frozen=True)
class VersionCheck:
    """FlashInfer's check of one kernel package against its own version."""

    package: str  # "flashinfer-cubin"
    refused: bool | None  # None: the check could not be read
    mode: str  # "raise" (import fails) or "ignore" (logged, package not used); "" unknown
    message: str = ""
    where: str = ""  # "flashinfer/jit/env.py: _check_cubin_version"


_CHECKS = {
    # package -> (the function that compares, the function that calls it at import)
    "flashinfer-cubin": (("_check_cubin_version", "_get_cubin_dir"), "_get_cubin_dir"),
    "flashinfer-jit-cache": (
        ("_check_jit_cache_version", "_get_aot_dir"),
        "_get_aot_providers",
    ),
}


def version_check(
    env_src: str | None,
    package: str,
    flashinfer_version: str,
    package_version: str,
    environ: Mapping[str, str],
) -> VersionCheck:
    """Evaluate FlashInfer's version check of ``package`` with the installed versions and the
    activated environment (``FLASHINFER_DISABLE_VERSION_CHECK``)."""
    tree = _parse(env_src)
    names, caller = _CHECKS[package]
    func = next((f for n in names if tree and (f := _function(tree, n))), None)
    if tree is None or func is None:
        return VersionCheck(package, None, "")
    guard = next(
        (
            n
            for n in ast.walk(func)
            if isinstance(n, ast.If) and any(isinstance(s, ast.Raise) for s in n.body)
        ),
        None,
    )
    if guard is None:
        return VersionCheck(package, None, "")
    attrs: dict[str, Any] = dict(module_constants(tree))
    attrs.update(flashinfer_version=flashinfer_version)
    for module in ("flashinfer_cubin", "flashinfer_jit_cache"):
        attrs[f"{module}.__version__"] = package_version
    ev = Evaluator(
        tree,
        attrs=attrs,
        calls={
            "os.getenv": lambda key, default=None: environ.get(key, default),
            "os.environ.get": lambda key, default=None: environ.get(key, default),
        },
    )
    seed = {"package_version": package_version, "distribution": package}
    scope = scope_before(ev, func, guard.lineno, seed)
    where = f"{ENV_PY}: {func.name}"
    try:
        refused = bool(ev.expr(guard.test, scope))
    except Unknown:
        return VersionCheck(package, None, "", where=where)
    message = ""
    if refused:
        try:
            ev.block(guard.body, dict(scope))
        except Raised as exc:
            message = exc.message
        except Unknown:
            message = ""
    return VersionCheck(package, refused, _mode(tree, func, caller), message, where)


def _mode(tree: ast.Module, func: ast.FunctionDef, caller_name: str) -> str:
    """``ignore`` when the import-time caller wraps the check in ``try`` and does not raise
    again (0.7: "Ignoring incompatible ..."); ``raise`` otherwise."""
    caller = _function(tree, caller_name)
    if func.name == caller_name or caller is None:
        caller = func
    for node in ast.walk(caller):
        if isinstance(node, ast.Try):
            calls = {
                n.func.id
                for s in node.body
                for n in ast.walk(s)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
            if func.name in calls or caller is func:
                reraises = any(isinstance(n, ast.Raise) for h in node.handlers for n in ast.walk(h))
                return "raise" if reraises else "ignore"
    return "raise"


def _ver(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
