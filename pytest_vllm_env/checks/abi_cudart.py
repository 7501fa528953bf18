"""``abi.cudart`` when an extension's CUDA runtime is not torch's: does the env provide it?

An extension linked to ``libcudart.so.12`` next to a CUDA 13 torch does not need torch's
runtime: it needs *a* ``libcudart.so.12`` where the loader looks. torch's ``libcudart.so.13``
does not stand in (another soname), so without one the ``dlopen`` fails ("libcudart.so.12:
cannot open shared object file"; xformers' ``_cpp_lib.py:_register_extensions`` then says
"xFormers can't load C++/CUDA extensions"). With one, both runtimes live in the process and
the extension works, on a driver that runs both (``driver.cuda-runtime`` judges that).

Measured (docs/gpu-runs.md, round 11a, H100, driver 580.159.04, torch 2.11.0+cu130): PyPI's
xformers 0.0.35 (``_C.so`` NEEDED ``libcudart.so.12``, no RUNPATH) did not load alone; with
``nvidia-cuda-runtime-cu12`` 12.8.90's ``nvidia/cuda_runtime/lib`` on ``LD_LIBRARY_PATH`` it
loaded and matched SDPA. Where the wheel's directory is: torch's own runtime is found through
torch's RUNPATH into ``nvidia/cu13/lib``, which says nothing for another major, so the wheel
alone is not enough (the loader never searches ``site-packages/nvidia``): the fix adds the
wheel *and* puts its lib dir on ``LD_LIBRARY_PATH`` in the env's activation.

Pure: where the loader finds ``libcudart.so.N`` (``found``, from
:func:`pytest_vllm_env.facts.linkage.Resolver.find`) and which copies the env holds elsewhere
(``held``, :func:`pytest_vllm_env.facts.binaries.cudart_files`) arrive as facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytest_vllm_env import findings as F
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import TorchFacts
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.findings import Finding

# The PyPI wheel holding libcudart.so.<major>, and where it puts it under site-packages:
# nvidia-cuda-runtime-cu12 12.8.90 -> nvidia/cuda_runtime/lib/libcudart.so.12 (measured on
# the device, round 11a); nvidia-cuda-runtime 13.x -> nvidia/cu13/lib/libcudart.so.13 (the
# `-cu13` name is a stub, tables/cuda_libs.py).
RUNTIME_WHEEL = {
    "12": ("nvidia-cuda-runtime-cu12", "nvidia/cuda_runtime/lib"),
    "13": ("nvidia-cuda-runtime", "nvidia/cu13/lib"),
}
MEASURED = (
    "measured: PyPI xformers 0.0.35 (CUDA 12) on torch 2.11.0+cu130, H100, docs/gpu-runs.md "
    "round 11a"
)


def other_runtime(
    cid: str,
    name: str,
    major: str,
    torch: TorchFacts,
    one_build: str,
    *,
    env: PixiEnv,
    found: Path | None,
    held: Sequence[Path] = (),
    site_packages: Path | None = None,
) -> Finding:
    """``name`` needs ``libcudart.so.<major>``, torch is CUDA ``torch.cuda`` (another major).
    ``found``: where the loader takes that library for ``name`` (None: nowhere). A warning
    when it is found (two CUDA runtimes in one process, works), a failure naming the wheel and
    the ``LD_LIBRARY_PATH`` line when not. ``one_build``: the fix that makes the two one
    CUDA (``name``'s build for torch's CUDA, or torch's for ``name``'s)."""
    lib = f"libcudart.so.{major}"
    said = f"{name} was built for CUDA {major} ({lib}); torch {torch.version} is CUDA {torch.cuda}"
    if found is not None:
        return F.warning(
            cid,
            f"{said}: it loads, with {found} beside torch's CUDA {torch.cuda} runtime (two CUDA "
            f"runtimes in one process; {MEASURED})",
            f"to run one CUDA runtime: {one_build}",
            provided_by=str(found),
        )
    provide = _provide(env, major, held, site_packages)
    return F.failed(
        cid,
        f"{said}, and nothing in the env provides {lib} where the loader looks for {name} "
        f"(torch's libcudart.so.{torch.cuda.split('.')[0]} does not stand in): "
        "it will not load",
        f"{one_build}; or keep both and {provide}",
        held=[str(p) for p in held],
    )


def _provide(env: PixiEnv, major: str, held: Sequence[Path], site_packages: Path | None) -> str:
    """Make ``libcudart.so.<major>`` found: the wheel that holds it, and its dir on
    ``LD_LIBRARY_PATH`` (already held: only the variable)."""
    wheel, sub = RUNTIME_WHEEL.get(
        major, (f"nvidia-cuda-runtime-cu{major}", "nvidia/cuda_runtime/lib")
    )
    where = held[0].parent if held else (site_packages / sub if site_packages else None)
    value = _under_prefix(env, where) if where else f"<site-packages>/{sub}"
    # conda stores the value as written (no expansion), pixi's activation and a shell expand it
    keep = "" if fixes.kind_of(env) == "conda" else ":$LD_LIBRARY_PATH"
    path_line = fixes.set_var(env, "LD_LIBRARY_PATH", value + keep)
    if held:
        return (
            f"put {held[0].parent} (held, but not where the loader looks) on the path: {path_line}"
        )
    return (
        f"add the CUDA {major} runtime ({wheel}: libcudart.so.{major} in "
        f"site-packages/{sub}, where the loader does not look by itself): "
        f"{fixes.add(env, Package(wheel, pypi=True))}, and {path_line}"
    )


def _under_prefix(env: PixiEnv, path: Path) -> str:
    """``${CONDA_PREFIX}/lib/python3.12/site-packages/...`` for a path in the env."""
    try:
        return "${CONDA_PREFIX}/" + path.relative_to(env.prefix).as_posix()
    except ValueError:
        return str(path)
