"""``arch.coverage``: does each binary hold kernels the target GPU can run, given its role?

The failure this exists for: torch ``+cu124`` on an RTX 5090 (sm_120) imports fine and
then fails at the first kernel with "no kernel image is available for execution on the
device", because CUDA 12.4 could not emit sm_120 and the wheel ships no PTX.

Whether a library *must* cover a GPU depends on who loads it and when (its role):

- ``core``: loaded and launched on every GPU the package runs on: vLLM's ``_C`` /
  ``_C_stable_libtorch`` / ``_moe_C``, torch's ``libtorch_cuda.so``, xformers' ``_C.so``,
  vLLM's FA2 and flash-attn's ``flash_attn_2_cuda`` on sm >= 8.0 (the FlashAttention backends
  accept nothing older). Missing kernels fail, whatever the images it does hold: a
  ``vllm/_C.abi3.so`` holding only ``sm_120a`` cannot run on a GB10 (12.1).
- ``backend``: optional kernels vLLM dispatches to only on GPUs they were built for (FA3:
  ``sm_90a``; FlashMLA; QuTLASS: ``sm_100f``; DeepGEMM): lacking other archs is by design.
- ``xformers-fa3``: xformers' own FA3 build. xformers picks it for every GPU inside
  ``flash3.FwOp``'s capability range, read from the installed ``ops/fmha/flash3.py``; FA3 runs
  its Hopper kernels (``sm_90a`` only) on every sm >= 9.0, so where the range has no maximum
  (xformers 0.0.30-0.0.32) a Blackwell GPU gets "no kernel image" (xformers#1329).
- ``unknown``: any other ``.so``: a gap in its generic images fails, a library holding only
  arch-specific images is a warning (it may be dispatched per GPU, or may not).

The arch rules themselves (:func:`pytest_vllm_env.tables.archs.sass_runs_on` /
``ptx_jits_to``) are checked against the real ptxas in tests/test_fatbin.py; the first CUDA
that emits an arch (:func:`pytest_vllm_env.tables.cuda_archs.min_nvcc`, named in fixes) is the
toolkit <-> arch table. Pure: the images arrive read (``readers/fatbin.py`` or a torch wheel
row), xformers' FA3 range as :class:`pytest_vllm_env.readers.xformers_fa3.Fa3Dispatch`.
:func:`required_on` and :func:`min_nvcc` serve ``gpu.device-coverage`` too.

Coverage through PTX alone passes, saying so: the driver JIT-compiles at first use, which
vLLM's own wheels rely on (0.26.0's FA2 holds only sm_80 and compute_80). Whether *this* driver
can JIT that PTX (its ISA), and whether the kernels run on that GPU at all, is
``driver.ptx-jit``'s to say; the verdict points there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_vllm_env import findings as F
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import dist_name, owner_of
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.xformers_fa3 import Fa3Dispatch
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.archs import Arch, FatbinImage, arch_coverage, describe
from pytest_vllm_env.tables.cuda_archs import NVCC_DEFAULT_IMAGES, cuda_tag, min_nvcc

CID = "arch.coverage"

# site-packages-relative names (wheel members use the same) -> role
_CORE = re.compile(
    r"(^|/)(torch/lib/libtorch_cuda\.so"
    r"|vllm/_(moe_)?C(_stable_libtorch)?(\.abi3|\.cpython-[^/]*)?\.so"
    r"|xformers/_C\.so)$"
)
_CORE_SM80 = re.compile(
    r"(^|/)(vllm/vllm_flash_attn/_vllm_fa2_C[^/]*\.so|flash_attn_2_cuda[^/]*\.so)$"
)
_BACKEND = re.compile(
    r"(^|/)vllm/(vllm_flash_attn/_vllm_fa3_C|_flashmla(_extension)?_C|_qutlass_C"
    r"|third_party/deep_gemm/_C)[^/]*\.so$"
)
_XFORMERS_FA3 = re.compile(r"(^|/)xformers/(_C_flashattention3|flash_attn_3/_C)[^/]*\.so$")


@dataclass(frozen=True)
class Role:
    """Who loads a library, and on which GPUs its kernels are launched."""

    kind: str  # "core", "backend", "xformers-fa3", "unknown"
    why: str
    min_arch: int = 0  # core_sm80: not launched below this arch number


def role_of(label: str) -> Role:
    """The role of a binary, from its site-packages-relative name (real file names of the
    vLLM 0.26.0, torch 2.11.0 and xformers 0.0.30-0.0.35 wheels)."""
    if _CORE.search(label):
        return Role("core", "loaded and launched on every GPU")
    if _CORE_SM80.search(label):
        return Role("core", "the FlashAttention-2 kernels used on every sm >= 8.0 GPU", 80)
    if _BACKEND.search(label):
        return Role("backend", "vLLM dispatches to it only on GPUs it was built for")
    if _XFORMERS_FA3.search(label):
        return Role("xformers-fa3", "xformers dispatches FA3 by flash3.FwOp's capability range")
    return Role("unknown", "a library whose loader this suite does not know")


def _mm(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:2])


# The env fixes are written for when a caller knows none: a Pixi env, manifest unknown.
NO_ENV = PixiEnv(prefix=Path(".pixi/envs/default"))
TORCH_INDEX = torch_archs.TORCH_INDEX


def _fix(label: str, target: Arch, images: list[FatbinImage], env: PixiEnv = NO_ENV) -> str:
    plain = Arch(target.major, target.minor)
    if "libtorch" in label:
        # SASS of the family's first arch runs on the later minors: sm_120 (CUDA 12.8) on 12.1
        base = Arch(target.major, 0) if target.major >= 10 else plain
        need = min_nvcc(base)
        index = cuda_tag(need if _mm(need) >= (11, 8) else "11.8")
        family = f"; {base.sm} SASS runs on every {target.major}.x GPU" if base != plain else ""
        return (
            f"install a torch built with {base.sm} kernels (a CUDA >= {need} build{family}): "
            + torch_covering(env, target, need, index)
        )
    need = min_nvcc(plain)
    owner = label.split("/", 1)[0]
    owner = "flash-attn" if owner.startswith("flash_attn") else owner
    hint = ""
    if _nvcc_default_only(images):
        hint = (
            f"; it holds only nvcc's default arch {images[0].arch.sm}, so the build saw no arch "
            "list (TORCH_CUDA_ARCH_LIST unset and detection failed, as for 12.1 with torch's "
            "arch parser, vLLM #49904)"
        )
    return fixes.otherwise(
        f"rebuild for {plain.cc}: "
        + fixes.set_var(env, "TORCH_CUDA_ARCH_LIST", plain.cc)
        + f" (an `a` image such as sm_{target.number}a serves only {plain.cc}; {plain.sm} needs "
        f"nvcc >= {need}: " + fixes.pin(env, Package("cuda-version", f"{need}.*")) + ")",
        f"install a {owner} wheel built for {plain.sm}" + hint,
        ", or ",
    )


def torch_covering(env: PixiEnv, target: Arch, need: str, index: str) -> str:
    """A real torch build whose kernels serve ``target`` (:func:`pytest_vllm_env.tables.
    torch_archs.covering`), in the env's language: the installed release's own build where
    the table has one, else the oldest covering release not older than it (torch 2.6 has no
    CUDA 12.8 build: sm_120 takes 2.7's cu128)."""
    installed = env.version_of("torch") or ""
    rows = torch_archs.covering([target], installed or None) if installed else []
    rows = rows or torch_archs.covering([target])
    if not rows:
        return (
            f"the PyTorch index of a CUDA >= {need} build ({TORCH_INDEX}/{index}) in "
            + fixes.deps_place(env, pypi=True)
        )
    # the installed release first (its own CUDA build, else PyPI's), else the oldest newer one
    # (PyPI's build of it first)
    release = torch_archs.release_of(installed) if installed else ""
    local = installed.partition("+")[2]
    first = [r for r in rows if r.release == release] or [
        r for r in rows if r.release == rows[0].release
    ]
    row = min(first, key=lambda r: (r.variant != local, r.where != torch_archs.PYPI))
    same = installed and release == row.release
    version = installed.split("+", 1)[0] if same else (row.measured or f"{row.release}.*")
    torch = Package("torch", f"=={version.split('+', 1)[0]}", pypi=True)
    where = "" if row.where == torch_archs.PYPI else torch_archs.index_url(row.variant)
    return f"torch {version} ({row.variant}): " + fixes.pin(env, torch, index=where)


def _nvcc_default_only(images: list[FatbinImage]) -> bool:
    # a vLLM library holding only nvcc's default was built with an empty arch list, so every
    # arch-gated kernel is missing (vLLM #49904, GB10)
    return {i.name for i in images} in NVCC_DEFAULT_IMAGES


def coverage(
    label: str,
    images: list[FatbinImage] | None,
    targets: Iterable[Arch],
    error: str = "",
    fa3: Fa3Dispatch | None = None,
    *,
    env: PixiEnv | None = None,
    wheel: bool = False,
) -> list[Finding]:
    """One finding per target arch for the binary ``label`` (a site-packages-relative name);
    ``fa3`` is xformers' FA3 dispatch range when ``label`` is xformers' FA3 library. Fixes are
    written for ``env``; ``wheel``: ``label`` is a member of a wheel judged before install
    (one it cannot read is rebuilt, not reinstalled)."""
    targets = list(targets)
    env = env or NO_ENV
    if error and wheel:
        return [
            F.error(
                CID,
                f"{label}: {error}",
                f"rebuild the wheel (`pip wheel`, `uv build`): its member {label} is not a "
                "readable library",
            )
        ]
    if error:
        owner = dist_name(owner_of(label))
        return [
            F.error(
                CID,
                f"{label}: {error}",
                f"reinstall {owner}, which owns {label}: " + fixes.reinstall(env, owner, pypi=True),
            )
        ]
    if not targets:
        return [
            F.skipped(
                CID, "no target arch known: pass --cuda-arch=12.0 or set TORCH_CUDA_ARCH_LIST"
            )
        ]
    if not images:
        return [F.skipped(CID, f"{label} holds no GPU code (.nv_fatbin absent)")]
    role = role_of(label)
    return [_judge(label, images, t, role, fa3, env) for t in targets]


def _judge(
    label: str,
    images: list[FatbinImage],
    target: Arch,
    role: Role,
    fa3: Fa3Dispatch | None,
    env: PixiEnv = NO_ENV,
) -> Finding:
    held = describe(images)
    cov = arch_coverage(images, target)
    ev = {"holds": held, "role": f"{role.kind}: {role.why}"}
    if role.kind == "xformers-fa3":
        dispatched, why = _fa3_dispatched(fa3, target)
        if not dispatched:
            return F.passed(CID, f"{label} is not used on {target.sm}: {why}", **ev)
        if target.major >= 10:
            # FA3 takes its SM90 (Hopper) path on every sm >= 9.0; those kernels are sm_90a.
            return F.failed(
                CID,
                f"xformers dispatches FA3 on {target.sm} ({why}) and FA3 runs its Hopper "
                f'kernels there, which {label} holds only as sm_90a: "no kernel image is '
                f'available" at the first attention (xformers#1329)',
                fixes.otherwise(
                    "use an xformers whose flash3.FwOp stops at 9.0 (0.0.33 and later, measured "
                    "in the wheels; it pins its own torch): "
                    + fixes.add(
                        env,
                        Package("xformers", "==0.0.33.post1", pypi=True),
                        Package("torch", "==2.9.0", pypi=True),
                        verb="pin",
                    ),
                    "keep xformers off this GPU (vLLM >= 0.10.2 uses torch SDPA for "
                    "Pixtral/Mistral3 on Blackwell)",
                    ", or ",
                ),
                **ev,
            )
    if (
        role.kind == "core"
        and label.startswith("vllm/")
        and _nvcc_default_only(images)
        and images[0].arch.number != target.number
    ):
        # the generic kernels JIT from the default PTX, but vLLM compiled none of its arch-gated
        # ones: "No compiled cutlass_scaled_mm for a compute capability less than CUDA device
        # capability: 121" at the first quantized GEMM (vLLM #49904)
        return F.failed(
            CID,
            f"{label} was built for nvcc's default arch only ({held}): vLLM's arch-gated "
            f"kernels (CUTLASS scaled_mm, Marlin, MoE) are missing on {target.sm} and fail with "
            '"No compiled cutlass_scaled_mm for a compute capability less than CUDA device '
            f'capability: {target.number}"',
            _fix(label, target, images, env),
            **ev,
        )
    if cov.covered and cov.via is not None:
        if cov.jit:
            # passed, not a warning: vLLM 0.26.0's own FA2 ships only sm_80 + compute_80 and
            # runs on H100/RTX 5090 through this JIT (measured); the first launch is slower
            return F.passed(
                CID,
                f"{label} runs on {target.sm} through PTX {cov.via.name} (JIT-compiled at "
                "first use, then cached; whether this driver can, and at what cost: "
                "driver.ptx-jit)",
                **ev,
            )
        return F.passed(CID, f"{label} runs on {target.sm} via SASS {cov.via.name}", **ev)
    special = all(i.arch.suffix in ("a", "f") for i in images)
    if role.kind == "backend":
        return F.passed(
            CID,
            f"{label} holds kernels only for other GPUs ({held}): {role.why}; not needed for "
            f"{target.sm}",
            **ev,
        )
    if role.min_arch and target.number < role.min_arch:
        return F.passed(CID, f"{label} is not used on {target.sm} ({role.why})", **ev)
    if role.kind == "unknown" and special:
        return F.warning(
            CID,
            f"{label} holds only arch-specific kernels ({held}) and none for {target.sm}: "
            "fine if its package uses it only on those GPUs, 'no kernel image' if it loads it "
            "on this one",
            _fix(label, target, images, env),
            **ev,
        )
    why = ""
    if special:
        why = (
            f" (`a` images run only on their own arch, `f` images on their family "
            f"{target.major}.x at or above their minor; {role.why})"
        )
    return F.failed(
        CID,
        f"{label} has no kernels for {target.sm} ({target.cc}): it holds {held}{why}",
        _fix(label, target, images, env),
        **ev,
    )


def _fa3_dispatched(fa3: Fa3Dispatch | None, target: Arch) -> tuple[bool, str]:
    if fa3 is None or not fa3.readable:
        said = f" ({fa3.why})" if fa3 is not None and fa3.why else ""
        return True, f"its flash3.FwOp capability range could not be read{said}; assumed unbounded"
    cc = (target.major, target.minor)
    if fa3.minimum and cc < fa3.minimum:
        return False, f"flash3.FwOp needs capability >= {fa3.minimum} ({fa3.where})"
    if fa3.maximum is not None:
        if cc > fa3.maximum:
            return False, f"flash3.FwOp stops at capability {fa3.maximum} ({fa3.where})"
        return True, f"flash3.FwOp accepts {fa3.minimum} to {fa3.maximum} ({fa3.where})"
    return True, f"flash3.FwOp accepts every capability >= {fa3.minimum} ({fa3.where})"


def required_on(label: str, images: list[FatbinImage], target: Arch) -> bool:
    """Whether a GPU of ``target`` arch will launch this binary's kernels (used by
    ``gpu.device-coverage``): false for per-GPU backends and arch-specific-only unknowns."""
    role = role_of(label)
    if role.kind == "backend":
        return False
    if role.min_arch and target.number < role.min_arch:
        return False
    special = bool(images) and all(i.arch.suffix in ("a", "f") for i in images)
    return not (role.kind in ("unknown", "xformers-fa3") and special)


def label_of(path: Path) -> str:
    """A binary's site-packages-relative name (``torch/lib/libtorch_cuda.so``), the key of
    :func:`role_of`; the file name outside site-packages."""
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return path.name
