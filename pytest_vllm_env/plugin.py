"""pytest-vllm-env: judge a Pixi/conda env for vLLM, CUDA, PyTorch and ModelOpt checkpoints.

Point it at an environment and run the bundled conformance suite::

    pytest --vllm-conformance -m toolchain --vllm-env=.pixi/envs/default --cuda-arch=12.0

Settings (each also an ini key with ``-`` spelled ``_``; the option wins over the ini key):

``--vllm-env=PREFIX|NAME`` (repeatable)
    A prefix directory, or a Pixi environment name resolved through the manifest
    (``<workspace>/.pixi/envs/NAME``). Default: ``$CONDA_PREFIX`` when set (as under
    ``pixi run``), else the interpreter running pytest. Several values judge several envs
    in one run, with the env name in each test id.
``--pixi-manifest=PATH``
    Default: the first ``pixi.toml``, or ``pyproject.toml`` with ``[tool.pixi]`` tables,
    found upward from the rootdir.
``--cuda-arch=ARCH`` (repeatable; ``12.0``, ``sm_120``, ``9.0a``)
    The GPUs the env must serve. Default: ``TORCH_CUDA_ARCH_LIST`` after the env's
    activation, else the visible GPUs (``nvidia-smi``), else none: arch checks then skip.
``--vllm-wheel=PATH`` (repeatable, globs), ``--modelopt-checkpoint=PATH|REPO_ID``
    (repeatable), ``--vllm-env-report=PATH`` (JSON report).

Write path options with ``=``: in ``--vllm-env PATH`` pytest takes ``PATH`` for a test path
while it chooses its rootdir and ini file (pytest-dev/pytest#8846; see
:mod:`pytest_vllm_env.plugins.rootdir`).
``--vllm-conformance``
    Add the bundled conformance suite to the run (alone: run only it).

Markers: ``toolchain`` (no GPU), ``gpu``, ``build`` (compiles or configures real things),
``integration`` (downloads real wheels). Every conformance test hands its findings to the
``verdict`` fixture; failed ones are listed with their fixes at the end of the run.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.outcomes import Skipped

from pytest_vllm_env.plugins import settings

# The check library loads when a run asks for it (a fixture, an option, the suite), never at
# start-up: installed, this plugin loads in every pytest run of the user's repo.
if TYPE_CHECKING:
    from pytest_vllm_env.cache import FactCache
    from pytest_vllm_env.facts.env import EnvSpec, PixiEnv
    from pytest_vllm_env.findings import Finding
    from pytest_vllm_env.tables.archs import Arch

FINDING_KEY = "vllm_env.finding"
CHECK_KEY = "vllm_env.check"
TEST_KEY = "vllm_env.test"  # the test id in the report: the same whatever the rootdir
ENV_KEY = "vllm_env.env"
MARKERS = {
    "toolchain": "judges files and tools of the env; needs no GPU",
    "gpu": "needs a visible NVIDIA GPU",
    "build": "compiles or configures real things (nvcc, CMake); may take minutes",
    "integration": "downloads real wheels or toolkits (opt-in)",
    "vllm_check(id)": "the stable id of the conformance check a test implements",
}
# Area plugins: each adds its fixtures (and settings) for one part of the suite.
AREA_PLUGINS = (
    "pytest_vllm_env.plugins.cuda",
    "pytest_vllm_env.plugins.binaries",
    "pytest_vllm_env.plugins.modelopt",
    "pytest_vllm_env.plugins.quant",
    "pytest_vllm_env.plugins.gpu",
    "pytest_vllm_env.plugins.build",
    "pytest_vllm_env.plugins.xformers",
    "pytest_vllm_env.plugins.lock",
    "pytest_vllm_env.plugins.source",
    "pytest_vllm_env.plugins.driver",
)
HEADER_PACKAGES = ("torch", "vllm", "xformers", "flash-attn", "nvidia-modelopt")
TOOLKIT_PACKAGES = ("cuda-version", "cuda-nvcc", "cuda-toolkit", "cudatoolkit")
env_state_key = pytest.StashKey["SessionState"]()
# 2: the "warning" outcome and "strict" (README: The JSON report)
REPORT_SCHEMA = 2


# -- settings ------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # The area plugins, registered here rather than through `pytest_plugins`: pytest looks
    # each name of that list up among the entry points of every installed distribution,
    # which was half of what this plugin cost every pytest run of the user's repo.
    for name in AREA_PLUGINS:
        pluginmanager.import_plugin(name)
    add = settings.add_setting
    add(
        parser,
        "--vllm-env",
        "env prefix or Pixi env name to judge; default $CONDA_PREFIX, "
        "else the interpreter running pytest",
        multiple=True,
        metavar="PREFIX|NAME",
    )
    add(
        parser,
        "--pixi-manifest",
        "pixi.toml or pyproject.toml; default: searched upward from the rootdir",
        metavar="PATH",
    )
    add(
        parser,
        "--cuda-arch",
        "target GPU arch (12.0, sm_120); default TORCH_CUDA_ARCH_LIST "
        "after activation, else the visible GPUs",
        multiple=True,
        metavar="ARCH",
    )
    add(
        parser,
        "--vllm-wheel",
        "a built vLLM wheel to judge (globs allowed)",
        multiple=True,
        metavar="PATH",
    )
    add(
        parser,
        "--modelopt-checkpoint",
        "a ModelOpt checkpoint dir or cached HF repo id",
        multiple=True,
        metavar="PATH|REPO_ID",
    )
    add(
        parser,
        "--vllm-env-report",
        "write the verdicts as JSON to this file (%N: the node name)",
        metavar="PATH",
    )
    add(
        parser,
        "--vllm-node-name",
        "this node's name in the report; default $PYTEST_VLLM_ENV_NODE_NAME, else "
        "$SLURMD_NODENAME, else the short host name",
        metavar="NAME",
    )
    parser.getgroup(settings.GROUP).addoption(
        "--vllm-strict",
        action="store_true",
        default=None,
        help="fail checks whose verdict is a warning (works, at a cost) (ini: vllm_strict)",
    )
    parser.addini("vllm_strict", help="fail warnings too (true/false)", type="bool", default=False)
    parser.getgroup(settings.GROUP).addoption(
        "--vllm-conformance",
        action="store_true",
        default=False,
        help="add the bundled conformance suite to the run (with no paths: run only it)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    # Before conftests load: `--vllm-env PATH` may have moved pytest's rootdir and ini file.
    options = {s.option for s in settings.SETTINGS.values()}
    if not options.intersection(args):  # no option of ours in the --opt VALUE form
        return
    from pytest_vllm_env.plugins.rootdir import check_space_form_options

    check_space_form_options(early_config, parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    st = config.stash[env_state_key] = SessionState(config)
    if engaged(config):
        st.guard_pytest_cache()
    config.pluginmanager.register(FindingsReporter(config), "vllm-env-reporter")
    _check_cuda_archs(config)
    _check_report_path(config)
    if config.getoption("vllm_conformance"):
        _add_bundled_suite(config)


def _check_cuda_archs(config: pytest.Config) -> None:
    """A misspelled or unknown arch is a usage error now, not a verdict that blames the env
    later ("needs CUDA >= ?")."""
    values = settings.get_list(config, "cuda_arch")
    if not values:
        return
    from pytest_vllm_env.checks.cuda import is_known_arch, known_archs_text
    from pytest_vllm_env.tables.archs import parse_arch_list

    try:
        archs = parse_arch_list(" ".join(values))
    except ValueError as exc:
        raise pytest.UsageError(f"--cuda-arch: {exc}") from None
    unknown = [f"{a.sm} ({a.cc})" for a in archs if not is_known_arch(a)]
    if unknown:
        raise pytest.UsageError(
            f"--cuda-arch: {', '.join(unknown)} is not an arch any CUDA release targets; "
            f"known: {known_archs_text()}"
        )


def _check_report_path(config: pytest.Config) -> None:
    """``--vllm-env-report`` must name a file we can write, outside the judged envs: checked
    at start (a directory gave a traceback at the end, the summary lost, exit 1)."""
    value = settings.get(config, "vllm_env_report")
    if not value or hasattr(config, "workerinput"):
        return
    path = report_path(config, value)
    option = "--vllm-env-report"
    if path.is_dir():
        raise pytest.UsageError(
            f"{option} {value}: is a directory; name a file, e.g. {path / 'vllm-env.json'}"
        )
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise pytest.UsageError(f"{option} {value}: {parent} is a file, not a directory")
    if parent is not None and not os.access(parent, os.W_OK):
        raise pytest.UsageError(f"{option} {value}: {parent} is not writable")
    owner = _inside_judged_env(config, path)
    if owner is not None:
        raise pytest.UsageError(
            f"{option} {value}: inside the judged env {owner}; nothing is written there: "
            "put the report in your project or a temp dir"
        )


def _inside_judged_env(config: pytest.Config, path: Path) -> Path | None:
    from pytest_vllm_env.facts.env import EnvError
    from pytest_vllm_env.plugins.rootdir import inside

    try:
        specs = state(config).specs()
    except EnvError:
        return None
    parent = next((p for p in path.parents if p.exists()), path)
    return inside(parent, [s.prefix for s in specs])


def report_path(config: pytest.Config, value: str) -> Path:
    """``--vllm-env-report`` as a path (``%N``: the node name): relative to the invocation
    dir (option) or the rootdir (ini key)."""
    from pytest_vllm_env.runners import node as node_mod

    path = Path(node_mod.expand_report_path(value, node_name(config)[0])).expanduser()
    return path if path.is_absolute() else state(config)._base_for("vllm_env_report") / path


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
    # without network); its conformance/ sits beside this package, found by path.
    checkout = Path(__file__).resolve().parent.parent / "conformance"
    if (checkout / "__init__.py").is_file() and (checkout / "test_env.py").is_file():
        return checkout
    raise pytest.UsageError("pytest-vllm-env: the bundled suite is not installed")


def _add_bundled_suite(config: pytest.Config) -> None:
    # Loaded by path: pytest then imports its modules as pytest_vllm_env.suite.test_*.
    suite = str(suite_dir())
    explicit = getattr(config, "args_source", None) == pytest.Config.ArgsSource.ARGS
    if explicit:
        if suite not in config.args:
            config.args.append(suite)
    else:
        config.args[:] = [suite]


def engaged(config: pytest.Config) -> bool:
    """Whether this run asked anything of us: ``--vllm-conformance`` or any of our settings
    (option or ini key). A run that did not stays as cheap as without the plugin."""
    if config.getoption("vllm_conformance", default=False):
        return True
    return any(
        config.getoption(ini, default=None) or config.getini(ini) for ini in settings.SETTINGS
    )


# -- the session's view of the env(s) -------------------------------------------------------
class SessionState:
    """Located envs and resolved targets, computed lazily and once per process."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._specs: list[EnvSpec] | None = None
        self._envs: dict[Path, PixiEnv] = {}
        self.findings: list[dict[str, Any]] = []
        self.notes: list[str] = []  # header lines: what was moved out of the judged envs

    def judged_prefixes(self) -> list[Path]:
        """The prefixes of the envs asked for (none when they cannot be located)."""
        from pytest_vllm_env.facts.env import EnvError

        try:
            return [spec.prefix for spec in self.specs()]
        except EnvError:
            return []

    def guard_pytest_cache(self) -> None:
        """Never let pytest's own cache write into a judged env (a rootdir inside it)."""
        from pytest_vllm_env.plugins.rootdir import guard_pytest_cache

        note = guard_pytest_cache(self.config, self.judged_prefixes())
        if note:
            self.notes.append(note)

    @property
    def rootdir(self) -> Path:
        return Path(str(self.config.rootpath))

    def specs(self) -> list[EnvSpec]:
        """The envs asked for; raise EnvError naming what is wrong."""
        from pytest_vllm_env.facts.env import locate

        if self._specs is None:
            values = settings.get_list(self.config, "vllm_env") or [None]
            manifest = settings.get(self.config, "pixi_manifest")
            if manifest and not os.path.isabs(manifest):
                manifest = str(self._base_for("pixi_manifest") / manifest)
            self._specs = [
                locate(
                    v
                    if v is None or os.path.isabs(v) or not _looks_relative(v)
                    else str(self._base_for("vllm_env") / v),
                    manifest=manifest,
                    rootdir=self.rootdir,
                    environ=os.environ,
                    default_prefix=sys.prefix,
                )
                for v in values
            ]
        return self._specs

    def _base_for(self, ini: str) -> Path:
        """Relative paths from the command line are relative to the invocation dir; from an
        ini file, to the rootdir."""
        if self.config.getoption(ini, default=None):
            return Path(str(self.config.invocation_params.dir))
        return self.rootdir

    def env(self, spec: EnvSpec) -> PixiEnv:
        if spec.prefix not in self._envs:
            from pytest_vllm_env.facts.lock_env import open_env
            from pytest_vllm_env.plugins import (
                lock,  # its settings: --vllm-from-lock, --pixi-platform
            )

            self._envs[spec.prefix] = open_env(
                spec, from_lock=lock.from_lock(self.config), platform=lock.platform(self.config)
            )
        return self._envs[spec.prefix]

    def fact_cache(self) -> FactCache:
        from pytest_vllm_env.cache import FactCache
        from pytest_vllm_env.plugins.rootdir import safe_cache_dir

        return FactCache(safe_cache_dir(self.config, self.judged_prefixes()))


def _looks_relative(value: str) -> bool:
    return value.startswith(".") or os.sep in value


def state(config: pytest.Config) -> SessionState:
    return config.stash[env_state_key]


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

    st = state(config)
    try:
        for spec in st.specs():
            st.env(spec)
    except EnvError as exc:
        # One clear line instead of an error in every test.
        raise pytest.UsageError(f"pytest-vllm-env: {exc}") from None
    st.guard_pytest_cache()


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

    st = state(request.config)
    spec = getattr(request, "param", None) or st.specs()[0]
    try:
        return st.env(spec)
    except EnvError as exc:
        pytest.fail(f"pytest-vllm-env: {exc}", pytrace=False)


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
    return resolve_archs(request.config, vllm_env)[0]


@pytest.fixture(scope="session")
def cuda_archs_source(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> str:
    """Where ``cuda_archs`` came from: ``--cuda-arch``, ``TORCH_CUDA_ARCH_LIST``, ``nvidia-smi``
    or ``none`` (for skip reasons and the report)."""
    return resolve_archs(request.config, vllm_env)[1]


@pytest.fixture(scope="session")
def vllm_wheels(request: pytest.FixtureRequest) -> list[Path]:
    """Built vLLM wheels given with ``--vllm-wheel`` (globs expanded), as paths; a pattern
    that matches nothing stays in the list so its check can say so."""
    st = state(request.config)
    patterns = settings.get_list(request.config, "vllm_wheel")
    base = st._base_for("vllm_wheel")
    return [Path(p) for p in settings.expand_globs(patterns, base)]


@pytest.fixture(scope="session")
def modelopt_checkpoint_specs(request: pytest.FixtureRequest) -> list[str]:
    """The raw ``--modelopt-checkpoint`` values: local directories or Hugging Face repo ids."""
    return settings.get_list(request.config, "modelopt_checkpoint")


@pytest.fixture(scope="session")
def vllm_fact_cache(request: pytest.FixtureRequest) -> FactCache:
    """A cross-worker cache of JSON facts in pytest's cache dir, keyed by the paths a fact
    depends on (size + mtime): ``vllm_fact_cache.get(name, compute, deps)``. Safe under
    pytest-xdist: one worker computes under a file lock, the others read."""
    return state(request.config).fact_cache()


@pytest.fixture
def verdict(request: pytest.FixtureRequest):
    """Hand findings to pytest: ``verdict(finding, ...)`` (lists of findings too).

    Records every finding for the terminal summary and ``--vllm-env-report``; then fails
    the test (without a traceback, with each bad finding's summary, fix and evidence) if any
    failed or errored, skips it if all were skipped, and passes otherwise. A test whose
    worst finding is a warning passes, shown as ``W``/``WARNED`` and listed with its fix
    under "vllm-env: warnings"; with ``--vllm-strict`` it fails.
    """

    from pytest_vllm_env.findings import strict, worst

    def judge(*findings: Finding | Iterable[Finding]) -> list[Finding]:
        flat = list(_flatten(findings))
        if not flat:
            raise ValueError("verdict() needs at least one finding")
        if strict_mode(request.config):
            flat = [strict(f) for f in flat]
        for finding in flat:
            request.node.user_properties.append((FINDING_KEY, finding.to_dict()))
        outcome = worst(flat)
        if outcome in ("failed", "error"):
            text = "\n\n".join(f.render() for f in flat if f.bad)
            pytest.fail(text, pytrace=False)
        if outcome == "skipped":
            # Reported at the test's location, not at this line.
            reason = "; ".join(f"[{f.id}] {f.summary}" for f in flat)
            raise Skipped(reason, _use_item_location=True)
        return flat

    return judge


def strict_mode(config: pytest.Config) -> bool:
    """``--vllm-strict`` / ``vllm_strict``: warnings fail their test."""
    option = config.getoption("vllm_strict", default=None)
    return bool(option) if option is not None else bool(config.getini("vllm_strict"))


def _flatten(items: Iterable[Any]) -> Iterator[Finding]:
    # Findings are told by their shape, not their class: after an in-process pytester run
    # a check module may hold an older import of pytest_vllm_env.findings than ours.
    for item in items:
        if hasattr(item, "outcome") and hasattr(item, "to_dict"):
            yield item
        else:
            yield from _flatten(item)


def resolve_archs(config: pytest.Config, env: PixiEnv) -> tuple[list[Arch], str]:
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


# -- reporting -----------------------------------------------------------------------------
def pytest_report_header(config: pytest.Config) -> list[str]:
    # Under xdist the controller collects nothing, so the header after collection never
    # came: say which env(s) are judged here, before the workers start.
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return []
    if not engaged(config):
        return []
    from pytest_vllm_env.facts.env import EnvError

    st = state(config)
    try:
        lines = [line for spec in st.specs() for line in describe_env(st.env(spec), spec, config)]
    except EnvError as exc:
        return [f"vllm-env: {exc}"]
    return lines + st.notes


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Path, items: list[pytest.Item]
) -> list[str]:
    if not any("vllm_env" in getattr(item, "fixturenames", ()) for item in items):
        return []
    if hasattr(config, "workerinput"):
        return []
    from pytest_vllm_env.facts.env import EnvError

    st = state(config)
    lines: list[str] = []
    try:
        for spec in st.specs():
            lines.extend(describe_env(st.env(spec), spec, config))
    except EnvError:
        return []
    return lines + st.notes


def describe_env(env: PixiEnv, spec: EnvSpec, config: pytest.Config) -> list[str]:
    """The header lines for one env."""
    versions = [f"{n} {env.version_of(n)}" for n in HEADER_PACKAGES if env.version_of(n)]
    toolkit = next((f"{p} {env.conda(p).version}" for p in TOOLKIT_PACKAGES if env.conda(p)), None)
    lines = [
        f"vllm-env: {env.prefix} ({spec.source}"
        + (f", pixi env {env.name!r}" if env.name else "")
        + (f"; {env.locked.describe}" if env.locked is not None else "")
        + ")",
        f"vllm-env: python {env.python_version or 'not found'}; "
        + (", ".join(versions) if versions else "no torch or vLLM installed")
        + f"; CUDA toolkit: {toolkit or 'none in conda-meta'}",
    ]
    values = settings.get_list(config, "cuda_arch")
    lines.append(
        "vllm-env: target archs: "
        + (", ".join(values) if values else "from TORCH_CUDA_ARCH_LIST or the visible GPU")
    )
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Carried to the report (and the xdist controller) so a check skipped in a fixture
    # still has its stable id in the JSON report.
    mark = item.get_closest_marker("vllm_check")
    if mark and mark.args:
        item.user_properties.append((CHECK_KEY, str(mark.args[0])))
    if mark or "verdict" in getattr(item, "fixturenames", ()):
        item.user_properties.append((TEST_KEY, stable_test_id(item)))
    # With several --vllm-env values, which env a check judged (the merged fleet view keys
    # its columns on it; "what to change" names it on each line).
    spec = getattr(getattr(item, "callspec", None), "params", {}).get("vllm_env")
    if spec is not None and hasattr(spec, "prefix"):  # an EnvSpec (env.py loads lazily)
        item.user_properties.append((ENV_KEY, spec.name or spec.prefix.name))


def stable_test_id(item: pytest.Item) -> str:
    """``pytest_vllm_env/suite/test_cuda.py::test_nvcc_in_env[cuda]`` for the bundled suite
    (its node ids change with the rootdir: ``../../site-packages/...``); the node id for
    other tests."""
    try:
        rel = item.path.relative_to(suite_dir())
    except ValueError:
        return item.nodeid
    return f"pytest_vllm_env/suite/{rel.as_posix()}::{item.nodeid.split('::', 1)[-1]}"


def _has_warning(report: pytest.TestReport) -> bool:
    return any(
        key == FINDING_KEY and value.get("outcome") == "warning"
        for key, value in report.user_properties
    )


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    # A check that works at a cost passes, but is counted and lettered apart ("2 warned").
    if report.when == "call" and report.passed and _has_warning(report):
        return "warned", "W", ("WARNED", {"yellow": True})
    return None


class FindingsReporter:
    """Collects findings from test reports (on the xdist controller too, where
    ``user_properties`` arrive with each report), prints the fixes, writes the JSON."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.report_problem = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)  # the last value of each key
        entries = [value for key, value in report.user_properties if key == FINDING_KEY]
        check_id = props.get(CHECK_KEY)
        # Only our checks belong in the report: a user's own @pytest.mark.gpu test landed
        # there as a failed "check" with an empty fix.
        final = report.when == "call" or (report.when == "setup" and not report.passed)
        if not (entries or check_id) or not final:
            return
        where = {"test": props.get(TEST_KEY, report.nodeid)}
        if props.get(ENV_KEY):
            where["env"] = props[ENV_KEY]
        findings = state(self.config).findings
        if entries:
            findings.extend({**entry, **where} for entry in entries)
            return
        # A check that ended before it gave a verdict (skipped or broken in a fixture).
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        findings.append(
            {
                "id": check_id,
                "area": check_id.split(".")[0],
                "outcome": outcome,
                "summary": _longrepr_text(report),
                "fix": "",
                "evidence": {},
                **where,
            }
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report_problem:
            terminalreporter.write_line(f"vllm-env: {self.report_problem}", red=True)
        findings = state(self.config).findings
        # with several envs, each line names the env it is about
        several = len({f.get("env") for f in findings} - {None}) > 1

        def head(entry: dict[str, Any]) -> str:
            env = f"{entry['env']}: " if several and entry.get("env") else ""
            return f"[{entry['id']}] {env}{entry['summary']}"

        warned = [f for f in findings if f["outcome"] == "warning" and f.get("fix")]
        if warned:
            terminalreporter.section(
                "vllm-env: warnings (it works, at a cost)", sep="=", yellow=True
            )
            for entry in warned:
                terminalreporter.write_line(head(entry))
                terminalreporter.write_line(f"    fix: {entry['fix']}")
        bad = [f for f in findings if f["outcome"] in ("failed", "error") and f.get("fix")]
        if not bad:
            return
        terminalreporter.section("vllm-env: what to change", sep="=", red=True)
        for entry in bad:
            terminalreporter.write_line(head(entry))
            terminalreporter.write_line(f"    fix: {entry['fix']}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        target = settings.get(self.config, "vllm_env_report")
        if target and not hasattr(self.config, "workerinput"):
            path = report_path(self.config, target)
            try:
                write_report(self.config, path)
            except OSError as exc:  # checked at start; the disk may still fill up
                self.report_problem = f"could not write {path}: {exc.strerror or exc}"
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def _longrepr_text(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed and report.longreprtext:
        return report.longreprtext.strip().splitlines()[-1][:500]
    return ""


def node_name(config: pytest.Config) -> tuple[str, str]:
    """This node's name (``--vllm-node-name``, else the environment, else the host name)."""
    from pytest_vllm_env.runners import node as node_mod

    return node_mod.node_name(settings.get(config, "vllm_node_name"), os.environ)


def write_report(config: pytest.Config, path: Path) -> None:
    """``{"schema": 2, "env": ..., "targets": ..., "strict": ..., "node": ..., "checks":
    [...]}``: stable, parsed by tools. Schema 2 added the ``warning`` outcome (schema 1 had
    only passed, failed, skipped, error) and ``strict``; ``node`` and ``created`` were added
    later within schema 2 (README: The JSON report)."""
    from pytest_vllm_env.facts.env import EnvError
    from pytest_vllm_env.runners import node as node_mod

    st = state(config)
    envs: list[dict[str, Any]] = []
    try:
        for spec in st.specs():
            env = st.env(spec)
            envs.append(
                {
                    "prefix": str(env.prefix),
                    "name": env.name,
                    "source": spec.source,
                    "manifest": str(env.manifest_path) if env.manifest_path else None,
                    "python": str(env.python) if env.python else None,
                    "python_version": env.python_version,
                    "judged_from": str(env.locked.path) if env.locked is not None else "files",
                    "packages": {
                        n: env.version_of(n)
                        for n in HEADER_PACKAGES + TOOLKIT_PACKAGES
                        if env.version_of(n)
                    },
                }
            )
    except EnvError as exc:
        envs.append({"error": str(exc)})
    archs, archs_source = [], "none"
    python, environ = None, None
    if envs and "error" not in envs[0]:
        first = st.env(st.specs()[0])
        resolved, archs_source = resolve_archs(config, first)
        archs = [str(a) for a in resolved]
        python, environ = first.python, first.environ()
    name, name_source = node_name(config)
    report = {
        "schema": REPORT_SCHEMA,
        "env": envs[0] if len(envs) == 1 else {"envs": envs},
        "targets": {
            "cuda_archs": archs,
            "cuda_archs_source": archs_source,
            "vllm_wheels": settings.get_list(config, "vllm_wheel"),
            "modelopt_checkpoints": settings.get_list(config, "modelopt_checkpoint"),
        },
        "strict": strict_mode(config),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "node": node_mod.gather(name=name, name_source=name_source, python=python, environ=environ),
        "checks": st.findings,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
