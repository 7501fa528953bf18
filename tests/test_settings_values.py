"""Every option and ini key checked at start (issue 21): a value out of range, of the wrong
type or empty is a usage error (exit 4) naming the setting and what it accepts, never an
OverflowError deep in a test, a ValueError in every test, or a quiet fall-back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from pytest_vllm_env.plugins import settings

SUITE = ("--vllm-conformance", "-p", "no:randomly")


def _help_options(pytester: pytest.Pytester) -> dict[str, str]:
    """Our options and their metavar, as ``--help`` shows them."""
    text = pytester.runpytest("--help").stdout.str()
    block = text.split("vLLM environment conformance (pytest-vllm-env):", 1)[1].split("\n\n")[0]
    return dict(re.findall(r"^  (--[a-z-]+)(?:=(\S+))?", block, re.M))


def _usage_error(result: pytest.RunResult, says: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([f"ERROR: {says}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_every_numeric_option_has_a_range(pytester):
    numeric = {o for o, m in _help_options(pytester).items() if m in ("SECONDS", "NUMBER", "N")}
    assert numeric == {"--" + ini.replace("_", "-") for ini in settings.NUMBER_RANGES}


@pytest.mark.parametrize("ini", sorted(settings.NUMBER_RANGES))
def test_every_number_beyond_its_range_is_a_usage_error(pytester, ini):
    # --cuda-tool-timeout=1e12 was an OverflowError in selectors, in every test that ran nvcc
    option = "--" + ini.replace("_", "-")
    accepted = settings.NUMBER_RANGES[ini].text()
    result = pytester.runpytest(*SUITE, f"{option}=1e12")
    _usage_error(result, f"{option}: '1e12' is out of range (accepted: {accepted})")
    result = pytester.runpytest(*SUITE, "-o", f"{ini}=-1")
    _usage_error(result, f"{option}: '-1' is out of range (accepted: {accepted})")


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("--cuda-tool-timeout", "604800", None),
        ("--cuda-tool-timeout", "604801", "seconds > 0 and <= 604800"),
        ("--vllm-parallel-loads", "2.5", "a whole number >= 1 and <= 64"),
        ("--vllm-parallel-loads", "64", None),
        ("--vllm-perplexity-exponent", "1e308", "an exponent > 0 and <= 4"),
        ("--vllm-logprob-tolerance", "0", None),
    ],
)
def test_range_edges(pytester, option, value, accepted):
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:randomly", f"{option}={value}")
    if accepted is None:
        result.assert_outcomes(passed=1)
    else:
        _usage_error(result, f"{option}: '{value}' is out of range (accepted: {accepted})")


def test_a_number_of_the_wrong_type_in_the_ini_file_names_the_range(pytester):
    pytester.makeini("[pytest]\nbuild_timeout = soon\n")
    result = pytester.runpytest(*SUITE)
    _usage_error(
        result, "--build-timeout: 'soon' is not a number (accepted: seconds > 0 and <= 604800)"
    )


@pytest.mark.parametrize("ini", ["vllm_strict", "vllm_from_lock"])
def test_an_on_off_ini_key_that_is_neither_is_a_usage_error(pytester, ini):
    # vllm_strict = maybe was a ValueError in each of 35 tests
    assert ini in settings.FLAGS
    pytester.makeini(f"[pytest]\n{ini} = maybe\n")
    result = pytester.runpytest(*SUITE)
    _usage_error(
        result,
        f"ini key {ini} ({pytester.path / 'tox.ini'}): invalid truth value 'maybe'; use one "
        f"of true/false, yes/no, on/off, 1/0, y/n, t/f (or the option {settings.FLAGS[ini]})",
    )


def test_an_on_off_ini_key_that_is_one_still_works(pytester):
    pytester.makeini("[pytest]\nvllm_strict = yes\n")
    pytester.makepyfile("def test_a(request):\n    assert request.config.getini('vllm_strict')\n")
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


def test_every_option_given_an_empty_value_is_a_usage_error(pytester):
    # --vllm-env= judged pytest's own interpreter instead, without a word
    valued = {o for o, m in _help_options(pytester).items() if m}
    assert valued == {s.option for s in settings.SETTINGS.values()}
    for option in sorted(valued):
        for value in ("", " ", ","):
            result = pytester.runpytest(*SUITE, f"{option}={value}")
            _usage_error(result, f"{option}: an empty value; give *; or leave the option out")


def test_empty_env_value_names_what_to_give(pytester):
    result = pytester.runpytest(*SUITE, "--vllm-env=")
    _usage_error(
        result,
        "--vllm-env: an empty value; give a prefix, or a Pixi env name when no such path "
        "exists and it has no '/'; or leave the option out",
    )


def test_the_same_env_given_twice_is_judged_once(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.manifest()
    link = Path(pytester.path / "same")
    link.symlink_to(env_builder.prefix)
    report = pytester.path / "r.json"
    once = pytester.runpytest(
        *SUITE, "-m", "toolchain", "-k", "test_env", f"--vllm-env={env_builder.prefix}",
        f"--vllm-env-report={report}",
    )  # fmt: skip
    ids_once = sorted((c["test"], c.get("env")) for c in json.loads(report.read_text())["checks"])
    result = pytester.runpytest(
        *SUITE, "-m", "toolchain", "-k", "test_env", f"--vllm-env={env_builder.prefix}",
        f"--vllm-env={env_builder.prefix}/", f"--vllm-env={link}", "--vllm-env=default",
        f"--pixi-manifest={env_builder.workspace / 'pixi.toml'}", f"--vllm-env-report={report}",
    )  # fmt: skip
    assert result.parseoutcomes() == once.parseoutcomes()
    checks = json.loads(report.read_text())["checks"]
    assert sorted((c["test"], c.get("env")) for c in checks) == ids_once


def test_two_different_envs_are_still_both_judged(pytester, env_builder: EnvBuilder):
    other = EnvBuilder(env_builder.workspace, "cuda")
    for b in (env_builder, other):
        b.python()
    result = pytester.runpytest(
        *SUITE, "-m", "toolchain", "-k", "test_env", f"--vllm-env={env_builder.prefix}",
        f"--vllm-env={other.prefix}", "-v",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["*test_conda_meta_readable?default? PASSED*"])
    result.stdout.fnmatch_lines(["*test_conda_meta_readable?cuda? PASSED*"])


def test_a_marker_name_the_suite_does_not_know_is_a_usage_error(pytester):
    result = pytester.runpytest(*SUITE, "-m", "toolchian")
    _usage_error(
        result,
        "-m 'toolchian': toolchian is no marker of the conformance suite (it would deselect "
        "every check); its markers: toolchain, gpu, build, integration, vllm_check, vllm_lock",
    )


@pytest.mark.parametrize("expr", ["toolchain", "not gpu and not build", "vllm_check(id='x')"])
def test_known_marker_names_pass_the_start(pytester, expr):
    result = pytester.runpytest(*SUITE, "-m", expr, "--collect-only", "-q")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)


def test_an_expression_that_selects_nothing_says_so(pytester):
    result = pytester.runpytest(*SUITE, "-m", "gpu and toolchain")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(
        [
            "pytest-vllm-env: -m 'gpu and toolchain' selects no check of the conformance "
            "suite (all * deselected); its tiers: -m toolchain, -m gpu, -m build, "
            "-m integration"
        ]
    )


def test_a_user_marker_is_fine_beside_the_users_own_tests(pytester):
    pytester.makeini("[pytest]\nmarkers =\n    slow: mine\n")
    pytester.makepyfile("import pytest\n@pytest.mark.slow\ndef test_a():\n    pass\n")
    mine = "test_a_user_marker_is_fine_beside_the_users_own_tests.py"
    result = pytester.runpytest("-p", "no:randomly", "-m", "slow", mine, "--vllm-conformance")
    result.assert_outcomes(passed=1)


def test_a_wrong_name_in_p_no_says_the_plugin_stays_on(pytester):
    pytester.makepyfile("def test_a():\n    pass\n")
    for wrong in ("pytest_vllm_env", "pytest-vllm-env"):
        result = pytester.runpytest("-p", "no:randomly", "-p", f"no:{wrong}")
        result.stdout.fnmatch_lines(
            [f"*-p no:{wrong} names no plugin, so pytest-vllm-env stays on; turn it off with "
             "-p no:vllm_env*"]
        )  # fmt: skip
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:vllm_env", "--vllm-conformance")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the option is gone with the plugin
    result.stderr.fnmatch_lines(["*unrecognized arguments: --vllm-conformance*"])


def test_readme_names_the_plugin_by_its_entry_point_name():
    root = Path(__file__).parents[1]
    entry = re.search(
        r"\[project.entry-points.pytest11\]\n(\w+) =", (root / "pyproject.toml").read_text()
    )
    assert entry and entry.group(1) == "vllm_env"
    assert "`-p no:vllm_env`" in (root / "README.md").read_text()
