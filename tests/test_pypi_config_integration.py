"""Opt-in (``--run-integration``): real pip and real uv decide build isolation the way
``pypi.build-isolation`` predicts from pip.conf, uv.toml, ``PIP_*``/``UV_*`` and requirements
files.

The judged venvs are real: ``python -m venv`` with the reporter's pip 24.3.1 (flash-attention
#1421) and ``uv venv`` (LCKV#17), each holding setuptools and a stand-in ``torch`` 2.7.1 wheel
built here (a package that imports; the real one is 900 MB). The sdist is a tiny
``flash_attn-2.7.2.post1.tar.gz`` whose setup.py imports torch at its top and that ships no
pyproject.toml, as the real one (checked against the real PyPI sdist at the end). Per case the
suite's verdict is compared with what the real installer does on ``install --dry-run``:
"Would install" (the build ran in the env, with its torch) is a pass; "No module named
'torch'" (isolated), pip's "no such option" and "not a valid value", uv's "Unexpected '-'" and
"value was not a boolean" are the failures the summaries quote. Needs PyPI (setuptools for the
isolated builds, pip 24.3.1, uv 0.13.9); about two minutes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.venvs import hermetic_installers

pytestmark = pytest.mark.integration
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
UV_VERSION = "0.13.9"
PIP_VERSION = "24.3.1"


def _torch_wheel(folder: Path) -> Path:
    """A ``torch-2.7.1-py3-none-any.whl`` that only imports (``torch.__version__``)."""
    files = {
        "torch/__init__.py": b'__version__ = "2.7.1"\n',
        "torch-2.7.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: torch\nVersion: 2.7.1\n",
        "torch-2.7.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
        b"true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
        + f",{len(data)}"
        for name, data in files.items()
    ]
    record.append("torch-2.7.1.dist-info/RECORD,,")
    files["torch-2.7.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / "torch-2.7.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _sdist(folder: Path) -> Path:
    """flash_attn-2.7.2.post1.tar.gz: setup.py imports torch, no pyproject.toml."""
    top = folder / "flash_attn-2.7.2.post1"
    top.mkdir(parents=True)
    (top / "setup.py").write_text(
        "import torch  # flash-attn's setup.py does this at its top\n"
        "from setuptools import setup\n"
        'setup(name="flash-attn", version="2.7.2.post1", py_modules=[])\n'
    )
    (top / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: flash-attn\nVersion: 2.7.2.post1\n")
    path = folder / "flash_attn-2.7.2.post1.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(top, arcname=top.name)
    return path


def _run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """uv, the stand-in torch wheel and the sdist, made once."""
    root = tmp_path_factory.mktemp("real-installers")
    tools = root / "tools"
    subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
    subprocess.run(
        [tools / "bin" / "python", "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"],
        check=True,
        timeout=600,
        env={**os.environ, **downloads._USER_CONFIG_ENV},
    )
    return {"uv": tools / "bin" / "uv", "torch": _torch_wheel(root), "sdist": _sdist(root)}


def _real_env(home: Path) -> dict[str, str]:
    """What the real installers run with: this machine's PATH and certificates, nothing of its
    pip/uv configuration (the same hermetic folders the suite reads)."""
    keep = ("PATH", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "HTTPS_PROXY", "HTTP_PROXY")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("XDG_")}
    env["HOME"] = str(home)
    env["UV_NO_CACHE"] = "1"
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        env.setdefault("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        env["UV_SYSTEM_CERTS"] = "1"
    return env


def _verdict(pytester: pytest.Pytester, prefix: Path) -> tuple[str, str]:
    out = pytester.path / "report.json"
    pytester.runpytest(
        *SUITE, "-k", "build_isolation", f"--vllm-env={prefix}", f"--vllm-env-report={out}"
    )
    checks = json.loads(out.read_text())["checks"]
    found = [(c["outcome"], c["summary"]) for c in checks if c["id"] == "pypi.build-isolation"]
    outcomes = {o for o, _ in found}
    outcome = "failed" if "failed" in outcomes else found[0][0]
    return outcome, " | ".join(s for _, s in found)


def _real_outcome(output: str) -> str:
    if "Would install" in output:
        return "passed"
    assert any(
        m in output
        for m in (
            "No module named 'torch'",
            "no such option",
            "not a valid value",
            "Unexpected '-'",
            "value was not a boolean",
        )
    ), output[-2000:]
    return "failed"


def _pip_venv(venv: Path, parts: dict[str, Path]) -> Path:
    """`python -m venv` with the reporter's pip, setuptools (no wheel) and the torch stand-in."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    setup = [py, "-m", "pip", "install", "-q", f"pip=={PIP_VERSION}", "setuptools>=75"]
    env = {**os.environ, **downloads._USER_CONFIG_ENV, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(setup, check=True, timeout=600, env=env)
    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "wheel"], env=env, check=False)
    torch = [py, "-m", "pip", "install", "-q", "--no-deps", str(parts["torch"])]
    subprocess.run(torch, check=True, env=env)
    return venv


def _write_case(project, venv, config_home, parts, files, env, real, monkeypatch) -> None:
    """One case's requirements.txt and config files (``<venv>``, ``<config>`` and ``{sdist}``
    filled in) and its variables, set for the suite (monkeypatch) and the real installer."""
    line = f"flash-attn @ {parts['sdist'].as_uri()}"
    for rel, text in {"requirements.txt": line + "\n", **files}.items():
        path = Path(rel.replace("<venv>", str(venv)).replace("<config>", str(config_home)))
        path = path if path.is_absolute() else project / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{sdist}", line))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
        real[name] = value


# (case id, files in the project, variables, the real message a failure quotes)
PIP_CASES = [
    ("default", {}, {}, "No module named 'torch'"),
    ("env 0", {}, {"PIP_NO_BUILD_ISOLATION": "0"}, ""),
    ("env false", {}, {"PIP_NO_BUILD_ISOLATION": "false"}, ""),
    ("env 1", {}, {"PIP_NO_BUILD_ISOLATION": "1"}, "No module named 'torch'"),
    ("env 2", {}, {"PIP_NO_BUILD_ISOLATION": "2"}, "is not a valid value for no-build-isolation"),
    ("site install false", {"<venv>/pip.conf": "[install]\nno-build-isolation = false\n"}, {}, ""),
    (
        "site wheel false",
        {"<venv>/pip.conf": "[wheel]\nno-build-isolation = false\n"},
        {},
        "No module named 'torch'",
    ),
    ("user global no", {"<config>/pip/pip.conf": "[global]\nno-build-isolation = no\n"}, {}, ""),
    (
        "requirements option",
        {"requirements.txt": "--no-build-isolation\n{sdist}\n"},
        {},
        "no such option: --no-build-isolation",
    ),
]


@pytest.mark.parametrize("case,files,env,message", PIP_CASES, ids=[c[0] for c in PIP_CASES])
def test_real_pip_agrees(pytester, tmp_path, monkeypatch, parts, case, files, env, message):
    project = tmp_path / "proj"
    venv = _pip_venv(project / ".venv", parts)
    py = str(venv / "bin" / "python")
    home = hermetic_installers(monkeypatch, tmp_path / "home")
    real = _real_env(tmp_path / "home")
    real.update(XDG_CONFIG_DIRS=str(home.xdg_dirs), XDG_CONFIG_HOME=str(home.config_home))
    _write_case(project, venv, home.config_home, parts, files, env, real, monkeypatch)
    outcome, summary = _verdict(pytester, venv)
    output = _run(
        [py, "-m", "pip", "install", "--dry-run", "--no-deps", "-r", "requirements.txt"],
        real,
        cwd=project,
    )
    assert (outcome, _real_outcome(output)) in (("passed", "passed"), ("failed", "failed")), (
        summary,
        output[-2000:],
    )
    if message:  # the failure the summary quotes is the one the real tool prints
        assert message in output and message in summary, (summary, output[-2000:])


UV_CASES = [
    ("default", {}, {}, "No module named 'torch'"),
    ("env 1", {}, {"UV_NO_BUILD_ISOLATION": "1"}, ""),
    ("env 0 (not inverted)", {}, {"UV_NO_BUILD_ISOLATION": "0"}, "No module named 'torch'"),
    ("env empty", {}, {"UV_NO_BUILD_ISOLATION": ""}, "value was not a boolean"),
    (
        "uv.toml pip table",
        {"uv.toml": '[pip]\nno-build-isolation-package = ["flash-attn"]\n'},
        {},
        "",
    ),
    ("user uv.toml", {"<config>/uv/uv.toml": "no-build-isolation = true\n"}, {}, ""),
    (
        "false cancels packages",
        {"uv.toml": 'no-build-isolation = false\nno-build-isolation-package = ["flash-attn"]\n'},
        {},
        "No module named 'torch'",
    ),
    (
        "requirements option",
        {"requirements.txt": "--no-build-isolation\n{sdist}\n"},
        {},
        "Unexpected '-'",
    ),
]


@pytest.mark.parametrize("case,files,env,message", UV_CASES, ids=[c[0] for c in UV_CASES])
def test_real_uv_pip_agrees(pytester, tmp_path, monkeypatch, parts, case, files, env, message):
    home = hermetic_installers(monkeypatch, tmp_path / "home")
    project = tmp_path / "LCKV"
    project.mkdir()
    venv = project / ".venv"
    real = _real_env(tmp_path / "home")
    real.update(XDG_CONFIG_DIRS=str(home.xdg_dirs), XDG_CONFIG_HOME=str(home.config_home))
    uv = str(parts["uv"])
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], env=real, check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv), "setuptools>=75", str(parts["torch"])],
        env=real,
        check=True,
        timeout=600,
    )
    _write_case(project, venv, home.config_home, parts, files, env, real, monkeypatch)
    outcome, summary = _verdict(pytester, venv)
    output = _run(
        [uv, "pip", "install", "--dry-run", "--no-deps", "--python", str(venv)]
        + ["-r", "requirements.txt"],
        real,
        cwd=project,
    )
    assert (outcome, _real_outcome(output)) in (("passed", "passed"), ("failed", "failed")), (
        summary,
        output[-2000:],
    )
    if message:
        assert message in output and message in summary, (summary, output[-2000:])


def test_real_flash_attn_sdist_isolation_is_decided_by_the_variable(tmp_path, parts):
    """The F5.1 artifact itself: flash_attn-2.7.2.post1.tar.gz from PyPI has no pyproject.toml
    (so pip's setup.py rules apply) and fails "No module named 'torch'" only when isolated:
    with PIP_NO_BUILD_ISOLATION=0 its setup.py gets past `import torch` (and stops later, on
    the stand-in torch's missing `torch.utils`)."""
    tree = downloads.sdist("flash-attn", "2.7.2.post1")
    archive = next(tree.parent.glob("flash_attn-2.7.2.post1.tar.gz"))
    assert not (tree / "pyproject.toml").exists()
    py = str(_pip_venv(tmp_path / "v", parts) / "bin" / "python")
    real = _real_env(tmp_path / "home")
    cmd = [py, "-m", "pip", "install", "--dry-run", "--no-deps", str(archive)]
    isolated = _run(cmd, {**real, "PIP_NO_BUILD_ISOLATION": "1"})
    shared = _run(cmd, {**real, "PIP_NO_BUILD_ISOLATION": "0"})
    assert "No module named 'torch'" in isolated, isolated[-2000:]
    assert "No module named 'torch'" not in shared, shared[-2000:]
