"""The build tier: real nvcc compiles per arch, the SASS check, and the torch extension judge.

Real compiles use PyPI's CUDA 13.0.88 nvcc laid out in a conda-forge-style env (the
``cuda-13.0-real-nvcc`` seed). torch cannot be imported on this machine, so the torch path
runs against a stand-in ``torch.utils.cpp_extension`` that behaves like torch 2.11's where
the judgement looks (its real "Ninja is required" message; flags from TORCH_CUDA_ARCH_LIST
as ``_get_cuda_arch_flags`` derives them, compiled by the real nvcc). The real torch path ran
on the H100 (docs/gpu-runs.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fixtures.cuda_envs import seed_env
from fixtures.elf import cuda_so, nvcc
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env.checks import build
from pytest_vllm_env.facts.build import ExtensionBuild, gencode_flags, read_built
from pytest_vllm_env.tables.archs import parse_arch

SYSTEM_CUDA = "/usr/local/cuda"
SUITE = ("--vllm-conformance", "-p", "no:cacheprovider", "-k", "test_build.py", "-m", "build")
needs_nvcc = pytest.mark.skipif(nvcc() is None, reason="nvcc not found")


@pytest.fixture(scope="session")
def cuda13(tmp_path_factory: pytest.TempPathFactory) -> EnvBuilder:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return seed_env(root, "cuda-13.0-real-nvcc")


def checks(pytester: pytest.Pytester) -> list[dict]:
    return json.loads((pytester.path / "r.json").read_text())["checks"]


def test_gencode_flags_match_torch_cpp_extension():
    # torch 2.11 _get_cuda_arch_flags: "9.0" -> code=sm_90; "+PTX" adds code=compute_90
    assert gencode_flags(parse_arch("9.0")) == ["-gencode=arch=compute_90,code=sm_90"]
    assert gencode_flags(parse_arch("12.0+PTX")) == [
        "-gencode=arch=compute_120,code=sm_120",
        "-gencode=arch=compute_120,code=compute_120",
    ]
    assert gencode_flags(parse_arch("9.0a")) == ["-gencode=arch=compute_90a,code=sm_90a"]


@pytest.fixture
def system_toolkit_env(env_builder: EnvBuilder) -> EnvBuilder:
    """An env whose activation points CUDA_HOME at this machine's whole CUDA 13 toolkit."""
    if not Path(SYSTEM_CUDA, "bin", "nvcc").exists():
        pytest.skip(f"no CUDA toolkit at {SYSTEM_CUDA}")
    env_builder.python()
    env_builder.manifest(f'[activation.env]\nCUDA_HOME = "{SYSTEM_CUDA}"\n')
    return env_builder


def test_cuda13_builds_sass_for_hopper_and_blackwell(pytester, system_toolkit_env):
    result = pytester.runpytest(
        *SUITE,
        "--vllm-env",
        str(system_toolkit_env.prefix),
        "--cuda-arch",
        "9.0",
        "--cuda-arch",
        "12.0",
        "--vllm-env-report",
        "r.json",
        "-rs",
    )
    result.assert_outcomes(passed=1, skipped=2)  # no torch: extension checks skip
    said = [c["summary"] for c in checks(pytester) if c["id"] == "build.nvcc-kernel"]
    assert len(said) == 2
    assert said[0].endswith("for sm_90: built, holds SASS sm_90 (SASS sm_90; PTX none)")
    assert said[1].endswith("for sm_120: built, holds SASS sm_120 (SASS sm_120; PTX none)")
    assert f"{SYSTEM_CUDA}/bin/nvcc ($CUDA_HOME/bin/nvcc" in said[0]
    result.stdout.fnmatch_lines(["*torch is not installed in*"])


def test_nvcc_without_runtime_headers_names_the_package(pytester, cuda13):
    # the real CUDA 13 nvcc alone (conda-forge `cuda-nvcc` without `cuda-cudart-dev`)
    result = pytester.runpytest(
        *SUITE, "--vllm-env", str(cuda13.prefix), "--cuda-arch", "9.0", "-k", "nvcc_builds"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]build.nvcc-kernel] FAILED: */bin/nvcc cannot build a 5-line kernel for sm_90: "
            "cuda_runtime.h is not in the env",
            '*fix: add `cuda-cudart-dev = "[*]"` to [[]dependencies] in pixi.toml*',
        ]
    )


def test_cuda13_cannot_build_for_volta(pytester, cuda13):
    # CUDA 13 dropped sm_70: a V100 runner with a CUDA 13 env fails at the first compile
    result = pytester.runpytest(
        *SUITE, "--vllm-env", str(cuda13.prefix), "--cuda-arch", "7.0", "-k", "nvcc_builds"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]build.nvcc-kernel] FAILED: */bin/nvcc cannot build for sm_70: "
            "*Unsupported gpu architecture 'compute_70'*",
            lit('*fix: CUDA 13 and later cannot build sm_70: set `cuda-version = "12.') + '*"`*',
        ]
    )


def test_cuda_home_without_nvcc_fails_naming_it(pytester, env_builder):
    env_builder.python()
    env_builder.manifest('[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}/targets/x86_64-linux"\n')
    result = pytester.runpytest(
        *SUITE, "--vllm-env", str(env_builder.prefix), "--cuda-arch", "9.0", "-k", "nvcc_builds"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]build.nvcc-kernel] FAILED: no nvcc to build with: $CUDA_HOME/bin/nvcc "
            "(*/targets/x86_64-linux) does not exist",
            '*fix: add `cuda-nvcc = "[*]"` to [[]dependencies] in pixi.toml*',
        ]
    )


def test_hanging_nvcc_is_killed_and_reported(pytester, env_builder):
    env_builder.python()
    env_builder.file("bin/nvcc", "#!/bin/sh\nsleep 60\n").chmod(0o755)
    env_builder.manifest('[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}"\n')
    result = pytester.runpytest(
        *SUITE,
        "--vllm-env",
        str(env_builder.prefix),
        "--cuda-arch",
        "9.0",
        "-k",
        "nvcc_builds",
        "--cuda-tool-timeout",
        "1",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[[]build.nvcc-kernel] ERROR: *did not finish within 1 s*"])
    assert "Traceback" not in result.stdout.str()


@needs_nvcc
def test_ptx_only_result_is_not_sass(tmp_path):
    so = cuda_so(tmp_path / "ptx.so", ["arch=compute_80,code=compute_80"])
    finding = build.sass_finding(
        _env(tmp_path), "build.nvcc-kernel", "a kernel", read_built(so), parse_arch("8.0")
    )
    assert finding.outcome == "failed"
    assert (
        finding.summary
        == "a kernel for sm_80: built, but holds no SASS sm_80 (SASS none; PTX compute_80)"
    )
    assert "NVCC_APPEND_FLAGS" in finding.fix


def test_unreadable_result_is_an_error(tmp_path):
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"\x7fELF" + b"\x00" * 10)
    finding = build.sass_finding(
        _env(tmp_path), "build.nvcc-kernel", "a kernel", read_built(junk), parse_arch("9.0")
    )
    assert finding.outcome == "error" and "cannot be read" in finding.summary


# -- the torch path, against a stand-in cpp_extension ------------------------------------------
STANDIN_CPP_EXTENSION = '''"""Stand-in torch.utils.cpp_extension (pytest-vllm-env self-tests)."""
import os, subprocess, types

def load_inline(name, cpp_sources, cuda_sources=None, functions=None, build_directory=None,
                with_cuda=None, verbose=False, **kw):
    if os.environ.get("STANDIN_NO_NINJA"):
        # torch 2.11 cpp_extension.verify_ninja_availability, word for word
        raise RuntimeError("Ninja is required to load C++ extensions (pip install ninja to get it)")
    flags = []
    for arch in os.environ["TORCH_CUDA_ARCH_LIST"].split(";"):
        num = arch.split("+")[0].replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
    src = os.path.join(build_directory, "k.cu")
    with open(src, "w") as fh:
        fh.write("__global__ void k(float *x) { x[0] += 1.0f; }\\n")
    so = os.path.join(build_directory, name + ".so")
    nvcc = os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
    done = subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", *flags, "-o", so, src],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"Error building extension '{name}': " + done.stdout + done.stderr)
    return types.SimpleNamespace(__file__=so)
'''

STANDIN_TORCH = """__version__ = "2.11.0+cu130"
class cuda:
    @staticmethod
    def is_available():
        return False
"""


def _with_standin_torch(env: EnvBuilder, no_ninja: bool = False) -> None:
    site = env.site_packages
    wrapper = env.prefix / "libexec" / "python-standin"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    extra = "STANDIN_NO_NINJA=1 " if no_ninja else ""
    wrapper.write_text(f'#!/bin/sh\n{extra}PYTHONPATH="{site}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    (env.prefix / "bin" / "python").unlink()
    (env.prefix / "bin" / "python3").unlink()
    env.python("3.12", executable=str(wrapper))
    env.dist(
        "torch",
        "2.11.0+cu130",
        files={
            "torch/__init__.py": STANDIN_TORCH,
            "torch/utils/__init__.py": "",
            "torch/utils/cpp_extension.py": STANDIN_CPP_EXTENSION,
        },
    )


@pytest.fixture
def torch_env(system_toolkit_env: EnvBuilder) -> EnvBuilder:
    """The system-toolkit env with a stand-in torch."""
    return system_toolkit_env


def test_torch_extension_holds_sass_for_the_arch(pytester, torch_env):
    _with_standin_torch(torch_env)
    result = pytester.runpytest(
        *SUITE,
        "--vllm-env",
        str(torch_env.prefix),
        "--cuda-arch",
        "12.0",
        "-k",
        "torch_extension",
        "--vllm-env-report",
        "r.json",
        "-rs",
    )
    result.assert_outcomes(passed=1, skipped=1)  # runs: no GPU visible
    said = {c["id"]: c["summary"] for c in checks(pytester)}
    assert said["build.torch-extension"] == (
        "a torch 2.11.0+cu130 extension for sm_120: built, holds SASS sm_120 "
        "(SASS sm_120; PTX none)"
    )
    assert said["build.extension-runs"] == "no GPU visible to the target env's torch"


def test_torch_extension_without_ninja_names_the_package(pytester, torch_env):
    _with_standin_torch(torch_env, no_ninja=True)
    result = pytester.runpytest(
        *SUITE,
        "--vllm-env",
        str(torch_env.prefix),
        "--cuda-arch",
        "9.0",
        "-k",
        "torch_extension_builds",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]build.torch-extension] FAILED: torch 2.11.0+cu130 could not build an extension "
            "for sm_90: RuntimeError: Ninja is required to load C++ extensions*",
            '*fix: add `ninja = "[*]"` to [[]dependencies] in pixi.toml*',
        ]
    )


def test_torch_extension_judge_quotes_nvcc_refusal(tmp_path):
    probe = ExtensionBuild(
        data={
            "torch": "2.5.1+cu124",
            "so": None,
            "exception": "RuntimeError: Error building extension 'vllm_env_probe_120'",
            "log": "nvcc fatal   : Unsupported gpu architecture 'compute_120'",
        },
    )
    finding = build.torch_extension(_env(tmp_path), probe, parse_arch("12.0"))
    assert finding.outcome == "failed"
    assert "sm_120 needs CUDA >= 12.8" in finding.fix and "pixi.toml" in finding.fix
    assert finding.summary.endswith(
        "sm_120: nvcc fatal   : Unsupported gpu architecture 'compute_120'"
    )


def test_probe_that_hangs_is_an_error(tmp_path):
    probe = ExtensionBuild(problem="`python build_ext.py` did not finish")
    finding = build.torch_extension(_env(tmp_path), probe, parse_arch("9.0"))
    assert finding.outcome == "error" and "--build-timeout" in finding.fix


def _env(root: Path, kind: str = "pixi"):
    """A Pixi env of a pixi.toml or pyproject workspace, or a pip venv: the kinds fixes speak."""
    from fixtures.envs import EnvBuilder
    from pytest_vllm_env.facts.env import PixiEnv

    if kind == "venv":
        from tests.test_fixes import venv

        return PixiEnv.read(venv(root))
    b = EnvBuilder(root / kind)
    b.python()
    manifest = b.manifest(kind="pyproject") if kind == "pyproject" else b.manifest()
    return PixiEnv.read(b.prefix, name="default", manifest=manifest)


REFUSED = ExtensionBuild(
    data={
        "torch": "2.5.1+cu124",
        "so": None,
        "exception": "RuntimeError: Error building extension 'vllm_env_probe_120'",
        "log": "nvcc fatal   : Unsupported gpu architecture 'compute_120'",
    },
)


@pytest.mark.parametrize(
    "kind,fix",
    [
        (
            "pixi",
            'set `cuda-version = "12.8.*"` and `cuda-nvcc = "12.8.*"` in [dependencies] in '
            "pixi.toml",
        ),
        (
            "pyproject",
            'set `cuda-version = "12.8.*"` and `cuda-nvcc = "12.8.*"` in '
            "[tool.pixi.dependencies] in pyproject.toml",
        ),
        ("venv", "a pip venv has no CUDA toolkit of its own: install the CUDA 12.8 toolkit"),
    ],
)
def test_build_fix_speaks_the_envs_language(tmp_path, kind, fix):
    """The arch fix of build.torch-extension (a CUDA 12.4 nvcc asked for sm_120) in each kind."""
    finding = build.torch_extension(_env(tmp_path, kind), REFUSED, parse_arch("12.0"))
    assert finding.outcome == "failed"
    assert fix in finding.fix, finding.fix
    assert kind != "venv" or "pixi.toml" not in finding.fix
