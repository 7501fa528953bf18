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
``--vllm-conformance``
    Add the bundled conformance suite to the run (alone: run only it).

A relative path is relative to the directory pytest was started in when given on the
command line, and to the ini file's directory when written in an ini file, for every path
option (:func:`pytest_vllm_env.plugins.settings.resolve_path`). Write path options with
``=``: in ``--vllm-env PATH`` pytest takes ``PATH`` for a test path while it chooses its
rootdir and ini file (pytest-dev/pytest#8846; see :mod:`pytest_vllm_env.plugins.rootdir`).

Markers: ``toolchain`` (no GPU), ``gpu``, ``build`` (compiles or configures real things),
``integration`` (downloads real wheels). Every conformance test hands its findings to the
``verdict`` fixture; failed ones are listed with their fixes at the end of the run.

This module is the pytest11 entry point: it registers the session's plugins
(``plugins/session.py``: state and core fixtures; ``verdict.py``; ``report.py``: the JSON;
``terminal.py``: header and summary) and the area plugins, and declares the core options.
"""

from __future__ import annotations

import sys

import pytest


def _leave_asserts_alone(package: str = "pytest_vllm_env") -> None:
    """Take this package off pytest's list of plugin modules whose asserts it rewrites.

    pytest rewrites the asserts of every module of a distribution with a ``pytest11`` entry
    point (``Config._mark_plugins_for_rewrite``), so each of this plugin's modules was
    imported through ``AssertionRewritingHook`` with its own cached bytecode: about 15 ms
    of CPU in every pytest run of the user's repo, half of what the plugin cost there
    (benchmarks/startup.py: +9.6 % -> see docs/plugin.md). Nothing here relies on a
    rewritten assert (checks return findings; the suite's test files are rewritten as test
    files anyway, by ``python_files``). The hook's attributes are pytest's own: where they
    are not (another pytest), nothing changes and the modules are rewritten as before."""
    for hook in sys.meta_path:
        marked = getattr(hook, "_must_rewrite", None)
        cache = getattr(hook, "_marked_for_rewrite_cache", None)
        if isinstance(marked, set) and package in marked and isinstance(cache, dict):
            marked.discard(package)
            cache.clear()


_leave_asserts_alone()


def _register(pluginmanager: pytest.PytestPluginManager, name: str) -> None:
    """``pluginmanager.import_plugin(name)`` without marking the module for assert
    rewriting (import_plugin marks each name it imports: see :func:`_leave_asserts_alone`).
    A module blocked with ``-p no:NAME`` stays out, as with import_plugin."""
    if pluginmanager.is_blocked(name) or pluginmanager.get_plugin(name) is not None:
        return
    import importlib

    pluginmanager.register(importlib.import_module(name), name)


from pytest_vllm_env.plugins import settings  # noqa: E402  (after the hook is told)

MARKERS = {
    "toolchain": "judges files and tools of the env; needs no GPU",
    "gpu": "needs a visible NVIDIA GPU",
    "build": "compiles or configures real things (nvcc, CMake); may take minutes",
    "integration": "downloads real wheels or toolkits (opt-in)",
    "vllm_check(id)": "the stable id of the conformance check a test implements",
}
# The session's parts: its state and core fixtures, the verdict, the JSON report, the
# terminal text (docs/architecture.md says what lives where).
CORE_PLUGINS = (
    "pytest_vllm_env.plugins.session",
    "pytest_vllm_env.plugins.verdict",
    "pytest_vllm_env.plugins.report",
    "pytest_vllm_env.plugins.terminal",
)
# Registered only for a run of the bundled suite (pytest_configure): what -m selects of it.
SUITE_PLUGINS = ("pytest_vllm_env.plugins.selection",)
# The area plugins: each adds its fixtures (and settings) for one part of the suite.
AREA_PLUGINS = (
    "pytest_vllm_env.plugins.cuda",
    "pytest_vllm_env.plugins.binaries",
    "pytest_vllm_env.plugins.modelopt",
    "pytest_vllm_env.plugins.checkpoint",
    "pytest_vllm_env.plugins.quant",
    "pytest_vllm_env.plugins.gpu",
    "pytest_vllm_env.plugins.build",
    "pytest_vllm_env.plugins.xformers",
    "pytest_vllm_env.plugins.lock",
    "pytest_vllm_env.plugins.source",
    "pytest_vllm_env.plugins.driver",
    "pytest_vllm_env.plugins.runtime",
)


# -- settings ------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # The area plugins, registered here rather than through `pytest_plugins`: pytest looks
    # each name of that list up among the entry points of every installed distribution,
    # which was half of what this plugin cost every pytest run of the user's repo.
    # The core after the areas: pluggy calls the plugin registered last first, and the
    # core's hooks ran before the areas' while they lived in this module (its hooks were
    # added after this call registered the areas). So `verdict` still records a check's id
    # and env before plugins/lock.py skips it in lock mode, and hooks that both implement
    # (pytest_generate_tests, pytest_configure) run in the order they always did.
    for name in AREA_PLUGINS + CORE_PLUGINS:
        _register(pluginmanager, name)
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
    settings.add_flag(
        parser,
        "--vllm-strict",
        "fail checks whose verdict is a warning (works, at a cost)",
        "fail warnings too (true/false)",
    )
    settings.add_flag(
        parser,
        "--vllm-static",
        "judge without running anything from the env: no activation script, no nvcc, "
        "cmake, ptxas or Python of the env (for a workspace you do not trust, such as a pull "
        "request in CI); checks that need a run skip and say so",
        "run nothing from the judged env (true/false)",
    )
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
    from pytest_vllm_env.plugins.report import check_report_path
    from pytest_vllm_env.plugins.session import engaged, state

    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    settings.validate(config)  # every value at start: a usage error, not one per test
    _check_plugin_off_spelling(config)
    if engaged(config):
        state(config).guard_pytest_cache()
    _check_cuda_archs(config)
    check_report_path(config)
    if config.getoption("vllm_conformance"):
        _add_bundled_suite(config)
        for name in SUITE_PLUGINS:
            # pytest_configure is historic: a plugin registered now still gets it (trylast
            # there: after every plugin registered its markers)
            _register(config.pluginmanager, name)


# Names users wrote to turn this plugin off; pytest blocks an entry-point plugin only by the
# entry point's name (pyproject.toml [project.entry-points.pytest11]: vllm_env), so each of
# these named no plugin and left it on, without a word.
WRONG_OFF_NAMES = frozenset(
    {"pytest_vllm_env", "pytest-vllm-env", "vllm-env", "pytest_vllm_env.plugin", "vllm_env.plugin"}
)


def _check_plugin_off_spelling(config: pytest.Config) -> None:
    """``-p no:pytest_vllm_env`` (a wrong name) leaves the plugin on: say so, with the name
    that turns it off."""
    for value in config.getoption("plugins", default=None) or []:
        name = str(value)[3:] if str(value).startswith("no:") else ""
        if name in WRONG_OFF_NAMES:
            config.issue_config_time_warning(
                pytest.PytestConfigWarning(
                    f"-p no:{name} names no plugin, so pytest-vllm-env stays on; "
                    "turn it off with -p no:vllm_env"
                ),
                stacklevel=2,
            )


def _check_cuda_archs(config: pytest.Config) -> None:
    """A misspelled or unknown arch is a usage error now, not a verdict that blames the env
    later ("needs CUDA >= ?")."""
    values = settings.get_list(config, "cuda_arch")
    if not values:
        return
    from pytest_vllm_env.tables.archs import parse_arch_list
    from pytest_vllm_env.tables.cuda_archs import is_known_arch, known_archs_text

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


def _add_bundled_suite(config: pytest.Config) -> None:
    # Loaded by path: pytest then imports its modules as pytest_vllm_env.suite.test_*.
    from pytest_vllm_env.plugins.session import suite_dir

    suite = str(suite_dir())
    explicit = getattr(config, "args_source", None) == pytest.Config.ArgsSource.ARGS
    if explicit:
        if suite not in config.args:
            config.args.append(suite)
    else:
        config.args[:] = [suite]
