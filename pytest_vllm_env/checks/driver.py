"""The NVIDIA driver against what the env's CUDA binaries need (pure: facts in, findings out).

- ``driver.version``: which driver is judged and where it came from (``--cuda-driver``, NVML,
  ``/proc/driver/nvidia/version``); the option wins, a disagreement with the node is a warning.
- ``driver.cuda-runtime``: each CUDA runtime need of the env (conda ``cuda-cudart``, PyPI
  ``nvidia-cuda-runtime``, torch's ``+cuXYZ``, each extension's ``libcudart.so.N`` and the CUDA
  its PTX names) against the CUDA version the driver supports, with CUDA's minor-version
  compatibility (:data:`pytest_vllm_env.tables.driver.MINOR_COMPAT`): a newer major refuses
  to start (``cudaErrorInsufficientDriver``), a newer minor of the same major runs with the
  limits NVIDIA lists (warning), the same or an older CUDA runs.
- ``driver.compat-libcuda``: the ``libcuda.so.1`` the loader takes; a forward-compatibility copy
  must pair with the kernel driver as NVIDIA's table says, on a data center GPU; an older copy
  than the kernel module is ``CUDA_ERROR_SYSTEM_DRIVER_MISMATCH`` (803, measured on an H100).

``driver.ptx-jit`` lives in :mod:`pytest_vllm_env.checks.driver_ptx`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pytest_vllm_env import findings as F
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.driver import CudaNeed, DriverSources, Libcuda
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.tables import driver as T
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.archs import Arch

TORCH_INDEX = "https://download.pytorch.org/whl"
NO_DRIVER = (
    "no driver to judge: give --cuda-driver=VERSION (the GPU nodes' `nvidia-smi` Driver "
    "Version, e.g. 550.144.03), or run on a GPU node"
)


@dataclass(frozen=True)
class Driver:
    """The driver judged: its version, where it came from, the CUDA version it supports
    (``cuda``: exact, or a lower bound past NVIDIA's newest row we hold), and whether it is
    this machine's own (``on_node``: then the env's ``libcuda`` and GPU names are its)."""

    version: T.Version
    text: str
    source: str
    cuda: T.Version
    cuda_exact: bool
    on_node: bool
    gpus: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"driver {self.text} (CUDA {T.cuda_text(self.cuda)}{'' if self.cuda_exact else '+'})"


def _parsed(text: str | None) -> T.Version | None:
    try:
        return T.parse_driver(text) if text else None
    except ValueError:
        return None


LIBCUDA = "the libcuda.so.1 the loader takes"


def system_libcuda(src: DriverSources) -> str | None:
    """The version in the file name of the driver's own ``libcuda.so.1`` the loader takes
    (``libcuda.so.580.159.04``), on a node whose kernel driver is present; None when the first
    one is a compat copy, or none is found, or no kernel driver is here."""
    if not src.libcuda or not (src.node.nvml_driver or src.node.proc_driver):
        return None
    first = src.libcuda[0]
    return None if first.compat or first.package else first.version


def node_text(src: DriverSources) -> str | None:
    """This node's driver version as NVML or the kernel module says it."""
    return src.node.nvml_driver or src.node.proc_driver


def judged_driver(src: DriverSources) -> Driver | None:
    """The driver to judge: ``--cuda-driver`` (already validated), else NVML's, else the kernel
    module's, else the version of the driver's libcuda the loader takes; None when nothing
    names one."""
    node = src.node
    node_text = node.nvml_driver or node.proc_driver
    text, source = (
        (src.option, "--cuda-driver")
        if src.option
        else (node.nvml_driver, "NVML")
        if node.nvml_driver
        else (node.proc_driver, "/proc/driver/nvidia/version")
        if node.proc_driver
        else (system_libcuda(src), LIBCUDA)
    )
    version = _parsed(text)
    if version is None or text is None:
        return None
    on_node = _parsed(node_text) == version
    of = T.cuda_of_driver(version)
    cuda, exact = (of.cuda, of.exact) if of else ((0, 0), False)
    nvml_cuda = T.parse_cuda(node.nvml_cuda or "")
    if on_node and nvml_cuda and (not exact or of is None):
        cuda, exact = nvml_cuda, True  # the driver's own word beats a lower bound
    return Driver(version, text.strip(), source, cuda, exact, on_node, node.gpus if on_node else ())


def driver_version(src: DriverSources, driver: Driver | None) -> Finding:
    """``driver.version``: the driver judged and its sources; a disagreement is a warning."""
    cid, node = "driver.version", src.node
    sources = {
        "--cuda-driver": src.option,
        "NVML": node.nvml_driver,
        "/proc/driver/nvidia/version": node.proc_driver,
        LIBCUDA: system_libcuda(src),
    }
    evidence = {k: v for k, v in sources.items() if v}
    if src.libcuda:
        evidence["libcuda.so.1"] = f"{src.libcuda[0].path} -> {src.libcuda[0].real}"
    absent = {"NVML": node.nvml_problem, "/proc/driver/nvidia/version": node.proc_problem}
    evidence["not read"] = {k: v for k, v in absent.items() if v and not sources[k]}
    if node.nvml_cuda:
        evidence["NVML CUDA version"] = node.nvml_cuda
    if driver is None:
        return F.skipped(cid, NO_DRIVER, **evidence)
    if node.nvml_driver and node.proc_driver and node.nvml_driver != node.proc_driver:
        return F.warning(
            cid,
            f"NVML says driver {node.nvml_driver}, the kernel module is {node.proc_driver}: "
            "the driver's user-mode libraries and its kernel module differ",
            "reboot the node (or reload the nvidia kernel modules) so that the loaded kernel "
            "module is the installed driver's",
            **evidence,
        )
    lib = sources[LIBCUDA]
    if lib and node_text(src) and _parsed(lib) != _parsed(node_text(src)):
        return F.warning(
            cid,
            f"the driver's libcuda the loader takes is {lib}, the kernel module {node_text(src)}: "
            f"cuInit returns {T.CUDA_ERRORS[803]} (driver.compat-libcuda judges it)",
            "reinstall the driver so that its libraries match the loaded kernel module, or "
            "reboot the node",
            **evidence,
        )
    real = node.nvml_driver or node.proc_driver
    if src.option and real and _parsed(real) != driver.version:
        where = "NVML" if node.nvml_driver else "/proc/driver/nvidia/version"
        return F.warning(
            cid,
            f"judged for --cuda-driver={src.option} (the option wins), but this node runs "
            f"driver {real} ({where})",
            f"on a GPU node drop --cuda-driver (the real driver is read), or set "
            f"--cuda-driver={real}",
            **evidence,
        )
    agree = [k for k, v in sources.items() if v and k != driver.source]
    also = f"; {', '.join(agree)} agree" if agree else ""
    bound = "" if driver.cuda_exact else " (a lower bound: NVIDIA's notes we hold stop at R615)"
    return F.passed(cid, f"{driver.label} from {driver.source}{also}{bound}", **evidence)


# -- which user-mode driver runs: forward compatibility ------------------------------------------
def gpu_class(driver: Driver, archs: Iterable[Arch]) -> str:
    """``datacenter``/``consumer``/``unknown``: NVML's names on the node, else the target archs
    when every one is an arch only data center GPUs have."""
    classes = {T.gpu_class(n) for n in driver.gpus}
    if classes:
        if "consumer" in classes:
            return "consumer"
        return "datacenter" if classes == {"datacenter"} else "unknown"
    ccs = {(a.major, a.minor) for a in archs}
    return "datacenter" if ccs and ccs <= T.DATACENTER_ONLY_ARCHS else "unknown"


def _judged_libcuda(src: DriverSources, driver: Driver) -> Libcuda | None:
    """The libcuda the env's processes take, when it says something about the GPU nodes: one
    the env puts first (LD_LIBRARY_PATH, its lib/, its cuda-compat), or any on the node itself."""
    if not src.libcuda:
        return None
    first = src.libcuda[0]
    env_provided = first.compat or first.package or first.via.startswith(("LD_LIBRARY", "the env"))
    return first if (env_provided or driver.on_node) else None


def _pairing(lib: Libcuda, driver: Driver, cls: str) -> tuple[str, str]:
    """``(outcome, why)`` for the libcuda ``lib`` over kernel driver ``driver``."""
    if lib.version is None:
        return "unknown", f"{lib.real} does not say its version in its file name"
    version = T.parse_driver(lib.version)
    if version == driver.version:
        return "passed", "it is the driver's own version"
    if version < driver.version:
        return "failed", (
            f"it is older than the kernel driver {driver.text}: cuInit returns "
            f"{T.CUDA_ERRORS[803]} (measured: compat 580.95.05 over kernel 580.159.04 on an H100)"
        )
    if T.branch(version) == T.branch(driver.version):
        return "unknown", (
            f"a newer libcuda of the kernel driver's own branch R{T.branch(version)}: NVIDIA "
            "supports upgrades within a branch 'only for drivers on LLB and LTS branches ... for "
            "select GPUs' (CUDA Compatibility FAQ)"
        )
    compat = T.cuda_of_driver(version)
    compat_cuda = compat.cuda if compat else (0, 0)
    status = T.forward_compat(compat_cuda, T.branch(driver.version))
    table = f"cuda-compat-{compat_cuda[0]}-{compat_cuda[1]} on R{T.branch(driver.version)}"
    if status == "unknown":
        return "unknown", f"NVIDIA's forward-compatibility table has no row for {table}"
    if status != "C":
        return "failed", (
            f"NVIDIA does not support {table} ({T.FORWARD_GUIDE}: branches not listed are end of "
            f"life, New Feature Branches are no targets): cuInit returns {T.CUDA_ERRORS[803]}"
        )
    if cls == "consumer":
        return "failed", (
            f"{table} is supported on data center GPUs only, and {', '.join(driver.gpus)} is not "
            f"one: cuInit returns {T.CUDA_ERRORS[804]}"
        )
    if cls == "unknown":
        return (
            "unknown",
            f"{table} is supported on data center GPUs only; the GPU is unknown",
        )
    return "forward", f"{table} on a data center GPU is a pairing NVIDIA supports"


def effective_cuda(src: DriverSources, driver: Driver, archs: Iterable[Arch]) -> T.Version:
    """The CUDA version of the user-mode driver that will run: a supported forward-compatibility
    libcuda's, else the kernel driver's."""
    lib = _judged_libcuda(src, driver)
    if lib is not None and lib.version:
        outcome, _ = _pairing(lib, driver, gpu_class(driver, archs))
        if outcome == "forward":
            of = T.cuda_of_driver(T.parse_driver(lib.version))
            if of is not None and of.cuda > driver.cuda:
                return of.cuda
    return driver.cuda


def compat_libcuda(
    src: DriverSources, driver: Driver | None, archs: Iterable[Arch], env: PixiEnv
) -> Finding:
    """``driver.compat-libcuda``: the libcuda the loader takes, and whether NVIDIA supports its
    pairing with the kernel driver and the GPU."""
    cid = "driver.compat-libcuda"
    if driver is None:
        return F.skipped(cid, NO_DRIVER)
    evidence = {
        "loader order": [f"{c.path} -> {c.real} ({c.via})" for c in src.libcuda],
        "compat packages": src.compat_packages,
    }
    lib = _judged_libcuda(src, driver)
    if lib is None:
        where = "this node's" if driver.on_node else "the GPU nodes' own"
        return F.passed(
            cid, f"no libcuda.so.1 of the env comes first: {where} driver libcuda is taken",
            **evidence,
        )  # fmt: skip
    outcome, why = _pairing(lib, driver, gpu_class(driver, archs))
    what = f"the loader takes {lib.path} ({lib.version or 'version unknown'}, via {lib.via})"
    if outcome == "passed":
        return F.passed(cid, f"{what}: {why}", **evidence)
    if outcome == "forward":
        return F.passed(
            cid,
            f"{what} over kernel driver {driver.text}: {why} (without OpenGL/Vulkan interop, "
            "which forward compatibility lacks)",
            **evidence,
        )
    fix = _remove_compat(lib, env)
    if outcome == "failed":
        return F.failed(cid, f"{what} over kernel driver {driver.text}: {why}", fix, **evidence)
    return F.warning(
        cid, f"{what} over kernel driver {driver.text}: cannot tell whether it runs: {why}",
        fix + f"; or confirm on a node with `{_probe_hint()}`", **evidence,
    )  # fmt: skip


def _probe_hint() -> str:
    return "python -c \"import ctypes; print(ctypes.CDLL('libcuda.so.1').cuInit(0))\"  # 0 = runs"


def _remove_compat(lib: Libcuda, env: PixiEnv) -> str:
    """Take the compat libcuda off the loader path, where it was put."""
    folder = lib.path.rsplit("/", 1)[0]
    if not lib.compat and not lib.package and lib.via.startswith(("ld.so.conf", "a default")):
        return (
            "the driver's own libraries and its loaded kernel module differ: reboot the node (or "
            "reinstall the driver) so that they match"
        )
    if lib.package:
        name = lib.package.split()[0]
        name = "cuda-compat" if name.startswith("cuda-compat") else name
        drop = f"remove `{name}` from the env ({fixes.deps_place(env)})"
        return drop + f" so the driver's own libcuda is taken (it put {lib.real} there)"
    if lib.via.startswith("LD_LIBRARY_PATH (set"):
        return (
            f"take {folder} out of LD_LIBRARY_PATH where the env's activation sets it "
            f"({fixes.activation_place(env)}) so the driver's own libcuda is taken"
        )
    if lib.via.startswith("LD_LIBRARY_PATH"):
        return f"take {folder} out of LD_LIBRARY_PATH in the job that runs the env"
    if lib.via.startswith("ld.so.conf"):
        conf = lib.via[len("ld.so.conf (") : -1]
        return f"remove {folder} from {conf} and run `ldconfig` on the GPU nodes"
    return f"remove {lib.path} so that the driver's own libcuda is taken"


# -- the CUDA runtime needs -------------------------------------------------------------------
def _need_fix(
    need: CudaNeed,
    cuda: T.Version,
    env: PixiEnv,
    torch_version: str | None,
    targets: FixTargets | None = None,
) -> str:
    """The env-side alternative to a driver upgrade: builds made for CUDA <= ``cuda``; torch
    is the run's target (``targets``: vLLM's pin, its build under this driver) where it has
    one, so this fix and ``abi.*``'s name the same torch."""
    keep = f"{cuda[0]}.{cuda[1]}"
    if (
        targets is not None
        and targets.torch
        and targets.variant
        and need.kind in ("torch", "cudart")
        and env.conda("pytorch") is None
        and need.package not in ("cuda-cudart", "cudatoolkit")
        and _mm_tuple(targets.cuda or "") <= tuple(cuda[:2])
    ):
        return targets.torch_fix(env)
    conda_pin = fixes.pin(env, Package("cuda-version", f"{keep}.*"))
    if need.kind == "cudart" and need.package in ("cuda-cudart", "cudatoolkit"):
        return conda_pin
    if need.package == "pytorch" or env.conda("pytorch") is not None:
        return conda_pin + " (conda-forge's pytorch builds follow cuda-version)"
    if need.kind in ("torch", "cudart") and torch_version:
        return _torch_for(env, torch_version, cuda)
    if need.kind == "extension":
        return (
            f"a {need.package} build made with CUDA {keep} or older (rebuild it in an env "
            f'pinned to `cuda-version = "{keep}.*"`, against a torch of that CUDA)'
        )
    return f"CUDA {keep} builds of what installed {need.subject}"


def _torch_for(env: PixiEnv, torch_version: str, cuda: T.Version) -> str:
    """torch ``torch_version`` from the PyTorch index of the newest variant the driver runs."""
    release = torch_archs.release_of(torch_version)
    plain = torch_version.split("+", 1)[0]
    variants = sorted(
        {r.variant for r in torch_archs.ROWS if r.release == release},
        key=lambda v: (int(v[2:-1]), int(v[-1])),
    )
    fits = [v for v in variants if (int(v[2:-1]), int(v[-1])) <= cuda[:2]]
    same_major = [v for v in variants if int(v[2:-1]) == cuda[0]]
    pick = fits[-1] if fits else (same_major[0] if same_major else None)
    if pick is None:
        return (
            f"torch {release} has no build the driver runs (variants known: "
            f"{', '.join(variants) or 'none'}): pin an older torch from "
            f"{TORCH_INDEX}/cu{cuda[0]}{cuda[1]}"
        )
    return fixes.pin(env, Package("torch", f"=={plain}", pypi=True), index=f"{TORCH_INDEX}/{pick}")


def _mm_tuple(mm: str) -> tuple[int, ...]:
    return tuple(int(p) for p in mm.split(".")[:2] if p.isdigit())


def upgrade_fix(need: T.Version) -> str:
    row = T.min_driver_for(need)
    if row is None:
        return (
            f"upgrade the GPU nodes' NVIDIA driver to one made for CUDA >= {T.cuda_text(need)} "
            f"(NVIDIA's notes we hold stop at {T.NEWEST_KNOWN.release})"
        )
    at_least = T.driver_text(row.driver) if len(row.driver) > 1 else f"R{row.driver[0]}"
    return (
        f"upgrade the GPU nodes' NVIDIA driver to >= {at_least} (CUDA {T.cuda_text(row.cuda)}, "
        f"{row.source})"
    )


def cuda_runtime(
    needs: list[CudaNeed],
    src: DriverSources,
    driver: Driver | None,
    env: PixiEnv,
    archs: Iterable[Arch] = (),
    targets: FixTargets | None = None,
) -> list[Finding]:
    """``driver.cuda-runtime``: one finding per CUDA need of the env."""
    cid = "driver.cuda-runtime"
    if driver is None:
        return [F.skipped(cid, NO_DRIVER)]
    if not needs:
        return [F.skipped(cid, f"no CUDA runtime, CUDA torch or CUDA extension in {env.prefix}")]
    cuda = effective_cuda(src, driver, list(archs))
    have = f"{driver.label}" + (
        f", CUDA {T.cuda_text(cuda)} through its forward-compatibility libcuda"
        if cuda != driver.cuda
        else ""
    )
    torch_version = env.version_of("torch")
    out = []
    for need in needs:
        ev = {"read from": need.where, "driver": driver.text, "driver from": driver.source}
        if need.error:  # the file that says its CUDA is there and unreadable: name it
            again = fixes.reinstall(env, need.package, pypi=need.package != "pytorch")
            again = again or fixes.reinstall(env, "torch", pypi=True)
            text = f"{need.subject}: the CUDA it needs is unknown: {need.error}"
            out.append(F.error(cid, text, f"reinstall {need.package}: " + again, **ev))
            continue
        want = (need.major, need.minor if need.minor is not None else 0)
        if need.major < cuda[0] or (need.major == cuda[0] and want <= cuda[:2]):
            how = " by backward compatibility" if need.major < cuda[0] else ""
            out.append(F.passed(cid, f"{need.subject}: CUDA {need.text} runs on {have}{how}", **ev))
            continue
        bound = "" if driver.cuda_exact else (
            "; the driver is newer than NVIDIA's notes we hold name, so it may support more: "
            "run on the GPU node, where NVML says"
        )  # fmt: skip
        alt = _need_fix(need, cuda, env, torch_version, targets)
        fix = fixes.otherwise(upgrade_fix(want), "keep the driver: " + alt)
        if need.major > cuda[0]:
            text = (
                f"{need.subject} needs a driver for CUDA {need.text} ({need.where}); {have}: the "
                f"CUDA runtime refuses to start: {T.CUDA_ERRORS[35]}"
            )
            make = F.failed if driver.cuda_exact else F.warning
            out.append(make(cid, text + bound, fix, **ev))
            continue
        family = T.MINOR_COMPAT.get(need.major)
        if family is not None and driver.version < family.minimum:
            text = (
                f"{need.subject} is CUDA {need.text}; {have} is below "
                f"{T.driver_text(family.minimum)}, the minimum for CUDA {need.major}.x minor-"
                f"version compatibility ({family.source}): the runtime refuses to start"
            )
            out.append(F.failed(cid, text, fix, **ev))
            continue
        text = (
            f"{need.subject} is CUDA {need.text}, newer than {have}: it runs under CUDA's "
            f"minor-version compatibility, with limits: calls needing the newer driver return "
            f"cudaErrorCallRequiresNewerDriver, and PTX it carries cannot be JIT-compiled by "
            f"this driver (driver.ptx-jit says whether the GPU needs any)"
        )
        out.append(F.warning(cid, text + bound, fix, **ev))
    return out
