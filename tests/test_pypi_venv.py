"""``pypi.build-isolation`` for a venv installed by pip or uv: F5.1, flash-attn built in an
isolated env without torch ("No module named 'torch'"), predicted from the project's
requirements*.txt, pyproject.toml and uv.lock before any install.

The venvs are laid out as ``python -m venv`` / ``uv venv`` make them (pyvenv.cfg, no
conda-meta; ``uv venv`` writes ``uv = X`` into pyvenv.cfg); the project files are the
reporters' own (flash-attention#1421, LCKV#17, nano-vllm#96/#104); the sdist facts
(flash-attn ships no pyproject.toml, PyPI has no flash-attn wheel) were read from PyPI's real
sdists (docs/facts-additions.md) and are checked for real in the integration test below.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Imported before any pytester run: hermetic_installers patches readers.pip_config and
# readers.uv_config, and a module first imported inside an in-process run is dropped after it
# (facts.pypi would keep calling the dropped copy, which the patch never reaches).
import pytest_vllm_env.facts.pypi  # noqa: F401
from fixtures.text import lit
from fixtures.venvs import hermetic_installers, make_venv
from pytest_vllm_env.readers.venv_project import find_project, read_project
from pytest_vllm_env.tables.sdist_torch import torch_rule

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")
NO_TORCH = "\"ModuleNotFoundError: No module named 'torch'\""
WHEEL = "https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3/flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
NANO_VLLM = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "nano-vllm"
version = "0.2.0"
requires-python = ">=3.10,<3.13"
dependencies = [
    "torch>=2.4.0",
    "triton>=3.0.0",
    "transformers>=4.51.0",
    "flash-attn",
    "xxhash",
]
"""
# uv.lock's entry for an sdist-only release: an sdist and no wheels (as uv writes it).
FLASH_LOCK = """\
version = 1
requires-python = ">=3.10, <3.13"

[[package]]
name = "flash-attn"
version = "{version}"
source = {{ registry = "https://pypi.org/simple" }}
dependencies = [
    {{ name = "einops" }},
    {{ name = "torch" }},
]
sdist = {{ url = "https://files.pythonhosted.org/f/flash_attn-{version}.tar.gz", size = 8000000 }}
"""


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No pip.conf, uv.toml or PIP_/UV_ variable of this machine decides a verdict here."""
    hermetic_installers(monkeypatch, tmp_path / "installer-home")


def run(pytester: pytest.Pytester, prefix: Path, *extra: str):
    return pytester.runpytest(*SUITE, "-k", "build_isolation", f"--vllm-env={prefix}", *extra)


def summaries(pytester: pytest.Pytester, prefix: Path, *extra: str) -> list[str]:
    """The ``pypi.build-isolation`` findings' summaries, from the JSON report (passes too)."""
    out = pytester.path / "report.json"
    run(pytester, prefix, f"--vllm-env-report={out}", *extra)
    data = json.loads(out.read_text())
    return [c["summary"] for c in data["checks"] if c["id"] == "pypi.build-isolation"]


# -- F5.1 with pip: flash-attention#1421 ---------------------------------------------------------
@pytest.mark.parametrize(
    "files,where",
    [
        (
            {"requirements.txt": "torch==2.5.1\nflash-attn==2.7.2.post1\n"},
            "requirements.txt line 2",
        ),
        # the same line reached through an -r include, after a comment and a continuation
        (
            {
                "requirements.txt": "# serving\n-r requirements-gpu.txt\n",
                "requirements-gpu.txt": "torch==2.5.1 \\\n  # pinned\nflash-attn==2.7.2.post1\n",
            },
            "requirements-gpu.txt line 3",
        ),
    ],
)
def test_pip_builds_flash_attn_in_isolation(pytester, tmp_path, files, where):
    """#1421: Python 3.10.15, pip 24.3.1, torch 2.5.1 installed, flash_attn-2.7.2.post1.tar.gz:
    "Getting requirements to build wheel ... error ... No module named 'torch'"."""
    prefix = make_venv(tmp_path / "proj", ("torch", "2.5.1"), python="3.10", files=files)
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[pypi.build-isolation] FAILED: flash-attn ({where}) is built by pip from its "
                "sdist (PyPI has no wheel of it) in an isolated env without torch (pip isolates "
                "every build by default; a requirements file cannot turn it off, and no pip.conf "
                "or PIP_NO_BUILD_ISOLATION here does): its setup.py imports "
                "torch but the sdist declares no build requirements (flash-attention#1421); the "
                f"build fails with {NO_TORCH}"
            ),
            lit(
                f"*fix: install flash-attn without isolation before the rest: `{prefix}/bin/python "
                f'-m pip install "packaging" "ninja" && {prefix}/bin/python -m pip install '
                f'--no-build-isolation "flash-attn==2.7.2.post1"` (pip then keeps it when it '
                f"reads {where}); or replace that line with a prebuilt wheel: `flash-attn @ "
                "<wheel for your python, torch, CUDA and cxx11abi from the project's release "
                "page>`; or turn isolation off for every pip install into this env: "
                f"`no-build-isolation = false` under [install] in {prefix}/pip.conf (pip reads "
                "the value inverted: 0/false/no turn isolation off, 1/true/yes keep it)"
            ),
        ]
    )


def test_uv_pip_without_torch_says_install_torch_first(pytester, tmp_path):
    """LCKV#17: `uv pip install -r requirements.txt` with flash-attn==2.8.1 and no torch:
    uv's hint "`uv pip install torch` into the environment and re-run with
    `--no-build-isolation`"."""
    prefix = make_venv(
        tmp_path / "LCKV",
        uv="0.7.20",
        files={"requirements.txt": "transformers==4.53.2\nflash-attn==2.8.1\n"},
    )
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*flash-attn (requirements.txt line 2) is built by uv from its sdist*",
            lit(
                f"*fix: install torch, then flash-attn without isolation before the rest: `uv pip "
                f'install --python {prefix} "torch" "packaging" "ninja" "setuptools" && uv pip '
                f'install --python {prefix} --no-build-isolation "flash-attn==2.8.1"` (uv then '
                "keeps it when it reads requirements.txt line 2)*"
            ),
        ]
    )


# -- F5.1 with uv sync: nano-vllm#104 ------------------------------------------------------------
def test_uv_sync_builds_flash_attn_in_isolation(pytester, tmp_path):
    """nano-vllm#104: `uv sync` "Failed to build `flash-attn==2.8.3` ... No module named
    'torch'" from a pyproject whose dependencies list torch and flash-attn, no [tool.uv]."""
    prefix = make_venv(
        tmp_path / "nano-vllm",
        files={"pyproject.toml": NANO_VLLM, "uv.lock": FLASH_LOCK.format(version="2.8.3")},
    )
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[pypi.build-isolation] FAILED: flash-attn (pyproject.toml line 13, "
                "[project.dependencies]) is built by uv from its sdist (PyPI has no wheel of "
                "it) in an isolated env without torch: its setup.py imports torch*"
            ),
            lit(
                f"*fix: add to {tmp_path}/nano-vllm/pyproject.toml: "
                "`[tool.uv.extra-build-dependencies]` with `flash-attn = [{ requirement = "
                '"torch", match-runtime = true }]` (uv >= 0.8.5), or `no-build-isolation-package '
                '= ["flash-attn"]` in [tool.uv] (uv >= 0.8.12 installs torch before it)'
            ),
        ]
    )


def test_uv_fix_asks_for_torch_when_the_project_has_none(pytester, tmp_path):
    """A [tool.uv] table but no torch: match-runtime needs torch in the resolution."""
    prefix = make_venv(
        tmp_path / "p",
        files={
            "pyproject.toml": '[project]\nname = "p"\nversion = "0"\n'
            'dependencies = ["flash-attn==2.8.3"]\n\n[tool.uv]\nindex-strategy = "first-index"\n'
        },
    )
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*in [tool.uv] (line 6) (uv >= 0.8.12 installs torch before it); torch must be a "
                'dependency too: add "torch" to [project.dependencies]'
            )
        ]
    )


# -- what works --------------------------------------------------------------------------------
UV_PASSING = {
    # uv docs, "Disabling build isolation": torch, a dependency, is installed first
    "no-build-isolation-package": (
        '[tool.uv]\nno-build-isolation-package = ["flash-attn"]\n',
        "flash-attn (pyproject.toml line 4, [project.dependencies]) builds without isolation "
        '(pyproject.toml line 7 ([tool.uv] no-build-isolation-package = ["flash-attn"])) against '
        "torch from pyproject.toml line 4, [project.dependencies], which uv >= 0.8.12 installs "
        "first*",
    ),
    "no-build-isolation": ("[tool.uv]\nno-build-isolation = true\n", "*builds without isolation*"),
    # uv docs, "Augmenting build dependencies"
    "match-runtime": (
        '[tool.uv.extra-build-dependencies]\nflash-attn = [{ requirement = "torch", '
        "match-runtime = true }]\n",
        "flash-attn builds in isolation with the project's own torch (pyproject.toml line 4, "
        "[project.dependencies]; extra-build-dependencies, match-runtime = true)",
    ),
    "same torch pinned": (
        '[tool.uv.extra-build-dependencies]\nflash-attn = ["torch==2.7.1"]\n',
        "flash-attn builds in isolation with torch==2.7.1 (extra-build-dependencies), the "
        "torch 2.7.1 it runs with",
    ),
    # a prebuilt wheel instead of the sdist
    "wheel source": (
        f'[tool.uv.sources]\nflash-attn = {{ url = "{WHEEL}" }}\n',
        "flash-attn (pyproject.toml line 4, [project.dependencies]) comes from a wheel: "
        "nothing is built",
    ),
}


@pytest.mark.parametrize("setting", list(UV_PASSING), ids=list(UV_PASSING))
def test_uv_settings_that_build_flash_attn_pass(pytester, tmp_path, setting):
    table, summary = UV_PASSING[setting]
    body = (
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["torch==2.7.1", '
        '"flash-attn==2.8.3"]\n\n' + table
    )
    prefix = make_venv(tmp_path / "p", files={"pyproject.toml": body})
    got = summaries(pytester, prefix)
    assert len(got) == 1 and fnmatch.fnmatchcase(got[0], lit(summary)), got


def test_already_installed_flash_attn_passes(pytester, tmp_path):
    """pip keeps an installed release that satisfies the line: nothing is built."""
    prefix = make_venv(
        tmp_path / "p",
        ("torch", "2.5.1"),
        ("flash-attn", "2.7.2.post1"),
        files={"requirements.txt": "flash-attn>=2.7\n"},
    )
    assert summaries(pytester, prefix) == [
        f"flash-attn 2.7.2.post1 is installed in {prefix} already and satisfies "
        "requirements.txt line 1: pip keeps it and builds nothing"
    ]


@pytest.mark.parametrize(
    "files,summary",
    [
        (
            {"requirements.txt": f"flash-attn @ {WHEEL}\n"},
            "flash-attn (requirements.txt line 1) comes from a wheel: nothing is built",
        ),
        # a bare URL: pip names it from the file name
        (
            {"requirements.txt": f"{WHEEL}\n"},
            "flash_attn (requirements.txt line 1) comes from a wheel: nothing is built",
        ),
        (
            {"requirements.txt": "numpy\ntransformers\n"},
            "nothing * declares builds against torch from source here (requirements.txt)",
        ),
    ],
    ids=["named wheel url", "bare wheel url", "not requested"],
)
def test_nothing_to_build_passes(pytester, tmp_path, files, summary):
    prefix = make_venv(tmp_path / "p", files=files)
    got = summaries(pytester, prefix)
    assert len(got) == 1 and fnmatch.fnmatchcase(got[0], lit(summary)), got


def test_uv_lock_with_wheels_passes(pytester, tmp_path):
    """A lock that takes flash-attn from an index with wheels builds nothing."""
    lock = FLASH_LOCK.format(version="2.8.3") + 'wheels = [{ url = "https://x/f.whl" }]\n'
    prefix = make_venv(tmp_path / "p", files={"pyproject.toml": NANO_VLLM, "uv.lock": lock})
    assert summaries(pytester, prefix) == [
        "uv.lock takes flash-attn 2.8.3 from a wheel: nothing is built"
    ]


# -- works, at a cost; and settings that still fail ----------------------------------------------
def test_unpinned_extra_build_torch_warns(pytester, tmp_path):
    """nano-vllm's own fix (pyproject.toml after #104): `flash-attn = ["torch", ...]` builds
    against the index's newest torch, not necessarily the env's."""
    body = NANO_VLLM + (
        '\n[tool.uv.extra-build-dependencies]\nflash-attn = ["torch", "ninja", "packaging", '
        '"psutil"]\n'
    )
    prefix = make_venv(tmp_path / "p", ("torch", "2.7.1"), files={"pyproject.toml": body})
    result = run(pytester, prefix)
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(
        [
            lit(
                "[pypi.build-isolation] flash-attn builds in isolation with `torch` from "
                "[tool.uv.extra-build-dependencies], not necessarily the env's torch 2.7.1*"
            ),
            lit(
                '*fix: write `flash-attn = [{ requirement = "torch", match-runtime = true }]` in '
                "[tool.uv.extra-build-dependencies] of*"
            ),
        ]
    )


def test_match_runtime_without_torch_dependency_fails(pytester, tmp_path):
    """uv#15661: "`torch` was declared as an extra build dependency with `match-runtime =
    true`, but was not found in the resolution"."""
    body = (
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["flash-attn==2.8.3"]\n'
        '[tool.uv.extra-build-dependencies]\nflash-attn = [{ requirement = "torch", '
        "match-runtime = true }]\n"
    )
    prefix = make_venv(tmp_path / "p", files={"pyproject.toml": body})
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*but was not found in the resolution* (uv#15661)"])


def test_no_build_isolation_without_any_torch_fails(pytester, tmp_path):
    body = (
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["flash-attn==2.8.3"]\n'
        '[tool.uv]\nno-build-isolation-package = ["flash-attn"]\n'
    )
    prefix = make_venv(tmp_path / "p", files={"pyproject.toml": body})
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*builds without isolation (pyproject.toml line 6 ([tool.uv] "
                'no-build-isolation-package = ["flash-attn"])), but neither the project nor*'
            )
        ]
    )


def test_another_index_may_serve_a_wheel_warns(pytester, tmp_path):
    """--find-links / another index may hold a flash-attn wheel: not known from files."""
    prefix = make_venv(
        tmp_path / "p",
        files={"requirements.txt": "--find-links https://example.org/wheels\nflash-attn\n"},
    )
    result = run(pytester, prefix)
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(["*unless https://example.org/wheels serves a flash-attn wheel*"])


def test_newest_mamba_ssm_leaves_torch_out_and_fails(pytester, tmp_path):
    """mamba-ssm 2.3.2.post1 (the release an open spec gets) dropped torch from its
    [build-system] on purpose; 2.2.5 lists an unpinned torch (warning, test_pypi.py)."""
    prefix = make_venv(
        tmp_path / "p", ("torch", "2.7.1"), files={"requirements.txt": "mamba-ssm>=2.2\n"}
    )
    result = run(pytester, prefix)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*FAILED: mamba-ssm (requirements.txt line 1) is built by pip from its sdist*: "
                "its setup.py imports torch but its [build-system] leaves torch out on purpose*"
            ),
            lit(
                f'*`{prefix}/bin/python -m pip install "packaging" "ninja" && {prefix}/bin/python '
                '-m pip install --no-build-isolation "mamba-ssm>=2.2"`*'
            ),
        ]
    )


# -- finding the project --------------------------------------------------------------------------
def test_vllm_project_names_a_project_elsewhere(pytester, tmp_path):
    """A venv outside its project (`python -m venv ~/venvs/x`): --vllm-project says where."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "requirements.txt").write_text("flash-attn==2.8.3\n")
    prefix = make_venv(tmp_path / "venvs", name="x")
    result = run(pytester, prefix)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pass --vllm-project=PATH for a venv*"])
    result = run(pytester, prefix, f"--vllm-project={tmp_path / 'proj'}")
    result.assert_outcomes(failed=1)
    # one file of the project
    result = run(pytester, prefix, f"--vllm-project={tmp_path / 'proj' / 'requirements.txt'}")
    result.assert_outcomes(failed=1)


def test_vllm_project_that_is_not_there_is_a_usage_error(pytester, tmp_path):
    prefix = make_venv(tmp_path / "p")
    result = run(pytester, prefix, f"--vllm-project={tmp_path / 'nowhere'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vllm-project=*nowhere: no such file or folder*"])


# -- the reader and the rules, directly ------------------------------------------------------------
def test_requirements_reader_follows_includes_once(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "-r requirements-a.txt\n--requirement=requirements-a.txt\n-c constraints.txt\n"
        "-e git+https://github.com/vllm-project/vllm.git#egg=vllm\n"
        "numpy==2.1 --hash=sha256:abc\nflash-attn==2.8.3 ; sys_platform == 'linux'  # gpu\n"
    )
    (tmp_path / "requirements-a.txt").write_text("-r requirements.txt\ntorch==2.7.1\n")
    (tmp_path / "constraints.txt").write_text("mamba-ssm==2.2.5\n")
    project = read_project(tmp_path)
    got = sorted((d.name, d.spec, d.file.name, d.line) for d in project.declared)
    assert got == sorted(
        [
            ("torch", "==2.7.1", "requirements-a.txt", 2),
            (
                "vllm",
                "git+https://github.com/vllm-project/vllm.git#egg=vllm",
                "requirements.txt",
                4,
            ),
            ("numpy", "==2.1", "requirements.txt", 5),
            ("flash-attn", "==2.8.3", "requirements.txt", 6),
        ]
    )


def test_project_is_the_venvs_parent_only_with_project_files(tmp_path):
    prefix = make_venv(tmp_path / "p")
    assert find_project(prefix) is None
    (tmp_path / "p" / "uv.lock").write_text("version = 1\n")
    assert find_project(prefix) == tmp_path / "p"


@pytest.mark.parametrize(
    "name,spec,how",
    [
        ("flash-attn", "", "undeclared"),
        ("flash-attn", "==2.7.2.post1", "undeclared"),
        # mamba-ssm: no pyproject.toml (2.2.2), unpinned torch (2.2.3.post2 .. 2.3.1), torch
        # left out on purpose (2.3.2.post1); an open spec is judged at the newest release read
        ("mamba-ssm", "==2.2.2", "undeclared"),
        ("mamba-ssm", "==2.2.5", "unpinned"),
        ("mamba-ssm", "<2.3", "unpinned"),
        ("mamba-ssm", "", "undeclared"),
        ("causal-conv1d", "==1.5.0.post8", "undeclared"),
        ("causal-conv1d", ">=1.5", "unpinned"),
        ("torch-scatter", "", "undeclared"),
    ],
)
def test_torch_rule_by_release(name, spec, how):
    assert torch_rule(name, spec)[0] == how  # type: ignore[index]


# -- the real thing ------------------------------------------------------------------------------
@pytest.mark.integration
def test_real_pip_fails_as_predicted(pytester, tmp_path):
    """Real pip, real PyPI sdist: the requirements.txt the check fails makes pip fail with
    the error it names (no torch in the isolated build env), and the sdist has no
    pyproject.toml (what the rule says)."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "requirements.txt").write_text("flash-attn==2.7.2.post1\n")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")], check=True
    )
    prefix = project / ".venv"
    run(pytester, prefix).assert_outcomes(failed=1)
    download = tmp_path / "dl"
    real = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(download),
            "-r",
            str(project / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert real.returncode != 0
    assert "No module named 'torch'" in real.stdout + real.stderr
    assert "Getting requirements to build wheel" in real.stdout + real.stderr
