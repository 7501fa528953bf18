"""What the installed plugin costs a pytest run that does not use it (issue 21), and that a run
that does use it gets everything as before.

The plugin loads in every pytest run of every repo where it is installed. The area plugins
(``plugin.AREA_PLUGINS``: their imports, and pytest parsing their fixtures) were half of what
it cost a trivial run (benchmarks/startup.py), so they are registered only by a run that
uses them: at start when the run gives an option or ini key of ours, lists fixtures or runs
the bundled suite; else when pytest first looks up a fixture of ours (a drop-in user's
test). These tests hold both sides.
"""

from __future__ import annotations

import importlib

import pytest
from _pytest.fixtures import getfixturemarker

from pytest_vllm_env import plugin

LAUNCH_DEFAULT = "assert vllm_launch.tensor_parallel_size == 1"


def test_a_trivial_run_imports_no_area_plugin(pytester):
    # One passing test and no option of ours (a repo that merely has the plugin installed):
    # the core is there, no area plugin is imported, from start to the last summary line.
    # Each of them was, before issue 21 (and findings.py, by the terminal summary).
    pytester.makeconftest(
        """
        import sys

        def pytest_unconfigure(config):
            loaded = sorted(m for m in sys.modules if m.startswith("pytest_vllm_env"))
            with open("loaded.txt", "w") as out:
                out.write("\\n".join(loaded))
        """
    )
    pytester.makepyfile("def test_unrelated():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    loaded = set((pytester.path / "loaded.txt").read_text().split())
    assert "pytest_vllm_env.plugins.session" in loaded  # the plugin was on
    assert not loaded & set(plugin.AREA_PLUGINS), sorted(loaded & set(plugin.AREA_PLUGINS))
    assert "pytest_vllm_env.findings" not in loaded


# -- a drop-in user's test gets the area fixtures without any option ------------------------
DROP_IN = {
    "asked by the test": ("", "def test_a(vllm_launch):\n    " + LAUNCH_DEFAULT + "\n"),
    "asked by the user's fixture": (
        "import pytest\n\n@pytest.fixture\ndef tp(vllm_launch):\n"
        "    return vllm_launch.tensor_parallel_size\n",
        "def test_a(tp):\n    assert tp == 1\n",
    ),
    "asked by getfixturevalue": (
        "",
        "def test_a(request):\n    vllm_launch = request.getfixturevalue('vllm_launch')\n"
        "    " + LAUNCH_DEFAULT + "\n",
    ),
    "asked in a class, beside a core fixture": (
        "",
        "class TestA:\n    def test_a(self, vllm_fact_cache, vllm_logprob_tolerance):\n"
        "        assert vllm_logprob_tolerance == 0.5\n",
    ),
}


@pytest.mark.parametrize("conftest, test", DROP_IN.values(), ids=DROP_IN)
def test_a_users_test_gets_an_area_fixture_without_options(pytester, conftest, test):
    if conftest:
        pytester.makeconftest(conftest)
    pytester.makepyfile(test)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_usefixtures_of_an_area_fixture_runs_it(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.usefixtures("modelopt_checkpoint")
        def test_a():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no --modelopt-checkpoint given*"])


@pytest.mark.parametrize("first", [True, False], ids=["overridden first", "overridden last"])
def test_a_users_override_of_an_area_fixture_still_wins(pytester, first):
    # A conftest.py in the rootdir that overrides one of our fixtures: pytest >= 9.2 keeps its
    # fixtures and a plugin's on the same node, the newest winning; the areas, registered
    # while the test's fixtures are looked up, must still sit below the user's.
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def vllm_launch():
            return "mine"
        """
    )
    args = "vllm_launch, vllm_logprob_tolerance" if first else "vllm_logprob_tolerance, vllm_launch"
    pytester.makepyfile(f"def test_a({args}):\n    assert vllm_launch == 'mine'\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_a_users_fixture_that_extends_ours_gets_ours(pytester):
    # The override asks for the fixture it overrides: pytest needs ours in the chain when it
    # resolves the test's fixtures.
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def vllm_launch(vllm_launch):
            return ("mine", vllm_launch.tensor_parallel_size)
        """
    )
    pytester.makepyfile("def test_a(vllm_launch):\n    assert vllm_launch == ('mine', 1)\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_a_misspelled_fixture_is_told_beside_ours(pytester):
    # pytest's "fixture 'x' not found" lists every fixture there is; ours were listed.
    pytester.makepyfile("def test_a(vllm_lanch):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'vllm_lanch' not found*", "*available fixtures:*"])
    assert "vllm_launch" in result.stdout.str()


# -- listings ------------------------------------------------------------------------------
def test_fixtures_lists_every_fixture_of_ours_with_its_documentation(pytester):
    pytester.makepyfile("def test_a():\n    pass\n")
    text = pytester.runpytest_subprocess("--fixtures").stdout.str()
    missing = sorted(name for name in plugin.FIXTURES if f"\n{name} " not in text)
    assert not missing, missing
    assert "The env's CUDA toolkit" in text  # cuda_toolkit's docstring, first paragraph
    verbose = pytester.runpytest_subprocess("--fixtures", "-v").stdout.str()
    assert "nvcc in the env" in verbose  # ... and the rest of it with -v


def test_the_lock_marker_is_known_in_every_run(pytester):
    # plugins/lock.py's marker, declared by plugin.py: `--strict-markers` must not fail a
    # test that carries it in a run that registers no area plugin.
    pytester.makepyfile("import pytest\n\n@pytest.mark.vllm_lock\ndef test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("--strict-markers")
    result.assert_outcomes(passed=1)
    markers = pytester.runpytest_subprocess("--markers").stdout.str()
    assert "@pytest.mark.vllm_lock: the check judges pixi.lock too" in markers


# -- what registers the areas at start -----------------------------------------------------
def _areas_registered(config: pytest.Config) -> bool:
    return all(config.pluginmanager.get_plugin(name) is not None for name in plugin.AREA_PLUGINS)


EAGER = {
    "an option": (["--vllm-strict"], ""),
    "an option with a value": (["--cuda-tool-timeout=40"], ""),
    "an option in the space form": (["--vllm-node-name", "n1"], ""),
    "-o an ini key": (["-o", "vllm_strict=true"], ""),
    "-o joined": (["-ovllm_node_name=n1"], ""),
    "an ini key": ([], "[pytest]\nvllm_node_name = n1\n"),
    "an on/off ini key": ([], "[pytest]\nvllm_static = true\n"),
    "addopts": ([], "[pytest]\naddopts = --vllm-static\n"),
    "the suite": (["--vllm-conformance"], ""),
    "--fixtures": (["--fixtures"], ""),
}


@pytest.mark.parametrize("args, ini", EAGER.values(), ids=EAGER)
def test_a_run_that_asks_for_us_gets_the_areas_before_the_core(pytester, args, ini):
    if ini:
        pytester.makeini(ini)
    config = pytester.parseconfigure(*args)
    assert _areas_registered(config)
    # registered before the core, as always: the core's hooks run first (pluggy calls the
    # plugin registered last first), so `verdict` records a check before lock mode skips it
    order = [impl.plugin_name for impl in config.hook.pytest_runtest_setup.get_hookimpls()]
    lock, verdict = "pytest_vllm_env.plugins.lock", "pytest_vllm_env.plugins.verdict"
    assert order.index(lock) < order.index(verdict), order


def test_pytest_addopts_asks_too(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_ADDOPTS", "--vllm-env-report=out.json")
    assert _areas_registered(pytester.parseconfigure())


def test_a_path_into_the_bundled_suite_asks_too(pytester):
    from pytest_vllm_env.plugins.session import suite_dir

    suite_file = suite_dir() / "test_lock.py"
    assert _areas_registered(pytester.parseconfigure(f"{suite_file}::test_x"))


@pytest.mark.parametrize("args", [[], ["-q", "tests/test_x.py"], ["-o", "xfail_strict=true"]])
def test_a_run_that_does_not_ask_registers_no_area_at_start(pytester, args):
    config = pytester.parseconfigure(*args)
    assert not any(config.pluginmanager.get_plugin(name) for name in plugin.AREA_PLUGINS)
    assert config.pluginmanager.get_plugin("pytest_vllm_env.plugins.session") is not None


# -- the tables plugin.py keeps ------------------------------------------------------------
def test_the_fixture_table_names_every_fixture_of_ours():
    # plugin.FIXTURES decides which looked-up names register the areas: a fixture missing
    # from it would still be found only when something else registered them first.
    defined = set()
    for name in plugin.CORE_PLUGINS + plugin.AREA_PLUGINS:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            marker = getfixturemarker(value)
            if marker is not None:
                defined.add(marker.name or attr)
    assert not defined - plugin.FIXTURES, f"add to plugin.FIXTURES: {defined - plugin.FIXTURES}"
    assert not plugin.FIXTURES - defined, f"no plugin defines {plugin.FIXTURES - defined}"


def test_no_area_plugin_declares_its_own_options():
    # Registered after pytest parsed its options, an area plugin's pytest_addoption would be
    # replayed (it is a historic hook) and declare its options a second time.
    declaring = [
        name
        for name in plugin.AREA_PLUGINS
        if hasattr(importlib.import_module(name), "pytest_addoption")
    ]
    assert not declaring
