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

This module is the pytest11 entry point: it declares every option and ini key, and registers
the session's plugins (``plugins/session.py``: state and core fixtures; ``verdict.py``;
``report.py``: the JSON; ``terminal.py``: header and summary) in every run. The area plugins
(their fixtures, ``AREA_PLUGINS``) are registered only by a run that uses them: at start,
before the core as always, by one given an option or ini key of ours, one that runs the
bundled suite or lists fixtures (:func:`_asks_for_areas`); else when a test first asks for
a fixture of ours (:func:`_register_areas_on_first_use`). A trivial run of a repo that has
the plugin installed then imports none of them (issue 21; benchmarks/startup.py).
"""

from __future__ import annotations

import sys
from typing import Any

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
    # plugins/lock.py's; declared here, as that plugin is not registered in every run
    "vllm_lock": "the check judges pixi.lock too (it runs in lock mode)",
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
# The area plugins: each adds its fixtures for one part of the suite (their options are
# declared by _add_area_options). Registered only by a run that uses them (module docstring).
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
# Every fixture the core and area plugins define (tests/test_startup.py keeps it equal to
# theirs): a test, fixture or getfixturevalue() that asks for one of them registers the areas.
FIXTURES = frozenset(
    {
        # core: session.py, verdict.py
        "vllm_env", "vllm_env_activation", "cuda_archs", "cuda_archs_source", "vllm_wheels",
        "modelopt_checkpoint_specs", "vllm_fact_cache", "verdict",
        # cuda.py
        "cuda_toolkit", "nvcc_need", "build_nvcc", "cmake_for_env", "cmake_version_for_env",
        "torch_cuda_cmake", "nvtx_prediction", "cmake_probe", "torch_cmake_config",
        "torch_config_prediction",
        # binaries.py
        "torch_facts", "extension_paths", "extensions", "vllm_wheel_facts", "fix_targets",
        "vllm_torch_pin", "vllm_source", "torch_build_nvcc", "library_resolver",
        # modelopt.py
        "modelopt_checkpoint", "modelopt_scales", "modelopt_weight_samples",
        "vllm_modelopt_source", "vllm_kv_naming", "vllm_model_registry", "vllm_gdn_rule",
        "gdn_env",
        # checkpoint.py
        "vllm_launch", "vllm_loader_facts", "checkpoint_load", "checkpoint_load_probe",
        "vllm_checkpoint_load", "vllm_attention", "flash_attn_library_finding",
        "attention_backend_finding",
        # quant.py
        "vllm_checkpoint", "vllm_checkpoint_specs", "vllm_quant_source", "vllm_quant_packages",
        "vllm_checkpoint_plan", "vllm_checkpoint_scales", "vllm_checkpoint_samples",
        "vllm_triton_kernels", "vllm_mp_kernel_rules",
        # gpu.py
        "gpu_torch_probe", "visible_gpus", "gpu_binaries", "reference_checkpoints",
        "vllm_logprob_tolerance", "vllm_perplexity_exponent", "vllm_build_logs",
        "require_gpu", "require_vllm", "vllm_run_cache", "vllm_checkpoint_runs",
        "modelopt_prediction", "vllm_reference_run", "vllm_reference_verdict",
        # build.py
        "torch_extension_build", "nvcc_kernel_build",
        # xformers.py
        "vit_attn_source", "vit_attn_installed", "xformers_decisions", "xformers_probe",
        # lock.py
        "vllm_lock", "vllm_installed_env",
        # source.py
        "pypi_settings", "vllm_source_dir", "vllm_cmake_floor", "vllm_built_in_env",
        # driver.py
        "driver_sources", "cuda_driver", "cuda_binaries", "cuda_needs", "driver_cuda",
        "flash_attn_version",
        # runtime.py
        "triton_ptxas_facts", "sibling_pins", "vllm_settings_facts", "python_headers",
        "host_c_compiler", "flashinfer_jit_facts", "deepgemm_facts",
    }
)  # fmt: skip
_AREAS = pytest.StashKey[bool]()  # on the config once the area plugins are registered


# -- settings ------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # The area plugins' options first: `--help` lists them before the core ones, as it did
    # when each area plugin declared its own.
    _add_area_options(parser)
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

    # The session's plugins, registered here rather than through `pytest_plugins`: pytest
    # looks each name of that list up among the entry points of every installed
    # distribution, which was half of what this plugin cost every pytest run of the user's
    # repo. A run that asks for the areas gets them here, before the core: pluggy calls the
    # plugin registered last first, and the core's hooks ran before the areas' while they
    # lived in this module. So `verdict` still records a check's id and env before
    # plugins/lock.py skips it in lock mode, and hooks that both implement
    # (pytest_generate_tests, pytest_configure) run in the order they always did. Any other
    # run gets them only if a test asks for a fixture of ours (pytest_sessionstart).
    config = pluginmanager.get_plugin("pytestconfig")
    if not isinstance(config, pytest.Config) or _asks_for_areas(config):
        _register_areas(pluginmanager, config)
    for name in CORE_PLUGINS:
        _register(pluginmanager, name)


def _add_area_options(parser: pytest.Parser) -> None:
    """Declare every area plugin's options and ini keys, in the order of ``AREA_PLUGINS``,
    each beside the area that reads it. pytest must know every option before it parses the
    command line, but an area plugin is registered only by a run that uses it; so an area
    plugin must not implement ``pytest_addoption`` itself (registered late, pytest would
    replay it and declare its options a second time)."""
    from pytest_vllm_env import defaults

    add = settings.add_setting
    # plugins/cuda.py
    add(
        parser,
        "--cuda-tool-timeout",
        "seconds each nvcc/ptxas/cmake run may take before it is killed and judged; "
        f"default {defaults.CUDA_TOOL_TIMEOUT:.0f}",
        metavar="SECONDS",
    )
    add(
        parser,
        "--cmake",
        "the cmake to predict for and probe with; default: cmake on the env's activated PATH",
        metavar="PATH",
    )
    # plugins/binaries.py
    add(
        parser,
        "--vllm-source",
        "a vLLM source tree (checkout of a tag) to judge before building it: its torch pins "
        "(pyproject.toml, requirements/cuda.txt) and scalar types against the env's torch, "
        "its build/ CMake cache, its CMake floor",
        metavar="DIR",
    )
    # plugins/modelopt.py
    add(
        parser,
        "--vllm-additional-config",
        "the additional_config (a JSON object) you give vLLM: --additional-config / "
        'LLM(additional_config=...); e.g. {"gdn_prefill_backend": "triton"} (read by '
        "modelopt.gdn-prefill-backend; the gpu probe loads with it)",
        metavar="JSON",
    )
    # plugins/checkpoint.py
    add(
        parser,
        "--tensor-parallel-size",
        "the tensor_parallel_size you start vLLM with (--tensor-parallel-size / -tp); judged by "
        "launch.tensor-parallel against each checkpoint's heads, sizes and format blocks",
        metavar="N",
    )
    add(
        parser,
        "--vllm-quantization",
        "the quantization= you give vLLM (--quantization / -q / LLM(quantization=...)); judged "
        "by launch.quantization against what each checkpoint declares",
        metavar="NAME",
    )
    add(
        parser,
        "--vllm-serve-args",
        "the arguments you start vLLM with: a `vllm serve` command line, or @FILE (a script or "
        "recipe holding one, vLLM's --config YAML, or a Python LLM(...) recipe); "
        "--tensor-parallel-size and --vllm-quantization win over it",
        metavar="ARGS|@FILE",
    )
    add(
        parser,
        "--vllm-load-probe",
        "opt-in: also run the env's own vLLM on the CPU to build each checkpoint's model and "
        "run its weight loader (meta: no weight bytes, any size; load: the real tensors, for "
        "small checkpoints); checkpoint.load-probe says what it did and where the static "
        "verdict differs",
        metavar="MODE",
    )
    # plugins/quant.py
    add(
        parser,
        "--vllm-checkpoint",
        "a quantized checkpoint of any format vLLM loads (compressed-tensors, fp8, mxfp4, "
        "modelopt): a dir or cached HF repo id; read by the quant.* checks",
        multiple=True,
        metavar="PATH|REPO_ID",
    )
    # plugins/gpu.py
    add(
        parser,
        "--reference-checkpoint",
        "the BF16 original(s) of the --modelopt-checkpoint(s), for gpu.vllm-reference: one "
        "for all, or one per checkpoint in the same order",
        multiple=True,
    )
    add(parser, "--vllm-build-log", "build log(s) of vLLM to judge (buildlog tier)", multiple=True)
    add(
        parser,
        "--vllm-probe-timeout",
        f"seconds a gpu probe (one vLLM load) may take; {defaults.PROBE_TIMEOUT:.0f}",
    )
    add(
        parser,
        "--vllm-logprob-tolerance",
        "nats the first-token logprob of a checkpoint may differ from its "
        f"--reference-checkpoint's; {defaults.LOGPROB_TOL}",
    )
    add(
        parser,
        "--vllm-perplexity-exponent",
        "gpu.vllm-perplexity fails above vocab_size ** this (uniform guessing scores "
        f"vocab_size); {defaults.PERPLEXITY_EXPONENT}",
    )
    add(
        parser,
        "--vllm-parallel-loads",
        "how many --modelopt-checkpoint loads share the GPU at once (small models, big GPU); 1",
        metavar="N",
    )
    parser.getgroup(settings.GROUP).addoption(
        "--vllm-fresh-process",
        action="store_true",
        default=False,
        help="load each --modelopt-checkpoint a second time in a fresh process and compare "
        "the tokens (default: one load, two generations in it)",
    )
    # plugins/build.py
    add(
        parser,
        "--build-timeout",
        "seconds one torch extension build may take before it is killed; "
        f"{defaults.BUILD_TIMEOUT:.0f}",
        metavar="SECONDS",
    )
    # plugins/lock.py
    settings.add_flag(
        parser,
        "--vllm-from-lock",
        "judge Pixi envs from pixi.lock even when installed, as before `pixi install`",
        "judge Pixi envs from pixi.lock (true/false)",
    )
    add(
        parser,
        "--pixi-platform",
        "the platform of pixi.lock to judge (linux-64, linux-aarch64...); default: this machine's",
        metavar="PLATFORM",
    )
    # plugins/source.py
    add(
        parser,
        "--vllm-project",
        "the project a venv is installed from (a folder with pyproject.toml, "
        "requirements*.txt or uv.lock, or one such file), for pypi.build-isolation; for a "
        "Pixi or conda env, the requirements installed into it with pip; default: the folder "
        "holding the venv when it has one",
        metavar="PATH",
    )
    # plugins/driver.py
    add(
        parser,
        "--cuda-driver",
        "the NVIDIA driver the GPU nodes run (nvidia-smi's Driver Version, e.g. 550.144.03), "
        "to judge the env against it from a machine without the GPU; default: this machine's "
        "driver (NVML, /proc/driver/nvidia/version)",
        metavar="VERSION",
    )


# Options that list every fixture: they need the area plugins' fixtures registered.
FIXTURE_LISTINGS = ("--fixtures", "--funcargs", "--fixtures-per-test")


def _asks_for_areas(config: pytest.Config) -> bool:
    """Whether this run asks for the area plugins, known before pytest parses its options
    (``pytest_addoption`` runs first): an option of ours on the command line, in
    ``PYTEST_ADDOPTS`` or in the ini file's ``addopts`` (``--opt`` or ``--opt=VALUE``; pytest
    takes no abbreviations), an ini key of ours (in the ini file or ``-o``), an option that
    lists fixtures, or a path into the bundled suite. A wrong "yes" costs only time; a run
    this misses still gets the areas when a test asks for a fixture of ours."""
    import os
    import shlex

    args = [str(a) for a in config.invocation_params.args]
    try:
        args += shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
        args += [str(a) for a in config.getini("addopts")]
    except ValueError:  # pytest says what is wrong with them
        pass
    keys = {*settings.SETTINGS, *settings.FLAGS}
    options = {settings.SETTINGS[k].option for k in settings.SETTINGS}
    options |= {*settings.FLAGS.values(), *FIXTURE_LISTINGS, "--vllm-conformance"}
    options.add("--vllm-fresh-process")  # gpu's plain flag (_add_area_options)
    for arg in args:
        head, value = arg.split("=", 1) if "=" in arg else (arg, None)
        if head in options or (head in keys and value is not None):  # KEY=VALUE after -o
            return True
        for prefix in ("--override-ini=", "-o"):  # --override-ini=KEY=VALUE, -oKEY=VALUE
            if arg.startswith(prefix) and arg[len(prefix) :].split("=", 1)[0] in keys:
                return True
        if _names_the_suite(config, arg):
            return True
    for key in settings.SETTINGS:
        if config.getini(key):
            return True
    for key in settings.FLAGS:
        try:
            if config.getini(key):
                return True
        except (ValueError, pytest.UsageError):  # not true/false: settings.validate says so
            return True
    return False


def _names_the_suite(config: pytest.Config, arg: str) -> bool:
    """``arg`` is the bundled suite or a path in it (run by path, without
    ``--vllm-conformance``)."""
    if "pytest_vllm_env" not in arg and "conformance" not in arg:
        return False  # (the suite lives in pytest_vllm_env/suite, or a checkout's conformance/)
    if arg.startswith("pytest_vllm_env.suite"):  # --pyargs
        return True
    from pathlib import Path

    from pytest_vllm_env.plugins.session import suite_dir

    try:
        suite = suite_dir().resolve()
    except pytest.UsageError:  # not installed
        return False
    path = (Path(str(config.invocation_params.dir)) / arg.split("::", 1)[0]).resolve()
    return path == suite or suite in path.parents


def _register_areas(pluginmanager: pytest.PytestPluginManager, config: object) -> None:
    for name in AREA_PLUGINS:
        _register(pluginmanager, name)
    if isinstance(config, pytest.Config):
        config.stash[_AREAS] = True


@pytest.hookimpl(trylast=True)  # after pytest's own made the session's fixture manager
def pytest_sessionstart(session: pytest.Session) -> None:
    if not session.config.stash.get(_AREAS, False):
        _register_areas_on_first_use(session)


def _register_areas_on_first_use(session: pytest.Session) -> None:
    """Register the area plugins the first time pytest looks up one of our fixtures, or a
    fixture nobody defines (its "fixture not found" error lists every fixture, ours too).

    pytest looks every fixture name up through ``FixtureManager.getfixturedefs``: for a test's
    fixture closure while it collects the test (before ``pytest_generate_tests``, so an area's
    parametrization still applies), and for ``request.getfixturevalue()`` while it runs one.
    pytest offers no hook there, so the manager's method is wrapped on this session's
    instance, and put back once the areas are registered. A pytest without that method gets
    them now, as every run did before.

    Registered after the core, the areas' hooks then run before the core's. In such a run
    that changes nothing: with no option or ini key of ours there is one env and no
    checkpoint to parametrize (pytest_generate_tests), and when lock mode skips a user's
    test before ``verdict`` records it (pytest_runtest_setup), its report still names the
    test by its node id, which is what ``verdict`` records for a test outside the suite (a
    path into the suite registers the areas at start)."""
    config = session.config
    manager = getattr(session, "_fixturemanager", None)
    lookup = getattr(manager, "getfixturedefs", None)
    if manager is None or lookup is None:
        _register_areas(config.pluginmanager, config)
        return

    def getfixturedefs(argname: str, *args: Any, **kwargs: Any) -> Any:
        found = lookup(argname, *args, **kwargs)
        if argname in FIXTURES or (found is None and argname != "request"):
            if vars(manager).get("getfixturedefs") is getfixturedefs:
                del manager.getfixturedefs
            _register_areas(config.pluginmanager, config)
            _below_the_users(session)
            found = lookup(argname, *args, **kwargs)
        return found

    manager.getfixturedefs = getfixturedefs


def _below_the_users(session: pytest.Session) -> None:
    """Give the area fixtures, registered late, the place they had when registered at start:
    below any fixture of the same name that overrides them.

    pytest >= 9.2 keeps a plugin's fixtures and those of a conftest.py in the rootdir on the
    same node (the session's), newest first, and the newest wins
    (``FixtureManager._register_fixture``, ``getfixturedefs``): registered now, ours would
    override the user's. Earlier pytests sort a plugin's fixtures below every conftest's
    themselves (by ``has_location``, or by visibility), and keep no such table."""
    table = getattr(session._fixturemanager, "_arg2node2fixturedefs", None)
    if not isinstance(table, dict):
        return
    for name in FIXTURES:
        defs = table.get(name, {}).get(session)
        if not isinstance(defs, list) or len(defs) < 2:
            continue
        ours = [d for d in defs if getattr(d.func, "__module__", None) in AREA_PLUGINS]
        if ours:
            defs[:] = [d for d in defs if not any(d is o for o in ours)] + ours


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
