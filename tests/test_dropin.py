"""The plugin dropped into someone else's repo: their pytest.ini, their rootdir, their own
packages and options, bad option values; and never a write into the judged env."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.text import lit

ARCH_TEST = """
def test_arch(cuda_archs):
    assert [a.cc for a in cuda_archs] == ["9.0"]
"""


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder that shares only ``/`` with pytest's tmp dirs (where pytest's rootdir lands
    on the env itself when an env path is taken for a test path)."""
    for base in ("/dev/shm", "/var/tmp"):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            folder = Path(tempfile.mkdtemp(prefix="vllm-env-", dir=base))
            break
    else:
        pytest.skip("no writable folder outside /tmp")
    common = os.path.commonpath([folder, tempfile.gettempdir()])
    if common != "/":
        pytest.skip(f"{folder} and the tmp dir share {common}")
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


# -- bug 1: --opt PATH and pytest's rootdir ----------------------------------------------
def test_space_form_that_drops_the_repos_ini_is_a_usage_error(pytester, env_builder):
    env_builder.python()
    pytester.makeini("[pytest]\ncuda_arch = 9.0\n")
    pytester.makepyfile(ARCH_TEST)
    result = pytester.runpytest("--vllm-env", str(env_builder.prefix))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-vllm-env: pytest chose its ini file before it knew that our "
            f"options take a value, and took `--vllm-env {env_builder.prefix}` for a test "
            "path*pytest-dev/pytest#8846*"
            f"no ini file instead of {pytester.path / 'tox.ini'}. Write the option with `=`: "
            f"`--vllm-env={env_builder.prefix}`"
        ]
    )
    # the = form reads the repo's ini
    pytester.runpytest(f"--vllm-env={env_builder.prefix}").assert_outcomes(passed=1)


def test_every_path_option_is_guarded(pytester, env_builder, tmp_path):
    env_builder.python()
    pytester.makeini("[pytest]\ncuda_arch = 9.0\n")
    pytester.makepyfile(ARCH_TEST)
    wheel = tmp_path / "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    manifest = env_builder.manifest()
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for option, value in (
        ("--modelopt-checkpoint", checkpoint),
        ("--pixi-manifest", manifest),
        ("--vllm-wheel", wheel),
    ):
        result = pytester.runpytest(f"--vllm-env={env_builder.prefix}", option, str(value))
        assert result.ret == pytest.ExitCode.USAGE_ERROR, option
        result.stderr.fnmatch_lines([f"*Write the option with `=`: `{option}={value}`"])


def test_space_form_without_any_ini_keeps_the_rootdir(pytester, env_builder):
    env_builder.python()
    pytester.makepyfile("def test_a(vllm_env):\n    pass\n")
    result = pytester.runpytest("--vllm-env", str(env_builder.prefix))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {pytester.path}"])


def test_space_form_never_roots_pytest_in_the_env(pytester, outside_tmp):
    # The env and the working directory share only "/": pytest's rootdir was the env
    # itself, and .pytest_cache (with our fact cache) was written into it.
    env = EnvBuilder(outside_tmp, bare=True)
    env.python()
    pytester.makepyfile("def test_a(vllm_env):\n    pass\n")
    before = sorted(str(p) for p in outside_tmp.rglob("*"))
    result = pytester.runpytest("--vllm-env", str(env.prefix))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {pytester.path}"])
    assert sorted(str(p) for p in outside_tmp.rglob("*")) == before


def test_run_from_inside_the_env_writes_no_cache_into_it(pytester, env_builder):
    # pytest's rootdir is the judged env: its cache (last-failed, node ids) goes elsewhere.
    env_builder.python()
    env_builder.broken_record()
    os.chdir(env_builder.prefix)
    result = pytester.runpytest("--vllm-conformance", "-m", "toolchain", "--vllm-env=.")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            f"rootdir: {env_builder.prefix}",
            f"vllm-env: pytest's cache moved to *: {env_builder.prefix}/.pytest_cache is "
            f"inside the judged env {env_builder.prefix}",
        ]
    )
    assert not (env_builder.prefix / ".pytest_cache").exists()


# -- bugs 3-5: bad option values are usage errors at start -------------------------------
def test_report_path_that_is_a_directory_is_a_usage_error(pytester, env_builder, tmp_path):
    env_builder.python()
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_env", f"--vllm-env={env_builder.prefix}",
        f"--vllm-env-report={tmp_path}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --vllm-env-report {tmp_path}: is a directory; name a file, e.g. *.json"]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_report_inside_the_judged_env_is_a_usage_error(pytester, env_builder):
    env_builder.python()
    target = env_builder.prefix / "report.json"
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_env", f"--vllm-env={env_builder.prefix}",
        f"--vllm-env-report={target}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*inside the judged env {env_builder.prefix}*"])
    assert not target.exists()


@pytest.mark.parametrize("value", ["sm_999", "1.0", "12.5"])
def test_unknown_cuda_arch_is_a_usage_error_naming_the_known_ones(pytester, value):
    # Seen: accepted, then "needs CUDA >= ?" and "use CUDA 12.x" (false) in the verdicts.
    result = pytester.runpytest("--vllm-conformance", f"--cuda-arch={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --cuda-arch: sm_* is not an arch any CUDA release targets; known: 5.0, *12.0*"]
    )


def test_family_and_arch_specific_spellings_are_known(pytester, env_builder):
    env_builder.python()
    pytester.makepyfile("def test_a(cuda_archs):\n    assert len(cuda_archs) == 3\n")
    result = pytester.runpytest(
        f"--vllm-env={env_builder.prefix}", "--cuda-arch=sm_100f", "--cuda-arch=9.0a",
        "--cuda-arch=12.0",
    )  # fmt: skip
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--cuda-tool-timeout", "-5", "is out of range (accepted: seconds > 0 and <= 604800)"),
        ("--vllm-probe-timeout", "0", "is out of range (accepted: seconds > 0 and <= 604800)"),
        ("--build-timeout", "nan", "is out of range (accepted: seconds > 0 and <= 604800)"),
        ("--vllm-logprob-tolerance", "-0.1", "is out of range (accepted: nats >= 0 and <= 100)"),
    ],
)
def test_timeouts_and_tolerances_out_of_range_are_usage_errors(pytester, option, value, says):
    # Seen: --cuda-tool-timeout -5 accepted; nvcc was killed at once and the env was told
    # to "reinstall cuda-nvcc".
    result = pytester.runpytest("--vllm-conformance", f"{option}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {option}: '{value}' {says}"])


def test_arch_verdicts_never_guess_for_unknown_or_dropped_archs(env_builder):
    # TORCH_CUDA_ARCH_LIST is not checked at start: an unknown arch there gets a plain
    # verdict, not "needs CUDA >= ?"; "use CUDA 12.x" only for archs CUDA 13 dropped.
    from pytest_vllm_env.checks.cuda import arch_supported
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.toolkit import NvccRun, ToolkitFacts
    from pytest_vllm_env.tables.archs import parse_arch

    env_builder.python()
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=env_builder.manifest())
    nvcc = NvccRun("/env/bin/nvcc", True, "13.0.88", gpu_archs=("compute_75", "compute_120"))
    t = ToolkitFacts(env.prefix, [], None, nvcc, {}, [], [], [], {}, {}, [], None)
    archs = [parse_arch(a) for a in ("12.5", "7.0", "12.0")]
    unknown, dropped, fine = arch_supported(env, t, archs, "TORCH_CUDA_ARCH_LIST")
    assert unknown.summary == (
        "sm_125 (12.5, from TORCH_CUDA_ARCH_LIST) is not an arch any CUDA release targets"
    )
    assert unknown.fix.startswith("drop 12.5 from TORCH_CUDA_ARCH_LIST; known archs: 5.0, 5.2")
    assert "?" not in unknown.summary + unknown.fix
    assert dropped.summary.endswith("it needs CUDA >= 9.0 and <= 12.x")
    assert dropped.fix == (
        "drop 7.0 from TORCH_CUDA_ARCH_LIST: CUDA 13.0.88 no longer targets it; use CUDA 12.x"
    )
    assert fine.outcome == "passed"


# -- bug 6: an env with no Python ------------------------------------------------------------
def test_env_without_python_gets_no_none_command(pytester, env_builder):
    # Seen: "run `None -c 'import torch; ...'`" as the fix.
    env_builder.conda("cuda-version", "12.8", "0")
    result = pytester.runpytest(
        "--vllm-conformance", "-m", "gpu or build", "-p", "no:randomly",
        f"--vllm-env={env_builder.prefix}", "--cuda-arch=12.0",
        "-k", "not generates and not reference",
    )  # fmt: skip
    text = result.stdout.str()
    assert "None" not in text, text
    result.stdout.fnmatch_lines(
        [
            lit(
                "[gpu.torch-cuda] FAILED: the env has no Python (no bin/python or "
                "bin/python3): torch cannot run in it"
            ),
            "*fix: give the env a Python first (env.python names the line)*",
        ]
    )


# -- bug 7: the download command we name exists ----------------------------------------------
def test_the_download_command_in_fixes_ships_with_huggingface_hub():
    # huggingface_hub 1.0 dropped `huggingface-cli`; today's has `hf` only. (It is no
    # dependency of the plugin any more, readers/hf_cache.py reads the cache; a vLLM env
    # has it, and the test extra installs it for this test.)
    import re
    from importlib.metadata import distribution

    import pytest_vllm_env

    scripts = {
        e.name for e in distribution("huggingface_hub").entry_points if e.group == "console_scripts"
    }
    named = set()
    for module in Path(pytest_vllm_env.__file__).parent.rglob("*.py"):
        named |= set(re.findall(r"`([\w-]+) download\b", module.read_text()))
    assert named and named <= scripts, (named, scripts)


# -- bug 10: the self-tests' downloads use the user's pip config ------------------------------
def test_downloads_honour_the_users_pip_conf(tmp_path):
    # Seen: PIP_CONFIG_FILE=/dev/null was forced, so behind a CA or mirror set in pip.conf
    # the self-tests failed (31 in a fresh shell). Here pip.conf says: no index, a local
    # find-links folder holding the only copy of a wheel PyPI does not have.
    import subprocess
    import sys
    import zipfile

    links = tmp_path / "links"
    links.mkdir()
    name = "pytest_vllm_env_pipconf_probe"
    with zipfile.ZipFile(links / f"{name}-1.0-py3-none-any.whl", "w") as whl:
        info = f"{name}-1.0.dist-info"
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "")
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(
        f"[global]\nno-index = true\nfind-links = {links}\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "XDG_"))}
    environ.update(HOME=str(home), PYTEST_VLLM_ENV_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from fixtures import downloads; print(downloads.wheel('{name}==1.0'))",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(f"{name}-1.0-py3-none-any.whl")


# -- friction ------------------------------------------------------------------------------
def test_header_names_the_env_under_xdist(pytester, env_builder):
    # Seen: no "vllm-env:" header at all with -n N (the controller collects nothing).
    env_builder.python()
    result = pytester.runpytest_subprocess(
        "--vllm-conformance", "-k", "test_env", "-n", "2", f"--vllm-env={env_builder.prefix}"
    )
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines([f"vllm-env: {env_builder.prefix} (--vllm-env, pixi env *"])
    assert result.stdout.str().count(f"vllm-env: {env_builder.prefix} (") == 1


def test_what_to_change_names_the_env_on_each_line(pytester, env_builder):
    cuda = EnvBuilder(env_builder.workspace, "cuda")
    for b in (env_builder, cuda):
        b.python()
        b.broken_record()
    report = pytester.path / "r.json"
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_conda_meta", f"--vllm-env={env_builder.prefix}",
        f"--vllm-env={cuda.prefix}", f"--vllm-env-report={report}",
    )  # fmt: skip
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*vllm-env: what to change*",
            lit("[env.conda-meta] default: 1 conda-meta record(s) unreadable*"),
            "    fix: *",
            lit("[env.conda-meta] cuda: 1 conda-meta record(s) unreadable*"),
        ]
    )
    checks = json.loads(report.read_text())["checks"]
    assert sorted(c["env"] for c in checks) == ["cuda", "default"]


def test_a_users_own_gpu_test_is_not_one_of_our_checks(pytester, env_builder):
    # Seen: the repo's unrelated @pytest.mark.gpu test landed in our report as a failed
    # check with an empty fix.
    env_builder.python()
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpu
        def test_their_kernel():
            assert 1 == 2
        """
    )
    report = pytester.path / "r.json"
    result = pytester.runpytest(
        "--vllm-conformance", ".", "-k", "test_their_kernel or test_env",
        f"--vllm-env={env_builder.prefix}", f"--vllm-env-report={report}",
    )  # fmt: skip
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    checks = json.loads(report.read_text())["checks"]
    assert [c for c in checks if "their_kernel" in c["test"]] == []
    assert {c["area"] for c in checks} == {"env"}


def test_report_test_ids_do_not_depend_on_the_rootdir(pytester, env_builder):
    # Seen: the JSON "test" of the bundled suite changed with the rootdir
    # ("../../site-packages/..." from one repo, another path from the next).
    env_builder.python()
    sub = pytester.mkdir("sub")
    (sub / "pytest.ini").write_text("[pytest]\n")

    def ids(cwd: Path) -> list[str]:
        report = pytester.path / f"{cwd.name}.json"
        os.chdir(cwd)
        pytester.runpytest(
            "--vllm-conformance", "-k", "test_env", f"--vllm-env={env_builder.prefix}",
            f"--vllm-env-report={report}",
        )  # fmt: skip
        return sorted(c["test"] for c in json.loads(report.read_text())["checks"])

    here, there = ids(pytester.path), ids(sub)
    assert here == there
    assert "pytest_vllm_env/suite/test_env.py::test_conda_meta_readable" in here


def test_options_have_one_metavar_per_kind_and_say_repeatable(pytester):
    import re

    help_text = pytester.runpytest("--help").stdout.str()
    section = help_text.split("vLLM environment conformance (pytest-vllm-env):")[1]
    section = section.split("\n\n")[0]
    options = re.findall(r"^  (--[\w-]+)(?:=(\S+))?\s*(.*(?:\n {6,}.*)*)", section, re.M)
    assert len(options) > 15, section
    metavars = {"PATH", "DIR", "PREFIX|NAME", "PATH|REPO_ID", "ARCH", "SECONDS", "NUMBER", "N"}
    metavars |= {"NAME", "PLATFORM"}  # --vllm-node-name, --pixi-platform
    metavars |= {"JSON"}  # --vllm-additional-config
    metavars |= {"VERSION"}  # --cuda-driver
    from pytest_vllm_env.plugins import settings

    for option, metavar, text in options:
        ini = option.lstrip("-").replace("-", "_")
        if ini not in settings.SETTINGS:
            continue  # flags
        assert metavar in metavars, (option, metavar)
        said = "repeatable" in " ".join(text.split())
        assert said == settings.SETTINGS[ini].multiple, (option, text)


def test_fixtures_verbose_shows_whole_documentation(pytester):
    # Seen: the README promised the documentation from `pytest --fixtures`, which prints
    # only each docstring's first paragraph; -v prints it whole.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`pytest --fixtures -v`" in readme
    short = pytester.runpytest("--fixtures").stdout.str()
    whole = pytester.runpytest("--fixtures", "-v").stdout.str()
    second_paragraph = "Records every finding for the terminal summary"  # verdict's
    assert second_paragraph not in short and second_paragraph in whole


def test_pixienv_api_is_documented_in_the_readme():
    # Seen: `vllm_env` is the fixture users get, and PixiEnv's API was documented nowhere.
    import inspect

    from pytest_vllm_env.facts.env import PixiEnv

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    public = [
        name
        for name, member in inspect.getmembers(PixiEnv)
        if not name.startswith("_")
        and name not in ("read",)
        and (inspect.isfunction(member) or isinstance(member, property | functools.cached_property))
    ] + [f.name for f in dataclasses.fields(PixiEnv) if not f.name.startswith("base_")]
    undocumented = [n for n in public if f"`{n}" not in readme and f".{n}" not in readme]
    assert not undocumented, undocumented
    for name, member in inspect.getmembers(PixiEnv):
        if not name.startswith("_") and callable(member) or isinstance(member, property):
            assert inspect.getdoc(member), name


# -- cost when unused ----------------------------------------------------------------------
def test_a_run_that_uses_nothing_of_ours_loads_no_check_library(pytester):
    # Installed, the plugin loads in every pytest run of the user's repo: measured +34 %
    # on a trivial repo while it imported the whole check library (benchmarks/startup.py).
    pytester.makepyfile(
        """
        import sys

        def test_unrelated():
            loaded = sorted(m for m in sys.modules if m.startswith("pytest_vllm_env"))
            print("LOADED", loaded)
            from pytest_vllm_env.plugin import AREA_PLUGINS, CORE_PLUGINS

            allowed = {"pytest_vllm_env", "pytest_vllm_env.plugin",
                       "pytest_vllm_env.plugins.settings", "pytest_vllm_env.defaults",
                       "pytest_vllm_env.plugins", "pytest_vllm_env.text",
                       *CORE_PLUGINS, *AREA_PLUGINS}
            assert set(loaded) <= allowed, set(loaded) - allowed
        """
    )
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)


def test_examples_write_options_with_equals():
    # Every example in the README, the manuals, the device scripts: `--opt=VALUE`
    # (`--opt VALUE` moves pytest's rootdir and ini file: pytest-dev/pytest#8846).
    import re

    from pytest_vllm_env.plugins import settings

    root = Path(__file__).resolve().parents[1]
    options = "|".join(re.escape(s.option) for s in settings.SETTINGS.values())
    spaced = re.compile(rf"(?:{options}) (?=[\w$./~\"'])")
    files = [root / "README.md", *(root / "docs").glob("*.md")]
    files += [*(root / "scripts").rglob("*.sh"), *(root / "fixtures").rglob("*.sh")]

    def command(path: Path, line: str) -> bool:  # not prose ("no --modelopt-checkpoint given")
        text = line.strip()
        return path.suffix == ".sh" or "pytest " in text or text.startswith(("--", "-m "))

    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if command(path, line) and spaced.search(line) and "8846" not in line  # the bug, told
    ]
    assert not found, "\n".join(found)


def test_suite_found_by_path_in_a_checkout_that_is_not_installed(monkeypatch):
    # On the GPU box the checkout is only on PYTHONPATH (no network, no install): the
    # editable mapping to pytest_vllm_env.suite is absent, and --vllm-conformance said "the
    # bundled suite is not installed". The checkout's conformance/ is found by path instead.
    import importlib.util

    import pytest_vllm_env
    from pytest_vllm_env.plugins import session

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pytest_vllm_env.suite" else real(name, *a),
    )
    session.suite_dir.cache_clear()
    try:
        checkout = Path(pytest_vllm_env.__file__).resolve().parent.parent
        assert session.suite_dir() == checkout / "conformance"
    finally:
        session.suite_dir.cache_clear()
