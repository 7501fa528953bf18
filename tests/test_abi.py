"""abi.* checks against g++-built fake torch libraries and extensions (real ELF, real symbols)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fixtures.elf import (
    DRIVER_AND_PYTHON_SRC,
    UNDEFINED_KERNEL_SRC,
    cxx_extension,
    fake_cudart,
    fake_extension,
    fake_soname_lib,
    fake_torch,
)
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env.cache import FactCache
from pytest_vllm_env.checks import abi, abi_source
from pytest_vllm_env.facts import binaries
from pytest_vllm_env.readers import vllm_build

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")


@pytest.fixture(scope="session")
def parts(tmp_path_factory) -> dict[str, Path]:
    """Built once per session: CUDA and CPU-only torch libs; extensions for each variant."""
    root = tmp_path_factory.mktemp("abi")
    cuda = fake_torch(root / "torch-cuda")
    cpu = fake_torch(root / "torch-cpu", with_cuda=False)
    cudart = fake_cudart(root / "cudart", 13)
    driver = fake_soname_lib(
        root / "driver", "libcuda.so.1", 'extern "C" int cuInit(unsigned f) { return 0; }\n'
    )
    cublas = fake_soname_lib(
        root / "cublas",
        "libcublas.so.13",
        'extern "C" int cublasCreate_v2(void **h) { return 0; }\n',
    )
    other = fake_soname_lib(
        root / "other", "libnvshmem_host.so.3", 'extern "C" int nvshmem_init() { return 0; }\n'
    )
    return {
        "torch-cuda": cuda,
        "torch-cpu": cpu,
        "cudart13": cudart,
        "ext": fake_extension(root / "ext" / "_C.abi3.so", cuda),
        "ext-old-abi": fake_extension(root / "old" / "_C.abi3.so", cuda, cxx11=0),
        "ext-cuda12": fake_extension(root / "c12" / "_C.abi3.so", cuda, cuda_major=12),
        "ext-undefined-kernel": cxx_extension(
            root / "undef" / "_C.abi3.so", UNDEFINED_KERNEL_SRC, [cudart]
        ),
        "ext-driver": cxx_extension(
            root / "drv" / "cumem_allocator.abi3.so", DRIVER_AND_PYTHON_SRC, [cudart, driver]
        ),
        # vLLM's _C needs libcublas.so.N of torch's CUDA; one env lacks it
        "ext-cublas": cxx_extension(
            root / "blas" / "_C.abi3.so",
            'extern "C" int cublasCreate_v2(void **);\n'
            'extern "C" int use_blas() { void *h; return cublasCreate_v2(&h); }\n',
            [cudart, cublas],
        ),
        # a library that is no CUDA library and no torch one
        "ext-other": cxx_extension(
            root / "shmem" / "_C.abi3.so",
            'extern "C" int nvshmem_init();\n'
            'extern "C" int use_shmem() { return nvshmem_init(); }\n',
            [cudart, other],
        ),
    }


def make_env(
    builder: EnvBuilder,
    parts: dict[str, Path],
    *,
    torch: str = "2.11.0+cu130",
    torch_cuda: str | None = "13.0",
    libs: str = "torch-cuda",
    ext: str = "ext",
    vllm: str = "0.26.0",
    member: str = "vllm/_C.abi3.so",
) -> Path:
    builder.python("3.12")
    # conda-forge's cuda-cudart puts libcudart.so.13 in $PREFIX/lib
    builder.file("lib/libcudart.so.13", parts["cudart13"].read_bytes())
    files: dict[str, bytes | str] = {"torch/version.py": f"cuda = {torch_cuda!r}\n"}
    for lib in parts[libs].glob("*.so"):
        files[f"torch/lib/{lib.name}"] = lib.read_bytes()
    builder.dist("torch", torch, files=files)
    builder.dist(
        "vllm",
        vllm,
        requires=["torch==2.11.0", "xformers; extra == 'video'"],
        files={member: parts[ext].read_bytes()},
    )
    return builder.prefix


def run(pytester, prefix: Path) -> pytest.RunResult:
    return pytester.runpytest("--vllm-conformance", "-k", "test_abi", "--vllm-env", str(prefix))


def test_matching_torch_passes(pytester, env_builder, parts):
    result = run(pytester, make_env(env_builder, parts))
    # abi.source-torch skips: nothing builds vLLM here, abi.pins judges the wheel's torch
    result.assert_outcomes(passed=6, skipped=1)


def test_cpu_torch_of_another_version_fails_naming_missing_symbols(pytester, env_builder, parts):
    prefix = make_env(env_builder, parts, torch="2.13.0", torch_cuda=None, libs="torch-cpu")
    result = run(pytester, prefix)
    result.assert_outcomes(failed=3, passed=3, skipped=1)  # pins, cudart, symbols; no build
    result.stdout.fnmatch_lines(
        [
            lit("*[abi.pins] FAILED: vllm requires torch==2.11.0 but the env has torch 2.13.0*"),
            lit(
                "*[abi.cudart] FAILED: vllm/_C.abi3.so needs "
                "libcudart.so.13 but torch is a CPU-only build*"
            ),
            lit(
                "*[abi.symbols] FAILED: vllm/_C.abi3.so: resolved 2 of 3 torch symbols; 1 missing"
                " (likely cause: built for torch 2.11.0 (vllm's Requires-Dist), env has 2.13.0)*"
            ),
            "*missing: c10::cuda::device_count()*",
        ]
    )


def test_old_cxx_abi_extension_fails(pytester, env_builder, parts):
    result = run(pytester, make_env(env_builder, parts, ext="ext-old-abi"))
    result.stdout.fnmatch_lines(
        [
            "*missing: c10::check(std::basic_string<char*",
            lit(
                "*[abi.cxx11] FAILED: vllm/_C.abi3.so was built with "
                "_GLIBCXX_USE_CXX11_ABI=0,*with 1*"
            ),
        ]
    )
    result.assert_outcomes(failed=2, passed=4, skipped=1)


def test_cudart_major_mismatch(pytester, env_builder, parts):
    """vLLM #44335 / #52300 / llm-d#1402 (F2.7, F2.8): an extension for one CUDA major next to
    a torch of the other: "libcudart.so.12: cannot open shared object file"."""
    result = run(pytester, make_env(env_builder, parts, ext="ext-cuda12"))
    result.assert_outcomes(failed=2, passed=3, skipped=2)  # abi.undefined, abi.source-torch
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[abi.cudart] FAILED: vllm/_C.abi3.so was built for CUDA "
                "12 (libcudart.so.12); torch*CUDA 13.0*"
            ),
            lit(
                "*[abi.needed] FAILED: vllm/_C.abi3.so needs libcudart.so.12, found nowhere the "
                'loader looks: import fails with "libcudart.so.12: cannot open shared object '
                'file: No such file or directory"*'
            ),
            lit(
                "*fix: vllm/_C.abi3.so was built for CUDA 12, torch 2.11.0+cu130 is CUDA 13.0 "
                "(abi.cudart): install vLLM's CUDA 13 wheel: add `vllm = { version = "
                '"==0.26.0", index = "https://wheels.vllm.ai/0.26.0/cu130" }` to '
                "[pypi-dependencies] in pixi.toml*"
            ),
        ]
    )


def test_non_elf_extension_is_an_error_not_a_traceback(pytester, env_builder, parts):
    prefix = make_env(env_builder, parts)
    (env_builder.site_packages / "vllm" / "_C.abi3.so").write_text("not a library\n")
    result = run(pytester, prefix)
    result.stdout.fnmatch_lines([lit("*[abi.symbols] ERROR: vllm/_C.abi3.so: not an ELF file*")])
    assert "Traceback" not in result.stdout.str()


def test_source_build_needs_torch_27():
    bad = abi_source.source_torch_floor("0.10.1", "2.6.0")
    assert bad.outcome == "failed" and "Float8_e8m0fnu" in bad.summary
    assert abi_source.source_torch_floor("0.8.5", "2.6.0").outcome == "passed"
    assert abi_source.source_torch_floor("0.26.0", "2.11.0+cu130").outcome == "passed"


def test_pins_accept_local_labels():
    (ok,) = abi.pins(["torch==2.11.0"], {"torch": "2.11.0+cu130"})
    assert ok.outcome == "passed"
    (bad,) = abi.pins(["torchvision==0.26.0"], {"torchvision": "0.25.0+cu128"})
    assert bad.outcome == "failed" and "torchvision" in bad.fix


def test_source_tree_pin_the_env_cannot_meet(pytester, env_builder, tmp_path):
    env_builder.python("3.12")
    env_builder.dist("torch", "2.6.0+cu124")
    tree = tmp_path / "vllm-src"
    (tree / "requirements").mkdir(parents=True)
    (tree / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["torch == 2.11.0", "wheel"]\n'
    )
    (tree / "requirements" / "cuda.txt").write_text("# comment\ntorch==2.11.0\nxformers\n")
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_source_build", f"--vllm-env={env_builder.prefix}",
        f"--vllm-source={tree}",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the source tree needs torch==2.11.0 (pyproject.toml*) but the env has torch 2.6.0*",
            "*the source tree needs torch==2.11.0 (requirements/cuda.txt:2)*",
        ]
    )


def test_source_tree_met(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["torch == 2.11.0"]\n')
    tree = vllm_build.read_source_tree(tmp_path)
    assert [f.outcome for f in abi_source.source_tree_torch(tree, "2.11.0+cu130")] == ["passed"]
    (tmp_path / "pyproject.toml").write_text("[build-system\n")
    bad = abi_source.source_tree_torch(vllm_build.read_source_tree(tmp_path), "2.11.0")
    assert bad[0].outcome == "error"


def test_torch_symbols_are_read_once_and_reread_when_torch_changes(pytester, env_builder, parts):
    # xdist workers and later runs share torch's facts (its libraries, CUDA, C++ ABI flag)
    # through the fact cache; what the libraries export is looked up in them by name
    prefix = make_env(env_builder, parts)
    cache = pytester.path / "cache"

    def again() -> pytest.RunResult:
        return pytester.runpytest(
            "--vllm-conformance",
            "-k",
            "test_abi",
            "--vllm-env",
            str(prefix),
            "-o",
            f"cache_dir={cache}",
        )

    again().assert_outcomes(passed=6, skipped=1)
    (entry,) = cache.rglob("torch-facts-*.json")
    # doctor the cached fact: a run that reads it (instead of the libraries) now finds no
    # torch library, so no torch symbol
    data = json.loads(entry.read_text())
    assert "exports" not in data["value"]  # 41,000 names for torch 2.11: looked up instead
    data["value"]["libs"] = []
    data["sha"] = FactCache.digest(data["value"])[1]  # signed as the cache signs (else unread)
    entry.write_text(json.dumps(data))
    again().assert_outcomes(passed=5, failed=1, skipped=1)
    # a changed torch library is a new key: the facts are read from the files again
    lib = next((env_builder.site_packages / "torch" / "lib").glob("*.so"))
    os.utime(lib, ns=(lib.stat().st_atime_ns, lib.stat().st_mtime_ns + 10**9))
    again().assert_outcomes(passed=6, skipped=1)


def test_undefined_symbols_are_resolved_once_and_again_when_a_library_changes(
    pytester, env_builder, parts
):
    """abi.undefined's answer (which imports no library defines) is shared through the fact
    cache, keyed by the extension and every library of its DT_NEEDED closure: a later run
    reads no symbol table; a changed library anywhere in the closure is read again."""
    prefix = make_env(env_builder, parts, ext="ext-driver", member="vllm/cumem_allocator.abi3.so")
    cache = pytester.path / "cache"

    def again() -> pytest.RunResult:
        return pytester.runpytest(
            "--vllm-conformance", "-k", "undefined", f"--vllm-env={prefix}",
            "-o", f"cache_dir={cache}",
        )  # fmt: skip

    again().assert_outcomes(passed=1)
    (entry,) = cache.rglob("undefined-symbols-*.json")
    data = json.loads(entry.read_text())
    assert data["value"] == []
    data["value"] = ["_Z20cutlass_moe_mm_sm100RN2at6TensorE"]
    data["sha"] = FactCache.digest(data["value"])[1]  # signed as the cache signs (else unread)
    entry.write_text(json.dumps(data))
    result = again()
    result.assert_outcomes(failed=1)  # the doctored answer was read, not recomputed
    result.stdout.fnmatch_lines(["*undefined symbol: _Z20cutlass_moe_mm_sm100*"])
    # libcudart.so.13 (in the env's lib/, needed by the extension) changes: read again
    cudart = prefix / "lib" / "libcudart.so.13"
    os.utime(cudart, ns=(cudart.stat().st_atime_ns, cudart.stat().st_mtime_ns + 10**9))
    again().assert_outcomes(passed=1)


def test_source_build_left_its_own_kernel_undefined(pytester, env_builder, parts):
    """vLLM #29030 (F2.5): a source build for "8.0 8.6 8.9 9.0 12.0" defined
    ENABLE_CUTLASS_MOE_SM100 globally; _C.abi3.so calls cutlass_moe_mm_sm100, compiled nowhere.
    abi.symbols (torch's namespace) passed it; the loader refuses."""
    prefix = make_env(env_builder, parts, ext="ext-undefined-kernel", vllm="0.11.1")
    result = run(pytester, prefix)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[abi.undefined] FAILED: vllm/_C.abi3.so: 1 symbol(s) defined by no library it "
                'loads: import fails with "undefined symbol: _Z20cutlass_moe_mm_sm100RN2at6'
                'TensorERKS0_S3_S3_S3_S3_S3_S3_S3_S3_bb"*'
            ),
            "*fix: the build compiled a caller of sm_100-only kernels without the kernels*"
            "rebuild with 10.0 in `TORCH_CUDA_ARCH_LIST`*",
            "*undefined: cutlass_moe_mm_sm100(at::Tensor&, at::Tensor const&*",
        ]
    )
    assert "[abi.symbols] FAILED" not in result.stdout.str()


def test_driver_and_python_symbols_are_not_the_envs(pytester, env_builder, parts):
    """libcuda.so.1 comes with the NVIDIA driver (absent on a machine without a GPU) and
    PyModule_Create2 with the interpreter: neither is a missing library or symbol."""
    prefix = make_env(env_builder, parts, ext="ext-driver", member="vllm/cumem_allocator.abi3.so")
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "needed or undefined", "--vllm-env", str(prefix),
        "--vllm-env-report", "r.json",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    needed = next(c for c in checks if c["id"] == "abi.needed")
    assert "libcuda.so.1" in needed["evidence"]["not_on_this_machine"]


def test_torch_exports_are_asked_by_name(env_builder, parts):
    """torch's exports are looked up, not listed: exactly the torch-side names its libraries
    define are in ``torch_facts.exports`` (what abi.symbols asks), nothing they only import."""
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.readers.elf import defined_names, undefined_names

    facts = binaries.torch_facts(PixiEnv.read(make_env(env_builder, parts)))
    assert facts is not None and facts.cxx11 is True and not facts.errors
    assert "exports" not in facts.to_json()
    asked = 0
    for lib in facts.libs:
        for name in defined_names(lib):
            assert (name in facts.exports) == bool(binaries.TORCH_SIDE.match(name)), name
            asked += bool(binaries.TORCH_SIDE.match(name))
        for name, _weak in undefined_names(lib):
            assert name not in facts.exports, name
    assert asked == 3  # c10::check, c10::cuda::device_count, aoti_torch_get_current_cuda_stream
    assert "_ZN3c104cuda12device_countEv" in facts.exports
    assert (
        "_ZN3c104cuda12device_countEv"
        not in binaries.TorchFacts.from_json(facts.to_json() | {"libs": []}).exports
    )


# -- fixes in the judged env's language ------------------------------------------------------
# The same failures, judged in a Pixi workspace (pixi.toml; pyproject.toml [tool.pixi] with a
# feature), a plain conda prefix and a venv (pip; `uv venv`, which has no pip): each fix names
# the file, line and table to change, or the command that installs the version.
PIXI_DEPS = '[pypi-dependencies]\ntorch = "==2.13.0"\nvllm = "==0.26.0"\n'  # lines 7, 8


def pixi_env(builder: EnvBuilder, parts: dict[str, Path], **kw) -> Path:
    prefix = make_env(builder, parts, **kw)
    builder.manifest(PIXI_DEPS)
    return prefix


def pyproject_env(root: Path, parts: dict[str, Path], **kw) -> Path:
    builder = EnvBuilder(root, "cuda")
    prefix = make_env(builder, parts, **kw)
    builder.manifest(
        "[tool.pixi.environments]\ncuda = { features = ['gpu'] }\n\n"
        "[tool.pixi.feature.gpu.pypi-dependencies]\n"
        'torch = { version = "==2.13.0", index = "https://download.pytorch.org/whl/cu130" }\n',
        kind="pyproject",
    )
    return prefix


def conda_env(root: Path, parts: dict[str, Path], **kw) -> Path:
    return make_env(EnvBuilder(root, "envs/x", bare=True), parts, **kw)


def venv_env(root: Path, parts: dict[str, Path], *, uv: bool = False, **kw) -> Path:
    """A venv as `python -m venv` (or `uv venv`: its pyvenv.cfg says `uv = ...`) lays it out:
    no conda-meta."""
    prefix = make_env(EnvBuilder(root, "venv", bare=True), parts, **kw)
    shutil.rmtree(prefix / "conda-meta")
    (prefix / "pyvenv.cfg").write_text(
        "home = /usr/bin\nversion = 3.12.3\n" + ("uv = 0.13.9\n" if uv else "")
    )
    return prefix


def fixes_of(pytester, prefix: Path, check: str) -> list[str]:
    """The fix texts of ``check`` in the JSON report (the same text the terminal shows)."""
    pytester.runpytest(
        "--vllm-conformance", "-k", "test_abi", f"--vllm-env={prefix}", "--vllm-env-report=r.json"
    )
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    return [c["fix"] for c in checks if c["id"] == check and c.get("fix")]


REBUILD_VLLM = (
    "rebuild vLLM against torch {torch}: in a vLLM checkout run `python use_existing_torch.py`, "
    "then "
)


def test_fix_in_pixi_toml_names_the_line_to_change(pytester, env_builder, parts):
    """The vLLM 0.26.0 wheel (pins torch==2.11.0) next to torch 2.13.0, in a Pixi workspace
    whose pixi.toml says `torch = "==2.13.0"` on line 7: the fix rewrites that line."""
    prefix = pixi_env(env_builder, parts, torch="2.13.0", torch_cuda=None, libs="torch-cpu")
    manifest = env_builder.workspace / "pixi.toml"
    torch_line = (
        'in pixi.toml line 7 ([pypi-dependencies]), replace `torch = "==2.13.0"` with '
        '`torch = "==2.11.0"`'
    )
    assert fixes_of(pytester, prefix, "abi.pins") == [
        f"{torch_line}, or install the vllm release built for torch 2.13.0"
    ]
    assert fixes_of(pytester, prefix, "abi.symbols") == [
        f"install the torch it was built for: {torch_line}; or "
        + REBUILD_VLLM.format(torch="2.13.0")
        + 'list `"vllm"` in `no-build-isolation = [...]` of [pypi-options] in pixi.toml; in '
        'pixi.toml line 8 ([pypi-dependencies]), replace `vllm = "==0.26.0"` with `vllm = { '
        'path = "<vLLM checkout>", editable = true }`; then run `pixi reinstall -e default '
        f"--manifest-path {manifest} vllm`"
    ]
    # torch's CPU build next to a CUDA 13 extension: the CUDA 13 torch to install is the one
    # vLLM pins (issue 21: this fix said "reinstall torch 2.13.0" beside abi.pins' 2.11.0)
    assert fixes_of(pytester, prefix, "abi.cudart") == [
        f"install a CUDA 13 build of torch: {torch_line}"
    ]


def test_fix_in_pyproject_feature_keeps_the_index(pytester, tmp_path, parts):
    """pyproject.toml [tool.pixi], env `cuda` of feature `gpu`, torch from the PyTorch index:
    the fix names the feature's table and keeps the `index` of the inline table."""
    prefix = pyproject_env(
        tmp_path / "ws", parts, torch="2.13.0", torch_cuda=None, libs="torch-cpu"
    )
    index = 'index = "https://download.pytorch.org/whl/cu130" }'
    assert fixes_of(pytester, prefix, "abi.pins") == [
        "in pyproject.toml line 13 ([tool.pixi.feature.gpu.pypi-dependencies]), replace "
        f'`torch = {{ version = "==2.13.0", {index}` with `torch = {{ version = "==2.11.0", '
        f"{index}`, or install the vllm release built for torch 2.13.0"
    ]
    (symbols,) = fixes_of(pytester, prefix, "abi.symbols")
    assert (
        'list `"vllm"` in `no-build-isolation = [...]` of [tool.pixi.feature.gpu.pypi-options] '
        'in pyproject.toml; add `vllm = { path = "<vLLM checkout>", editable = true }` to '
        "[tool.pixi.feature.gpu.pypi-dependencies] in pyproject.toml; then run `pixi reinstall "
        f"-e cuda --manifest-path {tmp_path / 'ws' / 'pyproject.toml'} vllm`"
    ) in symbols


def test_fix_in_a_conda_prefix_uses_conda_and_pip(pytester, tmp_path, parts):
    prefix = conda_env(tmp_path, parts, torch="2.13.0", torch_cuda=None, libs="torch-cpu")
    pip = f"{prefix}/bin/python3 -m pip install"
    assert fixes_of(pytester, prefix, "abi.symbols") == [
        f'install the torch it was built for: `{pip} "torch==2.11.0"`; or '
        + REBUILD_VLLM.format(torch="2.13.0")
        + f"in `conda activate {prefix}`, run `{pip} --no-build-isolation --no-cache-dir "
        '--force-reinstall --no-deps "<vLLM checkout>"`'
    ]
    assert "pixi" not in " ".join(fixes_of(pytester, prefix, "abi.cudart"))


@pytest.mark.parametrize("uv", [False, True], ids=["pip", "uv"])
def test_fix_in_a_venv_is_the_install_command_with_the_version(pytester, tmp_path, parts, uv):
    """A venv has no manifest: the fix is the command, with the version. One `uv venv` made
    has no pip ("No module named pip"): `uv pip install --python PREFIX`."""
    prefix = venv_env(tmp_path, parts, uv=uv, torch="2.13.0", torch_cuda=None, libs="torch-cpu")
    install = f"uv pip install --python {prefix}" if uv else f"{prefix}/bin/python3 -m pip install"
    assert fixes_of(pytester, prefix, "abi.pins") == [
        f'`{install} "torch==2.11.0"`, or install the vllm release built for torch 2.13.0'
    ]
    # the CUDA 13 torch to install is the one vLLM pins (PyPI's 2.11.0 is its cu130 build),
    # as abi.pins says: one target for every fix of the run (issue 21)
    assert fixes_of(pytester, prefix, "abi.cudart") == [
        f'install a CUDA 13 build of torch: `{install} "torch==2.11.0"`'
    ]


def test_fix_rebuild_for_the_cxx11_flag_per_env(pytester, env_builder, tmp_path, parts):
    """vLLM #13608 (an old-ABI build next to a new-ABI torch): rebuild against this torch, in
    the env's own way of building a package without isolation."""
    pixi = fixes_of(pytester, pixi_env(env_builder, parts, ext="ext-old-abi"), "abi.cxx11")
    venv = venv_env(tmp_path, parts, ext="ext-old-abi")
    plain = fixes_of(pytester, venv, "abi.cxx11")
    assert pixi[0].startswith(REBUILD_VLLM.format(torch="2.11.0+cu130"))
    assert "`no-build-isolation = [...]` of [pypi-options] in pixi.toml" in pixi[0]
    assert plain[0].startswith(REBUILD_VLLM.format(torch="2.11.0+cu130"))
    assert (
        f"in `source {venv}/bin/activate`, run `{venv}/bin/python3 -m pip install "
        '--no-build-isolation --no-cache-dir --force-reinstall --no-deps "<vLLM checkout>"` '
        "(it then gets -D_GLIBCXX_USE_CXX11_ABI=1)"
    ) in plain[0]


def test_fix_for_a_missing_cuda_library_per_env(pytester, env_builder, tmp_path, parts):
    """vLLM's _C needs libcublas.so.13 and no env package provides it: conda-forge's
    `libcublas` (with `cuda-version`) or PyPI's `nvidia-cublas` (CUDA 13 drops `-cu13`)."""
    lead = "add the CUDA library that provides libcublas.so.13: "
    pixi = pixi_env(env_builder, parts, ext="ext-cublas")
    assert fixes_of(pytester, pixi, "abi.needed") == [
        lead + 'add `libcublas = "*"` and `cuda-version = "13.0.*"` to [dependencies] in '
        'pixi.toml; or from PyPI, add `nvidia-cublas = "==13.*"` to [pypi-dependencies] in '
        "pixi.toml"
    ]
    conda = conda_env(tmp_path, parts, ext="ext-cublas")
    assert fixes_of(pytester, conda, "abi.needed") == [
        lead + f'install into the env: `conda install -p {conda} -c conda-forge "libcublas" '
        f'"cuda-version=13.0.*"`; or from PyPI, `{conda}/bin/python3 -m pip install '
        '"nvidia-cublas==13.*"`'
    ]
    venv = venv_env(tmp_path, parts, ext="ext-cublas")
    assert fixes_of(pytester, venv, "abi.needed") == [
        lead + f'`{venv}/bin/python3 -m pip install "nvidia-cublas==13.*"`'
    ]


def test_fix_for_another_missing_library_reinstalls_its_package(
    pytester, env_builder, tmp_path, parts
):
    pixi = pixi_env(env_builder, parts, ext="ext-other")
    manifest = env_builder.workspace / "pixi.toml"
    assert fixes_of(pytester, pixi, "abi.needed") == [
        "add the package that provides libnvshmem_host.so.3 to [dependencies] in pixi.toml, or "
        f"reinstall vllm: `pixi reinstall -e default --manifest-path {manifest} vllm`"
    ]
    venv = venv_env(tmp_path, parts, uv=True, ext="ext-other")
    assert fixes_of(pytester, venv, "abi.needed") == [
        "add the package that provides libnvshmem_host.so.3 to the venv (`uv pip install "
        f"--python {venv}`), or reinstall vllm: `uv pip install --python {venv} "
        "--reinstall-package vllm vllm`"
    ]


def test_fix_for_a_cuda_12_build_next_to_torch_cu130_outside_pixi(pytester, tmp_path, parts):
    """F2.7/F2.8 in a conda prefix: vLLM's CUDA 13 wheel from its per-release index (extra:
    it holds only vLLM), forced over the installed 0.26.0; or torch 2.11.0's cu128 build."""
    prefix = conda_env(tmp_path, parts, ext="ext-cuda12")
    pip = f"{prefix}/bin/python3 -m pip install"
    assert fixes_of(pytester, prefix, "abi.cudart") == [
        f"install vLLM's CUDA 13 wheel: `{pip} --extra-index-url "
        'https://wheels.vllm.ai/0.26.0/cu130 --force-reinstall "vllm==0.26.0"`; or a torch '
        f"built for CUDA 12: `{pip} --index-url https://download.pytorch.org/whl/cu128 "
        '--force-reinstall "torch==2.11.0"`; or keep both and add the CUDA 12 runtime '
        "(nvidia-cuda-runtime-cu12: libcudart.so.12 in site-packages/nvidia/cuda_runtime/lib, "
        "where the loader does not look by itself): "
        f'`{pip} "nvidia-cuda-runtime-cu12"`, and set it in the env: `conda env config vars '
        f"set -p {prefix} LD_LIBRARY_PATH={prefix}/lib/python3.12/site-packages/nvidia/"
        "cuda_runtime/lib`"
    ]


def test_fix_for_conda_forge_pytorch_pins_pytorch_not_a_pypi_torch(env_builder):
    """torch from conda-forge (`pytorch` in [dependencies]): a PyPI `torch` pin beside it
    would install a second torch over it; the fix changes the `pytorch` line."""
    from pytest_vllm_env.facts.env import PixiEnv

    env_builder.python("3.12")
    env_builder.conda("pytorch", "2.13.0", "cuda130_h0")
    env_builder.dist("torch", "2.13.0", installer="conda")
    manifest = env_builder.manifest('[dependencies]\npytorch = "2.13.*"\n')
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=manifest)
    (bad,) = abi.pins(["torch==2.11.0"], {"torch": "2.13.0"}, env=env)
    assert bad.fix == (
        'in pixi.toml line 7 ([dependencies]), replace `pytorch = "2.13.*"` with '
        '`pytorch = "==2.11.0"`, or install the vllm release built for torch 2.13.0'
    )
    (old,) = abi.pins(["torch==2.11.0"], {"torch": "2.13.0"})  # no env known: Pixi's words
    assert old.fix == (
        'add `torch = "==2.11.0"` to [pypi-dependencies] in pixi.toml, or install the vllm '
        "release built for torch 2.13.0"
    )


def test_symbols_are_judged_from_facts_alone():
    """abi.symbols reads no library and runs no c++filt: a vLLM extension built for torch
    2.11.0 whose c10 symbol torch does not export (here: a torch whose libraries are not
    there) fails, naming the symbol as it was demangled when the extension was read."""
    name = "_ZN3c105Error4whatEv"
    ext = binaries.ExtensionFacts(
        Path("vllm/_C.abi3.so"), "vllm", torch_symbols=[name], readable={name: "c10::Error::what()"}
    )
    torch = binaries.TorchFacts("2.13.0", Path("/nowhere/torch"), "13.0")
    found = abi.symbols(ext, torch, "2.11.0")
    assert found.outcome == "failed"
    assert found.summary.startswith("vllm/_C.abi3.so: resolved 0 of 1 torch symbols; 1 missing")
    assert found.evidence["missing"] == ["c10::Error::what()"]


def test_extension_facts_demangle_its_torch_symbols(tmp_path):
    """What abi.symbols shows is read with the extension, by the real c++filt where there is one
    (the C entry points of torch's stable ABI stay as they are)."""
    so = fake_extension(tmp_path / "vllm" / "_C.abi3.so", tmp_path / "torch" / "lib")
    facts = binaries.extension_facts(so)
    shown = dict(zip(facts.torch_symbols, facts.shown(facts.torch_symbols), strict=True))
    assert shown["aoti_torch_get_current_cuda_stream"] == "aoti_torch_get_current_cuda_stream"
    device_count = next(n for n in shown if "device_count" in n)
    want = "c10::cuda::device_count()" if shutil.which("c++filt") else device_count
    assert shown[device_count] == want
