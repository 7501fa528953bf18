"""What Triton's ptxas can do in an env: the binary it runs per target arch, and its CUDA release.

Triton compiles every kernel (vLLM's own Triton kernels, torch Inductor's) to PTX and hands it
to ptxas at first use. Which ptxas, for which ``--gpu-name``, and which variable overrides it
are read from the env's Triton source (:mod:`pytest_vllm_env.readers.triton_source`); the
override's value comes from the env's activation; each binary's CUDA release comes from
running it once with ``--version`` (cached per path and file identity), as Triton itself does
(``knobs.NvidiaTool.from_path``: ``release (\\d+\\.\\d+)``). An override that does not run is
passed over by Triton (``env_nvidia_tool.transform`` tries it, then the bundled binary) and
recorded as such. Where a binary cannot run here, the measured release of that Triton wheel's
bundle (tables/ptxas.py) stands in, and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.jit_tools import Binary, Facts, release_of
from pytest_vllm_env.readers import triton_source
from pytest_vllm_env.tables import ptxas as ptxas_table

# One ptxas binary and its release (facts/jit_tools.py).
PtxasBinary = Binary


@dataclass(frozen=True)
class TritonTarget:
    """What Triton runs to assemble for one target arch."""

    arch: str  # "12.1"
    capability: int  # 121
    tool: str  # "ptxas-blackwell"
    gpu_name: str  # "sm_121a"
    variable: str | None  # "TRITON_PTXAS_BLACKWELL_PATH"
    bundled: PtxasBinary
    override: str | None = None  # the variable's value after activation
    override_source: str | None = None  # where activation set it
    override_binary: PtxasBinary | None = None
    used: PtxasBinary | None = None  # what Triton ends up running; None: nothing runs


@dataclass
class TritonPtxasFacts:
    """Triton in an env: its version, where it lives, the rule read, and each target."""

    version: str
    root: str
    targets: list[TritonTarget] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # capable ptxas binaries elsewhere in the env (conda cuda-nvcc, nvidia-cuda-nvcc wheels,
    # the activated PATH), for the fix: which one an override could point at
    candidates: list[PtxasBinary] = field(default_factory=list)
    cc_variable: str | None = None
    cc_programs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ptxas_release(path: Path, facts: Facts | None = None, env: PixiEnv | None = None) -> Binary:
    """Run ``path --version`` once (cached) and read its CUDA release (with ``env``, from
    the env's files when it may not run: ``--vllm-static``)."""
    return release_of(path, facts, env)


def triton_root(env: PixiEnv) -> Path | None:
    """``site-packages/triton`` of the env's Triton distribution (PyPI ``triton`` or the
    nightly ``pytorch-triton``); None when neither is installed."""
    for name in ("triton", "pytorch-triton"):
        dist = env.dist(name)
        if dist is not None:
            return dist.location / "triton"
    return None


def read(env: PixiEnv, capabilities: list[tuple[str, int]], facts: Facts | None = None):
    """:class:`TritonPtxasFacts` for the target ``(arch text, capability)`` pairs; None when
    Triton is not installed."""
    root = triton_root(env)
    if root is None:
        return None
    version = env.version_of("triton") or env.version_of("pytorch-triton") or ""
    texts = {}
    for rel in (triton_source.COMPILER_PY, triton_source.KNOBS_PY, triton_source.BUILD_PY):
        try:
            texts[rel] = files.read_text(root.parent / rel, files.SOURCE)
        except OSError:
            texts[rel] = None
    out = TritonPtxasFacts(version=version, root=str(root))
    compiler = texts[triton_source.COMPILER_PY]
    if compiler is None:
        out.missing.append(f"{root / 'backends/nvidia/compiler.py'} cannot be read")
        return out
    rules = triton_source.read_rules(
        compiler,
        sorted({cap for _, cap in capabilities}),
        knobs_src=texts[triton_source.KNOBS_PY],
        build_src=texts[triton_source.BUILD_PY],
        path=str(root / "backends/nvidia/compiler.py"),
    )
    out.missing.extend(rules.missing)
    out.cc_variable, out.cc_programs = rules.cc_variable, rules.cc_programs
    environ = env.environ()
    sources = env.activation.sources
    for arch, cap in capabilities:
        choice = rules.choice(cap)
        if choice is None:
            continue
        bundled = ptxas_release(root.parent / triton_source.BIN_DIR / choice.tool, facts, env)
        if bundled.release is None and files.describe(Path(bundled.path)) == "a regular file":
            row = ptxas_table.TRITON_BUNDLED.get(version.split("+")[0], {})
            if choice.tool in row:  # cannot run here (another machine's binary): measured row
                bundled = PtxasBinary(
                    bundled.path, row[choice.tool], f"the measured bundle of triton {version}"
                )
        override = environ.get(choice.variable) if choice.variable else None
        override_binary = None
        used: PtxasBinary | None = bundled if bundled.release else None
        if override:
            override_binary = ptxas_release(Path(override), facts, env)
            if override_binary.release:
                used = override_binary
        if used is None and rules.path_fallback:  # conda-forge: then `ptxas` on PATH
            found = env.which(choice.tool)
            if found is not None:
                on_path = ptxas_release(found, facts, env)
                if on_path.release:
                    used = Binary(
                        on_path.path, on_path.release, on_path.how + ", on the activated PATH"
                    )
        out.targets.append(
            TritonTarget(
                arch=arch,
                capability=cap,
                tool=choice.tool,
                gpu_name=choice.gpu_name,
                variable=choice.variable,
                bundled=bundled,
                override=override,
                override_source=sources.get(choice.variable or "", None) if override else None,
                override_binary=override_binary,
                used=used,
            )
        )
    out.candidates = [b for b in candidates(env, facts) if b.release]
    return out


def candidates(env: PixiEnv, facts: Facts | None = None) -> list[Binary]:
    """Other ptxas binaries of the env an override could name: its ``bin/ptxas`` (conda
    ``cuda-nvcc``), the ``nvidia-cuda-nvcc`` wheels' (``nvidia/cu13/bin``,
    ``nvidia/cuda_nvcc/bin``) and ``$CUDA_HOME/bin/ptxas`` where the env's activation sets
    CUDA_HOME. Binaries of this machine outside the env say nothing of the GPU nodes."""
    environ = env.environ()
    paths: list[Path] = [env.prefix / "bin" / "ptxas"]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(var) and var in env.activation.sources:
            paths.append(Path(environ[var]) / "bin" / "ptxas")
    for sp in env.site_packages:
        for sub in ("cu13", "cu12", "cuda_nvcc"):
            paths.append(sp / "nvidia" / sub / "bin" / "ptxas")
    seen: set[str] = set()
    out: list[Binary] = []
    for path in paths:
        if str(path) in seen or not files.regular(path):
            continue
        seen.add(str(path))
        out.append(release_of(path, facts, env))
    return out
