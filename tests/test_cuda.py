"""The cuda area, run as users run it: the conformance suite against seed envs built from
real CUDA files (fixtures/cuda_envs.py), asserting outcomes and the fix text users read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fixtures.cuda_envs import seed_env
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env.cache import FactCache
from pytest_vllm_env.checks import cuda
from pytest_vllm_env.facts import toolkit
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.toolkit import TARGETS
from pytest_vllm_env.tables import cuda_archs
from pytest_vllm_env.tables.archs import parse_arch

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")


@pytest.fixture(scope="session")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tree of seed envs per run, shared by xdist workers (file-locked builds)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture
def system_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for /usr/local/cuda on the outer PATH (an nvcc outside the env)."""
    bin_dir = tmp_path / "usr-local-cuda" / "bin"
    bin_dir.mkdir(parents=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return nvcc


def run(pytester: pytest.Pytester, prefix: Path, *args: str, k: str = "test_cuda.py"):
    return pytester.runpytest(*SUITE, "-k", k, "--vllm-env", str(prefix), *args)


def test_good_env_passes_every_toolchain_check(pytester, seeds_root):
    env = seed_env(seeds_root, "good-12.8")
    result = run(pytester, env.prefix, "-m", "toolchain", "--cuda-arch", "12.0")
    result.assert_outcomes(passed=8, skipped=1)  # cuda.nvcc-torch: no torch in this env


def test_cudatoolkit_dev_gives_no_nvcc(pytester, seeds_root, system_cuda):
    env = seed_env(seeds_root, "cudatoolkit-dev")
    result = run(pytester, env.prefix, "-k", "nvcc_in_env")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[cuda.nvcc-in-env] FAILED: no nvcc in {env.prefix}/bin; cudatoolkit-dev, "
                "cudatoolkit is installed but gives no nvcc in the env*; CMake would compile "
                f"with {system_cuda} (`nvcc` on the activated PATH)"
            ),
            lit(
                '*fix: add `cuda-nvcc = "12.8.*"` and `cuda-version = "12.8.*"` to [dependencies] '
                "in pixi.toml and remove cudatoolkit-dev, cudatoolkit"
            ),
        ]
    )


def test_nvcc_only_lacks_driver_nvrtc_and_nvtx(pytester, seeds_root):
    env = seed_env(seeds_root, "nvcc-only")
    result = run(pytester, env.prefix, "-k", "cmake_components")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[cuda.cmake-components] FAILED: CMake's FindCUDAToolkit will not create: "
                "CUDA::cuda_driver (libcuda.so); CUDA::nvrtc (libnvrtc.so)"
            ),
            lit(
                '*fix: add `cuda-driver-dev = "12.8.*"` and `cuda-nvrtc-dev = "12.8.*"` to '
                "[dependencies] in pixi.toml, or `cuda-toolkit` for all of them"
            ),
            # NVTX depends on torch's CMake (and CUDA >= 12.9 has no libnvToolsExt): not here
            "*nvToolsExt: judged by nvtx.cmake-target*",
        ]
    )


def test_cuda_home_at_targets_dir(pytester, seeds_root):
    env = seed_env(seeds_root, "cuda-home-targets")
    result = run(pytester, env.prefix, "-k", "cuda_home")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[cuda.cuda-home] FAILED: CUDA_HOME={env.prefix}/targets/x86_64-linux (set by "
                "[activation.env] in pixi.toml) has no bin/nvcc"
            ),
            lit('*fix: set `CUDA_HOME = "${CONDA_PREFIX}"` in [activation.env] in pixi.toml*'),
        ]
    )


def test_cuda_124_cannot_target_rtx_5090(pytester, seeds_root):
    env = seed_env(seeds_root, "cuda-12.4")
    result = run(
        pytester, env.prefix, "--cuda-arch", "12.0", "--cuda-arch", "9.0", k="test_cuda.py and arch"
    )
    # arch-supported (toolchain) and arch-ptxas (build, the real 12.4 ptxas) both fail
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[cuda.arch-supported] FAILED: CUDA 12.4.131 nvcc cannot generate code for "
                "sm_120 (12.0, from --cuda-arch); it needs CUDA >= 12.8"
            ),
            lit(
                '*fix: set `cuda-version = "12.8.*"` and `cuda-nvcc = "12.8.*"` in '
                "[dependencies] in pixi.toml"
            ),
        ]
    )
    result.stdout.fnmatch_lines(
        [lit("*[cuda.arch-ptxas] FAILED: *ptxas refuses sm_120: *Value 'sm_120' is not defined*")]
    )
    assert "refuses sm_90" not in result.stdout.str()


def test_good_env_real_ptxas_accepts_sm_120(pytester, seeds_root):
    env = seed_env(seeds_root, "good-12.8")
    result = run(pytester, env.prefix, "-k", "arch_ptxas", "--cuda-arch", "12.0")
    result.assert_outcomes(passed=1)


def test_real_cuda13_nvcc_lists_its_archs(pytester, seeds_root):
    env = seed_env(seeds_root, "cuda-13.0-real-nvcc")
    result = run(
        pytester, env.prefix, "-k", "nvcc_runs or arch_supported", "--cuda-arch", "12.0", "-rA"
    )
    result.assert_outcomes(passed=2)
    result = run(pytester, env.prefix, "-k", "arch_supported", "--cuda-arch", "7.0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit("*[cuda.arch-supported] FAILED: CUDA 13.0.88 nvcc cannot generate code for sm_70*"),
            "*fix: drop 7.0 from --cuda-arch: CUDA 13.0.88 no longer targets it*",
        ]
    )


def test_nvcc_and_conda_meta_disagree(pytester, seeds_root, tmp_path):
    good = seed_env(seeds_root, "good-12.8")
    b = EnvBuilder(tmp_path)
    b.python()
    (b.prefix / "bin" / "nvcc").symlink_to(good.prefix / "bin" / "nvcc")
    b.conda("cuda-version", "12.4", "0")
    b.conda("cuda-nvcc", "12.4.131", "0")
    result = run(pytester, b.prefix, "-k", "version_consistent")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[cuda.version-consistent] FAILED: nvcc * is CUDA 12.8.93 "
                "but cuda-version pins 12.4"
            ),
            lit(
                '*fix: pin `cuda-version = "12.4.*"` and `cuda-nvcc = "12.4.*"` in '
                "[dependencies] in pixi.toml: one CUDA for nvcc and the cuda-* packages"
            ),
        ]
    )


# -- bad input --------------------------------------------------------------------------
def test_non_executable_nvcc_is_an_error(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.file("bin/nvcc", "not a program\n")  # mode 644
    env_builder.conda("cuda-nvcc", "12.8.93")
    result = run(pytester, env_builder.prefix, "-k", "nvcc_runs")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([lit("*[cuda.nvcc-runs] ERROR: */bin/nvcc does not work: *")])
    assert "Traceback" not in result.stdout.str()


def test_hanging_nvcc_times_out(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.file("bin/nvcc", "#!/bin/sh\nsleep 60\n").chmod(0o755)
    result = run(pytester, env_builder.prefix, "-k", "nvcc_runs", "--cuda-tool-timeout", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [lit("*[cuda.nvcc-runs] ERROR: *nvcc --version` did not finish within 1 s and was killed")]
    )
    assert result.duration < 20


def test_broken_cuda_record_is_an_error(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.conda("cuda-version", "12.8")
    bad = env_builder.broken_record("cuda-nvcc-12.8.93-0.json")
    result = run(pytester, env_builder.prefix, "-k", "version_consistent")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [lit(f"*[cuda.version-consistent] ERROR: conda-meta records that do not parse: {bad}")]
    )


def test_dangling_symlink_in_lib(pytester, seeds_root, tmp_path):
    good = seed_env(seeds_root, "nvcc-only")
    b = EnvBuilder(tmp_path)
    b.python()
    (b.prefix / "bin" / "nvcc").symlink_to(good.prefix / "bin" / "nvcc")
    b.symlink("lib/libcudart.so", "../targets/x86_64-linux/lib/libcudart.so.12")  # nowhere
    result = run(pytester, b.prefix, "-k", "cmake_components")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit("*[cuda.cmake-components] FAILED: *CUDA::cudart (libcudart.so)*"),
            f"*dangling_symlinks: {b.prefix}/lib/libcudart.so -> ../targets*",
        ]
    )


# -- library ----------------------------------------------------------------------------
def test_nvcc_runs_once_per_path(seeds_root, tmp_path):
    env = PixiEnv.read(seed_env(seeds_root, "good-12.8").prefix)
    cache = FactCache(tmp_path / "facts")
    computed = []

    def cached(name, compute, deps):
        return cache.get(name, lambda: computed.append(name) or compute(), deps)

    first = toolkit.read_toolkit(env, cached)
    second = toolkit.read_toolkit(env, cached)
    assert first.version == second.version == "12.8.93"
    assert len(computed) == 1


def test_arch_table_matches_measured_ptxas():
    assert parse_arch("12.0") not in cuda_archs.archs_of_toolkit("12.4")
    assert parse_arch("12.0") in cuda_archs.archs_of_toolkit("12.8")
    assert parse_arch("12.1") not in cuda_archs.archs_of_toolkit("12.8")
    assert parse_arch("7.0") not in cuda_archs.archs_of_toolkit("13.0")
    assert cuda_archs.min_toolkit_for(parse_arch("sm_120")) == "12.8"


def test_arch_table_names_cuda_variants_and_compares_versions():
    # one spelling for the tag every torch index and fix uses, from the toolkit <-> arch table
    assert cuda_archs.cuda_tag("12.8") == "cu128"
    assert cuda_archs.cuda_tag("11.8") == "cu118"
    assert cuda_archs.version_tuple("V12.8.93") == (12, 8, 93)
    assert cuda_archs.min_nvcc(parse_arch("12.1")) == "12.9"
    assert cuda_archs.min_nvcc(parse_arch("12.5")) == "a newer CUDA"


def _facts(prefix: Path, environ: dict[str, str], **known) -> toolkit.ToolkitFacts:
    """A toolkit as the checks see it, made by hand: nothing on disk is asked."""
    t = toolkit.ToolkitFacts(prefix, [], None, None, {}, [], [], [], {}, {}, [], None, environ)
    for name, value in known.items():
        setattr(t, name, value)
    return t


def test_cuda_home_is_judged_from_facts_alone(tmp_path):
    """The seed's CUDA_HOME at targets/x86_64-linux (headers, no bin/nvcc), judged from what
    read_toolkit gathered: the check opens nothing, so paths that do not exist judge the same."""
    env = PixiEnv(prefix=tmp_path / "nowhere")
    home = f"{env.prefix}/targets/x86_64-linux"
    headers_only = _facts(
        env.prefix, {"CUDA_HOME": home}, home_files={"CUDA_HOME": frozenset({"include/cuda.h"})}
    )
    bad = cuda.cuda_home(env, headers_only)
    assert bad.outcome == "failed"
    assert bad.summary == f"CUDA_HOME={home} (set by the outer environment) has no bin/nvcc"
    whole = _facts(
        env.prefix,
        {"CUDA_HOME": str(env.prefix)},
        home_files={"CUDA_HOME": frozenset({"bin/nvcc", f"{toolkit.TARGETS}/include/cuda.h"})},
    )
    assert cuda.cuda_home(env, whole).outcome == "passed"


def test_ld_library_path_is_judged_from_facts_alone(tmp_path):
    env = PixiEnv(prefix=tmp_path / "nowhere")
    other = toolkit.LdEntry("/usr/local/cuda-12.4/lib64", own=False, cudart=True)
    own = toolkit.LdEntry(f"{env.prefix}/lib", own=True, cudart=False)
    value = f"{other.path}:{own.path}"
    first = _facts(env.prefix, {"LD_LIBRARY_PATH": value}, ld_library_path=[other, own])
    assert cuda.ld_library_path(env, first).outcome == "failed"
    after = _facts(env.prefix, {"LD_LIBRARY_PATH": value}, ld_library_path=[own, other])
    assert cuda.ld_library_path(env, after).outcome == "passed"


def test_toolkit_facts_say_what_the_checks_ask(tmp_path):
    """read_toolkit gathers what cuda_home and ld_library_path judge: CUDA_HOME's files, and
    which LD_LIBRARY_PATH entry holds another CUDA's runtime."""
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    other = tmp_path / "other-cuda" / "lib64"
    other.mkdir(parents=True)
    (other / "libcudart.so.12").write_bytes(b"")
    (b.prefix / TARGETS / "include").mkdir(parents=True)
    (b.prefix / TARGETS / "include" / "cuda.h").write_text("")
    manifest = b.manifest(
        f'[activation.env]\nCUDA_HOME = "{b.prefix}"\nLD_LIBRARY_PATH = "{other}:{b.prefix}/lib"\n'
    )
    t = toolkit.read_toolkit(PixiEnv.read(b.prefix, name="default", manifest=manifest), timeout=10)
    assert t.home_files == {"CUDA_HOME": frozenset({f"{TARGETS}/include/cuda.h"})}
    assert [(e.path, e.own, e.cudart) for e in t.ld_library_path] == [
        (str(other), False, True),
        (f"{b.prefix}/lib", True, False),
    ]


def _env_with_nvcc(b: EnvBuilder, good: EnvBuilder, activation: str) -> None:
    b.python()
    (b.prefix / "bin" / "nvcc").symlink_to(good.prefix / "bin" / "nvcc")
    b.conda("cuda-version", "12.8", "0")
    b.manifest("[activation.env]\n" + activation)


def test_activation_path_puts_another_nvcc_first(pytester, seeds_root, tmp_path, system_cuda):
    b = EnvBuilder(tmp_path / "ws")
    _env_with_nvcc(b, seed_env(seeds_root, "good-12.8"), f'PATH = "{system_cuda.parent}:$PATH"\n')
    result = run(pytester, b.prefix, "-k", "nvcc_in_env")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[cuda.nvcc-in-env] FAILED: nvcc is in the env ({b.prefix}/bin/nvcc) but the "
                f"activated PATH finds {system_cuda} first"
            ),
            lit("*fix: put */bin first on PATH: remove the PATH override from [activation.env]*"),
        ]
    )


def test_ld_library_path_with_another_cuda_first(pytester, seeds_root, tmp_path):
    other = tmp_path / "cuda-11" / "lib64"
    other.mkdir(parents=True)
    (other / "libcudart.so.11.0").write_bytes(b"")
    b = EnvBuilder(tmp_path / "ws")
    _env_with_nvcc(
        b,
        seed_env(seeds_root, "good-12.8"),
        f'LD_LIBRARY_PATH = "{other}:${{CONDA_PREFIX}}/lib"\n',
    )
    result = run(pytester, b.prefix, "-k", "ld_library_path")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[cuda.ld-library-path] FAILED: LD_LIBRARY_PATH (set by [activation.env] in "
                f"pixi.toml) puts {other}, another CUDA's libraries, before {b.prefix}/lib"
            ),
        ]
    )


def test_vllm_python_variable_has_no_effect(pytester, seeds_root, tmp_path):
    """Family 8: vLLM's setup.py passes -DVLLM_PYTHON_EXECUTABLE=sys.executable and its
    CMakeLists never reads $ENV{VLLM_PYTHON_EXECUTABLE} (0.4.1 to 0.33 read): the variable,
    which this check used to ask for, changes nothing. The verdict says so."""
    other = tmp_path / "other-env" / "bin" / "python3"  # e.g. the base env's Python
    b = EnvBuilder(tmp_path / "ws")
    _env_with_nvcc(b, seed_env(seeds_root, "good-12.8"), f'VLLM_PYTHON_EXECUTABLE = "{other}"\n')
    result = run(pytester, b.prefix, "-k", "vllm_python")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*set `VLLM_PYTHON_EXECUTABLE*")


def test_python_on_path_is_what_cmake_gets(pytester, seeds_root, tmp_path):
    """Another Python first on the activated PATH: `python -m pip install -e .` runs setup.py
    with it and CMake gets it; the fix names the command, not a variable."""
    other_bin = tmp_path / "other-env" / "bin"
    other_bin.mkdir(parents=True)
    (other_bin / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (other_bin / "python").chmod(0o755)
    b = EnvBuilder(tmp_path / "ws")
    _env_with_nvcc(
        b,
        seed_env(seeds_root, "good-12.8"),
        f'PATH = "{other_bin}:$PATH"\nVLLM_PYTHON_EXECUTABLE = "${{CONDA_PREFIX}}/bin/python"\n',
    )
    result = run(pytester, b.prefix, "-k", "vllm_python")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[cuda.vllm-python] FAILED: `python` on the activated PATH is "
                f"{other_bin}/python, not the env's {b.prefix}/bin/python3*VLLM_PYTHON_EXECUTABLE="
                "*(set by [activation.env] in pixi.toml) has no effect*"
            ),
            lit("*fix: build with the env's interpreter: `pixi run python -m pip install*"),
        ]
    )


@pytest.mark.build
@pytest.mark.parametrize(
    "requirement,path",
    [
        ("nvidia-cuda-nvcc-cu12==12.4.131", "nvidia/cuda_nvcc/bin/ptxas"),
        ("nvidia-cuda-nvcc-cu12==12.8.93", "nvidia/cuda_nvcc/bin/ptxas"),
        ("nvidia-cuda-nvcc==13.0.88", "nvidia/cu13/bin/ptxas"),
    ],
)
def test_arch_table_agrees_with_real_ptxas(requirement, path, tmp_path):
    """Principle 3: the ARCH_FIRST table (used where nvcc cannot list its archs) says what
    the real ptxas of that release does."""
    from fixtures import downloads

    ptxas = downloads.unpacked(requirement) / path
    version = requirement.split("==")[1]
    table = set(cuda_archs.archs_of_toolkit(version))
    disagree = []
    for cc in (
        "7.0",
        "7.5",
        "8.0",
        "8.9",
        "9.0",
        "9.0a",
        "10.0",
        "10.1",
        "10.3",
        "11.0",
        "12.0",
        "12.1",
    ):
        arch = parse_arch(cc)
        real = toolkit.ptxas_accepts(ptxas, arch, tmp_path, dict(os.environ)).ok
        if real != (arch in table):
            disagree.append(f"{cc}: ptxas {real}, table {arch in table}")
    assert disagree == []


def test_the_fix_works_cuda_home_at_prefix(pytester, tmp_path):
    """Apply the verdict's fix to seed 004: CUDA_HOME = "${CONDA_PREFIX}" passes."""
    b = seed_env(tmp_path, "cuda-home-targets")
    text = (b.workspace / "pixi.toml").read_text()
    (b.workspace / "pixi.toml").write_text(text.replace("}/targets/x86_64-linux", "}"))
    result = run(pytester, b.prefix, "-k", "cuda_home")
    result.assert_outcomes(passed=1)
