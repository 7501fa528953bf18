# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The run-time layer, run as users run it: the conformance suite against fixture envs holding
stand-ins in the shapes of the real releases (fixtures/runtime_standin.py). Each check has a
case that passes, a case that reproduces a real failure (cited), and its fix applied. The same
checks on the real wheels: tests/test_runtime_integration.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import runtime_standin as S
from fixtures.envs import EnvBuilder
from fixtures.text import lit

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")


def run(pytester: pytest.Pytester, env: EnvBuilder, k: str, *args: str, arch: str | None = "9.0"):
    report = pytester.path / "report.json"
    extra = [f"--cuda-arch={a}" for a in (arch.split(",") if arch else [])]
    result = pytester.runpytest(
        *SUITE, "-k", k, f"--vllm-env={env.prefix}", f"--vllm-env-report={report}", *extra, *args
    )
    assert "Traceback" not in result.stdout.str()
    return result


def one(result: pytest.RunResult) -> str:
    """The outcome of a run that selected one test: passed, warned, failed or skipped."""
    counts = result.parseoutcomes()
    got = [k for k in ("passed", "warned", "failed", "skipped", "error", "errors") if counts.get(k)]
    assert len(got) == 1 and counts[got[0]] == 1, counts
    return got[0]


def findings(pytester: pytest.Pytester, cid: str) -> list[dict]:
    checks = json.loads((pytester.path / "report.json").read_text())["checks"]
    return [c for c in checks if c["id"] == cid]


@pytest.fixture
def env(env_builder: EnvBuilder) -> EnvBuilder:
    """A Pixi env with a conda-forge Python (headers included)."""
    env_builder.python("3.12")
    S.python_headers(env_builder)
    return env_builder


# -- triton.ptxas ----------------------------------------------------------------------------
def test_triton_35_on_dgx_spark_fails_as_triton_8539(pytester, env):
    """triton-lang/triton#8539: Triton 3.5's bundled ptxas (CUDA 12.8) on a GB10 (sm_121):
    "ptxas fatal : Value 'sm_121a' is not defined for option 'gpu-name'"."""
    S.install_triton(env, "3.5.1", S.TRITON_35, {"ptxas": "12.8"})
    result = run(pytester, env, "test_triton_ptxas", arch="12.1")
    assert one(result) == "failed"
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[triton.ptxas] FAILED: Triton 3.5.1 assembles for 12.1 with `--gpu-name=sm_121a` "
                'using its bundled ptxas (CUDA 12.8), which refuses it: "ptxas fatal : Value '
                "'sm_121a' is not defined for option 'gpu-name'\"*"
            ),
        ]
    )
    (f,) = findings(pytester, "triton.ptxas")
    assert f["evidence"]["needs"] == "ptxas of CUDA >= 12.9"
    # no capable ptxas in the env: the fix brings one (PyPI's nvidia-cuda-nvcc) and points at it
    assert 'add `nvidia-cuda-nvcc = ">=13.0"` to [pypi-dependencies] in pixi.toml' in f["fix"]
    assert (
        'TRITON_PTXAS_PATH = "${CONDA_PREFIX}/lib/python3.12/site-packages/nvidia/cu13/bin/ptxas"'
        in f["fix"]
    )


def test_the_fix_a_capable_ptxas_in_the_env_and_the_override_turns_it_green(pytester, env):
    """The fix the maintainers give (TRITON_PTXAS_PATH at a CUDA 13 ptxas), applied as the
    verdict words it: first it names the env's own CUDA 13.0 ptxas, then, set, it passes."""
    S.install_triton(env, "3.5.1", S.TRITON_35, {"ptxas": "12.8"})
    S.fake_tool(env.site_packages / "nvidia" / "cu13" / "bin" / "ptxas", "13.0")
    assert one(run(pytester, env, "test_triton_ptxas", arch="12.1")) == "failed"
    (f,) = findings(pytester, "triton.ptxas")
    assert f["fix"] == (
        'set `TRITON_PTXAS_PATH = "${CONDA_PREFIX}/lib/python3.12/site-packages/nvidia/cu13/bin/ptxas"`'
        " in [activation.env] in pixi.toml (CUDA 13.0's ptxas, already in the env, accepts sm_121a)"
    )
    env.manifest(
        '[activation.env]\nTRITON_PTXAS_PATH = "${CONDA_PREFIX}/lib/python3.12/site-packages/nvidia/cu13/bin/ptxas"\n'
    )
    result = run(pytester, env, "test_triton_ptxas", arch="12.1,9.0")
    assert one(result) == "passed"
    (a, b) = findings(pytester, "triton.ptxas")
    assert "(TRITON_PTXAS_PATH) (CUDA 13.0), which accepts it" in a["summary"]
    assert b["summary"].startswith("Triton 3.5.1 assembles for 9.0 with `--gpu-name=sm_90a`")


def test_triton_39_reads_the_blackwell_override_from_90_up(pytester, env):
    """Triton 3.9's get_ptxas runs ptxas-blackwell for capability >= 90 and reads
    TRITON_PTXAS_BLACKWELL_PATH for it: an override of TRITON_PTXAS_PATH does nothing there."""
    S.install_triton(env, "3.9.0", S.TRITON_39, {"ptxas": "12.9", "ptxas-blackwell": "13.4"})
    assert one(run(pytester, env, "test_triton_ptxas", arch="9.0,11.0,8.0")) == "passed"
    found = {f["evidence"]["gpu_name"]: f for f in findings(pytester, "triton.ptxas")}
    assert found["sm_90a"]["evidence"]["tool"] == "ptxas-blackwell"
    assert found["sm_90a"]["evidence"]["variable"] == "TRITON_PTXAS_BLACKWELL_PATH"
    assert found["sm_80"]["evidence"]["variable"] == "TRITON_PTXAS_PATH"


def test_triton_32_asks_for_plain_sm_120_and_its_cuda_124_ptxas_refuses(pytester, env):
    """fishaudio/fish-speech#907: torch 2.6's Triton 3.2 on an RTX 5090 runs its CUDA 12.4
    ptxas with `--gpu-name=sm_120` (3.2 adds "a" only for capability 90)."""
    S.install_triton(env, "3.2.0", S.TRITON_32, {"ptxas": "12.4"})
    assert one(run(pytester, env, "test_triton_ptxas", arch="12.0")) == "failed"
    (f,) = findings(pytester, "triton.ptxas")
    assert f["evidence"]["gpu_name"] == "sm_120"
    assert "using its bundled ptxas (CUDA 12.4), which refuses it" in f["summary"]


def test_conda_forge_triton_finds_ptxas_on_path(pytester, env):
    """conda-forge's Triton ships no ptxas and looks on PATH after the override (its feedstock
    patch): cuda-nvcc's $CONDA_PREFIX/bin/ptxas serves; without it nothing runs."""
    S.install_triton(env, "3.2.0", S.TRITON_32_CONDA_FORGE, {})
    env.manifest('[activation.env]\nPATH = "${CONDA_PREFIX}/bin:/usr/bin:/bin"\n')
    assert one(run(pytester, env, "test_triton_ptxas", arch="9.0")) == "failed"
    (f,) = findings(pytester, "triton.ptxas")
    assert "no ptxas runs: the bundled one is missing" in f["summary"]
    S.fake_tool(env.prefix / "bin" / "ptxas", "12.9")
    assert one(run(pytester, env, "test_triton_ptxas", arch="9.0")) == "passed"
    (f,) = findings(pytester, "triton.ptxas")
    assert f"using {env.prefix}/bin/ptxas (found on the activated PATH) (CUDA 12.9)" in f["summary"]


def test_an_override_that_does_not_run_does_nothing(pytester, env):
    """knobs.env_nvidia_tool.transform tries the variable's path, then the bundled binary."""
    S.install_triton(env, "3.5.1", S.TRITON_35, {"ptxas": "12.8"})
    env.manifest('[activation.env]\nTRITON_PTXAS_PATH = "/opt/nowhere/ptxas"\n')
    result = run(pytester, env, "test_triton_ptxas", arch="9.0")
    assert one(result) == "warned"
    (f,) = findings(pytester, "triton.ptxas")
    assert f["outcome"] == "warning"
    assert (
        "TRITON_PTXAS_PATH=/opt/nowhere/ptxas is set ([activation.env] in pixi.toml) but Triton passes over it (missing)"
        in f["summary"]
    )


def test_no_triton_no_arch(pytester, env):
    assert one(run(pytester, env, "test_triton_ptxas")) == "skipped"
    S.install_triton(env)
    result = run(pytester, env, "test_triton_ptxas", arch=None)
    assert one(result) == "skipped"
    result.stdout.fnmatch_lines(["*no target arch: pass --cuda-arch*"])


# -- inductor.python-headers, inductor.c-compiler ---------------------------------------------
def debian_venv(root: Path, *, headers: bool) -> EnvBuilder:
    """A venv of a Debian-layout python3.11 at ``root/usr`` (its _sysconfigdata as Debian
    writes it), with or without python3.11-dev's headers, holding Triton."""
    usr = root / "usr"
    (usr / "bin").mkdir(parents=True)
    (usr / "lib" / "python3.11").mkdir(parents=True)
    (usr / "lib" / "python3.11" / "_sysconfigdata__x86_64-linux-gnu.py").write_text(
        "build_time_vars = {'ABIFLAGS': '', 'VERSION': '3.11', 'prefix': '/usr',\n"
        " 'INCLUDEPY': '/usr/include/python3.11', 'MULTIARCH': 'x86_64-linux-gnu',\n"
        " 'CC': 'x86_64-linux-gnu-gcc'}\n"
    )
    (usr / "lib" / "python3.11" / "_sysconfigdata__linux_x86_64-linux-gnu.py").symlink_to(
        "_sysconfigdata__x86_64-linux-gnu.py"
    )
    if headers:
        (usr / "include" / "python3.11").mkdir(parents=True)
        (usr / "include" / "python3.11" / "Python.h").write_text("")
    venv = EnvBuilder(root / "project", ".venv", bare=True)
    (venv.prefix / "conda-meta").rmdir()
    (venv.prefix / "pyvenv.cfg").write_text(f"home = {usr}/bin\nversion = 3.11.2\n")
    venv.python_version = "3.11"
    S.install_triton(venv)
    return venv


def test_debian_venv_without_python_dev_fails_as_vllm_27890(pytester, tmp_path):
    """vllm-project/vllm#27890: "fatal error: Python.h: No such file or directory upon vllm
    startup after a clean install" (reproduced for real in docs/jit.md: a Debian python3.11 venv,
    its include dir hidden, Triton 3.6's own _build)."""
    venv = debian_venv(tmp_path / "deb", headers=False)
    result = run(pytester, venv, "test_python_headers")
    assert one(result) == "failed"
    (f,) = findings(pytester, "inductor.python-headers")
    include = tmp_path / "deb" / "usr" / "include" / "python3.11"
    assert f["summary"] == (
        f"{include}/Python.h is missing: Triton 3.5.1 compiles its launcher with `-I{include}` "
        'at the first kernel, and vLLM dies at start-up with "fatal error: Python.h: No such file or directory"'
    )
    assert f["fix"].startswith("`apt-get install python3.11-dev`")
    assert f["evidence"]["INCLUDEPY"] == "/usr/include/python3.11"
    # the fix applied: python3.11-dev puts Python.h there
    venv = debian_venv(tmp_path / "deb2", headers=True)
    assert one(run(pytester, venv, "test_python_headers")) == "passed"


def test_pixi_env_without_headers_is_told_to_take_conda_forge_python(pytester, env_builder):
    env_builder.python("3.12")
    S.python_headers(env_builder, headers=False)
    S.install_triton(env_builder)
    env_builder.manifest()
    assert one(run(pytester, env_builder, "test_python_headers")) == "failed"
    (f,) = findings(pytester, "inductor.python-headers")
    assert (
        f["fix"]
        == 'add `python = "3.12.*"` to [dependencies] in pixi.toml (conda-forge\'s python ships its headers)'
    )
    S.python_headers(env_builder)
    assert one(run(pytester, env_builder, "test_python_headers")) == "passed"


def test_no_c_compiler_fails_and_a_compiler_passes(pytester, env):
    """triton/runtime/build.py: "Failed to find C compiler. Please specify via CC environment
    variable": $CC names nothing, and the activated PATH holds no gcc or clang."""
    S.install_triton(env)
    env.manifest(
        '[activation.env]\nPATH = "${CONDA_PREFIX}/bin"\nCC = "x86_64-conda-linux-gnu-cc"\n'
    )
    assert one(run(pytester, env, "test_c_compiler")) == "failed"
    (f,) = findings(pytester, "inductor.c-compiler")
    assert "CC=x86_64-conda-linux-gnu-cc names no executable on the activated PATH" in f["summary"]
    S.fake_tool(env.prefix / "bin" / "x86_64-conda-linux-gnu-cc", "13.2", "cc")
    assert one(run(pytester, env, "test_c_compiler")) == "passed"


# -- flashinfer.jit, flashinfer.kernel-wheels ------------------------------------------------
def test_flashinfer_sm120_with_cuda_128_dies_at_start_as_vllm_50705(pytester, env):
    """vllm-project/vllm#50705: sm_120 with a local CUDA 12.8 toolkit, FlashInfer 0.6.14 ("SM
    12.x requires CUDA >= 12.9"), vLLM's FlashInfer sampler on by default: the engine dies."""
    S.install_vllm(env)
    S.install_flashinfer(env)
    S.fake_tool(env.prefix / "cuda128" / "bin" / "nvcc", "12.8", "nvcc")
    env.manifest('[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}/cuda128"\n')
    assert one(run(pytester, env, "test_flashinfer_jit", arch="12.0")) == "failed"
    (f,) = findings(pytester, "flashinfer.jit")
    assert 'its arch gate raises "SM 12.x requires CUDA >= 12.9"' in f["summary"]
    assert "vLLM's FlashInfer sampler (vLLM's default (True in vllm/envs.py))" in f["summary"]
    assert "flashinfer-jit-cache" in f["fix"] and 'cuda-nvcc = "12.9.*"' in f["fix"]
    # the fix: an nvcc of CUDA >= 12.9; FlashInfer then compiles at first start (warning)
    S.fake_tool(env.prefix / "cuda130" / "bin" / "nvcc", "13.0", "nvcc")
    env.manifest('[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}/cuda130"\n')
    assert one(run(pytester, env, "test_flashinfer_jit", arch="12.0")) == "warned"
    (f,) = findings(pytester, "flashinfer.jit")
    assert (
        f["outcome"] == "warning"
        and "JIT-compiles FlashInfer's kernels for sm_120f" in f["summary"]
    )
    # and prebuilt kernels of its version: nothing compiles
    env.dist("flashinfer-jit-cache", "0.6.14+cu130")
    assert one(run(pytester, env, "test_flashinfer_jit", arch="12.0")) == "passed"
    (f,) = findings(pytester, "flashinfer.jit")
    assert f["outcome"] == "passed" and "flashinfer-jit-cache 0.6.14+cu130 provides" in f["summary"]


def test_flashinfer_without_nvcc_and_sampler_off_is_a_warning(pytester, env):
    """vllm-project/vllm#49497: no nvcc crashes the start-up through the sampler; with
    VLLM_USE_FLASHINFER_SAMPLER=0 vLLM samples natively and only later FlashInfer paths need
    compiling."""
    S.install_vllm(env)
    S.install_flashinfer(env)
    env.manifest('[activation.env]\nCUDA_HOME = "/opt/no-cuda-here"\n')
    assert one(run(pytester, env, "test_flashinfer_jit")) == "failed"
    (f,) = findings(pytester, "flashinfer.jit")
    assert "its nvcc does not run: missing" in f["summary"]
    env.manifest(
        '[activation.env]\nCUDA_HOME = "/opt/no-cuda-here"\nVLLM_USE_FLASHINFER_SAMPLER = "0"\n'
    )
    assert one(run(pytester, env, "test_flashinfer_jit")) == "warned"
    assert findings(pytester, "flashinfer.jit")[0]["outcome"] == "warning"


def test_flashinfer_cubin_of_another_version_fails_the_import_in_06(pytester, env):
    """pipecat-ai/nemotron-january-2026#8, NVIDIA-NeMo/Export-Deploy#679: "RuntimeError:
    flashinfer-cubin version (0.6.8.post1) does not match flashinfer version (0.6.10)"."""
    S.install_flashinfer(env, "0.6.14")
    env.dist("flashinfer-cubin", "0.6.13")
    env.manifest('[pypi-dependencies]\nflashinfer-cubin = "==0.6.13"\n')
    assert one(run(pytester, env, "test_flashinfer_kernel_wheels")) == "failed"
    (f,) = findings(pytester, "flashinfer.kernel-wheels")
    assert f["summary"] == (
        "flashinfer-cubin 0.6.13 is not flashinfer-python 0.6.14's: `import flashinfer` raises "
        'RuntimeError: "flashinfer-cubin version (0.6.13) does not match flashinfer version '
        '(0.6.14). Please install the same version of both packages.", and vLLM dies where it imports FlashInfer'
    )
    assert f["fix"].startswith(
        'in pixi.toml line 7 ([pypi-dependencies]), replace `flashinfer-cubin = "==0.6.13"` with `flashinfer-cubin = "==0.6.14"`'
    )
    (env.site_packages / "flashinfer_cubin-0.6.13.dist-info").rename(env.site_packages / "old.bak")
    env.dist("flashinfer-cubin", "0.6.14")
    assert one(run(pytester, env, "test_flashinfer_kernel_wheels")) == "passed"


def test_flashinfer_07_ignores_a_mismatched_cubin_a_warning(pytester, env):
    """0.7.2.post1 logs "Ignoring incompatible flashinfer-cubin package" and downloads cubins
    at first use: flashinfer-python 0.7.2.post1 next to PyPI's newest cubin, 0.6.13."""
    S.install_flashinfer(env, "0.7.2.post1", jit_env=S.FI_ENV_07)
    env.dist("flashinfer-cubin", "0.6.13")
    assert one(run(pytester, env, "test_flashinfer_kernel_wheels")) == "warned"
    (f,) = findings(pytester, "flashinfer.kernel-wheels")
    assert f["outcome"] == "warning"
    assert "its cubins are downloaded at first use instead" in f["summary"]
    assert "Run `flashinfer download-kernels`" in f["summary"]


# -- deepgemm.jit ----------------------------------------------------------------------------
def test_deepgemm_below_its_nvcc_floor_and_the_fix(pytester, env):
    """DeepGEMM's compiled module asserts "NVCC version should be >= 12.3"."""
    S.install_vllm(env)
    S.fake_tool(env.prefix / "cuda122" / "bin" / "nvcc", "12.2", "nvcc")
    env.manifest('[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}/cuda122"\n')
    result = run(pytester, env, "test_deepgemm_jit", arch="9.0,8.0")
    assert one(result) == "warned"
    a, b = findings(pytester, "deepgemm.jit")
    assert a["outcome"] == "warning" and "is below DeepGEMM's floor: nvcc >= 12.3" in a["summary"]
    assert b["outcome"] == "skipped" and "does not use DeepGEMM on 8.0" in b["summary"]
    S.fake_tool(env.prefix / "cuda122" / "bin" / "nvcc", "13.0", "nvcc")
    assert one(run(pytester, env, "test_deepgemm_jit", arch="9.0")) == "passed"
    (f,) = findings(pytester, "deepgemm.jit")
    assert f["outcome"] == "passed" and "headers for sm90 present" in f["summary"]


def test_deepgemm_without_header_tree_for_the_arch_and_when_off(pytester, env):
    S.install_vllm(env, impls=("sm90",))
    S.fake_tool(env.prefix / "cuda" / "bin" / "nvcc", "13.0", "nvcc")
    env.manifest('[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}/cuda"\n')
    assert one(run(pytester, env, "test_deepgemm_jit", arch="10.0")) == "warned"
    (f,) = findings(pytester, "deepgemm.jit")
    assert f["outcome"] == "warning" and "no kernels for this arch" in f["summary"]
    env.manifest('[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}/cuda"\nVLLM_USE_DEEP_GEMM = "0"\n')
    assert one(run(pytester, env, "test_deepgemm_jit", arch="10.0")) == "skipped"


# -- pins.siblings ---------------------------------------------------------------------------
def _linked_pair(env: EnvBuilder, tmp: Path) -> tuple[bytes, bytes]:
    """torch's ``libc10.so`` and a torchvision ``_C.so`` whose DT_NEEDED names it (real ELFs)."""
    from fixtures import elf

    lib = elf.fake_soname_lib(tmp / "lib", "libc10.so", "int c10_version(void) { return 2; }\n")
    ext = elf.cxx_extension(tmp / "_C.so", 'extern "C" int uses_c10() { return 1; }\n', [lib])
    return lib.read_bytes(), ext.read_bytes()


@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="needs a C++ compiler")
def test_an_extension_linking_its_siblings_library_off_its_pin_fails(pytester, env, tmp_path):
    """torchvision 0.26.0's METADATA says `torch==2.11.0`, and its `_C.so` needs torch's
    `libc10.so` (DT_NEEDED): next to torch 2.13.0 the loader binds it to another build."""
    c10, ext = _linked_pair(env, tmp_path)
    env.dist("torchvision", "0.26.0", requires=["torch==2.11.0"], files={"torchvision/_C.so": ext})
    env.dist("torch", "2.13.0", files={"torch/lib/libc10.so": c10})
    env.manifest('[pypi-dependencies]\ntorch = "==2.13.0"\ntorchvision = "==0.26.0"\n')
    assert one(run(pytester, env, "test_sibling_pins")) == "failed"
    (f,) = findings(pytester, "pins.siblings")
    assert f["summary"] == (
        "torchvision 0.26.0 requires torch==2.11.0, the env has torch 2.13.0: torchvision's "
        "compiled code links torch's libc10.so, built against that torch; next to another it "
        "fails to load or to run"
    )
    assert f["evidence"]["links"] == ["libc10.so"]
    assert f["fix"].startswith(
        'in pixi.toml line 7 ([pypi-dependencies]), replace `torch = "==2.13.0"` with `torch = "==2.11.0"`'
    )
    (env.site_packages / "torch-2.13.0.dist-info").rename(env.site_packages / "old.bak")
    env.dist("torch", "2.11.0", files={"torch/lib/libc10.so": c10})
    assert one(run(pytester, env, "test_sibling_pins")) == "passed"
    (f,) = findings(pytester, "pins.siblings")
    assert f["outcome"] == "passed" and "torchvision 0.26.0: torch==2.11.0" in f["summary"]


@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="needs a C++ compiler")
def test_two_native_packages_that_never_link_each_other_only_warn(pytester, env, tmp_path):
    """Measured on the H100 (docs/gpu-runs.md, round 12): vLLM 0.26.0 pins `numba==0.65.0`;
    its objects need torch's libraries, none of numba's, and it loaded and generated next to
    numba 0.68.0. A pin off by a version there works: warning, never failed."""
    c10, ext = _linked_pair(env, tmp_path)
    env.dist("vllm", "0.26.0", requires=["numba==0.65.0"], files={"vllm/_C.abi3.so": ext})
    env.dist("torch", "2.11.0", files={"torch/lib/libc10.so": c10})
    env.dist("numba", "0.68.0", files={"numba/_helperlib.cpython-312-x86_64-linux-gnu.so": c10})
    assert one(run(pytester, env, "test_sibling_pins")) == "warned"
    (f,) = findings(pytester, "pins.siblings")
    assert f["outcome"] == "warning"
    assert f["summary"].startswith(
        "vllm 0.26.0 requires numba==0.65.0, the env has numba 0.68.0: vllm's compiled code "
        "links none of numba's libraries; it may work"
    )


def test_pure_python_pins_warn_markers_and_extras_are_respected(pytester, env):
    env.dist("flashinfer-python", "0.6.14", requires=[
        "apache-tvm-ffi!=0.1.8,<0.2,>=0.1.6",
        'nvidia-cutlass-dsl==9.9; python_version < "3.0"',
        'cuda-python==1.0; extra == "nvep"',
        "numpy>=1.0",
    ])  # fmt: skip
    env.dist("apache-tvm-ffi", "0.2.1", files={"tvm_ffi/lib.so": b""})
    env.dist("nvidia-cutlass-dsl", "4.6.0")
    env.dist("cuda-python", "13.0.0")
    env.dist("numpy", "2.0.0")
    assert one(run(pytester, env, "test_sibling_pins")) == "warned"
    (f,) = findings(pytester, "pins.siblings")
    assert f["outcome"] == "warning"
    assert f["summary"].startswith(
        "flashinfer-python 0.6.14 requires apache-tvm-ffi!=0.1.8,<0.2,>=0.1.6, the env has apache-tvm-ffi 0.2.1"
    )


def test_vllms_own_torch_pin_is_left_to_abi_pins(pytester, env):
    env.dist("vllm", "0.26.0", requires=["torch==2.11.0"])
    env.dist("torch", "2.13.0")
    assert one(run(pytester, env, "test_sibling_pins")) == "skipped"


# -- settings.unread -------------------------------------------------------------------------
def test_vllm_attention_backend_does_nothing_in_026_as_vllm_50292(pytester, env):
    """vllm-project/vllm#50292: VLLM_ATTENTION_BACKEND "is silently ignored" by vLLM 0.26.0;
    AMD-AGI/Hyperloom#462: an unusably slow baseline. The replacement is --attention-backend."""
    S.install_vllm(env)
    env.manifest(
        '[activation.env]\nVLLM_ATTENTION_BACKEND = "FLASHINFER"\nVLLM_USE_DEEP_GEMM = "1"\n'
    )
    assert one(run(pytester, env, "test_settings_unread")) == "warned"
    (f,) = findings(pytester, "settings.unread")
    assert f["outcome"] == "warning"
    assert f["summary"] == (
        "vLLM 0.26.0 does not read VLLM_ATTENTION_BACKEND, set in [activation.env] in pixi.toml: the "
        'setting does nothing (vLLM logs "Unknown vLLM environment variable detected: '
        'VLLM_ATTENTION_BACKEND"); this release takes it as the `--attention-backend` option'
    )
    assert f["fix"] == (
        "remove VLLM_ATTENTION_BACKEND from [activation.env] in pixi.toml and pass "
        "`--attention-backend FLASHINFER` to `vllm serve` (attention_backend= in Python's LLM(...))"
    )
    env.manifest(
        '[activation.env]\nVLLM_USE_DEEP_GEMM = "1"\n[tasks]\n'
        'serve = "vllm serve Qwen/Qwen3-0.6B --attention-backend FLASHINFER --max_model_len=4096"\n'
    )
    assert one(run(pytester, env, "test_settings_unread")) == "passed"
    assert findings(pytester, "settings.unread")[0]["outcome"] == "passed"


def test_deprecated_variable_names_its_replacement(pytester, env):
    S.install_vllm(env)
    env.activate_script("vllm.sh", "export VLLM_TRITON_ATTN_USE_TD=1\n")
    assert one(run(pytester, env, "test_settings_unread")) == "warned"
    (f,) = findings(pytester, "settings.unread")
    assert f["outcome"] == "warning"
    assert f["summary"].startswith(
        "vLLM 0.26.0 marks VLLM_TRITON_ATTN_USE_TD deprecated (vllm/envs.py): use VLLM_TRITON_USE_TD"
    )
    assert (
        f["fix"]
        == "in etc/conda/activate.d/vllm.sh, rename VLLM_TRITON_ATTN_USE_TD to VLLM_TRITON_USE_TD"
    )


def test_unknown_option_and_strict_validation_fail(pytester, env):
    """`vllm serve --no-such-option` stops ("unrecognized arguments"); under
    --fail-on-environ-validation an unknown VLLM_* variable is a ValueError."""
    S.install_vllm(env)
    env.manifest(
        '[tasks.serve]\ncmd = "vllm serve m --fail-on-environ-validation --no-such-option 1"\n'
        'env = { VLLM_ATTENTION_BACKEND = "FLASH_ATTN" }\n'
    )
    assert one(run(pytester, env, "test_settings_unread")) == "failed"
    found = {
        f["evidence"].get("passed") or f["evidence"].get("set"): f
        for f in findings(pytester, "settings.unread")
    }
    assert found["--no-such-option"]["summary"].startswith(
        "`vllm serve` of vLLM 0.26.0 has no option `--no-such-option` ([tasks.serve] in pixi.toml)"
    )
    assert (
        "ValueError: Unknown vLLM environment variable detected: VLLM_ATTENTION_BACKEND"
        in found["VLLM_ATTENTION_BACKEND=FLASH_ATTN"]["summary"]
    )


def test_pairs_left_to_abi_pins_are_abi_pins_own_list():
    """pins.siblings leaves vLLM's pins of abi.PINNED to abi.pins: the two lists stay equal."""
    from pytest_vllm_env.checks import abi
    from pytest_vllm_env.checks.pins import JUDGED_ELSEWHERE

    left = {sibling for (owner, sibling), cid in JUDGED_ELSEWHERE.items() if cid == "abi.pins"}
    assert left == set(abi.PINNED)
    assert all(owner == "vllm" for (owner, _), cid in JUDGED_ELSEWHERE.items() if cid == "abi.pins")


def test_the_ptxas_table_says_what_was_measured():
    """tables/ptxas.py against the measurement (docs/jit.md): a few rows each way."""
    from pytest_vllm_env.tables import ptxas

    assert ptxas.accepts("12.8", "sm_120a") and not ptxas.accepts("12.8", "sm_121a")
    assert ptxas.accepts("12.9", "sm_121a") and not ptxas.accepts("12.9", "sm_110a")
    assert ptxas.accepts("13.0", "sm_110a") and not ptxas.accepts("13.0", "sm_70")
    assert ptxas.accepts("12.9", "sm_70") and not ptxas.accepts("13.4", "sm_101a")
    assert not ptxas.accepts("12.4", "sm_100a") and ptxas.accepts("12.4", "sm_90a")
    assert ptxas.accepts("12.8", "sm_107a") is None  # not measured: not judged
