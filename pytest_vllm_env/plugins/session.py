"""The session's state, in one object, and the fixtures that hand it out.

:class:`SessionState` holds what one pytest process knows about the run (as pytest-xdist
keeps its session state in one object): the env specs asked for, the envs read from them,
the target archs, the fact cache, and what the run found (findings for the summary and the
JSON report, header notes). Everything is computed lazily and once per process; under xdist
each worker and the controller have their own. :func:`state` gives it for a config.

The fixtures here (``vllm_env``, ``cuda_archs``, ``vllm_wheels``, ``vllm_fact_cache``...)
are the core ones every area plugin builds on.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vllm_env.plugins import settings

# The check library loads when a run asks for it (a fixture, an option, the suite), never at
# start-up: installed, this plugin loads in every pytest run of the user's repo.
if TYPE_CHECKING:
    from pytest_vllm_env.cache import FactCache
    from pytest_vllm_env.facts.env import EnvSpec, PixiEnv
    from pytest_vllm_env.tables.archs import Arch

_STATE = pytest.StashKey["SessionState"]()


def state(config: pytest.Config) -> SessionState:
    """The session state of ``config``, made on first use."""
    found = config.stash.get(_STATE, None)
    if found is None:
        found = config.stash[_STATE] = SessionState(config)
    return found


class SessionState:
    """Located envs and resolved targets, computed lazily and once per process."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._specs: list[EnvSpec] | None = None
        self._envs: dict[Path, PixiEnv] = {}
        self._archs: dict[Path, tuple[list[Arch], str]] = {}
        self._fact_cache: FactCache | None = None
        self.findings: list[dict[str, Any]] = []  # what the run found, as the JSON has it
        self.notes: list[str] = []  # header lines: what was moved out of the judged envs
        self.report_problem = ""  # why --vllm-env-report could not be written

    @property
    def rootdir(self) -> Path:
        return Path(str(self.config.rootpath))

    def specs(self) -> list[EnvSpec]:
        """The envs asked for; raise EnvError naming what is wrong."""
        from pytest_vllm_env.facts.env import locate

        if self._specs is None:
            values = settings.get_list(self.config, "vllm_env") or [None]
            manifest = settings.get_path(self.config, "pixi_manifest")
            specs = [
                locate(
                    self._env_value(v),
                    manifest=str(manifest) if manifest else None,
                    rootdir=self.rootdir,
                    environ=os.environ,
                    default_prefix=sys.prefix,
                )
                for v in values
            ]
            # The same env given twice (its path and its Pixi name, `env` and `./env/`, a
            # symlink to it) is judged once, under its first spelling: two test ids judged
            # one env twice and the report held every check of it twice.
            seen: set[str] = set()
            self._specs = []
            for spec in specs:
                key = os.path.realpath(spec.prefix)
                if key not in seen:
                    seen.add(key)
                    self._specs.append(spec)
        return self._specs

    def _env_value(self, value: str | None) -> str | None:
        """A ``--vllm-env`` value as :func:`locate` takes it: a path made absolute by the one
        path rule (:func:`settings.resolve_path`), a Pixi env name as given."""
        if value is None:
            return None
        path = settings.resolve_path(self.config, "vllm_env", value)
        # `--vllm-env=gpu` names a Pixi env of the manifest unless a folder of that name is
        # there; `./gpu`, `envs/gpu`, `~/gpu` are paths
        if value.startswith((".", "~")) or os.sep in value or path.exists():
            return str(path)
        return value

    def judged_prefixes(self) -> list[Path]:
        """The prefixes of the envs asked for (none when they cannot be located)."""
        from pytest_vllm_env.facts.env import EnvError

        try:
            return [spec.prefix for spec in self.specs()]
        except EnvError:
            return []

    def env(self, spec: EnvSpec) -> PixiEnv:
        """The env of ``spec``, read once (from its files, or in lock mode from pixi.lock).
        With ``--vllm-static`` it is marked static and its tree is kept out of every run
        (:func:`pytest_vllm_env.proc.confine`) before anything of it could start."""
        if spec.prefix not in self._envs:
            from pytest_vllm_env.facts.lock_env import open_env

            from_lock, platform = lock_mode(self.config)
            if static_mode(self.config):
                self._confine(spec.prefix, spec.manifest, spec.name)
            env = open_env(spec, from_lock=from_lock, platform=platform)
            env.static = static_mode(self.config)
            if env.static:
                self._confine(env.prefix, env.manifest_path, env.name)
            self._envs[spec.prefix] = env
        return self._envs[spec.prefix]

    def _confine(self, prefix: Path, manifest: Path | None, name: str | None) -> None:
        """``--vllm-static``: nothing may run that names the env's tree, or the activation
        scripts its manifest lists (they live in the workspace, outside the prefix)."""
        from pytest_vllm_env import proc
        from pytest_vllm_env.readers.pixi import ManifestError, load_manifest

        roots = [prefix]
        if manifest is not None and name:
            try:
                roots += load_manifest(manifest).activation_scripts(name)
            except ManifestError:
                pass  # env.manifest says why; there is then no script to run either
        if not proc.confined_roots():
            self.config.add_cleanup(proc.unconfine)
        proc.confine(roots, "--vllm-static: it would run code of the judged env")

    def archs(self, env: PixiEnv) -> tuple[list[Arch], str]:
        """The target archs for ``env`` and where they came from: ``--cuda-arch``, else
        ``TORCH_CUDA_ARCH_LIST`` after the env's activation, else the visible GPUs
        (``nvidia-smi``), else none."""
        if env.prefix not in self._archs:
            self._archs[env.prefix] = _resolve_archs(self.config, env)
        return self._archs[env.prefix]

    def fact_cache(self) -> FactCache:
        """The cross-worker fact cache, never inside a judged env: in pytest's cache dir,
        else the user cache dir, else none (an unwritable rootdir, another user's
        .pytest_cache, ``XDG_CACHE_HOME`` at a file); the header says where it went."""
        if self._fact_cache is None:
            from pytest_vllm_env.cache import FactCache
            from pytest_vllm_env.plugins.rootdir import fact_cache_candidates

            found = fact_cache_candidates(self.config, self.judged_prefixes())
            self._fact_cache = FactCache.choose(found) if found else FactCache(None)
            if self._fact_cache.note:
                self.notes.append(f"vllm-env: {self._fact_cache.note}")
            if static_mode(self.config):
                # what a run of the env's tools said (kept by an earlier run) is not what
                # --vllm-static knows: its facts are kept apart, so verdicts never depend on it
                cache = self._fact_cache
                real_get = cache.get
                cache.get = lambda name, compute, deps=(), *extra: real_get(  # type: ignore[method-assign]
                    name, compute, deps, *extra, "--vllm-static"
                )
        return self._fact_cache

    def guard_pytest_cache(self) -> None:
        """Never let pytest's own cache write into a judged env (a rootdir inside it)."""
        from pytest_vllm_env.plugins.rootdir import guard_pytest_cache

        note = guard_pytest_cache(self.config, self.judged_prefixes())
        if note:
            self.notes.append(note)
        self.fact_cache()  # chosen now, so the header can say where it went


def lock_mode(config: pytest.Config) -> tuple[bool, str]:
    """``(--vllm-from-lock, the pixi.lock platform)``: the settings of the lock area
    (plugins/lock.py declares them) that decide how an env is opened."""
    from pytest_vllm_env.readers.pixilock import current_platform

    option = config.getoption("vllm_from_lock", default=None)
    from_lock = bool(option) if option is not None else bool(config.getini("vllm_from_lock"))
    return from_lock, settings.get(config, "pixi_platform") or current_platform()


def static_mode(config: pytest.Config) -> bool:
    """``--vllm-static`` / ``vllm_static``: nothing of the judged env runs."""
    return settings.get_flag(config, "vllm_static")


def _resolve_archs(config: pytest.Config, env: PixiEnv) -> tuple[list[Arch], str]:
    from pytest_vllm_env.tables.archs import parse_arch_list

    values = settings.get_list(config, "cuda_arch")
    if values:  # validated in pytest_configure
        return parse_arch_list(" ".join(values)), "--cuda-arch"
    listed = env.environ().get("TORCH_CUDA_ARCH_LIST", "").strip()
    if listed:
        try:
            return parse_arch_list(listed), "TORCH_CUDA_ARCH_LIST"
        except ValueError:
            pass
    gpus = visible_gpu_archs()
    if gpus:
        return gpus, "nvidia-smi"
    return [], "none"


def visible_gpu_archs() -> list[Arch]:
    """Compute capabilities of the visible GPUs, from nvidia-smi; [] without one."""
    from pytest_vllm_env import proc
    from pytest_vllm_env.tables.archs import parse_arch

    smi = proc.which("nvidia-smi", os.environ.get("PATH"))
    if not smi:
        return []
    result = proc.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], timeout=20)
    if not result.ok:
        return []
    found: list[Arch] = []
    for line in result.stdout.splitlines():
        try:
            arch = parse_arch(line.strip())
        except ValueError:
            continue
        if arch not in found:
            found.append(arch)
    return found


def engaged(config: pytest.Config) -> bool:
    """Whether this run asked anything of us: ``--vllm-conformance`` or any of our settings
    (option or ini key). A run that did not stays as cheap as without the plugin."""
    if config.getoption("vllm_conformance", default=False):
        return True
    return any(
        config.getoption(ini, default=None) or config.getini(ini) for ini in settings.SETTINGS
    )


def node_name(config: pytest.Config) -> tuple[str, str]:
    """This node's name (``--vllm-node-name``, else the environment, else the host name)."""
    from pytest_vllm_env.runners import node as node_mod

    return node_mod.node_name(settings.get(config, "vllm_node_name"), os.environ)


@functools.cache
def suite_dir() -> Path:
    """The bundled suite's folder: ``pytest_vllm_env/suite`` when installed (``conformance/``
    of a checkout, through the editable install's mapping; a checkout's ``conformance/`` by
    path when the package is only on ``PYTHONPATH``). Found without importing it, and never by
    the name ``conformance``, which a user's own package would shadow."""
    spec = importlib.util.find_spec("pytest_vllm_env.suite")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    # Not installed: a checkout on PYTHONPATH (``-p pytest_vllm_env.plugin``, as on a GPU box
    # without network); its conformance/ sits beside the package, found by path.
    checkout = Path(__file__).resolve().parents[2] / "conformance"
    if (checkout / "__init__.py").is_file() and (checkout / "test_env.py").is_file():
        return checkout
    raise pytest.UsageError("pytest-vllm-env: the bundled suite is not installed")


# -- hooks ---------------------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vllm_env" not in metafunc.fixturenames:
        return
    from pytest_vllm_env.facts.env import EnvError

    try:
        specs = state(metafunc.config).specs()
    except EnvError:
        return  # reported once, as a usage error, after collection
    if len(specs) > 1:
        metafunc.parametrize(
            "vllm_env",
            specs,
            indirect=True,
            scope="session",
            ids=[s.name or s.prefix.name for s in specs],
        )


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not any("vllm_env" in getattr(item, "fixturenames", ()) for item in items):
        return
    from pytest_vllm_env.facts.env import EnvError
    from pytest_vllm_env.text import terminal_safe

    st = state(config)
    try:
        for spec in st.specs():
            st.env(spec)
    except EnvError as exc:
        # One clear line instead of an error in every test (the manifest is the user's, or
        # a pull request's: its env names reach the terminal escaped).
        raise pytest.UsageError(terminal_safe(f"pytest-vllm-env: {exc}")) from None
    st.guard_pytest_cache()
    if static_mode(config):
        _skip_runs(items)


# The tiers whose every check runs the env's code: the gpu tier its Python (torch, vLLM,
# xformers probes), the build tier its nvcc, ptxas, CMake with torch's CMake files, Python.
STATIC_SKIPS = {
    "gpu": "--vllm-static: the gpu tier runs the env's Python (torch, vLLM); not run",
    "build": "--vllm-static: the build tier runs the env's nvcc, ptxas, CMake (with torch's "
    "CMake files) and Python; not run",
}


def _skip_runs(items: list[pytest.Item]) -> None:
    """``--vllm-static``: skip, with the reason, every check of the judged env that can only
    be judged by running its code."""
    for item in items:
        if "vllm_env" not in getattr(item, "fixturenames", ()):
            continue
        for tier, why in STATIC_SKIPS.items():
            if item.get_closest_marker(tier) is not None:
                item.add_marker(pytest.mark.skip(reason=why))
                break


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def vllm_env(request: pytest.FixtureRequest) -> PixiEnv:
    """The environment being judged (a :class:`pytest_vllm_env.facts.env.PixiEnv`).

    Located from ``--vllm-env`` (prefix or Pixi env name), else ``$CONDA_PREFIX``, else the
    interpreter running pytest. Holds the prefix, its Python, the conda packages
    (``conda-meta``), the Python distributions of its site-packages (metadata only, nothing
    imported) and, on first use of ``.activation``/``.environ()``, what activation sets.
    With several ``--vllm-env`` values, tests using it run once per env.
    """
    from pytest_vllm_env.facts.env import EnvError
    from pytest_vllm_env.text import terminal_safe

    st = state(request.config)
    spec = getattr(request, "param", None) or st.specs()[0]
    try:
        return st.env(spec)
    except EnvError as exc:
        pytest.fail(terminal_safe(f"pytest-vllm-env: {exc}"), pytrace=False)


@pytest.fixture(scope="session")
def vllm_env_activation(vllm_env: PixiEnv) -> dict[str, str]:
    """The environment variables a subprocess of the judged env runs with, after activation
    (``pixi shell-hook --json`` when pixi is on PATH, else the manifest's ``activation.env``
    tables and the env's ``etc/conda/activate.d`` scripts, run in a subprocess)."""
    return vllm_env.environ()


@pytest.fixture(scope="session")
def cuda_archs(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> list[Arch]:
    """The target GPU archs (:class:`pytest_vllm_env.tables.archs.Arch`), from ``--cuda-arch``,
    else ``TORCH_CUDA_ARCH_LIST`` after the env's activation, else the visible GPUs' compute
    capabilities; empty when none is known (arch checks then skip and say why)."""
    return state(request.config).archs(vllm_env)[0]


@pytest.fixture(scope="session")
def cuda_archs_source(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> str:
    """Where ``cuda_archs`` came from: ``--cuda-arch``, ``TORCH_CUDA_ARCH_LIST``, ``nvidia-smi``
    or ``none`` (for skip reasons and the report)."""
    return state(request.config).archs(vllm_env)[1]


@pytest.fixture(scope="session")
def vllm_wheels(request: pytest.FixtureRequest) -> list[Path]:
    """Built vLLM wheels given with ``--vllm-wheel`` (globs expanded), as paths; a pattern
    that matches nothing stays in the list so its check can say so."""
    return settings.get_paths(request.config, "vllm_wheel", globs=True)


@pytest.fixture(scope="session")
def modelopt_checkpoint_specs(request: pytest.FixtureRequest) -> list[str]:
    """The raw ``--modelopt-checkpoint`` values: local directories or Hugging Face repo ids."""
    return settings.get_list(request.config, "modelopt_checkpoint")


@pytest.fixture(scope="session")
def vllm_fact_cache(request: pytest.FixtureRequest) -> FactCache:
    """A cross-worker cache of JSON facts in pytest's cache dir (else the user cache dir,
    else none), keyed by the paths a fact depends on (device, inode, size, mtime, ctime):
    ``vllm_fact_cache.get(name, compute, deps)``. Safe under pytest-xdist: one worker
    computes under a file lock, the others read."""
    return state(request.config).fact_cache()
