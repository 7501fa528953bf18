"""Fixtures and the ``--cuda-driver`` setting for the driver area (``driver.*`` checks).

``--cuda-driver=VERSION`` (ini ``cuda_driver``) names the driver the GPU nodes run, to judge an
env on a machine without the GPU. On a GPU node the real driver is read too (NVML through the
env's Python, ``/proc/driver/nvidia/version``, the ``libcuda.so.1`` the loader takes); the option
wins and ``driver.version`` says where they differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.cache import FactCache
    from pytest_vllm_env.checks.driver import Driver
    from pytest_vllm_env.facts.driver import BinaryFacts, CudaNeed, DriverSources
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.fa_version import FaVersion
    from pytest_vllm_env.tables.archs import Arch


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def pytest_configure(config: pytest.Config) -> None:
    value = settings.get(config, "cuda_driver")
    if not value:
        return
    from pytest_vllm_env.tables.driver import parse_driver

    try:
        parse_driver(value)
    except ValueError as exc:
        raise pytest.UsageError(f"--cuda-driver: {exc}") from None


@pytest.fixture(scope="session")
def driver_sources(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> DriverSources:
    """What the driver checks read (:class:`pytest_vllm_env.facts.driver.DriverSources`):
    ``--cuda-driver``, this machine's driver (NVML run by the env's Python, only where an NVIDIA
    kernel driver is present; ``/proc/driver/nvidia/version``), every ``libcuda.so.1`` on the
    env's loader path in the loader's order, and the env's ``cuda-compat`` packages."""
    from pytest_vllm_env.facts import driver as facts

    node = facts.NodeDriver()
    if facts.driver_present():
        from pytest_vllm_env.runners.node import query_nvml

        data, problem = query_nvml(vllm_env.python, vllm_env.environ())
        proc, proc_problem = facts.read_proc_driver()
        node = facts.NodeDriver(
            nvml_driver=data.get("driver_version") if not problem else None,
            nvml_cuda=data.get("cuda_driver_version") if not problem else None,
            nvml_problem=problem,
            proc_driver=proc,
            proc_problem=proc_problem,
            gpus=tuple(str(g.get("name")) for g in data.get("gpus") or [] if g.get("name")),
        )
    else:
        why = "no NVIDIA kernel driver on this machine (/proc/driver/nvidia/version absent)"
        node = facts.NodeDriver(nvml_problem=why, proc_problem=why)
    return facts.DriverSources(
        option=settings.get(request.config, "cuda_driver"),
        node=node,
        libcuda=facts.libcuda_search(vllm_env, vllm_env.environ()),
        compat_packages=facts.compat_packages(vllm_env),
    )


@pytest.fixture(scope="session")
def cuda_driver(driver_sources: DriverSources) -> Driver | None:
    """The driver judged (:class:`pytest_vllm_env.checks.driver.Driver`): ``--cuda-driver``,
    else NVML's, else the kernel module's; None when there is none (driver checks skip)."""
    from pytest_vllm_env.checks.driver import judged_driver

    return judged_driver(driver_sources)


def _binary(path: Path, cache: FactCache) -> BinaryFacts:
    from pytest_vllm_env.facts.driver import BinaryFacts, binary_facts

    data = cache.get("driver-binary", lambda: binary_facts(path).to_json(), [str(path)], 1)
    return BinaryFacts.from_json(data)


@pytest.fixture(scope="session")
def cuda_binaries(
    vllm_env: PixiEnv, extension_paths: list[Path], vllm_fact_cache: FactCache
) -> list[tuple[str, BinaryFacts]]:
    """``(label, facts)`` of torch's ``torch/lib/*.so*`` and the env's compiled extensions
    (vLLM, xformers, flash-attn): what each links (``libcudart.so.N``) and its fatbin per
    container with PTX ISA versions; read once, shared through ``vllm_fact_cache``."""
    from pytest_vllm_env.facts import driver as facts

    paths = facts.torch_cuda_libraries(facts.torch_root(vllm_env)) + list(extension_paths)
    return [
        (facts.label(str(p), vllm_env.site_packages), _binary(p, vllm_fact_cache)) for p in paths
    ]


@pytest.fixture(scope="session")
def cuda_needs(
    vllm_env: PixiEnv, cuda_binaries: list[tuple[str, BinaryFacts]], extension_paths: list[Path]
) -> list[CudaNeed]:
    """What the env needs of a driver (:class:`pytest_vllm_env.facts.driver.CudaNeed`): its CUDA
    runtimes (conda ``cuda-cudart``, PyPI ``nvidia-cuda-runtime``), torch's CUDA, and each
    extension's ``libcudart.so.N`` with the CUDA its PTX was written by."""
    from pytest_vllm_env.facts.driver import cuda_needs as read_needs

    ext = {str(p) for p in extension_paths}
    extensions = [b for _, b in cuda_binaries if b.path in ext]
    return read_needs(vllm_env, extensions, vllm_env.site_packages)


@pytest.fixture(scope="session")
def flash_attn_version(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> FaVersion:
    """The FlashAttention version forced on the env's vLLM, where, and whether that vLLM reads
    it (:class:`pytest_vllm_env.facts.fa_version.FaVersion`): ``--vllm-serve-args``'s
    ``--attention-config``, the env's ``VLLM_FLASH_ATTN_VERSION`` and its tasks' options."""
    from pytest_vllm_env.facts import fa_version
    from pytest_vllm_env.plugins.checkpoint import launch

    given = launch(request.config)
    return fa_version.read(vllm_env, given.flash_attn_version, given.fa_from)


@pytest.fixture(scope="session")
def driver_cuda(
    driver_sources: DriverSources, cuda_driver: Driver | None, cuda_archs: list[Arch]
) -> tuple[int, ...] | None:
    """The CUDA version of the user-mode driver that will run the env: a supported forward-
    compatibility libcuda's, else the judged driver's; None without a driver."""
    from pytest_vllm_env.checks.driver import effective_cuda

    if cuda_driver is None:
        return None
    return effective_cuda(driver_sources, cuda_driver, cuda_archs)


@pytest.fixture(scope="session")
def flash_attn_library_finding(
    vllm_env: PixiEnv, cuda_archs: list[Arch], flash_attn_version: FaVersion
):
    """``vllm.flash-attn-library``'s finding: the FA version vLLM uses per target arch
    (the forced one included) against the ``_vllm_faN_C`` libraries its ``vllm_flash_attn``
    holds, where the attention backend vLLM selects there is FLASH_ATTN
    (:mod:`pytest_vllm_env.checks.fa_library`)."""
    from pytest_vllm_env.checks.attention_backend import select
    from pytest_vllm_env.checks.fa_library import flash_attn_library
    from pytest_vllm_env.facts import fixes, vllm_attention

    facts = vllm_attention.read(vllm_env)
    backends = facts.backends if facts.backends is not None and facts.backends.found else None

    def backend_on(arch, fa):
        if backends is None:
            return None
        got, maybe, _ = select(backends, arch, "auto", None, fa, facts.absent)
        return None if maybe else got  # an unsure one ahead: FLASH_ATTN may still run

    return flash_attn_library(
        flash_attn_version,
        facts.fa_libs,
        facts.fa_dir,
        cuda_archs,
        vllm_env.version_of("vllm"),
        backend_on,
        fixes.reinstall(vllm_env, "vllm", pypi=True),
    )
