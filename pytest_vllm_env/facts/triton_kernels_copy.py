"""Which ``triton_kernels`` the env's vLLM imports for gpt-oss MXFP4 experts, and what that copy
does on Hopper: read from the copy's own files (never imported).

vLLM 0.26.0 and 0.33.0 alike (``utils/import_utils.py``): ``has_triton_kernels()`` is true when
``triton_kernels`` or ``vllm.third_party.triton_kernels`` is importable, and
``import_triton_kernels()`` "prioritize[s] triton_kernels that is available in site-packages":
a top-level ``triton_kernels`` anywhere on ``sys.path`` wins (``_has_module`` is
``importlib.util.find_spec``: the first folder of ``sys.path`` holding one; Python puts the
folders of ``PYTHONPATH`` before site-packages, so a copy on the PYTHONPATH the env's
activation sets wins over an installed one), and only without one is the copy vendored in
the wheel (``vllm/third_party/triton_kernels``, triton v3.5.1's) aliased to
``sys.modules["triton_kernels"]``. Measured with the real wheels on the CPU: with the PyPI
``triton-kernels`` 0.1.0 (Kernelize AI's, a different project with no ``matmul_ogs``) on the
path, both releases load ``triton_kernels`` from it, ``has_triton_kernels()`` stays true (so
the TRITON MoE backend is still chosen on sm 9.x), and called alone,
``mxfp4_utils._swizzle_mxfp4`` raises ``ModuleNotFoundError: No module named
'triton_kernels.matmul_ogs_details'`` (0.26.0) / ``'triton_kernels.matmul_details'`` (0.33.0,
which calls a copy without ``matmul_ogs`` 3.8). A real load goes through
``fused_moe/oracle/mxfp4.py`` first: measured on the H100 (vLLM 0.26.0, docs/gpu-runs.md Round
14), the weights load and the TRITON branch of the conversion dies on its own ``from
triton_kernels.matmul_ogs import ...`` ("No module named 'triton_kernels.matmul_ogs'"); 0.33.0
imports that at module level inside ``try`` (logged only), so there the swizzle's import is the
first to raise. ``TritonKernelsCopy.missing`` names the first module the load imports that the
copy lacks, in that order.

Where a copy's files are not there to read (a stand-in) or cannot be read, the vendored copy of
vLLM 0.26.0 / 0.33.0 is its recorded facts (the two wheels' copies are identical, 3.5.1);
anything else that is not read is an assumption the fact names (``assumed``).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.quant_release import exact_release
from pytest_vllm_env.readers.triton_kernels_source import (
    MATMUL,
    MATMUL_OGS,
    MXFP4_ORACLE_PY,
    MXFP4_UTILS_PY,
    VENDORED,
    api_generation,
    block_n_file,
    hopper_assert,
    hopper_small_n,
    kernel_file,
    swizzle_imports,
    triton_branch_imports,
)

# the copy vendored in the vLLM 0.26.0 and 0.33.0 wheels (triton v3.5.1's python/
# triton_kernels; `diff -r` of the two is empty): read from both wheels
RECORDED_VENDORED = {"api": "3.5.1", "modules": (MATMUL_OGS,), "small_n": 128, "asserts": True}
# mxfp4_utils.py:_swizzle_mxfp4's opt_flags imports, read from both wheels
RECORDED_IMPORTS = {"0.26.0": (MATMUL_OGS,), "0.33.0": (MATMUL, MATMUL_OGS)}
# oracle/mxfp4.py's TRITON branch, before _swizzle_mxfp4: read from both wheels
RECORDED_BRANCH_IMPORTS = {"0.26.0": ("matmul_ogs",), "0.33.0": ()}
_FINDER = re.compile(r"['\"]triton_kernels['\"]\s*:\s*['\"]([^'\"]+)['\"]")


@dataclass(frozen=True)
class TritonKernelsCopy:
    """The copy vLLM imports (``where``: "installed", "vendored", or "" for none), its folder
    and distribution, its API generation, the ``opt_flags`` packages it has, and its Hopper
    facts: ``small_n`` (outputs of at most this many columns get a BLOCK_N the kernel's
    ``BLOCK_N % (2 * n_warps * 2 * 8)`` assert refuses at 8 warps; 0: none do) and
    ``asserts`` (the kernel has that assert); ``vllm_imports``: the ``opt_flags`` packages
    the env's ``_swizzle_mxfp4`` imports; ``assumed``: what was not read and taken as the
    vendored 3.5.1 copy's (or 0.33.0's imports); ``via``: for a copy found on the PYTHONPATH
    the env's activation sets, what sets it (``Activation.sources``), else ''; ``branch``:
    the modules the TRITON branch of the weight conversion imports before ``_swizzle_mxfp4``
    (``triton_branch_imports``), and ``branch_present`` those the copy has."""

    where: str = ""
    path: str = ""
    dist: str = ""
    api: str | None = None
    modules: tuple[str, ...] = ()
    small_n: int = 128
    asserts: bool = True
    vllm_imports: tuple[str, ...] = (MATMUL, MATMUL_OGS)
    assumed: tuple[str, ...] = ()
    via: str = ""
    branch: tuple[str, ...] = ()
    branch_present: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TritonKernelsCopy:
        d = dict(data)
        for key in ("modules", "vllm_imports", "assumed", "branch", "branch_present"):
            d[key] = tuple(d.get(key) or ())
        return cls(**d)

    @property
    def needed(self) -> str:
        """The ``opt_flags`` package vLLM imports from this copy: 0.33.0 takes
        ``matmul_details`` for a 3.8 copy, ``matmul_ogs_details`` otherwise; 0.26.0 only
        knows ``matmul_ogs_details``."""
        if MATMUL in self.vllm_imports and self.api == "3.8":
            return MATMUL
        return MATMUL_OGS if MATMUL_OGS in self.vllm_imports else self.vllm_imports[0]

    @property
    def missing(self) -> tuple[str, str] | None:
        """``(module, what imports it)`` for the first ``triton_kernels`` module the load
        imports that this copy lacks, in the order vLLM imports them: the TRITON branch's own
        imports, then ``_swizzle_mxfp4``'s ``opt_flags``; None when it has them all."""
        for module in self.branch:
            if module not in self.branch_present:
                return module, f"{MXFP4_ORACLE_PY} (the TRITON backend's weight conversion)"
        if self.needed not in self.modules:
            return f"{self.needed}.opt_flags", f"{MXFP4_UTILS_PY}:_swizzle_mxfp4"
        return None

    @property
    def label(self) -> str:
        """How a verdict names the copy."""
        if self.where == "installed" and self.via:
            entry = os.path.dirname(self.path)
            return (
                f"a triton_kernels at {self.path}, on the PYTHONPATH that {self.via} sets "
                "(PYTHONPATH comes before site-packages on sys.path, so it wins over any other "
                "copy: utils/import_utils.py:import_triton_kernels takes the first "
                f"triton_kernels found; to use another, take {entry} out of that PYTHONPATH)"
            )
        if self.where == "installed":
            what = self.dist or "a triton_kernels with no distribution metadata"
            return (
                f"{what} at {self.path} (installed beside vLLM, it wins over the copy vLLM "
                "vendors: utils/import_utils.py:import_triton_kernels prefers site-packages)"
            )
        return f"the copy vendored in vLLM ({VENDORED})"


def imported_copy(env: PixiEnv) -> TritonKernelsCopy:
    """The ``triton_kernels`` the env's vLLM imports, and its facts (see the module)."""
    if env.dist("vllm") is None:
        return TritonKernelsCopy()
    version = env.version_of("vllm")
    release = exact_release(version)
    assumed: list[str] = []
    imports = _vllm_imports(env, release, assumed)
    branch = _branch_imports(env, release)
    on_path = _on_pythonpath(env)
    if on_path is not None:
        copy = _read(on_path[0], "installed", "", imports, None, assumed, branch)
        return replace(copy, via=on_path[1])
    installed = _installed(env)
    if installed is not None:
        dist = env.dist("triton-kernels")
        label = f"{dist.name} {dist.version}" if dist is not None else ""
        return _read(installed, "installed", label, imports, None, assumed, branch)
    vendored = env.package_file("vllm", f"{VENDORED}/__init__.py")
    if vendored is None:
        return TritonKernelsCopy(vllm_imports=imports, assumed=tuple(assumed))
    return _read(vendored.parent, "vendored", "", imports, release, assumed, branch)


def _branch_imports(env: PixiEnv, release: str | None) -> tuple[str, ...]:
    """What the TRITON branch of the env's weight conversion imports before swizzling (read;
    else the record of an exact release; else nothing is claimed of it)."""
    text, _ = env.package_text_or_why("vllm", MXFP4_ORACLE_PY)
    read = triton_branch_imports(text) if text is not None else None
    if read is not None:
        return read
    return RECORDED_BRANCH_IMPORTS.get(release or "", ())


def _vllm_imports(env: PixiEnv, release: str | None, assumed: list[str]) -> tuple[str, ...]:
    text, why = env.package_text_or_why("vllm", MXFP4_UTILS_PY)
    read = swizzle_imports(text) if text is not None else None
    if read:
        return read
    if release is not None:
        return RECORDED_IMPORTS[release]
    assumed.append(
        f"{MXFP4_UTILS_PY}:_swizzle_mxfp4 was not read ({why or 'absent, or no such function'}): "
        "assumed it imports opt_flags as 0.33.0 does (matmul_details for a 3.8 copy, "
        "matmul_ogs_details otherwise)"
    )
    return RECORDED_IMPORTS["0.33.0"]


def _on_pythonpath(env: PixiEnv) -> tuple[Path, str] | None:
    """A top-level ``triton_kernels`` package in a folder of the PYTHONPATH the env's
    activation sets (``[activation.env]``, ``env_vars.d``, an ``activate.d`` export: what
    :func:`pytest_vllm_env.facts.env.compute_activation` computes, through pixi or read
    statically; a PYTHONPATH from outside the env is never the env's), in order, with what
    sets it. Python puts these folders before site-packages (``site.py``; ``getpath``);
    an empty or relative entry names the directory vLLM is started in, unknown here: passed
    over."""
    activation = env.activation
    value = activation.environ.get("PYTHONPATH") or ""
    for entry in value.split(os.pathsep):
        if entry and os.path.isabs(entry) and _is_dir(Path(entry) / "triton_kernels"):
            via = activation.sources.get("PYTHONPATH", "")
            if not via or via == "pixi shell-hook":
                via = "the env's activation" + (f" ({via})" if via else "")
            return Path(entry) / "triton_kernels", via
    return None


def _installed(env: PixiEnv) -> Path | None:
    """A top-level ``triton_kernels`` package on the env's path, in ``sys.path`` order:
    site-packages itself, then the folders its ``.pth`` files add (setuptools' editable
    finders map the name to a folder)."""
    for sp in env.site_packages:
        if _is_dir(sp / "triton_kernels"):
            return sp / "triton_kernels"
    for sp in env.site_packages:
        try:
            entries = sorted(sp.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("__editable__") and entry.name.endswith("_finder.py"):
                text, _ = files.read_text_if_present(entry, files.SOURCE)
                match = _FINDER.search(text or "")
                if match and _is_dir(Path(match.group(1))):
                    return Path(match.group(1))
            elif entry.suffix == ".pth":
                text, _ = files.read_text_if_present(entry, files.CONFIG)
                for line in (text or "").splitlines():
                    line = line.strip()
                    if not line or line.startswith(("#", "import ")):
                        continue
                    folder = (sp / line) / "triton_kernels"
                    if _is_dir(folder):
                        return folder
    return None


def _read(
    folder: Path,
    where: str,
    dist: str,
    imports: tuple[str, ...],
    release: str | None,
    assumed: list[str],
    branch: tuple[str, ...] = (),
) -> TritonKernelsCopy:
    present = tuple(m for m in branch if _is_file(folder / f"{m}.py") or _is_dir(folder / m))
    has_ogs = _is_file(folder / "matmul_ogs.py") or _is_dir(folder / "matmul_ogs")
    modules = tuple(m for m in (MATMUL_OGS, MATMUL) if _is_file(folder / m / "opt_flags.py"))
    tensor, _ = files.read_text_if_present(folder / "tensor.py", files.SOURCE)
    api = api_generation(has_ogs, tensor)
    block, why_b = _text(folder / block_n_file(api))
    kernel, why_k = _text(folder / kernel_file(api))
    small_n = hopper_small_n(block) if block is not None else None
    asserts = hopper_assert(kernel) if kernel is not None else None
    complete = api is not None and small_n is not None and asserts is not None and modules
    if where == "vendored" and not complete:
        if release is not None:
            # a stand-in, or a damaged copy, of a release read: that wheel's copy, as recorded
            return TritonKernelsCopy(where, str(folder), dist, vllm_imports=imports,
                                     assumed=tuple(assumed), branch=branch,
                                     branch_present=branch, **RECORDED_VENDORED)  # fmt: skip
        assumed.append(
            f"the vendored {folder} could not be read whole ({why_b or why_k or 'files absent'}): "
            "assumed it is the v3.5.1 copy vLLM 0.26.0 and 0.33.0 vendor"
        )
        return TritonKernelsCopy(where, str(folder), dist, vllm_imports=imports,
                                 assumed=tuple(assumed), branch=branch,
                                 branch_present=branch, **RECORDED_VENDORED)  # fmt: skip
    copy = TritonKernelsCopy(
        where,
        str(folder),
        dist,
        api,
        modules,
        128 if small_n is None else small_n,
        True if asserts is None else asserts,
        imports,
        branch=branch,
        branch_present=present,
    )
    if copy.needed in modules and (small_n is None or asserts is None):
        # the copy serves vLLM's imports but its Hopper rule was not read
        assumed.append(
            f"{folder / block_n_file(api)} or {folder / kernel_file(api)} could not be read "
            f"({why_b or why_k or 'absent, or not of a known shape'}): assumed its Hopper "
            "BLOCK_N rule is v3.5.1's (outputs of 128 columns or fewer do not compile)"
        )
    return replace(copy, assumed=tuple(assumed))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # no permission, a NUL in a .pth line
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _text(path: Path) -> tuple[str | None, str]:
    return files.read_text_if_present(path, files.SOURCE)
