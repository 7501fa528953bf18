# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""A special file where a file the suite needs must be (issue 21, "Nothing silent").

Absent is "not installed"; present and unreadable (a FIFO, a link to ``/dev/zero``, a
directory, a dangling symlink) is an error of the subject that needs it, naming the file. A
FIFO ``torch/version.py`` once dropped torch from ``driver.cuda-runtime`` without a word
(the only need read from it), said "a CPU-only build" in ``cuda.nvcc-torch``, and let
``flashinfer.jit`` guess its CUDA. The one door for the distinction is
``files.read_text_if_present`` (``PixiEnv.package_text_or_why`` for a package's file).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fixtures import runtime_standin as S
from fixtures.envs import EnvBuilder
from pytest_vllm_env import files

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")
KINDS = ["fifo", "devzero", "directory", "dangling"]
SAYS = {
    "fifo": "not a regular file (a FIFO)",
    "devzero": "not a regular file (a character device)",
    "directory": "not a regular file (a directory)",
    "dangling": "a dangling symlink to ",
}


def plant(path: Path, kind: str) -> Path:
    """``kind`` at ``path`` (what is there is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.is_file():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(path.parent / "gone.py")
    return path


def torch_env(b: EnvBuilder, version: str = "2.11.0+cu130") -> Path:
    """A Pixi env with torch ``version`` whose version.py says CUDA 13.0."""
    b.python("3.12")
    b.dist("torch", version, files={"torch/version.py": "cuda = '13.0'\n"})
    return b.site_packages / "torch" / "version.py"


def report(pytester: pytest.Pytester, b: EnvBuilder, k: str, *args: str) -> list[dict]:
    """The findings of a run of the suite's tests matching ``k``."""
    out = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE, "-k", k, f"--vllm-env={b.prefix}", f"--vllm-env-report={out}",
        "--timeout=20", *args,
    )  # fmt: skip
    text = result.stdout.str()
    assert "Traceback" not in text and "Timeout" not in text, text[-3000:]
    assert out.is_file(), text[-2000:] + result.stderr.str()[-2000:]
    return json.loads(out.read_text())["checks"]


def of(checks: list[dict], cid: str) -> list[dict]:
    return [c for c in checks if c["id"] == cid]


# -- the one door ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_present_but_unreadable_is_told_from_absent(tmp_path, kind):
    path = plant(tmp_path / "version.py", kind)
    text, why = files.read_text_if_present(path, files.SOURCE)
    assert text is None and why.startswith(f"{path}: cannot be read: {SAYS[kind]}"), why
    assert files.read_text_if_present(tmp_path / "absent.py", files.SOURCE) == (None, "")
    (tmp_path / "ok.py").write_text("x = 1\n")
    assert files.read_text_if_present(tmp_path / "ok.py", files.SOURCE) == ("x = 1\n", "")


# -- driver.cuda-runtime -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_torch_version_is_a_driver_error_naming_it(pytester, env_builder, kind):
    """Before: torch left out of the needs, and the run skipped "no CUDA runtime, CUDA torch
    or CUDA extension" on a driver (550) that cannot start its cu130 runtime."""
    path = plant(torch_env(env_builder), kind)
    checks = report(
        pytester, env_builder, "test_driver.py and cuda_runtime", "--cuda-driver=550.144.03"
    )
    (f,) = of(checks, "driver.cuda-runtime")
    assert f["outcome"] == "error", f
    assert (
        f"torch 2.11.0+cu130: the CUDA it needs is unknown: {path}: cannot be read: {SAYS[kind]}"
        in f["summary"]
    )
    assert "reinstall torch" in f["fix"] and "pixi reinstall" in f["fix"]


def test_absent_torch_version_is_no_torch_need(pytester, env_builder):
    """No version.py at all (a CPU-only or half-removed torch's business, not ours): torch is
    not a CUDA need, and the driver check says there is none: absent stays absent."""
    torch_env(env_builder).unlink()
    checks = report(
        pytester, env_builder, "test_driver.py and cuda_runtime", "--cuda-driver=550.144.03"
    )
    (f,) = of(checks, "driver.cuda-runtime")
    assert f["outcome"] == "skipped" and "no CUDA runtime, CUDA torch" in f["summary"], f


def test_readable_torch_version_still_judged(pytester, env_builder):
    torch_env(env_builder)
    checks = report(
        pytester, env_builder, "test_driver.py and cuda_runtime", "--cuda-driver=550.144.03"
    )
    (f,) = of(checks, "driver.cuda-runtime")
    assert f["outcome"] == "failed" and "needs a driver for CUDA 13.0" in f["summary"], f


# -- cuda.nvcc-torch ------------------------------------------------------------------------------
def test_unreadable_torch_version_is_not_a_cpu_only_torch(pytester, env_builder):
    """Before: "torch 2.11.0+cu130 is a CPU-only build: nothing to compare" for a FIFO."""
    path = plant(torch_env(env_builder), "fifo")
    checks = report(
        pytester, env_builder, "test_nvcc_matches_torch_cuda", "--vllm-build-log=build.log"
    )
    (f,) = of(checks, "cuda.nvcc-torch")
    assert f["outcome"] == "error", f
    assert (
        f"torch 2.11.0+cu130's CUDA is unknown: {path}: cannot be read: not a regular file (a FIFO)"
        in f["summary"]
    )
    assert "CPU-only" not in f["summary"]


# -- flashinfer.jit ---------------------------------------------------------------------------
@pytest.fixture
def flashinfer_env(env_builder: EnvBuilder) -> EnvBuilder:
    """vLLM and FlashInfer stand-ins, torch cu130, and no nvcc (CUDA_HOME points nowhere):
    FlashInfer's ``get_cuda_version`` then falls back on ``torch.version.cuda``."""
    torch_env(env_builder)
    S.python_headers(env_builder)
    S.install_vllm(env_builder)
    S.install_flashinfer(env_builder)
    env_builder.manifest('[activation.env]\nCUDA_HOME = "/opt/no-cuda-here"\n')
    return env_builder


@pytest.mark.parametrize("rel", ["torch/version.py", "vllm/envs.py", "flashinfer/jit/cpp_ext.py"])
def test_unreadable_file_flashinfer_jit_rests_on_is_an_error(pytester, flashinfer_env, rel):
    """Before: a FIFO vllm/envs.py was "no sampler" (a failure turned into a warning), a FIFO
    cpp_ext.py the default CUDA-path rule, a FIFO version.py "CUDA unknown": each silently."""
    path = plant(flashinfer_env.site_packages / rel, "fifo")
    checks = report(pytester, flashinfer_env, "test_flashinfer_jit", "--cuda-arch=9.0")
    got = of(checks, "flashinfer.jit")
    assert [f["outcome"] for f in got] == ["error"], got
    assert f"{path}: cannot be read: not a regular file (a FIFO)" in got[0]["summary"]
    owner = rel.split("/", 1)[0].replace("flashinfer", "flashinfer-python")
    assert f"reinstall {owner}" in got[0]["fix"], got[0]


def test_flashinfer_jit_with_readable_files_is_judged(pytester, flashinfer_env):
    """The same env, every file readable: judged as before (no nvcc, the sampler on: fails)."""
    checks = report(pytester, flashinfer_env, "test_flashinfer_jit", "--cuda-arch=9.0")
    assert [f["outcome"] for f in of(checks, "flashinfer.jit")] == ["failed"]


# -- deepgemm.jit ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rel", ["vllm/envs.py", "vllm/platforms/cuda.py", "vllm/third_party/deep_gemm/__init__.py"]
)
def test_unreadable_file_deepgemm_rests_on_is_an_error(pytester, flashinfer_env, rel):
    """Before: a FIFO deep_gemm/__init__.py was "no vLLM with DeepGEMM" (skipped), a FIFO
    platforms/cuda.py an unknown gate, a FIFO envs.py DeepGEMM "on" by guess: silently."""
    path = plant(flashinfer_env.site_packages / rel, "fifo")
    checks = report(pytester, flashinfer_env, "test_deepgemm_jit", "--cuda-arch=9.0")
    got = of(checks, "deepgemm.jit")
    assert [f["outcome"] for f in got] == ["error"], got
    assert f"{path}: cannot be read: not a regular file (a FIFO)" in got[0]["summary"]
    assert "reinstall vllm" in got[0]["fix"], got[0]


def test_deepgemm_with_readable_files_is_judged(pytester, flashinfer_env):
    checks = report(pytester, flashinfer_env, "test_deepgemm_jit", "--cuda-arch=9.0")
    assert [f["outcome"] for f in of(checks, "deepgemm.jit")] != ["error"]
    assert of(checks, "deepgemm.jit")[0]["outcome"] != "skipped"


# -- modelopt.gdn-prefill-backend ------------------------------------------------------------------
GDN = "modelopt.gdn-prefill-backend"


def _gdn_ckpt(tmp_path: Path) -> Path:
    """The real Qwen3.5 export's config with linear_key_head_dim 128 (FlashInfer's sm 10.x
    kernel then needs torch's CUDA >= 13)."""
    from tests.test_gdn_prefill import qwen35_like

    return qwen35_like(tmp_path, linear_key_head_dim=128)


def test_unreadable_gdn_prefill_module_is_not_a_missing_one(pytester, env_builder, tmp_path):
    """Before: a FIFO flashinfer/gdn_prefill.py failed as "No module named
    'flashinfer.gdn_prefill'" (upgrade flashinfer), the wrong blame: the import would hang."""
    from fixtures.gdn_standin import install_gdn_vllm

    install_gdn_vllm(env_builder, flashinfer="0.6.14")
    path = plant(env_builder.site_packages / "flashinfer" / "gdn_prefill.py", "fifo")
    checks = report(
        pytester,
        env_builder,
        "gdn",
        f"--modelopt-checkpoint={_gdn_ckpt(tmp_path)}",
        "--cuda-arch=9.0",
    )
    (f,) = of(checks, GDN)
    assert f["outcome"] == "error", f
    assert f"flashinfer-python 0.6.14: {path}: cannot be read: a FIFO" in f["summary"]
    assert "reinstall flashinfer-python" in f["fix"]


def test_unreadable_torch_version_is_named_where_gdn_needs_torchs_cuda(
    pytester, env_builder, tmp_path
):
    """Blackwell (sm 10.0) takes FlashInfer's GDN kernel only with torch's CUDA >= 13: a FIFO
    version.py (and no +cuXYZ in torch's version) was "torch's CUDA version is not known"."""
    from fixtures.gdn_standin import install_gdn_vllm

    install_gdn_vllm(env_builder)
    path = plant(env_builder.site_packages / "torch" / "version.py", "fifo")
    checks = report(
        pytester,
        env_builder,
        "gdn",
        f"--modelopt-checkpoint={_gdn_ckpt(tmp_path)}",
        "--cuda-arch=10.0",
    )
    (f,) = of(checks, GDN)
    assert f["outcome"] == "error", f
    assert (
        f"torch's CUDA version is not known: {path}: cannot be read: not a regular file (a FIFO)"
        in f["summary"]
    )


# -- xformers.torch-pin ------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", ["xformers/cpp_lib.json", "torch/version.py"])
def test_unreadable_file_xformers_torch_pin_rests_on_is_an_error(pytester, env_builder, rel):
    """xformers 0.0.35 whose cpp_lib.json says its ops were built for 2.10.0+cu128, beside
    PyPI's torch 2.11.0 (no +cu130 in its version: version.py says the CUDA). A FIFO
    cpp_lib.json was "nothing says what the ops were built for"; a FIFO version.py left
    torch's CUDA out of the comparison: each silently."""
    from fixtures.vit_standin import install_vit_vllm

    install_vit_vllm(env_builder, "0.10", torch="2.11.0")
    env_builder.dist("xformers", "0.0.35", requires=["torch>=2.10"], files={
        "xformers/cpp_lib.json": json.dumps({"version": {"torch": "2.10.0+cu128"}}),
    })  # fmt: skip
    (env_builder.site_packages / "torch").mkdir(exist_ok=True)
    (env_builder.site_packages / "torch" / "version.py").write_text("cuda = '13.0'\n")
    checks = report(pytester, env_builder, "test_xformers_torch_pin", "--cuda-arch=9.0")
    assert of(checks, "xformers.torch-pin")[0]["outcome"] == "failed"  # readable: judged
    path = plant(env_builder.site_packages / rel, "fifo")
    checks = report(pytester, env_builder, "test_xformers_torch_pin", "--cuda-arch=9.0")
    (f,) = of(checks, "xformers.torch-pin")
    assert f["outcome"] == "error", f
    assert f"{path}: cannot be read: not a regular file (a FIFO)" in f["summary"]
    assert f"reinstall {rel.split('/')[0]}" in f["fix"]


# -- checkpoint.* (the load plan from the env's vLLM source) ----------------------------------------
@pytest.mark.parametrize(
    "rel", ["vllm/model_executor/models/utils.py", "vllm/model_executor/models/mod.py"]
)
def test_unreadable_vllm_loader_source_is_an_error(pytester, env_builder, tmp_path, rel):
    """A FIFO where vLLM's loader (or the model file) must be was read as "this vLLM has no
    such file", and the plan built without its rules: verdicts on a guess."""
    from fixtures import loader_standin, loader_variants
    from fixtures.vllm_standin import install_vllm

    install_vllm(env_builder, "0.26.0", extra=loader_standin.files("0.26.0"))
    ckpt = loader_variants.make("good", tmp_path / "ckpts" / "good")
    args = ("-m", "toolchain", f"--modelopt-checkpoint={ckpt}")
    checks = report(pytester, env_builder, "test_checkpoint", *args)
    assert of(checks, "checkpoint.parameters")[0]["outcome"] == "passed"  # readable: judged
    assert (env_builder.site_packages / rel).is_file(), rel  # a file the stand-in has
    path = plant(env_builder.site_packages / rel, "fifo")
    checks = report(pytester, env_builder, "test_checkpoint", *args)
    for cid in ("checkpoint.shards", "checkpoint.quant-config-source", "checkpoint.parameters"):
        (f,) = of(checks, cid)
        assert f["outcome"] == "error", f
        assert (
            f"the env's vLLM source cannot be read: {path}: cannot be read: not a regular file (a FIFO)"
            in f["summary"]
        )


# -- settings.unread ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", ["vllm/envs.py", "vllm/engine/arg_utils.py"])
def test_unreadable_vllm_settings_source_is_an_error(pytester, env_builder, rel):
    """A FIFO vllm/envs.py was "cannot be read" as a skip; a FIFO arg_utils.py left vLLM's
    options out, and a `vllm serve --attention-backend` task failed "unrecognized arguments"."""
    env_builder.python("3.12")
    S.python_headers(env_builder)
    S.install_vllm(env_builder)
    env_builder.manifest(
        '[activation.env]\nVLLM_USE_DEEP_GEMM = "1"\n[tasks]\n'
        'serve = "vllm serve Qwen/Qwen3-0.6B --attention-backend FLASHINFER"\n'
    )
    checks = report(pytester, env_builder, "test_settings_unread")
    assert [f["outcome"] for f in of(checks, "settings.unread")] == ["passed"]
    path = plant(env_builder.site_packages / rel, "fifo")
    checks = report(pytester, env_builder, "test_settings_unread")
    got = of(checks, "settings.unread")
    assert [f["outcome"] for f in got] == ["error"], got
    assert (
        f"which settings it reads cannot be read: {path}: cannot be read: not a regular file (a FIFO)"
        in got[0]["summary"]
    )


@pytest.mark.parametrize(
    ("rel", "kind"),
    [
        ("etc/conda/activate.d/vllm.sh", "fifo"),
        ("etc/conda/activate.d/vllm.sh", "dangling"),
        ("etc/conda/env_vars.d/vllm.json", "fifo"),
        ("etc/conda/env_vars.d/vllm.json", "directory"),
    ],
)
def test_unreadable_activation_file_is_a_settings_error(pytester, env_builder, rel, kind):
    """An activate.d script or env_vars.d file that cannot be read may set any VLLM_*
    variable (env.activation names it, unsourced): settings.unread skipped it and judged the
    rest as if that were all the env sets (passed, where the readable file's VLLM_USE_V1,
    which vLLM 0.26.0 no longer reads, is a warning). Now: an error naming the file."""
    env_builder.python("3.12")
    S.python_headers(env_builder)
    S.install_vllm(env_builder)
    env_builder.manifest('[activation.env]\nVLLM_USE_DEEP_GEMM = "1"\n')
    body = "export VLLM_USE_V1=1\n" if rel.endswith(".sh") else '{"VLLM_USE_V1": "1"}'
    env_builder.file(rel, body)
    checks = report(pytester, env_builder, "test_settings_unread")
    (readable,) = of(checks, "settings.unread")
    assert readable["outcome"] == "warning" and "VLLM_USE_V1" in readable["summary"], readable
    path = plant(env_builder.prefix / rel, kind)
    checks = report(pytester, env_builder, "test_settings_unread")
    got = of(checks, "settings.unread")
    assert [f["outcome"] for f in got] == ["error"], got
    assert got[0]["summary"].startswith(
        f"which VLLM_* variables the env's activation sets is unknown: {path}: cannot be read: "
        f"{SAYS[kind]}"
    ), got
    assert got[0]["fix"] == (
        f"restore {path} as a regular file (reinstall the package that ships it), or remove it"
    ), got


# -- cmake.torch-config, nvtx.cmake-target (torch's share/cmake) -------------------------------------
def torch_cmake_env(b: EnvBuilder) -> Path:
    """torch with the CMake files a build reads: TorchConfig, Caffe2Config (which puts its own
    dir on CMAKE_MODULE_PATH: torch's bundled FindCUDAToolkit then runs), cuda.cmake."""
    b.python("3.12")
    b.dist("torch", "2.11.0", files={
        "torch/version.py": "cuda = '13.0'\n",
        "torch/share/cmake/Torch/TorchConfig.cmake": "include(${CMAKE_CURRENT_LIST_DIR}/../Caffe2/Caffe2Config.cmake)\n",
        "torch/share/cmake/Caffe2/Caffe2Config.cmake": 'list(APPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_LIST_DIR}")\ninclude("${CMAKE_CURRENT_LIST_DIR}/public/cuda.cmake")\n',
        "torch/share/cmake/Caffe2/FindCUDAToolkit.cmake": "# torch's copy\n",
        "torch/share/cmake/Caffe2/public/cuda.cmake": "find_package(CUDAToolkit REQUIRED)\n",
    })  # fmt: skip
    return b.site_packages / "torch" / "share" / "cmake"


@pytest.mark.parametrize(
    "rel, ids",
    [
        ("Torch/TorchConfig.cmake", ("cmake.torch-config", "nvtx.cmake-target")),
        ("Caffe2/Caffe2Config.cmake", ("cmake.torch-config", "nvtx.cmake-target")),
        ("Caffe2/FindCUDAToolkit.cmake", ("nvtx.cmake-target",)),
    ],
)
def test_unreadable_torch_cmake_file_is_an_error(pytester, env_builder, rel, ids):
    """Before: a FIFO TorchConfig.cmake was "torch has no Torch/TorchConfig.cmake" (skipped),
    a FIFO Caffe2Config.cmake or FindCUDAToolkit.cmake made CMake's own FindCUDAToolkit the
    one predicted: a guess, silently. nvtx.cmake-target on a FIFO TorchConfig.cmake (where
    torch 2.0-2.4 put LIBNVTOOLSEXT into TORCH_LIBRARIES) passed: "links no NVTX"."""
    share = torch_cmake_env(env_builder)
    args = ("--vllm-build-log=build.log",)  # nvtx.cmake-target judges a build
    path = plant(share / rel, "fifo")
    checks = report(pytester, env_builder, "test_torch_config or test_nvtx_cmake_target", *args)
    for cid in ids:
        (f,) = of(checks, cid)
        assert f["outcome"] == "error", f
        assert f"{path}: cannot be read: not a regular file (a FIFO)" in f["summary"], f
        assert "reinstall torch" in f["fix"]


def test_unreadable_gdn_rule_file_is_an_error_not_a_fallback(pytester, env_builder, tmp_path):
    """A FIFO at vLLM's GDN layer file was "no such file": the rule read without it (or 0.26.0's
    taken in its place). Now an error naming it."""
    from fixtures.gdn_standin import install_gdn_vllm
    from pytest_vllm_env.readers.vllm_gdn import GDN_LAYER_PY

    install_gdn_vllm(env_builder, flashinfer="0.6.14")
    path = plant(env_builder.site_packages / GDN_LAYER_PY, "fifo")
    checks = report(
        pytester,
        env_builder,
        "gdn",
        f"--modelopt-checkpoint={_gdn_ckpt(tmp_path)}",
        "--cuda-arch=9.0",
    )
    (f,) = of(checks, GDN)
    assert f["outcome"] == "error", f
    assert (
        f"Gated-DeltaNet rule cannot be read: {path}: cannot be read: not a regular file (a FIFO)"
        in f["summary"]
    )


# -- source.torch-api ------------------------------------------------------------------------------
def test_unreadable_scalar_types_header_is_an_error(pytester, env_builder, tmp_path):
    """A FIFO torch/include/c10/core/ScalarType.h was "no torch headers" (skipped)."""
    env_builder.python()
    env_builder.dist("torch", "2.6.0", files={"torch/include/c10/core/ScalarType.h": ""})
    src = tmp_path / "vllm"
    (src / "csrc").mkdir(parents=True)
    (src / "csrc" / "k.cu").write_text("auto s = at::Float8_e8m0fnu;\n")
    (src / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.26)\n")
    path = plant(env_builder.site_packages / "torch/include/c10/core/ScalarType.h", "fifo")
    checks = report(pytester, env_builder, "torch_api", f"--vllm-source={src}")
    (f,) = of(checks, "source.torch-api")
    assert f["outcome"] == "error", f
    assert f"{path}: cannot be read: not a regular file (a FIFO)" in f["summary"]


# -- torch/lib: a library where one must be -------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_unreadable_torch_library_is_named_by_driver_ptx_jit(pytester, env_builder, kind):
    """A FIFO (or dangling link) torch/lib/libtorch_cuda.so was left out of the binaries read:
    "no CUDA binary with device code" as if torch had no kernels."""
    torch_env(env_builder)
    path = plant(env_builder.site_packages / "torch" / "lib" / "libtorch_cuda.so", kind)
    checks = report(
        pytester, env_builder, "test_ptx_jit", "--cuda-arch=9.0", "--cuda-driver=580.159.04"
    )
    got = of(checks, "driver.ptx-jit")
    assert [f["outcome"] for f in got] == ["error"], got
    rel = path.relative_to(env_builder.site_packages).as_posix()
    assert got[0]["summary"].startswith(f"{rel}: "), got[0]
    assert SAYS[kind].replace("not a regular file ", "") in got[0]["summary"], got[0]
    assert got[0]["evidence"]["path"] == str(path)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_unreadable_torch_library_is_not_blamed_on_the_extension(pytester, env_builder):
    """A FIFO torch/lib/libc10.so: abi.symbols said vLLM's extension was "built against a
    different torch build" and abi.cxx11 that torch is the old ABI, from the libraries left."""
    from fixtures.elf import fake_extension, fake_torch

    torch_env(env_builder)
    env_builder.dist("vllm", "0.26.0", requires=["torch==2.11.0"], files={"vllm/__init__.py": ""})
    lib = fake_torch(env_builder.site_packages / "torch" / "lib")
    fake_extension(env_builder.site_packages / "vllm" / "_C.abi3.so", lib / "libc10.so")
    checks = report(pytester, env_builder, "test_abi.py")
    assert {f["outcome"] for f in of(checks, "abi.symbols") + of(checks, "abi.cxx11")} == {"passed"}
    path = plant(lib / "libc10.so", "fifo")
    checks = report(pytester, env_builder, "test_abi.py")
    for cid in ("abi.symbols", "abi.cxx11"):
        (f,) = of(checks, cid)
        assert f["outcome"] == "error", f
        assert (
            f"what torch exports cannot be read: {path}: cannot read: not a regular file (a FIFO)"
            in f["summary"]
        )
        assert "reinstall torch" in f["fix"]


# -- pins.siblings (each dist's RECORD: does it ship compiled code) ----------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_unreadable_record_is_an_error_not_no_objects(pytester, env_builder, kind):
    """torchvision 0.26.0 pins torch==2.11.0, next to torch 2.13.0; both ship a .so. A FIFO
    (or dangling link) torch RECORD was "no RECORD": the pin judged as if torch had no
    compiled code, a warning where the loader may bind the wrong build."""
    env_builder.python("3.12")
    env_builder.dist(
        "torchvision", "0.26.0", requires=["torch==2.11.0"], files={"torchvision/_C.so": b""}
    )
    env_builder.dist("torch", "2.13.0", files={"torch/lib/libc10.so": b""})
    checks = report(pytester, env_builder, "test_sibling_pins")
    (f,) = of(checks, "pins.siblings")
    assert f["outcome"] == "warning" and "unknown" not in f["summary"], f  # readable: judged
    path = plant(env_builder.site_packages / "torch-2.13.0.dist-info" / "RECORD", kind)
    checks = report(pytester, env_builder, "test_sibling_pins")
    (f,) = of(checks, "pins.siblings")
    assert f["outcome"] == "error", f
    assert (
        "torchvision 0.26.0 requires torch==2.11.0, the env has torch 2.13.0: whether "
        f"torchvision's compiled code links torch's libraries is unknown: {path}: cannot be read: {SAYS[kind]}"
        in f["summary"]
    ), f
    assert "reinstall torch, whose RECORD is damaged" in f["fix"], f


@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_unreadable_compiled_object_is_an_error_not_no_links(pytester, env_builder, kind):
    """torchvision 0.26.0 pins torch==2.11.0, next to torch 2.13.0. Its _C.so there but
    unreadable (a FIFO, a dangling link) was passed over: no object read, so "written
    against torch's Python API", a warning where the loader may bind the wrong torch. An
    object that is not ELF (the stand-in's empty file) is still no link: judged."""
    env_builder.python("3.12")
    env_builder.dist(
        "torchvision", "0.26.0", requires=["torch==2.11.0"], files={"torchvision/_C.so": b""}
    )
    env_builder.dist("torch", "2.13.0", files={"torch/lib/libc10.so": b""})
    path = plant(env_builder.site_packages / "torchvision" / "_C.so", kind)
    checks = report(pytester, env_builder, "test_sibling_pins")
    (f,) = of(checks, "pins.siblings")
    assert f["outcome"] == "error", f
    said = "not a regular file (a FIFO)" if kind == "fifo" else "a dangling symlink to "
    assert (
        "torchvision 0.26.0 requires torch==2.11.0, the env has torch 2.13.0: whether "
        f"torchvision's compiled code links torch's libraries is unknown: {path}: cannot be read: {said}"
        in f["summary"]
    ), f
    assert f["fix"].startswith("reinstall torchvision, whose compiled code is damaged"), f


def test_a_nul_in_a_record_path_is_no_traceback(pytester, env_builder):
    """A RECORD row naming an object with a NUL byte (a damaged RECORD): the path cannot be
    opened (Python raises ValueError, not OSError); before, pins.siblings died with a
    traceback. It is an object that cannot be read: an error naming it."""
    env_builder.python("3.12")
    info = env_builder.dist(
        "torchvision", "0.26.0", requires=["torch==2.11.0"], files={"torchvision/_C.so": b""}
    )
    env_builder.dist("torch", "2.13.0", files={"torch/lib/libc10.so": b""})
    (info / "RECORD").write_text("torchvision/_C\x00.so,,\n")
    checks = report(pytester, env_builder, "test_sibling_pins")
    (f,) = of(checks, "pins.siblings")
    assert f["outcome"] == "error", f
    assert "torchvision's compiled code links torch's libraries is unknown: " in f["summary"], f
    assert "embedded null byte" in f["summary"], f


@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_unreadable_file_of_the_literal_search_is_an_error(pytester, env_builder, kind):
    """VLLM_MY_KNOB is outside environment_variables; vllm/worker/knob.py reads it with
    os.environ.get (vLLM reads some variables so). A FIFO (or dangling link) knob.py was
    skipped by the search: "vLLM does not read VLLM_MY_KNOB: the setting does nothing"."""
    env_builder.python("3.12")
    S.python_headers(env_builder)
    S.install_vllm(env_builder)
    knob = env_builder.site_packages / "vllm" / "worker" / "knob.py"
    knob.parent.mkdir(parents=True)
    knob.write_text('import os\nKNOB = os.environ.get("VLLM_MY_KNOB")\n')
    env_builder.manifest('[activation.env]\nVLLM_MY_KNOB = "1"\n')
    checks = report(pytester, env_builder, "test_settings_unread")
    assert [f["outcome"] for f in of(checks, "settings.unread")] == ["passed"]  # readable
    plant(knob, kind)
    checks = report(pytester, env_builder, "test_settings_unread")
    got = of(checks, "settings.unread")
    assert [f["outcome"] for f in got] == ["error"], got
    assert (
        f"whether it reads VLLM_MY_KNOB ([activation.env] in pixi.toml) is unknown: {knob}: "
        f"cannot be read: {SAYS[kind]}" in got[0]["summary"]
    ), got
    assert "does nothing" not in got[0]["summary"] and "reinstall vllm" in got[0]["fix"]
    # read in a file that can be read: the unreadable one cannot change that
    (knob.parent / "other.py").write_text('X = "VLLM_MY_KNOB"\n')
    checks = report(pytester, env_builder, "test_settings_unread")
    assert [f["outcome"] for f in of(checks, "settings.unread")] == ["passed"]


# -- arch.coverage (xformers' FA3 dispatch range, ops/fmha/flash3.py) --------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dangling", "absent"])
def test_unreadable_flash3_is_named_where_fa3_is_assumed_unbounded(tmp_path, kind):
    """A FIFO (or dangling link, or no) flash3.py: the range is taken as unbounded (xformers
    then dispatches FA3 on every GPU, the side that fails), and the verdict names the file."""
    from pytest_vllm_env.checks.coverage_arch import coverage
    from pytest_vllm_env.readers.xformers_fa3 import read_fa3_dispatch
    from pytest_vllm_env.tables.archs import FatbinImage, parse_arch

    path = tmp_path / "xformers" / "ops" / "fmha" / "flash3.py"
    path.parent.mkdir(parents=True)
    path.write_text("class FwOp:\n    CUDA_MINIMUM_COMPUTE_CAPABILITY = (9, 0)\n")
    images = [FatbinImage("sass", parse_arch("9.0a"), False)]
    label = "xformers/_C_flashattention3.so"
    ok = coverage(label, images, [parse_arch("12.0")], fa3=read_fa3_dispatch(path.parents[2]))
    assert "flash3.FwOp accepts every capability >= (9, 0)" in ok[0].summary  # readable: read
    if kind == "absent":
        path.unlink()
    else:
        plant(path, kind)
    fa3 = read_fa3_dispatch(path.parents[2])
    (f,) = coverage(label, images, [parse_arch("12.0")], fa3=fa3)
    said = f"{path} is not there" if kind == "absent" else f"{path}: cannot be read: {SAYS[kind]}"
    assert f.outcome == "failed", f
    assert f"its flash3.FwOp capability range could not be read ({said}" in f.summary, f.summary
    assert "assumed unbounded" in f.summary


# -- the --vllm-source tree (readers/vllm_build) ------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_unreadable_setup_py_is_an_error_of_nvcc_in_env(pytester, env_builder, tmp_path, kind):
    """A FIFO (or dangling link) setup.py in --vllm-source was "no setup.py": both vLLM
    families judged as if the tree were unknown, a warning that says to pass --vllm-source."""
    from tests.test_cuda_torch import standin_nvcc
    from tests.test_cuda_torch import torch_env as cuda_torch_env

    home = tmp_path / "cuda-12.8"
    standin_nvcc(home, "12.8")
    cuda_torch_env(env_builder, "2.8.0+cu128", "12.8", home)
    src = tmp_path / "vllm-src"
    src.mkdir()
    (src / "pyproject.toml").write_text("")
    (src / "setup.py").write_text('cmake_args += ["-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc"]\n')
    args = (f"--vllm-source={src}", "--vllm-build-log=build.log")
    checks = report(pytester, env_builder, "nvcc_in_env", *args)
    (f,) = of(checks, "cuda.nvcc-in-env")
    assert f["outcome"] != "error", f  # readable: judged
    path = plant(src / "setup.py", kind)
    checks = report(pytester, env_builder, "nvcc_in_env", *args)
    (f,) = of(checks, "cuda.nvcc-in-env")
    assert f["outcome"] == "error", f
    assert (
        f"the vLLM source tree's setup.py cannot be read: {path}: cannot be read: {SAYS[kind]}"
        in f["summary"]
    ), f


@pytest.mark.parametrize("rel", ["CMakeLists.txt", "cmake/utils.cmake"])
def test_unreadable_cmake_file_of_the_source_tree_is_named(tmp_path, rel):
    """A FIFO CMakeLists.txt was read as empty: "the vLLM does not link ${TORCH_LIBRARIES}"
    (or "has no CMakeLists.txt"), so torch 2.0-2.4's NVTX and nvrtc blockers were dropped."""
    from pytest_vllm_env.readers.vllm_build import read_vllm_links

    (tmp_path / "cmake").mkdir()
    (tmp_path / "CMakeLists.txt").write_text("target_link_libraries(_C torch)\n")
    (tmp_path / "cmake" / "utils.cmake").write_text("# nothing linked here\n")
    assert read_vllm_links(tmp_path).torch_libraries is False  # readable: read
    path = plant(tmp_path / rel, "fifo")
    got = read_vllm_links(tmp_path)
    assert got.torch_libraries is True  # the default every release since 0.5.4 has
    assert got.error == f"{path}: cannot be read: not a regular file (a FIFO)", got
    assert got.error in got.why


@pytest.mark.parametrize("rel", ["pyproject.toml", "requirements/cuda.txt"])
def test_unreadable_torch_pin_file_is_an_abi_source_torch_error(
    pytester, env_builder, tmp_path, rel
):
    """A FIFO requirements/cuda.txt (or pyproject.toml) in --vllm-source was "no such file":
    the tree's torch pin dropped, "names no torch requirement" (skipped) or judged without it."""
    env_builder.python("3.12")
    env_builder.dist("torch", "2.9.0")
    src = tmp_path / "vllm-src"
    (src / "requirements").mkdir(parents=True)
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\n')
    (src / "requirements" / "cuda.txt").write_text("torch==2.11.0\n")
    checks = report(pytester, env_builder, "source_build_torch_floor", f"--vllm-source={src}")
    assert [f["outcome"] for f in of(checks, "abi.source-torch")] == ["failed"]  # readable
    path = plant(src / rel, "fifo")
    checks = report(pytester, env_builder, "source_build_torch_floor", f"--vllm-source={src}")
    got = of(checks, "abi.source-torch")
    assert [f["outcome"] for f in got] == ["error"], got
    assert f"{path}: cannot be read: not a regular file (a FIFO)" in got[0]["summary"], got


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_unreadable_torch_library_is_named_by_abi_needed_and_undefined(
    pytester, env_builder, tmp_path, kind
):
    """vLLM's _C needs torch's libc10.so (DT_NEEDED) and calls c10_version, which it defines.
    A FIFO libc10.so: abi.needed passed its load (the walk stopped at the FIFO) and
    abi.undefined blamed vLLM's build for c10_version; a dangling one was "libc10.so not
    found: install torch". abi.symbols and abi.cxx11 already named it (one reading)."""
    from fixtures import elf

    lib = elf.fake_soname_lib(
        tmp_path / "lib", "libc10.so", 'extern "C" int c10_version(void) { return 2; }\n'
    )
    ext = elf.cxx_extension(
        tmp_path / "_C.so",
        'extern "C" int c10_version(void);\nextern "C" int f() { return c10_version(); }\n',
        [lib],
    )
    torch_env(env_builder)
    env_builder.dist(
        "vllm", "0.26.0", requires=["torch==2.11.0"], files={"vllm/_C.abi3.so": ext.read_bytes()}
    )
    libdir = env_builder.site_packages / "torch" / "lib"
    libdir.mkdir(parents=True)
    (libdir / "libc10.so").write_bytes(lib.read_bytes())
    checks = report(pytester, env_builder, "test_needed_libraries or test_undefined_symbols")
    got = {c["id"]: c["outcome"] for c in checks if c.get("subject") != "torch"}
    assert got == {"abi.needed": "passed", "abi.undefined": "passed"}, checks  # readable
    path = plant(libdir / "libc10.so", kind)
    checks = report(pytester, env_builder, "test_needed_libraries or test_undefined_symbols")
    for cid in ("abi.needed", "abi.undefined"):
        (f,) = [c for c in of(checks, cid) if "vllm/_C.abi3.so" in c["summary"]]
        assert f["outcome"] == "error", f
        assert f"what torch exports cannot be read: {path}: " in f["summary"], f
        why = "a FIFO" if kind == "fifo" else "No such file or directory"  # as abi.symbols says
        assert why in f["summary"], f
        assert "reinstall torch" in f["fix"]
