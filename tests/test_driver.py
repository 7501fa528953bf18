"""The driver layer (issue 23, item 1), run as users run it: the suite's ``driver.*`` checks against
fixture envs with real nvcc 13.0 output (PTX ISA 9.0), asserting outcomes and the fix text; the
tables and readers against NVIDIA's rows and real binaries; the checks alone on node facts."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import pytest

from fixtures.elf import fake_extension, fake_torch, nvcc
from fixtures.envs import EnvBuilder
from fixtures.ptx import ptx_only_so
from fixtures.text import lit
from pytest_vllm_env.checks import driver as checks
from pytest_vllm_env.facts import driver as facts
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import fatbin_ptx
from pytest_vllm_env.tables import driver as T
from pytest_vllm_env.tables.archs import parse_arch

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
needs_nvcc = pytest.mark.skipif(nvcc() is None, reason="nvcc not found")


def run(pytester: pytest.Pytester, prefix: Path, *args: str, k: str = "test_driver.py"):
    return pytester.runpytest(*SUITE, "-k", k, f"--vllm-env={prefix}", *args)


def summaries(pytester: pytest.Pytester, prefix: Path, *args: str) -> dict[str, list[str]]:
    """Run the driver checks with a JSON report: ``{outcome: [summary, ...]}``."""
    report = pytester.path / "driver-report.json"
    run(pytester, prefix, f"--vllm-env-report={report}", *args)
    out: dict[str, list[str]] = {}
    for check in json.loads(report.read_text())["checks"]:
        out.setdefault(check["outcome"], []).append(check["summary"])
    return out


def warned(result: pytest.RunResult) -> int:
    return result.parseoutcomes().get("warned", 0)


def torch_env(b: EnvBuilder, version: str, cuda: str | None) -> Path:
    """An env with torch ``version`` whose ``torch/version.py`` says CUDA ``cuda``."""
    b.python("3.12")
    line = f"cuda = {cuda!r}" if cuda else "cuda = None"
    b.dist("torch", version, files={"torch/version.py": f"__version__ = {version!r}\n{line}\n"})
    return b.prefix


@pytest.fixture(scope="session")
def ptx90(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PTX-only (compute_90, ISA 9.0) library from this machine's nvcc 13.0, NEEDED
    libcudart.so.13: what a vLLM extension built without sm_90 SASS holds."""
    if nvcc() is None:
        pytest.skip("nvcc not found")
    return ptx_only_so(tmp_path_factory.mktemp("ptx") / "ptx90.so")


def vllm_with(b: EnvBuilder, lib: Path, name: str = "vllm/_C.abi3.so") -> Path:
    b.python("3.12")
    b.dist("vllm", "0.26.0", requires=["torch==2.11.0"], files={name: lib.read_bytes()})
    return b.prefix


# -- --cuda-driver ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, says",
    [
        ("abc", "'abc' is not an NVIDIA driver version such as 550.144.03"),
        ("12.4", "12.4 looks like a CUDA version, not a driver version"),
        ("550.144.03.1", "is not an NVIDIA driver version"),
    ],
)
def test_bad_cuda_driver_is_a_usage_error(pytester, env_builder, value, says):
    result = run(pytester, torch_env(env_builder, "2.11.0+cu130", "13.0"), f"--cuda-driver={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--cuda-driver: *{lit(says)}*"])


def test_cuda_driver_ini_key_is_read(pytester, env_builder):
    prefix = torch_env(env_builder, "2.11.0+cu130", "13.0")
    pytester.makeini("[pytest]\ncuda_driver = 550.144.03\n")
    got = summaries(pytester, prefix, "-k", "driver_version")
    assert got["passed"] == ["driver 550.144.03 (CUDA 12.4) from --cuda-driver"], got


def test_without_a_driver_every_check_skips_and_says_how(pytester, env_builder, monkeypatch):
    """On a machine without a GPU and without --cuda-driver nothing is judged, and the skip
    says which option to give (this machine has no NVIDIA driver)."""
    if facts.driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    result = run(pytester, torch_env(env_builder, "2.11.0+cu130", "13.0"), "-rs")
    result.assert_outcomes(skipped=5)  # the four driver.* and vllm.flash-attn-library (no vLLM)
    result.stdout.fnmatch_lines(["*no driver to judge: give --cuda-driver=VERSION*"])


# -- driver.cuda-runtime --------------------------------------------------------------------------
def test_torch_cu130_on_driver_550_fails(pytester, env_builder):
    """torch 2.11.0+cu130 on R550 (CUDA 12.4): cudart 13 refuses to start (torch: "The NVIDIA
    driver on your system is too old"); the fix names the driver to reach and a torch the driver
    runs (torch 2.11 has cu126: minor-version compatible with 12.4)."""
    prefix = torch_env(env_builder, "2.11.0+cu130", "13.0")
    result = run(pytester, prefix, "-k", "cuda_runtime", "--cuda-driver=550.144.03")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]driver.cuda-runtime[]] FAILED: torch 2.11.0+cu130 needs a driver for CUDA 13.0 "
            "(torch/version.py); driver 550.144.03 (CUDA 12.4): the CUDA runtime refuses to start: "
            "cudaErrorInsufficientDriver*",
            "*fix: upgrade the GPU nodes' NVIDIA driver to >= 580.65.06 (CUDA 13.0"
            '*; or keep the driver: add `torch = { version = "==2.11.0", index = '
            '"https://download.pytorch.org/whl/cu126" }` to*',
        ]
    )


def test_torch_cu128_on_driver_550_runs_under_minor_version_compat(pytester, env_builder):
    """+cu128 on R550: same major, newer minor: NVIDIA's minor-version compatibility runs it
    (driver >= 525.60.13 for 12.x) with its listed limits: a warning, not a failure."""
    prefix = torch_env(env_builder, "2.10.0+cu128", "12.8")
    result = run(pytester, prefix, "-k", "cuda_runtime", "--cuda-driver=550.144.03")
    assert warned(result) == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*torch 2.10.0+cu128 is CUDA 12.8, newer than driver 550.144.03 (CUDA 12.4): it runs "
            "under CUDA's minor-version compatibility*cudaErrorCallRequiresNewerDriver*",
            "*fix: upgrade the GPU nodes' NVIDIA driver to >= 570.26 (CUDA 12.8*",
        ]
    )


@pytest.mark.parametrize(
    "torch, cuda, driver",
    [
        ("2.10.0+cu128", "12.8", "580.159.04"),  # an older major: backward compatibility
        ("2.6.0+cu124", "12.4", "550.144.03"),  # the driver's own CUDA
        ("2.11.0+cu130", "13.0", "580.159.04"),
    ],
)
def test_torch_the_driver_runs_passes(pytester, env_builder, torch, cuda, driver):
    prefix = torch_env(env_builder, torch, cuda)
    run(pytester, prefix, "-k", "cuda_runtime", f"--cuda-driver={driver}").assert_outcomes(passed=1)


def test_applying_the_torch_fix_turns_it_green(pytester, env_builder):
    """The fix for torch 2.11.0+cu130 on R550 pins the cu126 build; that build's version.py
    (cuda 12.6) on R550 is minor-version compatible: no failure left."""
    prefix = torch_env(env_builder, "2.11.0+cu130", "13.0")
    run(pytester, prefix, "-k", "cuda_runtime", "--cuda-driver=550.144.03").assert_outcomes(
        failed=1
    )
    version = env_builder.site_packages / "torch" / "version.py"
    version.write_text("__version__ = '2.11.0+cu126'\ncuda = '12.6'\n")
    result = run(pytester, prefix, "-k", "cuda_runtime", "--cuda-driver=550.144.03")
    assert result.ret == 0, result.stdout.str()


def test_conda_cudart_12_8_on_driver_550_pins_cuda_version(pytester, env_builder):
    """A Pixi env's conda ``cuda-cudart`` 12.8 on R550: minor-version compatible (warning); the
    fix is in the env's own language: ``cuda-version = "12.4.*"`` in pixi.toml."""
    env_builder.manifest('[dependencies]\ncuda-version = "12.8.*"\n')
    env_builder.conda("cuda-cudart", "12.8.90")
    env_builder.conda("cuda-version", "12.8")
    result = run(pytester, env_builder.prefix, "-k", "cuda_runtime", "--cuda-driver=550.144.03")
    assert warned(result) == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*fix: *or keep the driver: in pixi.toml line *([[]dependencies[]]), replace "
            '`cuda-version = "12.8.*"` with '
            '`cuda-version = "12.4.*"`*'
        ]  # fmt: skip
    )


def test_cuda_12_on_a_cuda_11_driver_fails(pytester, env_builder):
    prefix = torch_env(env_builder, "2.4.1+cu121", "12.1")
    result = run(pytester, prefix, "-k", "cuda_runtime", "--cuda-driver=520.61.05")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*driver 520.61.05 (CUDA 11.8): the CUDA runtime refuses*"])


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_extension_linking_cudart_13_fails_on_driver_575(pytester, env_builder, tmp_path):
    """An extension whose NEEDED says libcudart.so.13 (vLLM 0.26.0's do) on R575 (CUDA 12.9)."""
    ext = fake_extension(tmp_path / "ext" / "_C.abi3.so", fake_torch(tmp_path / "lib"))
    prefix = vllm_with(env_builder, ext)
    result = run(pytester, prefix, "-k", "cuda_runtime", "--cuda-driver=575.64.05")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*vllm/_C.abi3.so needs a driver for CUDA 13.x (NEEDED libcudart.so.13); driver "
            "575.64.05 (CUDA 12.9)*"
        ]  # fmt: skip
    )


@needs_nvcc
def test_statically_linked_runtime_is_read_from_the_ptx(pytester, env_builder, tmp_path):
    """No libcudart.so.N in NEEDED (nvcc's default, -cudart static): the runtime inside is the
    building CUDA's, which its PTX names (ISA 9.0: CUDA 13.0); on R575 (12.9) it cannot start."""
    lib = ptx_only_so(tmp_path / "static.so", cudart="static")
    prefix = vllm_with(env_builder, lib)
    result = run(pytester, prefix, "-k", "cuda_runtime", "--cuda-driver=575.64.05")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*vllm/_C.abi3.so needs a driver for CUDA 13.0 (no libcudart.so.N in NEEDED (the CUDA "
         "runtime linked statically); PTX ISA 9.0 in its fatbin (written by CUDA 13.0))*"]
    )  # fmt: skip


# -- driver.ptx-jit -------------------------------------------------------------------------------
@needs_nvcc
def test_reader_reads_the_isa_of_real_nvcc_ptx(ptx90):
    """nvcc 13.0 writes PTX ISA 9.0 (FACTS.md); the entry header says so, compressed or not."""
    images = [i for c in fatbin_ptx.read_containers(ptx90) for i in c.images]
    assert [(i.image.name, i.isa) for i in images] == [("compute_90", (9, 0))]
    assert fatbin_ptx.read_binary(ptx90).needed[:1] == ("libcudart.so.13",)


@needs_nvcc
def test_ptx_90_on_driver_580_runs_with_a_jit_warning(pytester, env_builder, ptx90):
    """PTX ISA 9.0 on 580.x (CUDA 13.0): loads (measured on an H100), every kernel JIT-compiled."""
    prefix = vllm_with(env_builder, ptx90)
    result = run(pytester, prefix, "-k", "ptx_jit", "--cuda-arch=9.0", "--cuda-driver=580.159.04")
    assert warned(result) == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*vllm/_C.abi3.so: on sm_90 all modules reach the GPU only through PTX (compute_90, "
            "ISA 9.0); driver 580.159.04 (CUDA 13.0) JITs PTX up to ISA 9.0, so it runs*"
        ]  # fmt: skip
    )


@needs_nvcc
def test_ptx_90_on_driver_575_fails(pytester, env_builder, ptx90):
    """PTX ISA 9.0 on R575 (CUDA 12.9, ISA 8.8): CUDA_ERROR_UNSUPPORTED_PTX_VERSION at load."""
    prefix = vllm_with(env_builder, ptx90)
    result = run(pytester, prefix, "-k", "ptx_jit", "--cuda-arch=9.0", "--cuda-driver=575.64.05")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*driver 575.64.05 (CUDA 12.9) JITs PTX up to ISA 8.8: CUDA_ERROR_UNSUPPORTED_PTX_"
            "VERSION*when it loads (ISA 9.0 is CUDA 13.0's)*",
            "*fix: upgrade the GPU nodes' NVIDIA driver to >= 580.65.06 (CUDA 13.0*; or install a "
            'vllm build that holds sm_90 SASS (one built with `TORCH_CUDA_ARCH_LIST="9.0"`*',
        ]
    )


@needs_nvcc
def test_sass_for_the_target_needs_no_jit(pytester, env_builder, tmp_path):
    from fixtures.elf import cuda_so

    lib = cuda_so(
        tmp_path / "sass.so", ["arch=compute_90,code=sm_90", "arch=compute_90,code=compute_90"]
    )
    prefix = vllm_with(env_builder, lib)
    got = summaries(pytester, prefix, "-k", "ptx_jit", "--cuda-arch=9.0", "--cuda-driver=575.64.05")
    assert got == {"passed": ["vllm/_C.abi3.so: no PTX to JIT (SASS for sm_90)"]}, got


def test_ptx_jit_needs_a_target_arch(pytester, env_builder):
    prefix = torch_env(env_builder, "2.11.0+cu130", "13.0")
    result = run(pytester, prefix, "-k", "ptx_jit", "--cuda-driver=580.159.04", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no target arch: give --cuda-arch*"])


# -- driver.compat-libcuda ------------------------------------------------------------------------
def compat_dir(root: Path, version: str) -> Path:
    """A forward-compat dir as NVIDIA's cuda-compat package lays it out."""
    folder = root / "cuda" / "compat"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"libcuda.so.{version}").write_bytes(b"\x7fELF")
    (folder / "libcuda.so.1").symlink_to(f"libcuda.so.{version}")
    return folder


def test_older_compat_libcuda_first_fails_with_803(pytester, env_builder, tmp_path):
    """Measured on the H100: /usr/local/cuda/compat/libcuda.so.580.95.05 first on
    LD_LIBRARY_PATH over kernel module 580.159.04: cuInit 803."""
    folder = compat_dir(tmp_path / "usr", "580.95.05")
    torch_env(env_builder, "2.11.0+cu130", "13.0")
    env_builder.manifest(f'[activation.env]\nLD_LIBRARY_PATH = "{folder}"\n')
    result = run(pytester, env_builder.prefix, "-k", "compat", "--cuda-driver=580.159.04")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*the loader takes {folder}/libcuda.so.1 (580.95.05, via LD_LIBRARY_PATH (set by the "
            "env's activation)) over kernel driver 580.159.04: it is older than the kernel driver "
            "580.159.04: cuInit returns CUDA_ERROR_SYSTEM_DRIVER_MISMATCH*",
            f"*fix: take {folder} out of LD_LIBRARY_PATH where the env's activation sets it "
            "([[]activation.env[]] in pixi.toml)*",
        ]
    )
    env_builder.manifest("")  # the fix applied
    run(pytester, env_builder.prefix, "-k", "compat", "--cuda-driver=580.159.04").assert_outcomes(
        passed=1
    )


@pytest.mark.parametrize(
    "compat, kernel, arch, outcome, says",
    [
        # cuda-compat-13-1 on R580: C in NVIDIA's table; sm_90 is only data center GPUs
        ("590.44.01", "580.159.04", "9.0", "passed", "*cuda-compat-13-1 on R580 on a data "
         "center GPU is a pairing NVIDIA supports*"),
        # the same on an arch a GeForce shares: cannot tell
        ("590.44.01", "580.159.04", "8.9", "warning", "*supported on data center GPUs only; "
         "the GPU is unknown*"),
        # cuda-compat-13-0 on R550: an end-of-life branch, not in the table
        ("580.65.06", "550.144.03", "9.0", "failed", "*NVIDIA does not support cuda-compat-13-0 "
         "on R550*"),
    ],
)  # fmt: skip
def test_forward_compat_pairings(pytester, env_builder, tmp_path, compat, kernel, arch, outcome,
                                 says):  # fmt: skip
    folder = compat_dir(tmp_path / "usr", compat)
    torch_env(env_builder, "2.11.0+cu130", "13.0")
    env_builder.manifest(f'[activation.env]\nLD_LIBRARY_PATH = "{folder}"\n')
    got = summaries(pytester, env_builder.prefix, "-k", "compat", f"--cuda-driver={kernel}",
                    f"--cuda-arch={arch}")  # fmt: skip
    assert list(got) == [outcome], got
    assert fnmatch.fnmatch(got[outcome][0], says), got


def test_conda_forge_cuda_compat_package_names_its_removal(pytester, env_builder):
    """conda-forge's cuda-compat puts libcuda in $PREFIX/cuda-compat and links it into lib/ at
    activation: an older one than the kernel module fails, the fix drops the package."""
    torch_env(env_builder, "2.11.0+cu130", "13.0")
    env_builder.manifest('[dependencies]\ncuda-compat = "*"\n')
    env_builder.conda("cuda-compat", "12.8.1")
    env_builder.conda("cuda-compat-impl", "570.124.06")
    env_builder.file("cuda-compat/libcuda.so.570.124.06", b"\x7fELF")
    env_builder.symlink("cuda-compat/libcuda.so.1", "libcuda.so.570.124.06")
    env_builder.activate_script("cuda-compat_activate.sh", "# links cuda-compat/* into lib/\n")
    result = run(pytester, env_builder.prefix, "-k", "compat", "--cuda-driver=580.159.04")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*fix: remove `cuda-compat` from the env ([[]dependencies[]] in pixi.toml)*"]
    )


def test_no_compat_libcuda_passes(pytester, env_builder):
    prefix = torch_env(env_builder, "2.11.0+cu130", "13.0")
    got = summaries(pytester, prefix, "-k", "compat", "--cuda-driver=580.159.04")
    assert got == {
        "passed": [
            "no libcuda.so.1 of the env comes first: the GPU nodes' own driver libcuda is taken"
        ]
    }, got


# -- driver.version, from node facts (no GPU here: the facts are given) ---------------------------
ENV = PixiEnv(prefix=Path("/nonexistent/env"))


def sources(option=None, nvml=None, proc=None, cuda=None, gpus=()):
    node = facts.NodeDriver(nvml, cuda, "" if nvml else "absent", proc, "" if proc else "absent",
                            gpus)  # fmt: skip
    return facts.DriverSources(option=option, node=node)


def test_node_driver_is_judged_and_sources_agree():
    src = sources(
        nvml="580.159.04", proc="580.159.04", cuda="13.0", gpus=("NVIDIA H100 80GB HBM3",)
    )
    drv = checks.judged_driver(src)
    assert drv is not None and drv.on_node and drv.source == "NVML"
    finding = checks.driver_version(src, drv)
    assert finding.outcome == "passed", finding
    assert "from NVML; /proc/driver/nvidia/version agree" in finding.summary


def test_option_disagreeing_with_the_node_is_a_warning():
    src = sources(option="550.144.03", nvml="580.159.04", proc="580.159.04", cuda="13.0")
    drv = checks.judged_driver(src)
    assert drv is not None and drv.text == "550.144.03" and not drv.on_node
    finding = checks.driver_version(src, drv)
    assert finding.outcome == "warning"
    assert "this node runs driver 580.159.04 (NVML)" in finding.summary


def test_nvml_and_kernel_module_disagreeing_is_a_warning():
    src = sources(nvml="580.159.04", proc="580.95.05", cuda="13.0")
    finding = checks.driver_version(src, checks.judged_driver(src))
    assert finding.outcome == "warning" and "kernel module is 580.95.05" in finding.summary


def test_libcuda_file_name_is_the_last_source_and_a_mismatch_is_named():
    """The driver's libcuda the loader takes (``libcuda.so.580.159.04``) names the driver where
    NVML cannot be asked; one of another version than the kernel module is 803."""
    own = facts.Libcuda("/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                        "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04", "580.159.04",
                        "a default library dir", False)  # fmt: skip
    node = facts.NodeDriver(None, None, "NVML: no answer", "580.159.04", "")
    src = facts.DriverSources(node=node, libcuda=[own])
    drv = checks.judged_driver(src)
    assert drv.source == "/proc/driver/nvidia/version"
    finding = checks.driver_version(src, drv)
    assert finding.outcome == "passed", finding
    assert "the libcuda.so.1 the loader takes agree" in finding.summary
    stale = facts.Libcuda(own.path, own.real.replace("159.04", "95.05"), "580.95.05", own.via,
                          False)  # fmt: skip
    src = facts.DriverSources(node=node, libcuda=[stale])
    assert checks.driver_version(src, checks.judged_driver(src)).outcome == "warning"
    compat = checks.compat_libcuda(src, checks.judged_driver(src), [], ENV)
    assert compat.outcome == "failed" and "reboot the node" in compat.fix, compat


def test_driver_past_the_newest_row_takes_nvml_cuda():
    """A branch newer than NVIDIA's notes we hold (R620): the table gives a lower bound, NVML
    the driver's own CUDA version."""
    assert not T.cuda_of_driver((620, 10, 1)).exact
    drv = checks.judged_driver(sources(nvml="620.10.01", proc="620.10.01", cuda="13.5"))
    assert drv.cuda == (13, 5) and drv.cuda_exact


@pytest.mark.parametrize(
    "text, version",
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Oct  9 19:28:21 UTC "
         "2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "580.159.04"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  "
         "(dvs-builder@U16-I3-B03-4-3)  Thu Jan 23 23:08:22 UTC 2025\n", "570.86.15"),
        ("garbage\n", None),
    ],
)  # fmt: skip
def test_proc_version_parses_both_module_kinds(tmp_path, text, version):
    path = tmp_path / "version"
    path.write_text(text)
    assert facts.read_proc_driver(path)[0] == version


def test_cuda_runtime_uses_a_supported_forward_compat_libcuda():
    """cuda-compat-13-1 (590.44.01) on R580 on an H100: the user-mode driver is CUDA 13.1, so a
    CUDA 13.1 runtime runs at its full feature set."""
    real = "/c/libcuda.so.590.44.01"
    lib = facts.Libcuda("/c/libcuda.so.1", real, "590.44.01", "LD_LIBRARY_PATH", True)
    src = facts.DriverSources(option="580.159.04", libcuda=[lib])
    drv = checks.judged_driver(src)
    need = facts.CudaNeed("cuda-cudart 13.1.80", 13, 1, "conda-meta", "cudart", "cuda-cudart")
    [finding] = checks.cuda_runtime([need], src, drv, ENV, [parse_arch("9.0")])
    assert finding.outcome == "passed"
    assert "CUDA 13.1 through its forward-compatibility libcuda" in finding.summary


# -- NVIDIA's tables --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "driver, cuda",
    [
        ("550.144.03", "12.4"),
        ("535.104.05", "12.2"),
        ("570.86.15", "12.8"),
        ("575.64.05", "12.9"),
        ("580.159.04", "13.0"),  # measured: cuDriverGetVersion 13000 on the H100
        ("590.48.01", "13.1"),
        ("595.45.04", "13.2"),
        ("610.20", "13.3"),
        ("615.31", "13.4"),
        ("560.35.03", "12.6"),
        ("450.80.02", "11.0"),
        ("525.60.13", "12.0"),
    ],
)
def test_cuda_version_of_a_driver(driver, cuda):
    assert T.cuda_text(T.cuda_of_driver(T.parse_driver(driver)).cuda) == cuda


@pytest.mark.parametrize(
    "cuda, isa",
    [("12.4", "8.4"), ("12.6", "8.5"), ("12.8", "8.7"), ("12.9", "8.8"), ("13.0", "9.0"),
     ("13.5", "9.5"), ("11.8", "7.8")],
)  # fmt: skip
def test_ptx_isa_of_a_cuda_release(cuda, isa):
    assert T.isa_text(T.isa_of_cuda(T.parse_cuda(cuda))) == isa


def test_every_row_cites_a_source():
    assert all(r.source for r in T.TOOLKIT_DRIVERS)
    assert all(src for _, src in T.PTX_ISA.values())
    rows = [r.driver for r in T.TOOLKIT_DRIVERS]
    assert rows == sorted(rows), "driver rows must grow with the CUDA version"


# -- driver.ptx-jit knows which kernels run where (the roles arch.coverage gives) -----------------
FA2 = "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
FA3 = "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"
# vLLM 0.26.0's wheels, as read: FA2 holds sm_80 SASS and compute_80 PTX, FA3 only sm_90a
FA2_FACTS = facts.BinaryFacts(FA2, 12, ((("sass", "8.0", None), ("ptx", "8.0", "8.5")),))
FA3_FACTS = facts.BinaryFacts(FA3, 12, ((("sass", "9.0a", None),),))


def _ptx_jit(binaries, arch):
    from pytest_vllm_env.checks.driver_ptx import ptx_jit

    drv = checks.judged_driver(sources(option="580.159.04"))
    return {f.summary.split(":", 1)[0]: f for f in ptx_jit(binaries, [parse_arch(arch)], drv,
                                                             drv.cuda, ENV)}  # fmt: skip


def test_fa2_ptx_on_hopper_is_no_warning_where_vllm_runs_fa3():
    """On sm 9.x vLLM takes FA3 whenever _vllm_fa3_C loads (fa_utils.get_flash_attn_version):
    FA2's compute_80 PTX is not JIT-compiled there, so no 'JIT at first launch' warning."""
    got = _ptx_jit([(FA2, FA2_FACTS), (FA3, FA3_FACTS)], "9.0")
    assert got[FA2].outcome == "passed", got[FA2]
    assert "not launched there: vLLM runs FA3" in got[FA2].summary


def test_fa2_ptx_is_judged_where_fa2_runs():
    """Without FA3 (or on a Blackwell GPU, where FA3 does not run) FA2 is what runs: its
    kernels reach the GPU only through PTX, the JIT warning stands."""
    alone = _ptx_jit([(FA2, FA2_FACTS)], "9.0")
    assert alone[FA2].outcome == "warning", alone[FA2]
    blackwell = _ptx_jit([(FA2, FA2_FACTS), (FA3, FA3_FACTS)], "12.0")
    assert blackwell[FA2].outcome == "warning", blackwell[FA2]


def test_backend_ptx_is_not_judged_on_gpus_it_is_not_dispatched_to():
    """A per-GPU backend (FlashMLA) carrying PTX that would JIT to sm_90: vLLM dispatches to it
    only on the GPUs it was built for (arch.coverage's role), so no warning."""
    mla = "vllm/_flashmla_C.abi3.so"
    got = _ptx_jit([(mla, facts.BinaryFacts(mla, 12, ((("ptx", "8.0", "8.5"),),)))], "9.0")
    assert got[mla].outcome == "passed" and "not launched there" in got[mla].summary
