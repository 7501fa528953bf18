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
from pytest_vllm_env.facts.binaries import TorchFacts, dist_name, owner_of
from pytest_vllm_env.facts.env import PixiEnv, requirement_of
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.targets import FixTargets
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
    targets: FixTargets | None = None,
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
    provide = provide_runtime(env, major, held, site_packages, owner_of(name), targets)
    return F.failed(
        cid,
        f"{said}, and nothing in the env provides {lib} where the loader looks for {name} "
        f"(torch's libcudart.so.{torch.cuda.split('.')[0]} does not stand in): "
        "it will not load",
        fixes.otherwise(one_build, "keep both and " + provide),
        held=[str(p) for p in held],
    )


def runtime_wheel(major: str) -> tuple[str, str]:
    """``(PyPI name, dir under site-packages)`` of the wheel holding ``libcudart.so.<major>``."""
    return RUNTIME_WHEEL.get(major, (f"nvidia-cuda-runtime-cu{major}", "nvidia/cuda_runtime/lib"))


def runtime_spec(
    env: PixiEnv, major: str, owner: str = "", targets: FixTargets | None = None
) -> tuple[str, str]:
    """``(version spec, who asks)`` for the CUDA ``major`` runtime wheel: what the package
    that owns the extension asks in its metadata (``Requires-Dist``), else what torch's asks
    (:attr:`FixTargets.cuda_wheels`, markers evaluated in the env's own marker environment),
    else ``("", "")`` (the wheel's name says the major). An unpinned wheel that satisfies one
    ``DT_NEEDED`` may be newer than the build that asked (issue 21)."""
    wheel = runtime_wheel(major)[0]
    dist = env.dist(dist_name(owner)) if owner and owner != "torch" else None
    req = requirement_of(dist.requires, (wheel,)) if dist is not None else None
    if req is not None and str(req.specifier):
        return str(req.specifier), f"{dist.name} {dist.version}'s Requires-Dist"  # type: ignore[union-attr]
    pins = targets.cuda_wheels if targets is not None else ()
    for pin in pins:
        if pin.name == wheel:
            return pin.spec, "torch's Requires-Dist"
    torch = env.dist("torch")
    req = requirement_of(torch.requires, (wheel,)) if torch is not None else None
    if req is not None and str(req.specifier):
        return str(req.specifier), "torch's Requires-Dist"
    return "", ""


def provide_runtime(
    env: PixiEnv,
    major: str,
    held: Sequence[Path] = (),
    site_packages: Path | None = None,
    owner: str = "",
    targets: FixTargets | None = None,
) -> str:
    """Make ``libcudart.so.<major>`` found beside another CUDA's torch (``abi.cudart``'s and
    ``abi.needed``'s second way): the runtime wheel, at the version the owning package's or
    torch's metadata asks (:func:`runtime_spec`), and its dir on ``LD_LIBRARY_PATH`` in the
    env's activation (the loader never searches ``site-packages/nvidia`` by itself); a copy
    the env already holds (``held``): only the variable."""
    wheel, sub = runtime_wheel(major)
    where = held[0].parent if held else (site_packages / sub if site_packages else None)
    value = _under_prefix(env, where) if where else f"<site-packages>/{sub}"
    # conda stores the value as written (no expansion), pixi's activation and a shell expand it
    keep = "" if fixes.kind_of(env) == "conda" else ":$LD_LIBRARY_PATH"
    path_line = fixes.set_var(env, "LD_LIBRARY_PATH", value + keep)
    if held:
        return f"put {held[0].parent} (held, but not where the loader looks) on the path: " + (
            path_line
        )
    spec, asks = runtime_spec(env, major, owner, targets)
    return (
        f"add the CUDA {major} runtime ({wheel}{spec}"
        + (f", as {asks} asks" if asks else "")
        + f": libcudart.so.{major} in site-packages/{sub}, where the loader does not look by "
        "itself): "
        + fixes.join([fixes.add(env, Package(wheel, spec, pypi=True)), path_line], ", and ")
    )


def _under_prefix(env: PixiEnv, path: Path) -> str:
    """``${CONDA_PREFIX}/lib/python3.12/site-packages/...`` for a path in the env."""
    try:
        return "${CONDA_PREFIX}/" + path.relative_to(env.prefix).as_posix()
    except ValueError:
        return str(path)
