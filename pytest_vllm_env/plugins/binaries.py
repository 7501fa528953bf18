"""Fixtures for the binaries area (``abi.*``, ``arch.*``): torch's facts and the extensions
(:mod:`pytest_vllm_env.facts.binaries`).

All of it is read from files; nothing is imported from the target env.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.cache import FactCache
    from pytest_vllm_env.checks import wheels
    from pytest_vllm_env.facts import binaries
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.targets import FixTargets
    from pytest_vllm_env.readers.vllm_build import SourceTree


@pytest.fixture(scope="session")
def torch_facts(vllm_env: PixiEnv, vllm_fact_cache: FactCache) -> binaries.TorchFacts | None:
    """torch as installed in the target env (:class:`pytest_vllm_env.facts.binaries.TorchFacts`):
    version, CUDA from ``torch/version.py``, the torch-side symbols ``torch/lib/*.so``
    export and its C++11 ABI flag; ``None`` when torch is not installed. Read once and shared
    through ``vllm_fact_cache``; what the libraries export is looked up by name in their
    symbol hash tables (``torch_facts.exports``), never listed."""
    from pytest_vllm_env.facts import binaries

    root = binaries.torch_root(vllm_env)
    if root is None:
        return None
    lib = root / "lib"
    deps = sorted(str(p) for p in lib.glob("*.so*")) if lib.is_dir() else []
    deps.append(str(root / "version.py"))

    def compute() -> dict | None:
        facts = binaries.torch_facts(vllm_env)
        return facts.to_json() if facts else None

    data = vllm_fact_cache.get(
        "torch-facts", compute, deps, vllm_env.version_of("torch"), str(root)
    )
    return binaries.TorchFacts.from_json(data) if data else None


@pytest.fixture(scope="session")
def extension_paths(vllm_env: PixiEnv) -> list[Path]:
    """Compiled extension ``.so`` files of vLLM, xformers and flash-attn in the env."""
    from pytest_vllm_env.facts import binaries

    return binaries.find_extensions(vllm_env)


@pytest.fixture(scope="session")
def extensions(extension_paths: list[Path]) -> list[binaries.ExtensionFacts]:
    """:class:`pytest_vllm_env.facts.binaries.ExtensionFacts` for each of ``extension_paths``."""
    from pytest_vllm_env.facts import binaries

    return [binaries.extension_facts(p) for p in extension_paths]


@pytest.fixture(scope="session")
def vllm_wheel_facts(
    vllm_wheels: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> list[wheels.WheelFacts]:
    """What each ``--vllm-wheel`` holds (:class:`pytest_vllm_env.checks.wheels.WheelFacts`),
    read without installing or extracting it: METADATA, RECORD checked against the members,
    and each ``.so`` member copied into a scratch file of ours, read, and removed."""
    scratch = tmp_path_factory.mktemp("wheel-members")
    return [read_wheel(whl, scratch / str(i)) for i, whl in enumerate(vllm_wheels)]


def read_wheel(path: Path, scratch: Path) -> wheels.WheelFacts:
    """:class:`pytest_vllm_env.checks.wheels.WheelFacts` of one wheel (readers/wheel.py holds
    the bounds: what it may unpack to, each member hashed once, member names never joined to
    a path); ``scratch`` is a folder of ours for the member being read."""
    import zipfile
    from pathlib import PurePosixPath

    from pytest_vllm_env import files
    from pytest_vllm_env.checks import wheels
    from pytest_vllm_env.facts import binaries
    from pytest_vllm_env.readers import fatbin
    from pytest_vllm_env.readers import wheel as reader
    from pytest_vllm_env.readers.elf import ElfError

    facts = wheels.WheelFacts(path)
    what = files.describe(path)
    if what in ("missing", "a dangling symlink"):
        facts.missing = True
        return facts
    try:
        zf, budget = reader.open_wheel(path)
    except (OSError, zipfile.BadZipFile) as exc:
        facts.unreadable = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
        return facts
    with zf:
        try:
            facts.info_dir, facts.requires = reader.read_metadata(zf, budget)
        except reader.READ_ERRORS as exc:
            facts.unreadable = str(exc)
            return facts
        if facts.info_dir:
            facts.record = reader.check_record(zf, facts.info_dir, budget)
        for info in reader.extension_members(zf):
            member = info.filename
            package = PurePosixPath(member).parent.name
            try:
                with reader.member_file(zf, info, scratch, budget) as so:
                    ext = binaries.extension_facts(so, package)
                    try:
                        images, error = fatbin.read_images(so), ""
                    except ElfError as exc:
                        images, error = None, str(exc)
            except reader.READ_ERRORS as exc:
                ext = binaries.ExtensionFacts(Path(member), package, error=str(exc))
                images, error = None, str(exc)
            ext.path = Path(member)
            facts.members.append(wheels.WheelMember(member, ext, images, error))
    return facts


@pytest.fixture(scope="session")
def fix_targets(
    request: pytest.FixtureRequest,
    vllm_env: PixiEnv,
    torch_facts: binaries.TorchFacts | None,
    extensions: list[binaries.ExtensionFacts],
) -> FixTargets:
    """The one torch and the one CUDA every fix of this env points at
    (:class:`pytest_vllm_env.facts.targets.FixTargets`): vLLM's torch pin, a real build of it
    for the CUDA torch and the extensions use, under the driver's CUDA when ``--cuda-driver``
    names the driver. Computed once per env; checks read it for their fix texts."""
    from pytest_vllm_env.facts import targets
    from pytest_vllm_env.plugins import settings

    driver = None
    if settings.get(request.config, "cuda_driver"):
        driver = request.getfixturevalue("driver_cuda")
    linked: dict[str, str] = {}
    for ext in extensions:
        if ext.cudart and ext.owner not in linked:
            linked[ext.owner] = ext.cudart
    cuda = torch_facts.cuda if torch_facts is not None else None
    return targets.compute(vllm_env, cuda, linked, driver)


@pytest.fixture(scope="session")
def vllm_torch_pin(vllm_env: PixiEnv) -> str | None:
    """The ``torch==X`` version the installed vLLM pins (the torch it was built for)."""
    from pytest_vllm_env.facts import binaries

    dist = vllm_env.dist("vllm")
    return binaries.torch_pin_of(dist.requires) if dist else None


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


@pytest.fixture(scope="session")
def vllm_source(request: pytest.FixtureRequest) -> SourceTree | None:
    """The ``--vllm-source`` tree's torch requirements
    (:class:`pytest_vllm_env.readers.vllm_build.SourceTree`), or None."""
    from pytest_vllm_env.plugins import settings
    from pytest_vllm_env.readers.vllm_build import read_source_tree

    path = settings.get_path(request.config, "vllm_source")
    return read_source_tree(path) if path else None


@pytest.fixture(scope="session")
def torch_build_nvcc(cuda_toolkit, vllm_fact_cache: FactCache, request: pytest.FixtureRequest):
    """``(NvccRun | None, why)``: the nvcc ``torch.utils.cpp_extension`` would build with
    (``CUDA_HOME``/``CUDA_PATH``, else ``nvcc`` on the activated PATH, else
    ``/usr/local/cuda``), run once and cached per path
    (:func:`pytest_vllm_env.facts.build_nvcc.torch_nvcc`)."""
    from pytest_vllm_env.facts.build_nvcc import torch_nvcc
    from pytest_vllm_env.plugins import settings

    timeout = settings.get_number(request.config, "cuda_tool_timeout", 30.0)
    return torch_nvcc(cuda_toolkit, lambda n, c, d: vllm_fact_cache.get(n, c, d, timeout), timeout)


@pytest.fixture(scope="session")
def library_resolver(vllm_env: PixiEnv, vllm_fact_cache: FactCache):
    """A :class:`pytest_vllm_env.facts.linkage.Resolver` for the env: finds libraries where the
    loader would (torch's already-loaded libraries, RUNPATH, the activated LD_LIBRARY_PATH,
    the env's lib/, /etc/ld.so.conf dirs) and reads each file once; which undefined symbols
    no library defines is shared through ``vllm_fact_cache`` (keyed by every file read)."""
    from pytest_vllm_env.facts.binaries import torch_root
    from pytest_vllm_env.facts.linkage import Resolver

    root = torch_root(vllm_env)
    libs = sorted((root / "lib").glob("*.so*")) if root and (root / "lib").is_dir() else []
    return Resolver.for_env(vllm_env.prefix, libs, vllm_env.environ(), facts=vllm_fact_cache.get)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The symbol tables read this session (20 MB for a vLLM venv's torch) are of no use
    # after it: a pytest run that goes on (pytester, other suites) should not hold them.
    linkage = sys.modules.get("pytest_vllm_env.facts.linkage")
    if linkage is not None:
        linkage.forget()
