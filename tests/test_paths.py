"""One path rule for every path option (issue 20): pytest's own.

A relative path given on the command line is relative to the directory pytest was started
in; one written in an ini file is relative to that ini file's directory (pytest does the
same for its ``paths`` ini values). Seen before: ``--cmake`` and ``--vllm-source`` were
resolved against the working directory, ``--reference-checkpoint`` and
``--vllm-build-log`` against the rootdir, the rest against the invocation dir or the
rootdir; with ``-c sub/pytest.ini`` (or ``--rootdir``) an ini value then named another file.

Every test here starts pytest in one folder (``run/``), with the ini file in another
(``cfg/``) and the rootdir in a third (``root/``), so that each base gives another answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder

# The probe prints what each path option became, read through the fixtures and functions
# the suite's checks use (not through settings.py alone: the wiring is what is tested).
PROBE = """
import json

from pytest_vllm_env.plugins.modelopt import checkpoint_path
from pytest_vllm_env.plugins.report import report_path
from pytest_vllm_env.plugins.source import project_path


def test_probe(request, vllm_env, vllm_wheels, vllm_build_logs, reference_checkpoints,
               vllm_source_dir, cmake_for_env, modelopt_checkpoint_specs, vllm_checkpoint_specs):
    config = request.config
    seen = {
        "vllm_env": str(vllm_env.prefix),
        "pixi_manifest": str(vllm_env.manifest_path),
        "vllm_wheel": [str(p) for p in vllm_wheels],
        "vllm_build_log": [str(p) for p in vllm_build_logs],
        "reference_checkpoint": list(reference_checkpoints),
        "vllm_source": str(vllm_source_dir),
        "cmake": str(cmake_for_env),
        "modelopt_checkpoint": [str(checkpoint_path(config, s)) for s in modelopt_checkpoint_specs],
        "vllm_checkpoint": [
            str(checkpoint_path(config, s, "vllm_checkpoint")) for s in vllm_checkpoint_specs
        ],
        "vllm_project": str(project_path(config)),
        "vllm_env_report": str(report_path(config, "out/%N.json")),
    }
    print("SEEN " + json.dumps(seen))
"""

# option -> the relative value given, and the file or folder it names
VALUES = {
    "vllm_env": "env",
    "pixi_manifest": "ws/pixi.toml",
    "vllm_wheel": "wheels/*.whl",
    "vllm_build_log": "logs/*.log",
    "reference_checkpoint": "ref",
    "vllm_source": "vllm-src",
    "cmake": "tools/cmake",
    "modelopt_checkpoint": "ckpt",
    "vllm_checkpoint": "ckpt",
    "vllm_project": "project",
    "vllm_env_report": "out/r.json",
}


def _layout(base: Path) -> None:
    """Everything the values name, under ``base`` (and nowhere else)."""
    EnvBuilder(base, "env", bare=True)
    (base / "ws").mkdir()
    (base / "ws" / "pixi.toml").write_text(
        '[workspace]\nname = "ws"\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n'
    )
    for folder in ("wheels", "logs", "ref", "vllm-src", "tools", "ckpt", "project"):
        (base / folder).mkdir()
    (base / "wheels" / "vllm-0.26.0-cp38-abi3-manylinux_2_31_x86_64.whl").write_bytes(b"")
    (base / "logs" / "build.log").write_text("")
    # a CMake and a vLLM checkout as the options' checks at start want them (issue 21)
    (base / "tools" / "cmake").write_text("#!/bin/sh\necho 'cmake version 3.31.6'\n")
    (base / "tools" / "cmake").chmod(0o755)
    (base / "vllm-src" / "pyproject.toml").write_text("")
    (base / "project" / "requirements.txt").write_text("vllm\n")


def _expected(base: Path) -> dict[str, object]:
    return {
        "vllm_env": str(base / "env"),
        "pixi_manifest": str(base / "ws" / "pixi.toml"),
        "vllm_wheel": [str(base / "wheels" / "vllm-0.26.0-cp38-abi3-manylinux_2_31_x86_64.whl")],
        "vllm_build_log": [str(base / "logs" / "build.log")],
        "reference_checkpoint": [str(base / "ref")],
        "vllm_source": str(base / "vllm-src"),
        "cmake": str(base / "tools" / "cmake"),
        "modelopt_checkpoint": [str(base / "ckpt")],
        "vllm_checkpoint": [str(base / "ckpt")],
        "vllm_project": str(base / "project"),
    }


@pytest.fixture
def dirs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """``run/`` (pytest starts here), ``cfg/`` (the ini file), ``root/`` (--rootdir), and the
    probe test in ``tests/``; every path option's target laid out under ``run/`` and
    ``cfg/`` alike, so that only the base decides which is found."""
    out = {name: pytester.path / name for name in ("run", "cfg", "root", "tests")}
    for folder in out.values():
        folder.mkdir()
    _layout(out["run"])
    _layout(out["cfg"])
    (out["tests"] / "test_probe.py").write_text(PROBE)
    monkeypatch.chdir(out["run"])
    return out


def _seen(result: pytest.RunResult) -> dict[str, object]:
    result.assert_outcomes(passed=1)
    line = next(x for x in result.outlines if "SEEN " in x)
    return json.loads(line.split("SEEN ", 1)[1])


def _options() -> list[str]:
    return [f"--{ini.replace('_', '-')}={value}" for ini, value in VALUES.items()]


def test_command_line_paths_are_relative_to_the_invocation_dir(pytester, dirs):
    # The ini file lies elsewhere and the rootdir elsewhere again: neither is the base.
    (dirs["cfg"] / "pytest.ini").write_text("[pytest]\n")
    result = pytester.runpytest(
        *_options(),
        f"--config-file={dirs['cfg'] / 'pytest.ini'}",
        f"--rootdir={dirs['root']}",
        "-s",
        "-p",
        "no:cacheprovider",
        str(dirs["tests"] / "test_probe.py"),
    )
    seen = _seen(result)
    report = seen.pop("vllm_env_report")
    assert seen == _expected(dirs["run"])
    assert Path(str(report)).parent == dirs["run"] / "out"
    assert (dirs["run"] / "out" / "r.json").is_file()


def test_ini_paths_are_relative_to_the_ini_files_dir(pytester, dirs):
    # pytest.ini in cfg/, given with -c from run/, with the rootdir in root/: the values are
    # cfg/'s (before: some the rootdir's, some the working directory's).
    lines = "\n".join(f"{ini} = {value}" for ini, value in VALUES.items())
    (dirs["cfg"] / "pytest.ini").write_text(f"[pytest]\n{lines}\n")
    result = pytester.runpytest(
        f"--config-file={dirs['cfg'] / 'pytest.ini'}",
        f"--rootdir={dirs['root']}",
        "-s",
        "-p",
        "no:cacheprovider",
        str(dirs["tests"] / "test_probe.py"),
    )
    seen = _seen(result)
    report = seen.pop("vllm_env_report")
    assert seen == _expected(dirs["cfg"])
    assert Path(str(report)).parent == dirs["cfg"] / "out"
    assert (dirs["cfg"] / "out" / "r.json").is_file()
    assert not (dirs["run"] / "out").exists()


def test_override_ini_values_are_relative_to_the_ini_files_dir(pytester, dirs):
    # `-o key=value` is an ini value: pytest resolves its own `paths` ini values given so
    # against the ini file's dir too.
    (dirs["cfg"] / "pytest.ini").write_text("[pytest]\n")
    result = pytester.runpytest(
        f"--config-file={dirs['cfg'] / 'pytest.ini'}",
        f"--rootdir={dirs['root']}",
        *(f"-o={ini}={value}" for ini, value in VALUES.items()),
        "-s",
        "-p",
        "no:cacheprovider",
        str(dirs["tests"] / "test_probe.py"),
    )
    seen = _seen(result)
    seen.pop("vllm_env_report")
    assert seen == _expected(dirs["cfg"])


def test_home_is_expanded_in_every_path_option(pytester, dirs, monkeypatch):
    # `--vllm-env=~/env` reaches us unexpanded (the shell expands `~` only at a word's start)
    monkeypatch.setenv("HOME", str(dirs["root"]))
    _layout(dirs["root"])
    (dirs["cfg"] / "pytest.ini").write_text("[pytest]\n")
    result = pytester.runpytest(
        *(f"--{ini.replace('_', '-')}=~/{value}" for ini, value in VALUES.items()),
        f"--config-file={dirs['cfg'] / 'pytest.ini'}",
        "-s",
        "-p",
        "no:cacheprovider",
        str(dirs["tests"] / "test_probe.py"),
    )
    seen = _seen(result)
    seen.pop("vllm_env_report")
    assert seen == _expected(dirs["root"])


def test_a_pixi_env_name_is_not_taken_for_a_path(pytester, dirs):
    # `--vllm-env=gpu` names an env of the manifest, unless a folder of that name is there
    ws = dirs["cfg"] / "ws"
    (ws / "pixi.toml").write_text(
        '[workspace]\nname = "ws"\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n'
        "[feature.gpu.dependencies]\n[environments]\ngpu = ['gpu']\n"
    )
    EnvBuilder(ws, "gpu")
    (dirs["cfg"] / "pytest.ini").write_text("[pytest]\nvllm_env = gpu\npixi_manifest = ws\n")
    dirs["tests"].joinpath("test_probe.py").write_text(
        "def test_probe(vllm_env):\n    print('SEEN', vllm_env.prefix, vllm_env.name)\n"
    )
    result = pytester.runpytest(
        f"--config-file={dirs['cfg'] / 'pytest.ini'}", "-s", str(dirs["tests"] / "test_probe.py")
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*SEEN {ws / '.pixi' / 'envs' / 'gpu'} gpu"])


def test_help_states_the_rule_for_every_path_option(pytester):
    from pytest_vllm_env.plugins import settings

    help_text = pytester.runpytest("--help").stdout.str()
    section = help_text.split("vLLM environment conformance (pytest-vllm-env):")[1]
    section = section.split("\n\n")[0]
    options = re.findall(r"^  (--[\w-]+)(?:=(\S+))?\s*(.*(?:\n {6,}.*)*)", section, re.M)
    paths = {"PATH", "DIR", "PREFIX|NAME", "PATH|REPO_ID"}
    for option, metavar, text in options:
        ini = option.lstrip("-").replace("-", "_")
        said = settings.PATH_RULE in " ".join(text.split())
        # a path option is in PATH_SETTINGS (so resolve_path accepts it), and says the rule
        assert (metavar in paths) == (ini in settings.PATH_SETTINGS), (option, metavar)
        assert said == (ini in settings.PATH_SETTINGS), (option, text)
    assert set(settings.PATH_SETTINGS) == set(VALUES)  # every one of them is tested above


def test_resolve_path_refuses_a_setting_that_is_no_path(pytester):
    from pytest_vllm_env.plugins import settings

    config = pytester.parseconfig()
    with pytest.raises(ValueError, match="not a path setting"):
        settings.resolve_path(config, "cuda_arch", "12.0")
