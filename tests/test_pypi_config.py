"""``pypi.build-isolation`` read from what really decides whether pip or uv isolates a build:
pip.conf files and ``PIP_NO_BUILD_ISOLATION`` (inverted!), ``uv.toml`` files and
``UV_NO_BUILD_ISOLATION``, the activation env of a Pixi env, requirement markers.

Each case reproduces F5.1 (flash-attention#1421: pip 24.3.1, torch 2.5.1, Python 3.10,
``flash_attn-2.7.2.post1.tar.gz`` -> "No module named 'torch'"; LCKV#17 / nano-vllm#104 with
uv) or its fix through one route. What each route does was measured with real pip 22.3.1,
24.3.1, 25.0.1 to 26.3 and real uv 0.13.9 on a tiny sdist whose setup.py imports torch (the
integration test at the end re-runs that against our verdicts; docs/facts-additions.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Imported before any pytester run: hermetic_installers patches readers.pip_config and
# readers.uv_config, and a module first imported inside an in-process run is dropped after it
# (facts.pypi would keep calling the dropped copy, which the patch never reaches).
import pytest_vllm_env.facts.pypi  # noqa: F401
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from fixtures.venvs import InstallerHome, hermetic_installers, make_venv

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")
NO_TORCH = "\"ModuleNotFoundError: No module named 'torch'\""
INVERTED = "pip reads the value inverted: 0/false/no turn isolation off, 1/true/yes keep it"
# flash-attention#1421's env: pip 24.3.1 and setuptools (no wheel: a fresh venv's), torch 2.5.1
REPORTER = (("torch", "2.5.1"), ("pip", "24.3.1"), ("setuptools", "75.3.0"))
REQS = {"requirements.txt": "flash-attn==2.7.2.post1\n"}
NANO_VLLM = """\
[project]
name = "nano-vllm"
version = "0.2.0"
requires-python = ">=3.10,<3.13"
dependencies = ["torch>=2.4.0", "flash-attn"]
"""


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> InstallerHome:
    """pip/uv configuration under the test's tmp dir only."""
    return hermetic_installers(monkeypatch, tmp_path / "installer-home")


def run(pytester: pytest.Pytester, prefix: Path, *extra: str):
    return pytester.runpytest(*SUITE, "-k", "build_isolation", f"--vllm-env={prefix}", *extra)


def findings(pytester: pytest.Pytester, prefix: Path, *extra: str) -> list[tuple[str, str]]:
    """``(outcome, summary)`` of every ``pypi.build-isolation`` finding (JSON report)."""
    out = pytester.path / "report.json"
    run(pytester, prefix, f"--vllm-env-report={out}", *extra)
    data = json.loads(out.read_text())
    return [
        (c["outcome"], c["summary"]) for c in data["checks"] if c["id"] == "pypi.build-isolation"
    ]


def reporter_venv(tmp_path: Path, *dists: tuple[str, str], files=REQS, python="3.10") -> Path:
    return make_venv(tmp_path / "proj", *(dists or REPORTER), python=python, files=files)


# -- pip: PIP_NO_BUILD_ISOLATION, inverted --------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "false", "no", "off", "FALSE", "n"])
def test_pip_variable_that_turns_isolation_off_passes(pytester, tmp_path, home, monkeypatch, value):
    """Real pip 26.3 and 24.3.1: PIP_NO_BUILD_ISOLATION=0/false/no/off builds with the env's
    torch (the option is `--no-build-isolation`, store_false: the value lands inverted)."""
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", value)
    prefix = reporter_venv(tmp_path)
    assert findings(pytester, prefix) == [
        (
            "passed",
            "flash-attn (requirements.txt line 1) builds without isolation "
            f"(PIP_NO_BUILD_ISOLATION={value} (set in the shell that runs pytest)) against the "
            "env's torch 2.5.1 (a source build compiles CUDA kernels unless its setup.py finds "
            "a prebuilt wheel)",
        )
    ]


@pytest.mark.parametrize("value", ["1", "true", "yes", "on"])
def test_pip_variable_that_reads_like_off_keeps_isolation_and_fails(
    pytester, tmp_path, home, monkeypatch, value
):
    """PIP_NO_BUILD_ISOLATION=1 reads as "no build isolation: yes" but keeps it on (measured):
    #1421 fails the same."""
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", value)
    prefix = reporter_venv(tmp_path)
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[pypi.build-isolation] FAILED: flash-attn (requirements.txt line 1) is built by "
                "pip from its sdist (PyPI has no wheel of it) in an isolated env without torch "
                f"(PIP_NO_BUILD_ISOLATION={value} (set in the shell that runs pytest) keeps "
                f"isolation on: {INVERTED}): its setup.py imports torch*; the build fails with "
                f"{NO_TORCH}"
            ),
            lit(
                "*fix: `export PIP_NO_BUILD_ISOLATION=0` in the shell or job that runs the "
                f"install ({INVERTED}); or install flash-attn without isolation before the rest*"
            ),
        ]
    )


def test_pip_variable_that_is_no_boolean_stops_pip(pytester, tmp_path, home, monkeypatch):
    """Real pip: "2 is not a valid value for no-build-isolation option, please specify a
    boolean value like yes/no, true/false or 1/0 instead." and nothing is installed."""
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "2")
    prefix = reporter_venv(tmp_path)
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*FAILED: flash-attn (requirements.txt line 1) is never built: "
                "PIP_NO_BUILD_ISOLATION=2 (set in the shell that runs pytest): pip stops every "
                'command with "2 is not a valid value for no-build-isolation option, please '
                'specify a boolean value like yes/no, true/false or 1/0 instead."'
            ),
            lit(
                "*fix: `export PIP_NO_BUILD_ISOLATION=0` in the shell or job that runs the "
                f"install ({INVERTED}), or remove it"
            ),
        ]
    )


# -- pip: pip.conf at every place pip reads -------------------------------------------------------
def site(prefix: Path) -> Path:
    return prefix / "pip.conf"


PLACES = {
    # the env's own file: sys.prefix/pip.conf
    "site": lambda home, prefix: site(prefix),
    # $XDG_CONFIG_HOME/pip/pip.conf and the legacy ~/.pip/pip.conf
    "user": lambda home, prefix: home.config_home / "pip" / "pip.conf",
    "user legacy": lambda home, prefix: Path(os.environ["HOME"]) / ".pip" / "pip.conf",
    # $XDG_CONFIG_DIRS/pip/pip.conf, then /etc/pip.conf
    "global xdg": lambda home, prefix: home.xdg_dirs / "pip" / "pip.conf",
    "global etc": lambda home, prefix: home.etc / "pip.conf",
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("section", ["global", "install"])
def test_pip_conf_that_turns_isolation_off_passes(pytester, tmp_path, home, place, section):
    prefix = reporter_venv(tmp_path)
    path = home.write(PLACES[place](home, prefix), f"[{section}]\nno-build-isolation = false\n")
    assert findings(pytester, prefix) == [
        (
            "passed",
            f"flash-attn (requirements.txt line 1) builds without isolation ({path} line 2 "
            f"([{section}] no-build-isolation = false)) against the env's torch 2.5.1 (a "
            "source build compiles CUDA kernels unless its setup.py finds a prebuilt wheel)",
        )
    ]


def test_pip_conf_true_keeps_isolation_and_the_fix_names_the_line(pytester, tmp_path, home):
    prefix = reporter_venv(tmp_path)
    path = home.write(site(prefix), "[global]\n# off, I thought\nno-build-isolation = true\n")
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*without torch ({path} line 3 ([global] no-build-isolation = true) keeps "
                f"isolation on: {INVERTED}): *"
            ),
            lit(f"*fix: change {path} line 3 to `no-build-isolation = false` ({INVERTED}); or *"),
        ]
    )


@pytest.mark.parametrize(
    "files,env,note",
    [
        # [wheel] is read by `pip wheel` only
        (
            {"site": "[wheel]\nno-build-isolation = false\n"},
            {},
            "{site} line 2 ([wheel] no-build-isolation = false) applies to `pip wheel` only",
        ),
        # the variable beats every file
        (
            {"site": "[install]\nno-build-isolation = false\n"},
            {"PIP_NO_BUILD_ISOLATION": "1"},
            "{site} line 2 ([install] no-build-isolation = false) is overridden by "
            "PIP_NO_BUILD_ISOLATION=1 (set in the shell that runs pytest)",
        ),
        # /dev/null: no file at all
        (
            {"site": "[global]\nno-build-isolation = 0\n"},
            {"PIP_CONFIG_FILE": os.devnull},
            "PIP_CONFIG_FILE=/dev/null: pip reads no config file at all",
        ),
        # an existing PIP_CONFIG_FILE hides the user files
        (
            {"user": "[global]\nno-build-isolation = no\n", "custom": "[global]\ntimeout = 60\n"},
            {"PIP_CONFIG_FILE": "{custom}"},
            "PIP_CONFIG_FILE={custom} exists, so pip skips the user files*",
        ),
        # [global] of a later file does not beat [install] of an earlier one, both ways
        (
            {
                "global xdg": "[install]\nno-build-isolation = true\n",
                "site": "[global]\nno-build-isolation = false\n",
            },
            {},
            "{site} line 2 ([global] no-build-isolation = false) is overridden by {global xdg} "
            "line 2 ([install] no-build-isolation = true)",
        ),
    ],
    ids=["wheel section", "variable wins", "devnull", "config file hides user", "section order"],
)
def test_pip_settings_that_do_not_decide_are_named(
    pytester, tmp_path, home, monkeypatch, files, env, note
):
    """Measured with real pip 26.3: each of these still fails #1421's way; the summary says
    why the setting the user wrote did not count."""
    prefix = reporter_venv(tmp_path)
    places = {**PLACES, "custom": lambda home, prefix: tmp_path / "custom.conf"}
    paths = {k: home.write(places[k](home, prefix), v) for k, v in files.items()}
    names = {k.replace(" ", "_"): str(v) for k, v in paths.items()}
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**names))
    note = note.replace("{global xdg}", "{global_xdg}").format(**names)
    ((outcome, summary),) = findings(pytester, prefix)
    assert outcome == "failed"
    assert f"; {note.rstrip('*')}" in summary, summary


def test_pip_conf_section_beats_global_across_files(pytester, tmp_path, home):
    """Measured: [install] in the global file beats [global] in the env's own file."""
    prefix = reporter_venv(tmp_path)
    home.write(home.xdg_dirs / "pip" / "pip.conf", "[install]\nno-build-isolation = off\n")
    home.write(site(prefix), "[global]\nno-build-isolation = on\n")
    ((outcome, summary),) = findings(pytester, prefix)
    assert outcome == "passed" and "([install] no-build-isolation = off)" in summary


def test_pip_conf_that_does_not_parse_stops_pip(pytester, tmp_path, home):
    """Real pip: "File contains no section headers." and nothing is installed."""
    prefix = reporter_venv(tmp_path)
    path = home.write(site(prefix), "no-build-isolation = false\n")
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(f'*is never built: {path}: "File contains no section headers." (pip stops*'),
            lit(f"*fix: fix or remove {path}: the installer cannot read it"),
        ]
    )


def test_pip_without_isolation_needs_torch_installed_first(pytester, tmp_path, home, monkeypatch):
    """flash-attn's README: install torch first. pip builds the sdist while it resolves, so a
    torch on the line above is not there yet."""
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    prefix = reporter_venv(
        tmp_path,
        ("pip", "24.3.1"),
        files={"requirements.txt": "torch==2.5.1\nflash-attn==2.7.2.post1\n"},
    )
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*FAILED: flash-attn (requirements.txt line 2) builds without isolation "
                "(PIP_NO_BUILD_ISOLATION=0 (set in the shell that runs pytest)), but "
                f"{prefix} has no torch: pip builds flash-attn while it resolves, before it "
                "installs torch from requirements.txt line 1*"
            ),
            lit(
                f'*fix: install torch first: `{prefix}/bin/python -m pip install "torch==2.5.1"`, '
                "then run the install again"
            ),
        ]
    )


# -- pip < 25.3: the legacy setup.py path ---------------------------------------------------------
@pytest.mark.parametrize(
    "pip,wheel,env,outcome",
    [
        ("24.3.1", True, {}, "passed"),  # setuptools and wheel: legacy path, no isolation
        ("24.3.1", False, {}, "failed"),  # #1421: no wheel in the venv: PEP 517, isolated
        ("25.3", True, {}, "failed"),  # pip 25.3 removed the legacy path
        ("24.3.1", True, {"PIP_USE_PEP517": "1"}, "failed"),  # forced PEP 517: isolated
    ],
    ids=["24.3.1 legacy", "24.3.1 no wheel", "25.3", "24.3.1 use-pep517"],
)
def test_pip_legacy_path_builds_in_the_env(
    pytester, tmp_path, home, monkeypatch, pip, wheel, env, outcome
):
    """Measured with real pip 24.3.1, 25.2 and 25.3 on a setup.py-only sdist."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dists = [("torch", "2.5.1"), ("pip", pip), ("setuptools", "75.3.0")]
    if wheel:
        dists.append(("wheel", "0.45.1"))
    prefix = reporter_venv(tmp_path, *dists)
    ((got, summary),) = findings(pytester, prefix)
    assert got == outcome, summary
    if outcome == "passed":
        assert summary.startswith(
            "flash-attn (requirements.txt line 1) builds without isolation (pip 24.3.1's legacy "
            "setup.py path: setuptools and wheel are in the env and the sdist has no "
            "pyproject.toml; pip >= 25.3 isolates it) against the env's torch 2.5.1"
        ), summary


# -- a requirements file cannot say it ------------------------------------------------------------
@pytest.mark.parametrize(
    "text,line",
    [
        ("--no-build-isolation\nflash-attn==2.7.2.post1\n", "--no-build-isolation"),
        (
            "flash-attn==2.7.2.post1 --no-build-isolation\n",
            "flash-attn==2.7.2.post1 --no-build-isolation",
        ),
    ],
    ids=["own line", "after the requirement"],
)
def test_no_build_isolation_in_requirements_stops_pip(pytester, tmp_path, home, text, line):
    """Real pip 24.3.1 and 26.3: "ERROR: Invalid requirement: --no-build-isolation ... pip:
    error: no such option: --no-build-isolation"."""
    prefix = reporter_venv(tmp_path, files={"requirements.txt": text})
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*FAILED: requirements.txt line 1 (`{line}`): pip stops before installing "
                'anything with "ERROR: Invalid requirement ... no such option: '
                '--no-build-isolation": a requirements file cannot turn build isolation off'
            ),
            lit(
                f"*fix: remove `--no-build-isolation` from {prefix.parent}/requirements.txt line 1 "
                f"and pass it on the command line (`{prefix}/bin/python -m pip install "
                "--no-build-isolation -r requirements.txt`, torch installed first), or set "
                f"`no-build-isolation = false` under [install] in {prefix}/pip.conf*"
            ),
        ]
    )


# -- Pixi and conda: the activation env, and what pixi itself ignores -----------------------------
def pixi_env(tmp_path: Path, activation: str, deps: str = "") -> EnvBuilder:
    b = EnvBuilder(tmp_path / "ws")
    b.python("3.12")
    b.dist("torch", "2.7.1")
    b.dist("pip", "26.3")
    b.manifest(f'[dependencies]\npython = "3.12.*"\n{deps}\n[activation.env]\n{activation}\n')
    (tmp_path / "ws" / "requirements.txt").write_text("flash-attn==2.8.3\n")
    return b


def test_pixi_activation_env_turns_pips_isolation_off(pytester, tmp_path, home):
    """`pixi run pip install -r requirements.txt` runs with the manifest's activation env."""
    b = pixi_env(tmp_path, 'PIP_NO_BUILD_ISOLATION = "0"')
    got = findings(pytester, b.prefix, f"--vllm-project={tmp_path / 'ws' / 'requirements.txt'}")
    assert got[-1] == (
        "passed",
        "flash-attn (requirements.txt line 1) builds without isolation (PIP_NO_BUILD_ISOLATION=0 "
        "(set in [activation.env] in pixi.toml)) against the env's torch 2.7.1 (a source build "
        "compiles CUDA kernels unless its setup.py finds a prebuilt wheel)",
    )


def test_pixi_activation_env_that_keeps_isolation_names_the_table(pytester, tmp_path, home):
    b = pixi_env(tmp_path, 'PIP_NO_BUILD_ISOLATION = "true"')
    result = run(pytester, b.prefix, f"--vllm-project={tmp_path / 'ws' / 'requirements.txt'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*(PIP_NO_BUILD_ISOLATION=true (set in [activation.env] in pixi.toml) keeps "
                "isolation on: *"
            ),
            lit('*fix: set `PIP_NO_BUILD_ISOLATION = "0"` in [activation.env]*'),
        ]
    )


def test_pixi_itself_ignores_uv_and_pip_variables(pytester, tmp_path, home, monkeypatch):
    """F5.2: pixi builds [pypi-dependencies] with its own uv settings (pixi_install_pypi reads
    only [pypi-options] no-build-isolation; uv parses UV_NO_BUILD_ISOLATION in its CLI only):
    the variables change nothing, and the summary says so."""
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    b = pixi_env(
        tmp_path, 'UV_NO_BUILD_ISOLATION = "1"', '[pypi-dependencies]\nflash-attn = "==2.8.3"'
    )
    result = run(pytester, b.prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*FAILED: flash-attn ([pypi-dependencies]) is built from its sdist in an isolated "
                f"env without torch: *; the build fails with {NO_TORCH}; PIP_NO_BUILD_ISOLATION=0 "
                "(set in the shell that runs pytest) does not reach pixi: pixi builds with its "
                "own uv settings and reads only no-build-isolation in [pypi-options] of "
                "pixi.toml; UV_NO_BUILD_ISOLATION=1 (set in [activation.env] in pixi.toml) does "
                "not reach pixi*"
            ),
            lit('*fix: add `no-build-isolation = ["flash-attn"]` to [pypi-options] in pixi.toml*'),
        ]
    )


# -- uv: uv.toml at every place uv reads, UV_* ----------------------------------------------------
def uv_venv(tmp_path: Path, *dists: tuple[str, str], files: dict[str, str] | None = None) -> Path:
    """nano-vllm#104: `uv sync` of a pyproject listing torch and flash-attn."""
    return make_venv(
        tmp_path / "nano-vllm",
        *dists,
        uv="0.8.13",
        files={"pyproject.toml": NANO_VLLM, **(files or {})},
    )


UV_PLACES = {
    "project": lambda home, root: root / "uv.toml",
    "parent": lambda home, root: root.parent / "uv.toml",
    "user": lambda home, root: home.config_home / "uv" / "uv.toml",
    "system xdg": lambda home, root: home.xdg_dirs / "uv" / "uv.toml",
    "system etc": lambda home, root: home.etc / "uv" / "uv.toml",
}


@pytest.mark.parametrize("place", list(UV_PLACES))
def test_uv_toml_that_turns_isolation_off_passes(pytester, tmp_path, home, place):
    """Measured with uv 0.13.9 (`uv lock` and `uv pip install`): each place is read."""
    prefix = uv_venv(tmp_path)
    path = home.write(
        UV_PLACES[place](home, prefix.parent), 'no-build-isolation-package = ["flash-attn"]\n'
    )
    ((outcome, summary),) = findings(pytester, prefix)
    assert outcome == "passed", summary
    shown = "uv.toml" if place == "project" else str(path)
    assert summary.startswith(
        "flash-attn (pyproject.toml line 5, [project.dependencies]) builds without isolation "
        f'({shown} line 1 (no-build-isolation-package = ["flash-attn"])) against torch from '
        "pyproject.toml line 5, [project.dependencies], which uv >= 0.8.12 installs first"
    ), summary


def test_uv_toml_masks_tool_uv_and_the_fix_names_uv_toml(pytester, tmp_path, home):
    """uv 0.13.9 warns "The following fields from `[tool.uv]` will be ignored in favor of the
    `uv.toml` file" and builds isolated (measured): the project's own setting is lost."""
    body = NANO_VLLM + '\n[tool.uv]\nno-build-isolation-package = ["flash-attn"]\n'
    prefix = make_venv(
        tmp_path / "p",
        files={"pyproject.toml": body, "uv.toml": 'index-strategy = "first-index"\n'},
    )
    root = prefix.parent
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*FAILED: flash-attn (pyproject.toml line 5, [project.dependencies]) is built by "
                f"uv from its sdist*; the build fails with {NO_TORCH}; {root}/uv.toml masks "
                f"[tool.uv] of {root}/pyproject.toml: uv ignores its no-build-isolation-package "
                "(uv reads uv.toml when both are in one folder)"
            ),
            lit(
                f"*fix: add to {root}/uv.toml (uv reads it, not [tool.uv] of "
                f"{root}/pyproject.toml): "
                '`[extra-build-dependencies]` with `flash-attn = [{ requirement = "torch", '
                "match-runtime = true }]` (uv >= 0.8.5), or `no-build-isolation-package = "
                '["flash-attn"]` at its top (uv >= 0.8.12 installs torch before it)'
            ),
        ]
    )


@pytest.mark.parametrize(
    "files,env,outcome",
    [
        ({}, {"UV_NO_BUILD_ISOLATION": "1"}, "passed"),
        ({}, {"UV_NO_BUILD_ISOLATION": "yes"}, "passed"),
        # not inverted, unlike pip: 0 is "not given", the default isolates
        ({}, {"UV_NO_BUILD_ISOLATION": "0"}, "failed"),
        # ... and false does not beat a file that turns isolation off
        ({"project": "no-build-isolation = true\n"}, {"UV_NO_BUILD_ISOLATION": "false"}, "passed"),
        # UV_CONFIG_FILE replaces every other file
        (
            {"user": "no-build-isolation = true\n", "custom": "[pip]\n"},
            {"UV_CONFIG_FILE": "{custom}"},
            "failed",
        ),
        ({"custom": "no-build-isolation = true\n"}, {"UV_CONFIG_FILE": "{custom}"}, "passed"),
        ({"user": "no-build-isolation = true\n"}, {"UV_NO_CONFIG": "1"}, "failed"),
        ({"system xdg": "no-build-isolation = true\n"}, {"UV_NO_SYSTEM_CONFIG": "1"}, "failed"),
        # the first file that sets the boolean wins; false cancels every package list
        (
            {
                "project": 'no-build-isolation-package = ["flash-attn"]\n',
                "user": "no-build-isolation = false\n",
            },
            {},
            "failed",
        ),
        (
            {"project": "no-build-isolation = false\n", "user": "no-build-isolation = true\n"},
            {},
            "failed",
        ),
        # [pip] is for `uv pip` only, not for uv sync/lock
        ({"project": "[pip]\nno-build-isolation = true\n"}, {}, "failed"),
        # a parent's uv.toml is not read past a pyproject that has [tool.uv]
        (
            {
                "parent": "no-build-isolation = true\n",
                "tool.uv": "[tool.uv]\nindex-strategy = 'first-index'\n",
            },
            {},
            "failed",
        ),
    ],
    ids=[
        "env 1",
        "env yes",
        "env 0",
        "env false vs file",
        "config file replaces",
        "config file reads",
        "no config",
        "no system config",
        "false cancels packages",
        "project beats user",
        "pip table",
        "pyproject stops search",
    ],
)
def test_uv_precedence(pytester, tmp_path, home, monkeypatch, files, env, outcome):
    """uv's precedence as its docs and source say, each checked with real uv 0.13.9."""
    prefix = uv_venv(tmp_path)
    root = prefix.parent
    places = {**UV_PLACES, "custom": lambda home, root: tmp_path / "custom.toml"}
    paths = {}
    for key, text in files.items():
        if key == "tool.uv":
            (root / "pyproject.toml").write_text(NANO_VLLM + "\n" + text)
            continue
        paths[key] = home.write(places[key](home, root), text)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**{k: str(v) for k, v in paths.items()}))
    ((got, summary),) = findings(pytester, prefix)
    assert got == outcome, summary


def test_uv_variable_that_is_no_boolean_stops_uv(pytester, tmp_path, home, monkeypatch):
    """uv 0.13.9: "error: invalid value '' for '--no-build-isolation': value was not a
    boolean"."""
    monkeypatch.setenv("UV_NO_BUILD_ISOLATION", "")
    prefix = uv_venv(tmp_path)
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*is never built: UV_NO_BUILD_ISOLATION= (set in the shell that runs pytest): uv "
                "stops with \"error: invalid value '' for '--no-build-isolation': value was not a "
                'boolean"*'
            ),
            lit(
                "*fix: `export UV_NO_BUILD_ISOLATION=1` in the shell or job that runs the install "
                "(uv: 1/true turn isolation off), or remove it"
            ),
        ]
    )


def test_pip_variable_does_not_reach_uv(pytester, tmp_path, home, monkeypatch):
    """nano-vllm#104 with the pip habit: uv has no PIP_* variables."""
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    prefix = uv_venv(tmp_path)
    ((outcome, summary),) = findings(pytester, prefix)
    assert outcome == "failed"
    assert summary.endswith(
        "; PIP_NO_BUILD_ISOLATION=0 (set in the shell that runs pytest) is not read by uv"
    ), summary


def test_uv_has_no_package_variable(pytester, tmp_path, home, monkeypatch):
    """uv 0.13.9: UV_NO_BUILD_ISOLATION_PACKAGE=flash-attn changed nothing (measured; `uv pip
    install --help` lists no variable for --no-build-isolation-package)."""
    monkeypatch.setenv("UV_NO_BUILD_ISOLATION_PACKAGE", "flash-attn")
    prefix = uv_venv(tmp_path)
    ((outcome, summary),) = findings(pytester, prefix)
    assert outcome == "failed"
    assert (
        "; UV_NO_BUILD_ISOLATION_PACKAGE=flash-attn (set in the shell that runs pytest) is no uv "
        "variable: uv reads no-build-isolation-package only from its files and command line"
    ) in summary, summary


def test_uv_false_that_cancels_the_package_list_is_named(pytester, tmp_path, home):
    prefix = uv_venv(
        tmp_path,
        files={
            "uv.toml": 'no-build-isolation = false\nno-build-isolation-package = ["flash-attn"]\n'
        },
    )
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*in an isolated env without torch (uv.toml line 1 (no-build-isolation = false)): "
                "*; uv.toml line 1 (no-build-isolation = false) isolates every build and cancels "
                'uv.toml line 2 (no-build-isolation-package = ["flash-attn"])*'
            ),
            lit(
                f"*fix: remove `no-build-isolation = false` from {prefix.parent}/uv.toml line 1 "
                "(no-build-isolation = false); then add to *"
            ),
        ]
    )


def test_uv_pip_reads_the_pip_table(pytester, tmp_path, home):
    """`uv pip install -r requirements.txt` into a uv venv reads [pip] of uv.toml first."""
    prefix = make_venv(
        tmp_path / "LCKV",
        ("torch", "2.7.1"),
        uv="0.7.20",
        files={
            "requirements.txt": "flash-attn==2.8.1\n",
            "uv.toml": "no-build-isolation = false\n[pip]\nno-build-isolation = true\n",
        },
    )
    assert findings(pytester, prefix) == [
        (
            "passed",
            "flash-attn (requirements.txt line 1) builds without isolation (uv.toml line 3 ([pip] "
            "no-build-isolation = true)) against the env's torch 2.7.1 (a source build compiles "
            "CUDA kernels unless its setup.py finds a prebuilt wheel)",
        )
    ]


def test_uv_extra_build_dependencies_from_uv_toml(pytester, tmp_path, home):
    prefix = uv_venv(
        tmp_path,
        files={
            "uv.toml": '[extra-build-dependencies]\nflash-attn = [{ requirement = "torch", '
            "match-runtime = true }]\n"
        },
    )
    ((outcome, summary),) = findings(pytester, prefix)
    assert (outcome, summary) == (
        "passed",
        "flash-attn builds in isolation with the project's own torch (pyproject.toml line 5, "
        "[project.dependencies]; extra-build-dependencies, match-runtime = true)",
    )


# -- markers: only what is installed here is judged -----------------------------------------------
@pytest.mark.parametrize(
    "line,python,outcome",
    [
        ('flash-attn==2.8.3 ; sys_platform == "darwin"', "3.12", "passed"),
        ('flash-attn==2.8.3 ; sys_platform == "linux"', "3.12", "failed"),
        ('flash-attn==2.8.3; python_version < "3.11"', "3.12", "passed"),
        ('flash-attn==2.8.3; python_version < "3.11"', "3.10", "failed"),
        ('flash-attn==2.8.3; platform_machine == "aarch64"', "3.12", "passed"),
    ],
)
def test_requirement_markers_decide_what_is_judged(pytester, tmp_path, home, line, python, outcome):
    """A line whose marker is false for the env's Python and this machine is not installed."""
    prefix = make_venv(tmp_path / "p", python=python, files={"requirements.txt": line + "\n"})
    if os.uname().machine == "aarch64" and "aarch64" in line:
        outcome = "failed"
    ((got, summary),) = findings(pytester, prefix)
    assert got == outcome, summary
    if outcome == "passed":
        assert "flash-attn (requirements.txt line 1) is only for `" in summary
        assert f"not installed here (Python {python}, linux " in summary


def test_marker_picks_the_wheel_line_for_this_platform(pytester, tmp_path, home):
    url = (
        "https://example.org/flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
    )
    lines = (
        f'flash-attn @ {url} ; sys_platform == "linux"\n'
        'flash-attn==2.8.3 ; sys_platform == "darwin"\n'
    )
    prefix = make_venv(tmp_path / "p", files={"requirements.txt": lines})
    assert findings(pytester, prefix) == [
        ("passed", "flash-attn (requirements.txt line 1) comes from a wheel: nothing is built")
    ]


def test_pixi_pyproject_dependency_marker(pytester, tmp_path, home):
    b = EnvBuilder(tmp_path / "ws")
    b.python("3.12")
    b.manifest(
        '[tool.pixi.dependencies]\npython = "3.12.*"\n',
        kind="pyproject",
    )
    text = (tmp_path / "ws" / "pyproject.toml").read_text()
    text = text.replace(
        'version = "0.1.0"\n',
        'version = "0.1.0"\ndependencies = [\'flash-attn==2.8.3; sys_platform == "win32"\']\n',
        1,
    )
    (tmp_path / "ws" / "pyproject.toml").write_text(text)
    assert findings(pytester, b.prefix) == [
        ("passed", "no PyPI dependency here builds against torch from source")
    ]
    (tmp_path / "ws" / "pyproject.toml").write_text(text.replace("win32", "linux"))
    ((outcome, _),) = findings(pytester, b.prefix)
    assert outcome == "failed"


@pytest.mark.parametrize(
    "files,table",
    [
        ({}, "[pip] in {root}/uv.toml"),
        # a new uv.toml would mask this [tool.uv]: the fix keeps to the pyproject
        (
            {
                "pyproject.toml": '[project]\nname = "p"\nversion = "0"\n[tool.uv]\n'
                'index-strategy = "first-index"\n'
            },
            "[tool.uv.pip] in {root}/pyproject.toml",
        ),
    ],
    ids=["no uv config", "pyproject tool.uv"],
)
def test_uv_pip_fix_names_a_table_uv_reads(pytester, tmp_path, home, files, table):
    """LCKV#17 (`uv pip install -r requirements.txt`, flash-attn 2.8.1, torch installed)."""
    prefix = make_venv(
        tmp_path / "LCKV",
        ("torch", "2.7.1"),
        uv="0.7.20",
        files={"requirements.txt": "flash-attn==2.8.1\n", **files},
    )
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    where = table.format(root=prefix.parent)
    result.stdout.fnmatch_lines(
        [lit(f'*; or `no-build-isolation-package = ["flash-attn"]` under {where}')]
    )


def test_pip_files_in_pip_config_debug_order(tmp_path, home):
    """`pip config debug` (pip 26.3) lists global (each $XDG_CONFIG_DIRS, then /etc), user
    (~/.pip, then $XDG_CONFIG_HOME), site, then PIP_CONFIG_FILE; a PIP_CONFIG_FILE that does not
    exist leaves the user files in (measured: user `no-build-isolation = 0` still counted)."""
    from pytest_vllm_env.readers.pip_config import read_pip_config

    prefix = tmp_path / "venv"
    env = {
        "HOME": str(tmp_path / "h"),
        "XDG_CONFIG_DIRS": f"{tmp_path}/a:{tmp_path}/b",
        "XDG_CONFIG_HOME": str(tmp_path / "c"),
        "PIP_CONFIG_FILE": str(tmp_path / "missing.conf"),
    }
    home.write(tmp_path / "c" / "pip" / "pip.conf", "[global]\nno-build-isolation = 0\n")
    config = read_pip_config(prefix, env)
    assert [(f.kind, f.path) for f in config.files] == [
        ("global", tmp_path / "a" / "pip" / "pip.conf"),
        ("global", tmp_path / "b" / "pip" / "pip.conf"),
        ("global", home.etc / "pip.conf"),
        ("user", tmp_path / "h" / ".pip" / "pip.conf"),
        ("user", tmp_path / "c" / "pip" / "pip.conf"),
        ("site", prefix / "pip.conf"),
        ("env", tmp_path / "missing.conf"),
    ]
    setting = config.effective("no-build-isolation")
    assert setting is not None and setting.flag() is False and setting.line == 2
