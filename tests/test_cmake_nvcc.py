"""cuda.nvcc-in-env predicts the nvcc a vLLM source build compiles with (F1.10,
instructlab/instructlab#3144): setup.py's ``$CUDA_HOME/bin/nvcc -V``, then CMake's pick
(``-DCMAKE_CUDA_COMPILER`` from torch's CUDA_HOME in vLLM >= 0.8.3, CMake's own search before).

The machine's own CUDA (``/usr/local/cuda``, ``/usr/local/bin/nvcc`` here) is hidden by
``fixtures.system_cuda``; toolkits are stand-in nvccs that answer ``--version``, and the CUDA 13
one is PyPI's real nvcc 13.0.88. The real CMake runs are in test_cmake_nvcc_integration.py.
"""

from __future__ import annotations

import json
import os
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.envs import EnvBuilder
from fixtures.system_cuda import hide_machine_cuda, toolkit
from fixtures.text import lit
from pytest_vllm_env.facts import build_nvcc
from pytest_vllm_env.readers import vllm_build
from pytest_vllm_env.tables import cmake_cuda

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
NVCC13 = "nvidia-cuda-nvcc==13.0.88"
# What vLLM's setup.py hands CMake, by release (read from the PyPI sdists: 0.4.1 to 0.8.2
# pass no CUDA compiler; 0.8.3 on pass CUDA_HOME's; 0.12.0 on append $CMAKE_ARGS).
SETUP_054 = """\
# STAND-IN for vLLM 0.5.4's setup.py (pytest-vllm-env fixture): the lines that reach cmake
from torch.utils.cpp_extension import CUDA_HOME
cmake_args = ["-DVLLM_TARGET_DEVICE=cuda", f"-DVLLM_PYTHON_EXECUTABLE={sys.executable}"]
subprocess.check_call(["cmake", ext.cmake_lists_dir, *build_tool, *cmake_args])
"""
SETUP_083 = SETUP_054.replace("0.5.4", "0.8.3").replace(
    "subprocess", 'cmake_args += [f"-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc"]\nsubprocess'
)


@pytest.fixture
def sysroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This machine without its CUDA: a fake /usr/local, PATH /usr/bin:/bin."""
    return hide_machine_cuda(monkeypatch, tmp_path)


def venv(root: Path, torch: str = "2.5.1+cu124", cuda: str = "12.4", cmake: str = "3.31.6"):
    """The reporter's venv: torch from PyPI (torch/version.py says its CUDA) and PyPI's cmake
    (a stand-in answering ``--version``: only its version changes the message)."""
    prefix = root / "venv"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").symlink_to(sys.executable)
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.10.12\n")
    sp = prefix / "lib" / "python3.10" / "site-packages"
    (sp / "torch").mkdir(parents=True)
    (sp / "torch" / "version.py").write_text(f"__version__ = {torch!r}\ncuda = {cuda!r}\n")
    info = sp / f"torch-{torch}.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {torch}\n")
    stub = prefix / "bin" / "cmake"
    stub.write_text(f"#!/bin/sh\necho 'cmake version {cmake}'\n")
    stub.chmod(0o755)
    return prefix


def source(root: Path, text: str = SETUP_054) -> Path:
    tree = root / "vllm-src"
    tree.mkdir(exist_ok=True)
    (tree / "setup.py").write_text(text)
    return tree


def run(pytester, prefix: Path, *args: str):
    return pytester.runpytest(*SUITE, "-k", "nvcc_in_env", f"--vllm-env={prefix}", *args)


def verdict(pytester, prefix: Path, *args: str) -> dict:
    """The check as the JSON report has it (a passing check prints nothing)."""
    report = pytester.path / "report.json"
    run(pytester, prefix, f"--vllm-env-report={report}", *args)
    (check,) = json.loads(report.read_text())["checks"]
    return check


def real_nvcc13(root: Path) -> Path:
    """A /usr/local/cuda-13.0 whose bin/nvcc runs PyPI's real CUDA 13.0.88 nvcc."""
    real = downloads.unpacked(NVCC13) / "nvidia" / "cu13" / "bin" / "nvcc"
    home = root / "usr" / "local" / "cuda-13.0"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc").write_text(f'#!/bin/sh\nexec "{real}" "$@"\n')
    (home / "bin" / "nvcc").chmod(0o755)
    return home


# -- F1.10: the reporter's venv ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("cmake", "says"),
    [("3.31.6", cmake_cuda.NO_NVCC_OLD), ("4.1.2", cmake_cuda.NO_NVCC_NEW)],
)
@pytest.mark.parametrize("cuda_home", [False, True], ids=["CUDA_HOME-unset", "CUDA_HOME-only"])
def test_f1_10_toolkit_off_path_fails(pytester, tmp_path, sysroot, monkeypatch, cmake, says,
                                      cuda_home):  # fmt: skip
    """instructlab#3144: torch 2.5.1+cu124 in a venv, the toolkit in /usr/local/cuda but not on
    PATH, a vLLM of August 2024 (0.5.x: CMake chooses the nvcc). Exporting only CUDA_HOME, half
    of the issue's fix, changes nothing: CMake never reads it."""
    home = toolkit(sysroot, "12.4.131", default=True).parent / "cuda"
    if cuda_home:
        monkeypatch.setenv("CUDA_HOME", str(home))
    prefix = venv(tmp_path, cmake=cmake)
    result = run(pytester, prefix, f"--vllm-source={source(tmp_path)}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "[cuda.nvcc-in-env] FAILED: CMake finds no nvcc ($CUDACXX, the C++ compiler's "
                "directory, PATH, the system prefixes, $CUDA_PATH/bin), so torch's "
                f'enable_language(CUDA) stops: "{says}" (CMake {cmake}); {home}/bin/nvcc exists '
                "but is in no directory CMake searches (and CMake never reads CUDA_HOME)"
            ),
            lit(
                f"  fix: use the system toolkit {home} (CUDA 12.4.131): `export "
                f"CUDA_HOME={home}` and `export PATH={home}/bin:$PATH` in the shell or job that "
                "builds (CMake searches PATH and never reads CUDA_HOME; setup.py and vLLM >= "
                f"0.8.3 take CUDA_HOME); add the lines to {prefix}/bin/activate to keep them"
            ),
            "  needed_because: --vllm-source: vLLM is to be built from source",
        ]
    )
    assert "pixi.toml" not in result.stdout.str()


def _path(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("PATH", f"{home}/bin{os.pathsep}{os.environ['PATH']}")


def _activate(prefix: Path, home: Path) -> None:
    (prefix / "bin" / "activate").write_text(
        f'VIRTUAL_ENV="{prefix}"\nexport PATH="$VIRTUAL_ENV/bin:$PATH"\n'
        f"export CUDA_HOME={home}\nexport PATH={home}/bin:$PATH\n"
    )


@pytest.mark.parametrize(
    ("fixed_by", "how"),
    [
        ("PATH", "`nvcc` on the activated PATH"),
        ("CUDACXX", "$CUDACXX (*)"),
        ("CUDA_PATH", "in */bin: $CUDA_PATH/bin, CMake's last resort"),
        ("bin/activate", "`nvcc` on the activated PATH"),
    ],
)
def test_f1_10_fixed_passes(pytester, tmp_path, sysroot, monkeypatch, fixed_by, how):
    """The issue's fix (PATH, with CUDA_HOME), and the other ways CMake really takes: CUDACXX,
    CUDA_PATH (CMake's last resort), the export lines kept in the venv's bin/activate."""
    home = toolkit(sysroot, "12.4.131", default=True)
    prefix = venv(tmp_path)
    if fixed_by == "PATH":
        _path(monkeypatch, home)
    elif fixed_by == "bin/activate":
        _activate(prefix, home)
    else:
        nvcc = home / "bin" / "nvcc"
        monkeypatch.setenv(fixed_by, str(nvcc if fixed_by == "CUDACXX" else home))
    check = verdict(pytester, prefix, f"--vllm-source={source(tmp_path)}")
    assert check["outcome"] == "passed"
    assert fnmatch(
        check["summary"],
        f"the vLLM in {tmp_path}/vllm-src compiles with {home}/bin/nvcc (CUDA 12.4.131, {how}, "
        "outside the env), torch's CUDA is 12.4",
    ), check["summary"]


def test_f1_10_layout_passes_for_vllm_0_8_3(pytester, tmp_path, sysroot):
    """vLLM >= 0.8.3 hands CMake torch's CUDA_HOME nvcc, and torch falls back to
    /usr/local/cuda: the reporter's layout builds. Never fail what works."""
    home = toolkit(sysroot, "12.4.131", default=True).parent / "cuda"
    prefix = venv(tmp_path)
    check = verdict(pytester, prefix, f"--vllm-source={source(tmp_path, SETUP_083)}")
    assert check["outcome"] == "passed"
    assert check["summary"].endswith(
        f"compiles with {home}/bin/nvcc (CUDA 12.4.131, -DCMAKE_CUDA_COMPILER from torch's "
        f"CUDA_HOME, torch's default {home}, outside the env), torch's CUDA is 12.4"
    ), check["summary"]


def test_f1_10_without_the_source_is_a_warning(pytester, tmp_path, sysroot):
    """Not knowing the vLLM built: the older family fails, the newer builds: a warning that
    says which, with the fix and how to be judged exactly."""
    home = toolkit(sysroot, "12.4.131", default=True).parent / "cuda"
    prefix = venv(tmp_path)
    (pytester.path / "build.log").write_text("-- Configuring done\n")
    result = run(pytester, prefix, "--vllm-build-log=build.log")
    assert result.ret == pytest.ExitCode.OK
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(
        [
            lit("[cuda.nvcc-in-env] vLLM < 0.8.3: CMake finds no nvcc (")
            + "*; vLLM >= 0.8.3 compiles with "
            + lit(f"{home}/bin/nvcc (CUDA 12.4.131, -DCMAKE_CUDA_COMPILER from torch's CUDA_HOME")
            + "*",
            "    fix: use the system toolkit *; or pass --vllm-source=PATH to judge the vLLM "
            "tree you build",
        ]
    )


# -- an nvcc that is not the one the env means ------------------------------------------------
def test_nvcc_of_another_major_than_torch_fails(pytester, tmp_path, sysroot, monkeypatch):
    """The toolkit on PATH is CUDA 13 (PyPI's real nvcc 13.0.88), torch is cu124: the build
    would link libcudart.so.13 into vLLM next to torch's .so.12. The fix names the CUDA 12.4
    toolkit the machine has; torch 2.5.1 has no CUDA 13 build, so no torch alternative."""
    cuda13 = real_nvcc13(sysroot)
    good = toolkit(sysroot, "12.4.131")
    _path(monkeypatch, cuda13)
    prefix = venv(tmp_path)
    result = run(pytester, prefix, f"--vllm-source={source(tmp_path)}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"[cuda.nvcc-in-env] FAILED: CMake would compile with {cuda13}/bin/nvcc "
                "(`nvcc` on the activated PATH), CUDA 13.0, but torch was built with CUDA 12.4: "
                "vLLM's extensions would link libcudart.so.13 next to torch's libcudart.so.12"
            ),
            lit(f"  fix: use the system toolkit {good} (CUDA 12.4.131): `export CUDA_HOME={good}`")
            + "*/bin/activate to keep them",
        ]
    )
    # torch 2.5.1 has no CUDA 13 build: no "whl/cu130" alternative (issue 21: no impossible
    # text)
    assert "cu130" not in result.stdout.str()


def test_nvcc_next_to_the_cxx_compiler_comes_before_path(pytester, tmp_path, sysroot, monkeypatch):
    """CMake looks next to the C++ compiler before PATH (measured): a distro nvcc in /usr/bin
    (Ubuntu's nvidia-cuda-toolkit, CUDA 11) wins over the right toolkit first on PATH, and only
    CUDACXX outranks it."""
    distro = tmp_path / "distro-bin"
    distro.mkdir()
    (distro / "g++").symlink_to("/usr/bin/g++")
    toolkit(sysroot, "11.5.119")
    (distro / "nvcc").symlink_to(sysroot / "usr/local/cuda-11.5/bin/nvcc")
    good = toolkit(sysroot, "12.4.131")
    _path(monkeypatch, good)
    monkeypatch.setenv("CXX", str(distro / "g++"))
    prefix = venv(tmp_path)
    result = run(pytester, prefix, f"--vllm-source={source(tmp_path)}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*FAILED: CMake would compile with {distro}/nvcc (in {distro}: next to the C++ "
                f"compiler {distro}/g++, where CMake looks first), CUDA 11.5, but torch was built "
                "with CUDA 12.4*"
            ),
            lit(f"  fix: use the system toolkit {good} (CUDA 12.4.131): `export CUDACXX={good}/")
            + "*",
        ]
    )
    monkeypatch.setenv("CUDACXX", str(good / "bin" / "nvcc"))
    run(pytester, prefix, f"--vllm-source={source(tmp_path)}").assert_outcomes(passed=1)


# -- Pixi and conda envs ----------------------------------------------------------------------
def _pixi_torch(b: EnvBuilder, cuda: str = "12.4") -> None:
    b.python("3.12")
    b.dist(
        "torch", "2.5.1", files={"torch/version.py": f"__version__ = '2.5.1'\ncuda = {cuda!r}\n"}
    )


def test_pixi_env_without_nvcc_fails_and_gets_a_cuda_nvcc_line(pytester, tmp_path, sysroot):
    """The same class in a Pixi env: no nvcc anywhere a build looks. The fix is the manifest's
    cuda-nvcc at torch's CUDA."""
    b = EnvBuilder(tmp_path / "ws")
    _pixi_torch(b)
    b.manifest("")
    result = run(pytester, b.prefix, f"--vllm-source={source(tmp_path)}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*FAILED: torch finds no CUDA_HOME (no CUDA_HOME or CUDA_PATH, no nvcc on PATH, no "
            "/usr/local/cuda), so vLLM's setup.py stops before CMake: \"AssertionError: "
            'CUDA_HOME is not set"',
            '  fix: add `cuda-nvcc = "12.4.*"` and `cuda-version = "12.4.*"` to '
            "[[]dependencies] in pixi.toml (its bin/nvcc comes first on the activated PATH, "
            "where CMake and torch look)",
        ]
    )


def test_pixi_activation_that_puts_a_toolkit_on_path_passes(pytester, tmp_path, sysroot):
    """A system toolkit put on PATH by the manifest's [activation.env] is what CMake finds."""
    home = toolkit(sysroot, "12.4.131")
    b = EnvBuilder(tmp_path / "ws")
    _pixi_torch(b)
    b.manifest(f'[activation.env]\nPATH = "{home}/bin:$PATH"\nCUDA_HOME = "{home}"\n')
    check = verdict(pytester, b.prefix, f"--vllm-source={source(tmp_path)}")
    assert check["outcome"] == "passed"
    assert (
        f"compiles with {home}/bin/nvcc (CUDA 12.4.131, `nvcc` on the activated PATH"
        in (check["summary"])
    )


def test_pixi_cudacxx_naming_another_nvcc_fails(pytester, tmp_path, sysroot):
    """The env has its own cuda-nvcc, but [activation.env] sets CUDACXX to the system's:
    CMake takes CUDACXX before any search. Not the nvcc the env means."""
    other = toolkit(sysroot, "12.6.85")
    b = EnvBuilder(tmp_path / "ws")
    _pixi_torch(b)
    own = toolkit(tmp_path / "own", "12.4.131")
    (b.prefix / "bin" / "nvcc").symlink_to(own / "bin" / "nvcc")
    b.conda("cuda-nvcc", "12.4.131", "0")
    b.manifest(f'[activation.env]\nCUDACXX = "{other}/bin/nvcc"\n')
    result = run(pytester, b.prefix, f"--vllm-source={source(tmp_path)}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*FAILED: nvcc is in the env ({b.prefix}/bin/nvcc) but CMake would compile with "
                f"{other}/bin/nvcc ($CUDACXX ({other}/bin/nvcc))"
            ),
            '  fix: set `CUDACXX = "${CONDA_PREFIX}/bin/nvcc"` in [[]activation.env] in pixi.toml',
        ]
    )
    # vLLM >= 0.8.3 hands CMake CUDA_HOME's nvcc, which CUDACXX does not touch: the env's own
    run(pytester, b.prefix, f"--vllm-source={source(tmp_path, SETUP_083)}").assert_outcomes(
        passed=1
    )


def test_conda_activate_d_script_that_exports_the_toolkit_passes(pytester, tmp_path, sysroot):
    """A conda prefix whose etc/conda/activate.d script exports the system toolkit."""
    home = toolkit(sysroot, "12.4.131")
    b = EnvBuilder(tmp_path, "envs/x", bare=True)
    _pixi_torch(b)
    b.activate_script("cuda.sh", f"export CUDA_HOME={home}\nexport PATH={home}/bin:$PATH\n")
    result = run(pytester, b.prefix, f"--vllm-source={source(tmp_path)}")
    result.assert_outcomes(passed=1)
    (b.prefix / "etc/conda/activate.d/cuda.sh").unlink()
    result = run(pytester, b.prefix, f"--vllm-source={source(tmp_path)}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"  fix: install into the env: `conda install -p {b.prefix} -c conda-forge "
                '"cuda-nvcc=12.4.*" "cuda-version=12.4.*"`*'
            )
        ]
    )


# -- the search itself, against what CMake 3.31 and 4.4 were measured to do -------------------
def _nvcc(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "nvcc").write_text("#!/bin/sh\n")
    (d / "nvcc").chmod(0o755)
    return d / "nvcc"


def test_search_order_is_cmakes(tmp_path):
    cxx_dir, prefix, program, on_path, system, cuda_path = (
        tmp_path / n for n in ("cxx", "pfx", "prog", "path", "sys", "cudapath")
    )
    (cxx_dir).mkdir()
    (cxx_dir / "g++").symlink_to("/usr/bin/g++")
    env = {
        "PATH": f"{on_path}:/usr/bin:/bin",
        "CXX": str(cxx_dir / "g++"),
        "CMAKE_PREFIX_PATH": str(prefix),
        "CMAKE_PROGRAM_PATH": str(program),
        "CUDA_PATH": str(cuda_path),
        "CUDA_HOME": str(tmp_path / "home"),  # never read by CMake's search
    }
    _nvcc(tmp_path / "home" / "bin")
    order = [
        (cuda_path / "bin", "$CUDA_PATH/bin"),
        (system / "bin", "system prefix"),
        (on_path, "PATH"),
        (program, "$CMAKE_PROGRAM_PATH"),
        (prefix, "$CMAKE_PREFIX_PATH"),  # <prefix> itself too (measured)
        (prefix / "bin", "$CMAKE_PREFIX_PATH"),
        (cxx_dir, "C++ compiler"),
    ]
    for directory, _ in order:
        nvcc = _nvcc(directory)
        assert build_nvcc.cmake_search(env, system_prefixes=[str(system)]).nvcc == nvcc
    cudacxx = _nvcc(tmp_path / "cudacxx")
    assert build_nvcc.cmake_search({**env, "CUDACXX": str(cudacxx)}).nvcc == cudacxx
    missing = build_nvcc.cmake_search({**env, "CUDACXX": str(tmp_path / "nope")})
    assert missing.nvcc is None and "CUDACXX" in missing.stop


def test_cmake_args_compiler_wins_over_cuda_home(tmp_path):
    """From vLLM 0.12.0 $CMAKE_ARGS follows setup.py's own -DCMAKE_CUDA_COMPILER, and the last
    -D wins (measured with CMake 4.4.5)."""
    home, given = _nvcc(tmp_path / "home" / "bin"), _nvcc(tmp_path / "given")
    env = {"PATH": "/usr/bin:/bin", "CUDA_HOME": str(home.parent.parent),
           "CMAKE_ARGS": f"-DCMAKE_CUDA_COMPILER={given} -DX=1"}  # fmt: skip
    assert build_nvcc.pick_for(vllm_build.NEW_VLLM, env).nvcc == given
    assert build_nvcc.pick_for(vllm_build.NEW_VLLM, {**env, "CMAKE_ARGS": ""}).nvcc == home
    # vLLM < 0.12 never sees CMAKE_ARGS
    old_new = vllm_build.VllmSetup("vLLM 0.8.3", cuda_home=True, cmake_args=False)
    assert build_nvcc.pick_for(old_new, env).nvcc == home
