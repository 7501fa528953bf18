"""cuda.nvcc-torch and the CUDA fixes that must follow torch's CUDA (issue 12, family 2):
the nvcc a build uses against torch/version.py, as torch.utils.cpp_extension compares them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.elf import nvcc as real_nvcc
from fixtures.envs import EnvBuilder
from fixtures.text import lit

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")


def standin_nvcc(root: Path, release: str) -> Path:
    """A stand-in nvcc that answers ``--version`` as CUDA ``release`` (e.g. a system 12.9)."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(
        "#!/bin/sh\n# STAND-IN nvcc (pytest-vllm-env fixture)\n"
        f'[ "$1" = "--version" ] && echo "Cuda compilation tools, release {release}, '
        f'V{release}.99" && exit 0\nexit 1\n'
    )
    nvcc.chmod(0o755)
    return nvcc


def torch_env(b: EnvBuilder, version: str, cuda: str | None, cuda_home: Path | None) -> Path:
    b.python("3.10")
    b.dist(
        "torch",
        version,
        files={"torch/version.py": f"__version__ = {version!r}\ncuda = {cuda!r}\n"},
    )
    if cuda_home is not None:
        b.manifest(f'[activation.env]\nCUDA_HOME = "{cuda_home}"\n')
    return b.prefix


def run(
    pytester,
    prefix: Path,
    k: str = "nvcc_matches_torch or version_consistent",
    *extra,
    builds: bool = True,
):
    """The suite on ``prefix``; ``builds``: the run judges a vLLM build (``--vllm-build-log``),
    without which cuda.nvcc-torch has nothing to compare (nothing compiles)."""
    also = ("--vllm-build-log=build.log",) if builds else ()
    return pytester.runpytest(*SUITE, "-k", k, f"--vllm-env={prefix}", "-rs", *also, *extra)


def test_system_nvcc_12_9_against_conda_torch_cu118_fails(
    pytester, env_builder, tmp_path, monkeypatch
):
    """flash-attention#1759 (F5.6): conda torch 2.2.0 built with CUDA 11.8, a system nvcc 12.9
    on PATH and in CUDA_HOME: "The detected CUDA version (12.9) mismatches the version that was
    used to compile PyTorch (11.8)". The fix keeps torch's CUDA (not the old default 12.8)."""
    system = tmp_path / "usr-local-cuda-12.9"
    standin_nvcc(system, "12.9")
    monkeypatch.setenv("PATH", f"{system / 'bin'}{os.pathsep}{os.defpath}")
    env_builder.conda("cudatoolkit", "11.8.0")
    prefix = torch_env(env_builder, "2.2.0", "11.8", system)
    result = run(pytester, prefix)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            # the toolkit check no longer passes nvcc 12.9 beside 11.8 packages
            lit(
                f"*[cuda.version-consistent] FAILED: nvcc {system}/bin/nvcc is CUDA 12.9.99 but "
                "the env's CUDA packages are 11.8: cudatoolkit 11.8.0 (torch is built with CUDA "
                "11.8)*"
            ),
            lit(
                '*fix: pin `cuda-version = "11.8.*"` and `cuda-nvcc = "11.8.*"` in [dependencies]*'
            ),
            lit(
                f"*[cuda.nvcc-torch] FAILED: the build's nvcc {system}/bin/nvcc (CUDA_HOME="
                f"{system}) is CUDA 12.9, torch 2.2.0 was built with CUDA 11.8: "
                'torch.utils.cpp_extension stops with "The detected CUDA version (12.9) '
                'mismatches the version that was used to compile PyTorch (11.8)"*'
            ),
            # torch 2.2.0 has no cu129 build: the other way is its CUDA 12 build, cu121
            '*fix: use torch\'s CUDA for the build: pin `cuda-version = "11.8.*"` and `cuda-nvcc = '
            '"11.8.*"`*nvidia channel*or install a torch built for CUDA 12.1*whl/cu121*',
        ]
    )


def test_minor_mismatch_builds_with_a_warning(pytester, env_builder, tmp_path):
    system = tmp_path / "cuda-12.9"
    standin_nvcc(system, "12.9")
    prefix = torch_env(env_builder, "2.8.0+cu128", "12.8", system)
    result = run(pytester, prefix, k="nvcc_matches_torch")
    assert result.parseoutcomes().get("warned") == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*is CUDA 12.9, torch 2.8.0+cu128 was built with 12.8*"])


def test_matching_nvcc_passes_and_cpu_torch_skips(pytester, env_builder, tmp_path):
    system = tmp_path / "cuda-12.8"
    standin_nvcc(system, "12.8")
    prefix = torch_env(env_builder, "2.8.0+cu128", "12.8", system)
    run(pytester, prefix, k="nvcc_matches_torch").assert_outcomes(passed=1)
    (env_builder.site_packages / "torch" / "version.py").write_text("cuda = None\n")
    run(pytester, prefix, k="nvcc_matches_torch").assert_outcomes(skipped=1)


@pytest.mark.skipif(real_nvcc() is None, reason="no real nvcc")
def test_real_nvcc_13_against_a_cu128_torch(pytester, env_builder):
    """This machine's real nvcc 13.0 as CUDA_HOME, next to a torch built for CUDA 12.8."""
    home = Path(real_nvcc()).resolve().parent.parent
    prefix = torch_env(env_builder, "2.9.1+cu128", "12.8", home)
    result = run(pytester, prefix, k="nvcc_matches_torch")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[cuda.nvcc-torch] FAILED: the build's nvcc {home}/bin/nvcc*is CUDA 13.0, torch"
                " 2.9.1+cu128 was built with CUDA 12.8*"
            ),
            '*`cuda-version = "12.8.*"`*or install a torch built for CUDA 13.0*whl/cu130*',
        ]
    )


def test_prebuilt_wheels_have_no_nvcc_to_compare(pytester, env_builder, tmp_path):
    """Issue 21: a venv that runs prebuilt wheels got "none needed" from cuda.nvcc-in-env
    beside a failing cuda.nvcc-torch for a system nvcc it never runs. Nothing compiles:
    one story, the nvcc check skips naming the check that decided it."""
    system = tmp_path / "cuda-13.0"
    standin_nvcc(system, "13.0")
    prefix = torch_env(env_builder, "2.8.0+cu128", "12.8", system)
    result = run(pytester, prefix, "nvcc_in_env or nvcc_matches_torch", builds=False)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*[[]cuda.nvcc-torch] no vLLM build here*cuda.nvcc-in-env: the env runs prebuilt*"]
    )
    # a build judged: the mismatch is a failure again
    run(pytester, prefix, "nvcc_matches_torch").assert_outcomes(failed=1)


def test_nvcc_fix_follows_torch_cuda_not_a_default(pytester, env_builder, monkeypatch, tmp_path):
    """No nvcc in the env, a build asked for and a cu118 torch: the fix pins 11.8, not the old
    default 12.8."""
    monkeypatch.setenv("PATH", os.defpath)
    prefix = torch_env(env_builder, "2.2.0", "11.8", None)
    (tmp_path / "pyproject.toml").write_text("")  # a vLLM checkout holds one (--vllm-source)
    result = run(pytester, prefix, "nvcc_in_env", f"--vllm-source={tmp_path}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ['*fix: add `cuda-nvcc = "11.8.*"` and `cuda-version = "11.8.*"` to [[]dependencies]*']
    )


def test_setup_py_and_cpp_extension_run_one_nvcc(tmp_path, monkeypatch):
    """vLLM's setup.py (``cuda.nvcc-in-env`` for a build) and torch.utils.cpp_extension
    (``cuda.nvcc-torch``) run the same ``$CUDA_HOME/bin/nvcc``: one reader gives both the same
    run, and a CUDA_HOME without nvcc is "does not exist" for both."""
    from fixtures.system_cuda import hide_machine_cuda
    from pytest_vllm_env.facts import build_nvcc
    from pytest_vllm_env.facts.toolkit import ToolkitFacts

    hide_machine_cuda(monkeypatch, tmp_path)
    system = tmp_path / "cuda-12.9"
    standin_nvcc(system, "12.9")

    def facts(home: Path) -> ToolkitFacts:
        environ = {"CUDA_HOME": str(home), "PATH": os.environ["PATH"]}
        return ToolkitFacts(
            tmp_path / "env", [], None, None, {}, [], [], [], {}, {}, [], None, environ
        )

    run, why = build_nvcc.torch_nvcc(facts(system))
    build = build_nvcc.read_build_nvcc(facts(system), None, toolkits=False)
    assert (build.setup_nvcc, build.setup_why) == (run, why)
    assert run is not None and run.version == "12.9.99" and why == f"CUDA_HOME={system}"
    gone, _ = build_nvcc.torch_nvcc(facts(tmp_path / "nope"))
    assert gone is not None and (gone.ok, gone.problem) == (False, "does not exist")
    assert build_nvcc.read_build_nvcc(facts(tmp_path / "nope"), None).setup_nvcc == gone
