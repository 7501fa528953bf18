"""platform.glibc and platform.wheel-tag (issue 12, family 4): real ELF files with real
GLIBC_2.xx needs built here with gcc, an old machine's libc reconstructed from its version
table, and Pixi workspaces whose glibc floor rejects vLLM's wheels (prefix-dev/pixi#5266)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

# platform.wheel-tag reads pixi.lock with PyYAML. pytester's in-process runs drop the modules a
# run imported first; PyYAML's C extension cannot be imported twice in one process (its nodes
# then fail isinstance against the new yaml.nodes: "'NoneType' object is not callable"), so it
# is imported here, before any run.
import yaml  # noqa: F401

from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env.checks import platform_floor as P
from pytest_vllm_env.facts.lock_env import locked_pypi
from pytest_vllm_env.facts.platform import host_glibc

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")


def _gcc(out: Path, source: str, *flags: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", out, src, *flags], check=True, timeout=60)
    src.unlink()
    return out


# sigabbrev_np is versioned GLIBC_2.32 (the version vLLM #6562's _C.abi3.so asked for)
NEEDS_232 = (
    "#define _GNU_SOURCE\n#include <string.h>\nconst char *f(int s) { return sigabbrev_np(s); }\n"
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    root = tmp_path_factory.mktemp("glibc")
    # CentOS 7's libc.so.6 as the loader sees it: version definitions up to GLIBC_2.17
    script = root / "old.map"
    script.write_text(
        "GLIBC_2.2.5 { global: sigabbrev_np; local: *; };\n"
        + "".join(f"GLIBC_2.{v} {{}} GLIBC_2.2.5;\n" for v in (3, 4, 14, 17))
    )
    old = _gcc(
        root / "old" / "libc.so.6",
        "const char *sigabbrev_np(int s) { return 0; }\n",
        "-nostdlib",
        "-Wl,-soname,libc.so.6",
        f"-Wl,--version-script={script}",
    )
    return {"ext-232": _gcc(root / "ext" / "_C.abi3.so", NEEDS_232), "old-libc": old}


def vllm_env(b: EnvBuilder, parts: dict[str, Path], manifest: str = "") -> Path:
    b.python("3.12")
    b.dist("vllm", "0.5.2", files={"vllm/_C.abi3.so": parts["ext-232"].read_bytes()})
    b.manifest(manifest)
    return b.prefix


def run(pytester, prefix: Path, k: str = "test_platform.py"):
    # `=` form: a workspace's pyproject.toml would become the ini file (pytest#8846)
    return pytester.runpytest(*SUITE, "-k", k, f"--vllm-env={prefix}", "-rs",
                              "--vllm-env-report=r.json")  # fmt: skip


def report(pytester) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((pytester.path / "r.json").read_text())["checks"]}


@needs_gcc
def test_real_glibc_need_is_read(parts):
    from pytest_vllm_env.readers.elf import read_elf

    needs = read_elf(parts["ext-232"]).version_needs
    assert "GLIBC_2.32" in needs["libc.so.6"]


@needs_gcc
def test_extension_needing_newer_glibc_than_the_machine_fails(pytester, env_builder, parts):
    """vLLM #6562: "/lib64/libc.so.6: version `GLIBC_2.32' not found (required by
    .../vllm/_C.abi3.so)" on CentOS 7 (glibc 2.17)."""
    old = parts["old-libc"].parent
    prefix = vllm_env(env_builder, parts, f'[activation.env]\nLD_LIBRARY_PATH = "{old}"\n')
    result = run(pytester, prefix, k="glibc_versions")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[platform.glibc] FAILED: vllm/_C.abi3.so needs GLIBC_2.32 from libc.so.6, which "
                f'{old}/libc.so.6 does not define: import fails with "{old}/libc.so.6: version '
                "`GLIBC_2.32' not found (required by vllm/_C.abi3.so)\"*"
            ),
            "*fix: this machine's glibc is 2.17: run where glibc >= 2.32*manylinux_2_17*",
        ]
    )


@needs_gcc
@pytest.mark.parametrize(
    "declared, floor",
    [("", "2.28 as its floor (pixi's default"), ('[system-requirements]\nlibc = "2.30"\n', "2.30")],
)
def test_binary_needing_newer_glibc_than_the_workspace_floor_fails(
    pytester, env_builder, parts, declared, floor
):
    """Issue 21: the level follows the user's declared floor, not this machine: pixi installs
    the workspace on any host at its floor (pixi's default 2.28, or `[system-requirements]
    libc`), and there the loader refuses a binary that needs glibc 2.32."""
    if P._v(host_glibc()) < (2, 32):
        pytest.skip("this machine's glibc is older than 2.32")
    prefix = vllm_env(env_builder, parts, declared)
    result = run(pytester, prefix, k="glibc_versions")
    result.assert_outcomes(failed=1)
    check = report(pytester)["platform.glibc"]
    assert check["outcome"] == "failed"
    assert (
        check["summary"].startswith("vllm/_C.abi3.so needs glibc 2.32; this machine has 2.")
        and f"declares glibc {floor}" in check["summary"]
        and "version `GLIBC_2.32' not found" in check["summary"]
    ), check["summary"]
    assert check["fix"].startswith('set `libc = "2.32"` in [system-requirements] of pixi.toml')
    (change,) = check["evidence"]["change"]
    assert change["kind"] == "manifest-line" and change["line"] == 'libc = "2.32"'
    # declared high enough: passes
    vllm_env(env_builder, parts, '[system-requirements]\nlibc = "2.32"\n')
    run(pytester, prefix, k="glibc_versions").assert_outcomes(passed=1)


# -- vLLM's wheel under Pixi's glibc floor (F1.8) ------------------------------------------
def workspace(b: EnvBuilder, manifest: str, *, kind: str = "pixi", nvcc: bool = False) -> Path:
    b.python("3.13")
    b.manifest(manifest, kind=kind)
    if nvcc:
        b.file("bin/nvcc", "#!/bin/sh\necho 'Cuda compilation tools, release 12.8, V12.8.93'\n")
        (b.prefix / "bin" / "nvcc").chmod(0o755)
    return b.prefix


def test_pixi_default_floor_rejects_vllm_0_13_wheel(pytester, env_builder):
    """prefix-dev/pixi#5266: vLLM 0.13.0 ships only manylinux_2_31 wheels; Pixi assumes glibc
    2.28, builds the sdist and fails: "No CUDA runtime is found, using CUDA_HOME='/usr'"."""
    prefix = workspace(env_builder, '[pypi-dependencies]\nvllm = "==0.13.0"\n')
    result = run(pytester, prefix, k="wheel_fits")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                '*[platform.wheel-tag] FAILED: vLLM 0.13.0 ([pypi-dependencies] vllm = "==0.13.0")'
                " ships only manylinux_2_31 Linux wheels: the env's glibc floor is 2.28 (pixi's "
                "default*so Pixi takes the sdist and builds vLLM with CUDA; the env has no nvcc, "
                "so the build fails (\"No CUDA runtime is found, using CUDA_HOME='/usr'\"*"
            ),
            lit(
                '*fix: set `libc = "2.31"` in [system-requirements] of pixi.toml (`pixi workspace '
                "system-requirements add glibc 2.31`)*"
            ),
        ]
    )


def test_declared_floor_takes_the_wheel(pytester, env_builder):
    prefix = workspace(
        env_builder, '[system-requirements]\nlibc = { family = "glibc", version = "2.31" }\n\n'
        '[pypi-dependencies]\nvllm = "==0.13.0"\n'
    )  # fmt: skip
    run(pytester, prefix, k="wheel_fits").assert_outcomes(passed=1)
    # and vLLM 0.26.0's manylinux_2_28 wheel needs no declaration at all
    workspace(env_builder, '[pypi-dependencies]\nvllm = "==0.26.0"\n')
    run(pytester, prefix, k="wheel_fits").assert_outcomes(passed=1)


def test_pyproject_manifest_and_a_toolkit_warn_with_its_table(pytester, env_builder):
    prefix = workspace(
        env_builder, '[tool.pixi.pypi-dependencies]\nvllm = "==0.18.0"\n', kind="pyproject",
        nvcc=True,
    )  # fmt: skip
    result = run(pytester, prefix, k="wheel_fits")
    assert result.parseoutcomes().get("warned") == 1, result.stdout.str()
    fix = report(pytester)["platform.wheel-tag"]["fix"]
    assert fix.startswith('set `libc = "2.31"` in [tool.pixi.system-requirements] of pyproject')


LOCK = """\
version: 6
environments:
  default:
    channels:
    - url: https://conda.anaconda.org/conda-forge/
    indexes:
    - https://pypi.org/simple
    packages:
      linux-64:
      - conda: https://conda.anaconda.org/conda-forge/linux-64/python-3.13.1-h0_cp313.conda
      - pypi: {url}
packages:
- conda: https://conda.anaconda.org/conda-forge/linux-64/python-3.13.1-h0_cp313.conda
- pypi: {url}
  name: vllm
  version: 0.13.0
"""


def test_lock_recording_the_vllm_sdist_fails(pytester, env_builder):
    prefix = workspace(env_builder, '[pypi-dependencies]\nvllm = "*"\n')
    sdist = "https://files.pythonhosted.org/packages/ab/cd/vllm-0.13.0.tar.gz"
    (env_builder.workspace / "pixi.lock").write_text(LOCK.format(url=sdist))
    result = run(pytester, prefix, k="wheel_fits")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[platform.wheel-tag] FAILED: pixi.lock installs vLLM 0.13.0 from its sdist "
                "(vllm-0.13.0.tar.gz)*"
            )
        ]  # fmt: skip
    )
    wheel = "https://files.pythonhosted.org/packages/46/ae/vllm-0.13.0-cp38-abi3-manylinux_2_31_x86_64.whl"
    (env_builder.workspace / "pixi.lock").write_text(LOCK.format(url=wheel))
    run(pytester, prefix, k="wheel_fits").assert_outcomes(passed=1)


def test_not_a_pixi_env_skips(pytester, tmp_path):
    b = EnvBuilder(tmp_path, "venv", bare=True)
    b.python("3.12")
    run(pytester, b.prefix, k="wheel_fits").assert_outcomes(skipped=1)


def test_manylinux_tags_and_table():
    assert P.glibc_of_tag("manylinux_2_31_x86_64") == (2, 31)
    assert P.glibc_of_tag("manylinux2014_x86_64") == (2, 17)
    assert P.glibc_of_tag("linux_x86_64") is None
    assert P.vllm_wheel_glibc("0.13.0") == "2.31"
    assert P.vllm_wheel_glibc("0.26.0") == "2.28"
    assert P.vllm_wheel_glibc("0.21.0") is None
    assert P.manylinux("2.31") == "manylinux_2_31"
    assert locked_pypi(Path("/nonexistent"), "default", "vllm") is None


def test_lock_pypi_fact_takes_wheels_and_sdists_only(tmp_path):
    lock = tmp_path / "pixi.lock"
    lock.write_text(LOCK.format(url="git+https://github.com/vllm-project/vllm@v0.13.0"))
    assert locked_pypi(lock, "default", "vllm") is None  # a git source: neither
    lock.write_text(
        LOCK.format(url="https://files.pythonhosted.org/packages/ab/vllm-0.13.0.tar.gz")
    )
    found = locked_pypi(lock, "default", "vLLM")
    assert (found.version, found.is_sdist) == ("0.13.0", True)
    assert locked_pypi(lock, "other-env", "vllm") is None
    lock.write_text("version: 6\nenvironments: [\n")  # unreadable: lock.file says why
    assert locked_pypi(lock, "default", "vllm") is None
