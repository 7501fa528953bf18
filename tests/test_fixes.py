"""Fixes that fit the env: Pixi (pixi.toml, pyproject [tool.pixi]), a conda prefix, a pip
venv; whether nvcc is needed at all (run vs build); Pixi envs declared but never installed,
and envs outside their workspace (detached-environments)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.system_cuda import hide_machine_cuda
from fixtures.text import lit
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
NVCC = Package("cuda-nvcc", "12.8.*")
TORCH = Package("torch", "==2.11.0", pypi=True)


def venv(root: Path, *dists: tuple[str, str]) -> Path:
    """A pip venv as `python -m venv` lays it out (no conda-meta), with dist metadata."""
    prefix = root / "venv"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").symlink_to(sys.executable)
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
    sp = prefix / "lib" / "python3.12" / "site-packages"
    sp.mkdir(parents=True)
    for name, version in dists:
        info = sp / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return prefix


# -- the module, one env of each kind -------------------------------------------------------
def test_pixi_env_speaks_pixi_toml(env_builder: EnvBuilder):
    env_builder.python()
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=env_builder.manifest())
    assert fixes.kind_of(env) == "pixi"
    assert fixes.add(env, NVCC) == 'add `cuda-nvcc = "12.8.*"` to [dependencies] in pixi.toml'
    assert fixes.add(env, TORCH, verb="pin") == (
        'pin `torch = "==2.11.0"` in [pypi-dependencies] in pixi.toml'
    )
    assert fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}") == (
        'set `CUDA_HOME = "${CONDA_PREFIX}"` in [activation.env] in pixi.toml'
    )


def test_pyproject_env_of_features_speaks_tool_pixi_feature_tables(env_builder: EnvBuilder):
    cuda = EnvBuilder(env_builder.workspace, "cuda")
    cuda.python()
    manifest = env_builder.manifest(
        "[tool.pixi.environments]\ncuda = { features = ['gpu'] }\n", kind="pyproject"
    )
    env = PixiEnv.read(cuda.prefix, name="cuda", manifest=manifest)
    assert fixes.kind_of(env) == "pyproject"
    assert fixes.add(env, NVCC, Package("cuda-version", "12.8.*")) == (
        'add `cuda-nvcc = "12.8.*"` and `cuda-version = "12.8.*"` to '
        "[tool.pixi.feature.gpu.dependencies] in pyproject.toml"
    )
    assert fixes.set_var(env, "A", "1") == (
        'set `A = "1"` in [tool.pixi.feature.gpu.activation.env] in pyproject.toml'
    )


def test_conda_prefix_speaks_conda(tmp_path):
    b = EnvBuilder(tmp_path, "envs/x", bare=True)
    b.python()
    env = PixiEnv.read(b.prefix)
    assert fixes.kind_of(env) == "conda"
    assert fixes.add(env, NVCC) == (
        f'install into the env: `conda install -p {b.prefix} -c conda-forge "cuda-nvcc=12.8.*"`'
    )
    assert fixes.add(env, TORCH) == f'`{b.prefix}/bin/python3 -m pip install "torch==2.11.0"`'
    assert fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}") == (
        f"set it in the env: `conda env config vars set -p {b.prefix} CUDA_HOME={b.prefix}`"
    )


def test_venv_speaks_pip_and_gets_its_toolkit_from_the_system(tmp_path):
    env = PixiEnv.read(venv(tmp_path))
    assert fixes.kind_of(env) == "venv"
    assert fixes.add(env, TORCH, Package("cmake", ">=3.28")) == (
        f'`{env.prefix}/bin/python -m pip install "torch==2.11.0" "cmake>=3.28"`'
    )
    text = fixes.add(env, NVCC)
    assert "pixi.toml" not in text
    assert text.startswith(
        "cuda-nvcc is a conda package, and a pip venv has no CUDA toolkit of its own: install "
        "the CUDA 12.8 toolkit on the system and export `CUDA_HOME=/usr/local/cuda-12.8`"
    )
    assert fixes.set_var(env, "VLLM_PYTHON_EXECUTABLE", "${CONDA_PREFIX}/bin/python") == (
        f"export `VLLM_PYTHON_EXECUTABLE={env.prefix}/bin/python` in the shell or job that runs "
        f"it (a venv has no activation variables; add the line to {env.prefix}/bin/activate "
        "to keep it)"
    )


# -- a version, at the line that declares it (fixes.pin), and a rebuild (fixes.rebuild) -------
def test_pin_rewrites_the_declaring_line_of_each_manifest_form(env_builder: EnvBuilder):
    env_builder.python()
    manifest = env_builder.manifest(
        '[dependencies]\ncuda-version = "12.6.*"\n\n[pypi-dependencies]\n'
        'torch = { version = "==2.6.0", index = "https://download.pytorch.org/whl/cu126" }\n'
    )
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=manifest)
    # an inline table keeps its index; a conda package is found in [dependencies]
    assert fixes.pin(env, TORCH) == (
        'in pixi.toml line 10 ([pypi-dependencies]), replace `torch = { version = "==2.6.0", '
        'index = "https://download.pytorch.org/whl/cu126" }` with `torch = { version = '
        '"==2.11.0", index = "https://download.pytorch.org/whl/cu126" }`'
    )
    assert fixes.pin(env, Package("cuda-version", "12.8.*")) == (
        'in pixi.toml line 7 ([dependencies]), replace `cuda-version = "12.6.*"` with '
        '`cuda-version = "12.8.*"`'
    )
    # an undeclared package: the table to add it to
    assert fixes.pin(env, Package("xformers", "==0.0.31", pypi=True)) == (
        'add `xformers = "==0.0.31"` to [pypi-dependencies] in pixi.toml'
    )


def test_pin_in_project_dependencies_changes_only_that_requirement(env_builder: EnvBuilder):
    env_builder.python()
    path = env_builder.manifest(kind="pyproject")
    text = path.read_text().replace(
        'version = "0.1.0"\n', 'version = "0.1.0"\ndependencies = ["torch==2.6.0", "vllm"]\n'
    )
    path.write_text(text)
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=path)
    assert fixes.pin(env, TORCH) == (
        "in pyproject.toml line 4 ([project] dependencies), replace `dependencies = "
        '["torch==2.6.0", "vllm"]` with `dependencies = ["torch==2.11.0", "vllm"]`'
    )


def test_uv_venv_has_no_pip_so_fixes_say_uv_pip(tmp_path):
    """`uv venv` writes `uv = 0.13.9` into pyvenv.cfg and no pip: `python -m pip` there fails
    with "No module named pip" (measured, uv 0.13.9)."""
    prefix = venv(tmp_path, ("torch", "2.11.0"))
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\nuv = 0.13.9\nversion_info = 3.12.3\n")
    env = PixiEnv.read(prefix)
    assert fixes.made_by_uv(env)
    assert fixes.add(env, TORCH) == f'`uv pip install --python {prefix} "torch==2.11.0"`'
    # installed 2.11.0 already satisfies ==2.11.0: a new index needs the reinstall asked for
    assert fixes.pin(env, TORCH, index="https://download.pytorch.org/whl/cu128") == (
        f"`uv pip install --python {prefix} --index-url https://download.pytorch.org/whl/cu128 "
        '--reinstall-package torch "torch==2.11.0"`'
    )
    assert fixes.reinstall(env, "vllm", pypi=True) == (
        f"`uv pip install --python {prefix} --reinstall-package vllm vllm`"
    )
    assert not fixes.made_by_uv(PixiEnv.read(venv(tmp_path / "pip")))


def test_rebuild_without_isolation_per_env(env_builder: EnvBuilder, tmp_path):
    env_builder.python()
    manifest = env_builder.manifest(
        '[pypi-dependencies]\nvllm = { path = "../vllm", editable = true }\n'
    )
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=manifest)
    assert fixes.rebuild(env, "vllm", source="<checkout>") == (
        'list `"vllm"` in `no-build-isolation = [...]` of [pypi-options] in pixi.toml '
        '(pixi.toml:7 `vllm = { path = "../vllm", editable = true }` builds it from a '
        f"checkout); then run `pixi reinstall -e default --manifest-path {manifest} vllm`"
    )
    plain = PixiEnv.read(venv(tmp_path))
    assert fixes.rebuild(plain, "flash-attn") == (
        f"in `source {plain.prefix}/bin/activate`, run `{plain.prefix}/bin/python -m pip "
        'install --no-build-isolation --no-cache-dir --force-reinstall --no-deps "flash-attn"`'
    )


# -- a plain venv is not told about pixi.toml -------------------------------------------------
def test_plain_venv_that_builds_is_told_to_use_a_system_toolkit(pytester, tmp_path, monkeypatch):
    # Seen: "add `cuda-nvcc` ... to [dependencies] in pixi.toml" for a venv with no manifest.
    hide_machine_cuda(monkeypatch, tmp_path)
    prefix = venv(tmp_path, ("torch", "2.11.0"))
    (tmp_path / "pyproject.toml").write_text("")  # a vLLM checkout holds one (--vllm-source)
    result = pytester.runpytest(
        *SUITE, "-k", "nvcc_in_env", f"--vllm-env={prefix}", f"--vllm-source={tmp_path}"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit("*[cuda.nvcc-in-env] FAILED: torch finds no CUDA_HOME*CUDA_HOME is not set*"),
            # the toolkit of the run's target CUDA: PyPI's torch 2.11.0 is its cu130 build
            "  fix: install the CUDA 13.0 toolkit on the system, then `export "
            "CUDA_HOME=/usr/local/cuda-13.0` and `export PATH=/usr/local/cuda-13.0/bin:$PATH` in "
            "the shell or job that builds*",
            "  needed_because: --vllm-source: vLLM is to be built from source",
        ]
    )
    assert "pixi.toml" not in result.stdout.str()


# -- run vs build ----------------------------------------------------------------------------
def test_env_that_only_runs_prebuilt_wheels_needs_no_nvcc(pytester, tmp_path):
    # Seen: a `pip install vllm` venv (docs/gpu-runs.md) failed cuda.nvcc-in-env although
    # nothing in it builds or JIT-compiles CUDA code.
    prefix = venv(tmp_path, ("torch", "2.11.0"), ("vllm", "0.26.0"))
    report = tmp_path / "r.json"
    result = pytester.runpytest(
        *SUITE, "-m", "toolchain", "-k", "nvcc_in_env", f"--vllm-env={prefix}",
        f"--vllm-env-report={report}",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    (check,) = json.loads(report.read_text())["checks"]
    assert check["summary"].startswith(
        f"no nvcc in {prefix}/bin, and none needed: the env runs prebuilt wheels"
    )


@pytest.mark.parametrize(
    "asked",
    [
        ["-m", "toolchain or build", "-k", "nvcc_in_env or nvcc_builds"],
        ["-m", "toolchain", "-k", "nvcc_in_env", "--vllm-build-log=build.log"],
    ],
    ids=["build-tier", "build-log"],
)
def test_a_build_asked_for_needs_nvcc(pytester, tmp_path, asked, monkeypatch):
    hide_machine_cuda(monkeypatch, tmp_path)
    prefix = venv(tmp_path, ("torch", "2.11.0"), ("vllm", "0.26.0"))
    (pytester.path / "build.log").write_text("-- Configuring done\n")
    result = pytester.runpytest(*SUITE, f"--vllm-env={prefix}", "--cuda-arch=12.0", *asked)
    result.stdout.fnmatch_lines([lit("*[cuda.nvcc-in-env] FAILED: torch finds no CUDA_HOME*")])


def test_flashinfer_jit_without_nvcc_is_a_warning(pytester, tmp_path, monkeypatch):
    # vLLM 0.26 depends on flashinfer-python, which compiles every kernel with nvcc at first
    # use unless flashinfer-jit-cache holds them: measured on a real `pip install vllm` venv.
    prefix = venv(tmp_path, ("torch", "2.11.0"), ("flashinfer-python", "0.6.1"))
    (prefix / "lib/python3.12/site-packages/torch").mkdir()
    (prefix / "lib/python3.12/site-packages/torch/version.py").write_text("cuda = '13.0'\n")
    system = tmp_path / "usr-local-cuda" / "bin"
    system.mkdir(parents=True)
    (system / "nvcc").write_text(
        "#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n"
    )
    (system / "nvcc").chmod(0o755)
    args = (*SUITE, "-m", "toolchain", "-k", "nvcc_in_env", f"--vllm-env={prefix}")
    for path, says in (
        ("/usr/bin:/bin", "those kernels fail at first use without it"),
        (f"{system}:/usr/bin:/bin", f"it would use the nvcc the activated PATH finds, "
                                    f"{system}/nvcc, from outside the env*"),
    ):  # fmt: skip
        monkeypatch.setenv("PATH", path)
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.OK
        assert result.parseoutcomes().get("warned") == 1
        result.stdout.fnmatch_lines(
            [
                "*vllm-env: warnings*",
                lit(
                    f"[cuda.nvcc-in-env] no nvcc in {prefix}/bin; flashinfer-python 0.6.1 "
                    f"compiles its kernels with nvcc at first use: {says}"
                ),
                # the CUDA torch was built for, not a guess
                "    fix: *install the CUDA 13.0 toolkit*, or install flashinfer-jit-cache "
                "(pre-built kernels)",
            ]
        )
    # with its pre-built kernels installed, nothing JIT-compiles
    venv_sp = prefix / "lib" / "python3.12" / "site-packages"
    info = venv_sp / "flashinfer_jit_cache-0.6.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flashinfer-jit-cache\nVersion: 0.6.1\n"
    )
    pytester.runpytest(*args).assert_outcomes(passed=1)


# -- bug 8: declared in the manifest, never installed -----------------------------------------
def test_env_declared_but_not_installed_says_pixi_install(pytester, env_builder: EnvBuilder):
    manifest = env_builder.manifest('[feature.gpu.dependencies]\ncuda-nvcc = "*"\n\n'
                                    '[environments]\ncuda = ["gpu"]\n')  # fmt: skip
    result = pytester.runpytest(*SUITE, "--vllm-env=cuda", f"--pixi-manifest={manifest}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    missing = env_builder.workspace / ".pixi" / "envs" / "cuda"
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-vllm-env: pixi env 'cuda' is declared in {manifest} but not "
            f"installed (no {missing}) and has no pixi.lock to judge it from: run `pixi "
            f"install -e cuda --manifest-path {manifest}` (or `pixi lock`, to judge it before "
            "installing), then judge it"
        ]
    )


def test_package_declared_but_not_installed_says_pixi_install(pytester, env_builder):
    # Seen: "add `cuda-nvcc = ...` to [dependencies]" for a manifest that has exactly that
    # line: the env was created before it was added and never reinstalled.
    env_builder.python()
    manifest = env_builder.manifest('[dependencies]\ncuda-version = "12.8.*"\ncuda-nvcc = "*"\n')
    result = pytester.runpytest(*SUITE, "-k", "nvcc_in_env", f"--vllm-env={env_builder.prefix}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"  fix: `cuda-nvcc` and `cuda-version` are declared in [dependencies] of pixi.toml "
            f"but not installed in {env_builder.prefix}: run `pixi install -e default "
            f"--manifest-path {manifest}`",
            "  needed_because: cuda-nvcc is declared in [dependencies] of pixi.toml",
        ]
    )


# -- bug 9: an env outside its workspace ------------------------------------------------------
ACTIVATION_TEST = """
def test_home(vllm_env, vllm_env_activation):
    assert vllm_env.name == "cuda"
    assert vllm_env_activation["CUDA_HOME"] == str(vllm_env.prefix) + "/targets/x86_64-linux"
"""
CUDA_WS = """
[feature.gpu.activation.env]
CUDA_HOME = "${CONDA_PREFIX}/targets/x86_64-linux"

[environments]
cuda = ["gpu"]
"""


def test_detached_env_gets_its_manifests_activation(pytester, env_builder, tmp_path):
    # pixi's detached-environments: <dir>/<workspace>-<hash>/envs/<name>. Seen: the
    # manifest's activation tables silently not applied.
    manifest = env_builder.manifest(CUDA_WS)
    detached = EnvBuilder(tmp_path / "detached" / "ws-1d3f6c2a9b", "envs/cuda", bare=True)
    detached.python()
    pytester.makepyfile(ACTIVATION_TEST)
    result = pytester.runpytest(f"--vllm-env={detached.prefix}", f"--pixi-manifest={manifest}")
    result.assert_outcomes(passed=1)


def test_env_pixi_recorded_in_conda_meta_is_mapped(pytester, env_builder, tmp_path):
    manifest = env_builder.manifest(CUDA_WS)
    env = EnvBuilder(tmp_path / "anywhere", "x", bare=True)
    env.python()
    (env.prefix / "conda-meta" / "pixi").write_text(
        json.dumps({"manifest_path": str(manifest), "environment_name": "cuda"})
    )
    pytester.makepyfile(ACTIVATION_TEST)
    pytester.runpytest(f"--vllm-env={env.prefix}").assert_outcomes(passed=1)


def test_unrelated_prefix_with_a_manifest_says_why_tables_are_not_applied(
    pytester, env_builder, tmp_path
):
    manifest = env_builder.manifest(CUDA_WS)
    other = EnvBuilder(tmp_path / "opt", "myenv", bare=True)
    other.python()
    result = pytester.runpytest(
        *SUITE, "-k", "test_manifest_parses", f"--vllm-env={other.prefix}",
        f"--pixi-manifest={manifest}",
    )  # fmt: skip
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(
        [
            lit(
                f"[env.manifest] the activation tables of {manifest} are not applied: "
                f"{other.prefix} is not one of its envs*"
            ),
            "    fix: judge the manifest's env by name (`--vllm-env=NAME`, one of: cuda, default)*",
        ]
    )


def test_torch_cmake_config_is_judged_only_for_a_build(pytester, tmp_path):
    # Seen on a real `pip install vllm==0.26.0` venv: cmake.torch-config failed ("torch 2.11.0's
    # CMake config will stop a vLLM build") although nothing there builds.
    from fixtures import torch_cmake as ft

    b = EnvBuilder(tmp_path, "envs/run-only", bare=True)
    b.python()
    ft.install(b, "2.6")
    args = (*SUITE, "-k", "test_torch_config", f"--vllm-env={b.prefix}", "-rs")
    result = pytester.runpytest(*args)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*[[]cmake.torch-config] no vLLM build here*"])
    # asked to build: judged (no CUDA toolkit at all: it fails)
    (tmp_path / "pyproject.toml").write_text("")  # a vLLM checkout holds one (--vllm-source)
    pytester.runpytest(*args, f"--vllm-source={tmp_path}").assert_outcomes(failed=1)
