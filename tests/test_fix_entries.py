"""Issue 21, "fixes that are true, once, and agree": one entry per distinct fix in the JSON
report and the terminal, and a fix that makes the whole load work, not only one check.

The load-closure case is the one issue 21 saw: a PyPI torch whose ``libtorch_cuda.so`` needs
``libcudart.so.12`` and ``libcublas.so.12`` through its RUNPATH (``$ORIGIN/../../nvidia/*/lib``,
as torch's wheels have it), neither installed. Installing an unpinned
``nvidia-cuda-runtime-cu12`` satisfies the extension's own ``libcudart.so.12``, but ``import
torch`` still fails on cuBLAS: ``abi.needed`` must stay failed, and its fix must install what
torch's metadata pins, at those versions; applied (fixtures/apply.py), every ``abi.needed``
passes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fixtures.apply import Applier, Catalogue, write_dist
from fixtures.elf import cxx_extension, fake_cudart, fake_extension, fake_soname_lib, fake_torch
from fixtures.envs import EnvBuilder
from pytest_vllm_env.findings import Change, Finding, Fix, failed, fix_groups, passed
from tests.test_abi import parts, venv_env  # noqa: F401 (parts: a fixture)

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")

# torch 2.8.0's METADATA (the cu128 build PyPI serves), the two CUDA packages this case needs
TORCH_REQUIRES = [
    "nvidia-cuda-runtime-cu12==12.8.90; platform_system == 'Linux'",
    "nvidia-cublas-cu12==12.8.4.1; platform_system == 'Linux'",
    "filelock",
]
# torch's wheels find their CUDA libraries through RUNPATH into site-packages/nvidia
RUNPATH = (
    "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../../nvidia/cublas/lib"
    ":$ORIGIN/../../nvidia/cuda_runtime/lib"
)


# -- one entry per fix --------------------------------------------------------------------------
def _entry(finding: Finding, env: str = "default") -> dict:
    return {**finding.to_dict(), "env": env}


def test_findings_with_one_change_are_one_fix_with_their_subjects():
    """40 .so files failing for one reason were 40 entries: the same change is one entry,
    naming the checks and subjects it resolves, at the worst outcome among them."""
    pin = Fix("`pip install torch==2.11.0`", [Change("pip", "/env", specs=("torch==2.11.0",))])
    other = Fix("`pip install xformers==0.0.33`", [Change("pip", "/env", specs=("xformers",))])
    found = [
        failed("abi.symbols", f"lib{i}.so misses symbols", pin, subject=f"lib{i}.so")
        for i in range(5)
    ]
    found.append(failed("abi.pins", "vllm pins torch==2.11.0", "reworded: " + pin, subject="torch"))
    found.append(failed("xformers.torch-pin", "xformers pins torch", other))
    found.append(passed("abi.cxx11", "fine"))
    groups = fix_groups([_entry(f) for f in found], ("failed", "error", "warning"))
    assert len(groups) == 2
    first = groups[0]
    assert first["checks"] == ["abi.symbols", "abi.pins"]
    assert first["subjects"] == [f"lib{i}.so" for i in range(5)] + ["torch"]
    assert first["findings"] == 6
    assert first["change"] == [{"kind": "pip", "target": "/env", "specs": ["torch==2.11.0"]}]
    # the same change in another env is another fix
    assert len(fix_groups([_entry(found[0], "a"), _entry(found[1], "b")], ("failed",))) == 2


def test_a_fix_text_keeps_its_changes_through_joins():
    """Checks build fixes with ``+``: the changes ride along; an f-string would drop them,
    so the checks concatenate."""
    fix = "install it: " + Fix("`pip install x`", [Change("pip", "/env", specs=("x",))]) + "."
    assert isinstance(fix, Fix) and len(fix.changes) == 1
    finding = failed("abi.pins", "s", fix)
    assert type(finding.fix) is str
    assert finding.changes == (Change("pip", "/env", specs=("x",)),)
    assert "change" not in finding.render()  # data for tools, not text for people


# -- the load closure -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def closure_libs(tmp_path_factory) -> dict[str, Path]:
    """torch's libs (libtorch_cuda.so needing cudart and cuBLAS 12 through its RUNPATH), the
    two CUDA libraries, and a vLLM extension for CUDA 12."""
    root = tmp_path_factory.mktemp("closure")
    cudart = fake_cudart(root / "cudart", 12)
    cublas = fake_soname_lib(
        root / "cublas",
        "libcublas.so.12",
        'extern "C" int cublasCreate_v2(void **h) { return 0; }\n',
    )
    torch = fake_torch(root / "torch")
    cxx_extension(
        torch / "libtorch_cuda.so",
        'extern "C" int cublasCreate_v2(void **);\nextern "C" int cudaGetDeviceCount(int *);\n'
        'extern "C" int torch_cuda() { void *h; int n; cudaGetDeviceCount(&n); '
        "return cublasCreate_v2(&h); }\n",
        [cudart, cublas, RUNPATH],  # type: ignore[list-item]
    )
    return {
        "torch": torch,
        "cudart": cudart,
        "cublas": cublas,
        "ext": fake_extension(root / "ext" / "_C.abi3.so", torch, cuda_major=12),
    }


def closure_venv(root: Path, libs: dict[str, Path]) -> Path:
    b = EnvBuilder(root, "venv", bare=True)
    b.python()
    files: dict[str, bytes | str] = {"torch/version.py": "cuda = '12.8'\n"}
    for lib in libs["torch"].glob("*.so"):
        files[f"torch/lib/{lib.name}"] = lib.read_bytes()
    b.dist("torch", "2.8.0", requires=TORCH_REQUIRES, files=files, installer="pip")
    b.dist(
        "vllm",
        "0.10.2",
        requires=["torch==2.8.0"],
        files={"vllm/_C.abi3.so": libs["ext"].read_bytes()},
        installer="pip",
    )
    shutil.rmtree(b.prefix / "conda-meta")
    (b.prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
    return b.prefix


def needed_report(pytester, prefix: Path) -> dict:
    pytester.runpytest(
        "--vllm-conformance",
        "-k",
        "test_needed_libraries",
        f"--vllm-env={prefix}",
        "--vllm-env-report=r.json",
    )
    return json.loads((pytester.path / "r.json").read_text())


def by_subject(report: dict) -> dict[str, dict]:
    return {c.get("subject", ""): c for c in report["checks"] if c["id"] == "abi.needed"}


def wheel(name: str, rel: str, lib: Path):
    """A Catalogue installer: the dist-info of ``name`` and its library at ``rel``."""

    def install(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        write_dist(prefix, name, version, files={rel: lib.read_bytes()})
        return version

    return install


@needs_gxx
def test_the_fix_follows_the_whole_load_closure_at_torchs_pins(pytester, tmp_path, closure_libs):
    prefix = closure_venv(tmp_path, closure_libs)
    found = by_subject(needed_report(pytester, prefix))
    torch, ext = found["torch"], found["vllm/_C.abi3.so"]
    assert torch["outcome"] == ext["outcome"] == "failed"
    assert "libcublas.so.12 (needed by libtorch_cuda.so)" in torch["summary"]
    for fix in (torch["fix"], ext["fix"]):
        # what torch's metadata asks, at its versions: not one unpinned package
        assert '"nvidia-cuda-runtime-cu12==12.8.90"' in fix, fix
        assert '"nvidia-cublas-cu12==12.8.4.1"' in fix, fix

    # issue 21: an unpinned nvidia-cuda-runtime-cu12 gives the extension its libcudart, and
    # `import torch` still fails on cuBLAS: abi.needed stays failed
    write_dist(
        prefix,
        "nvidia-cuda-runtime-cu12",
        "12.9.79",
        files={"nvidia/cuda_runtime/lib/libcudart.so.12": closure_libs["cudart"].read_bytes()},
    )
    report = needed_report(pytester, prefix)
    found = by_subject(report)
    assert found["vllm/_C.abi3.so"]["outcome"] == "passed"
    torch = found["torch"]
    assert torch["outcome"] == "failed" and "libcublas.so.12" in torch["summary"]
    # 12.9.79 is not what torch pins: the fix still names both
    assert '"nvidia-cuda-runtime-cu12==12.8.90"' in torch["fix"]
    (entry,) = report["fixes"]
    assert entry["subjects"] == ["torch"] and entry["checks"] == ["abi.needed"]

    # the round trip: apply the fix's changes as pip would; every abi.needed passes
    catalogue = Catalogue(
        pypi={
            "nvidia-cuda-runtime-cu12": wheel(
                "nvidia-cuda-runtime-cu12",
                "nvidia/cuda_runtime/lib/libcudart.so.12",
                closure_libs["cudart"],
            ),
            "nvidia-cublas-cu12": wheel(
                "nvidia-cublas-cu12", "nvidia/cublas/lib/libcublas.so.12", closure_libs["cublas"]
            ),
        }
    )
    changes = [Change.from_dict(c) for c in torch["evidence"]["change"]]
    Applier(prefix, catalogue).apply(changes)
    after = by_subject(needed_report(pytester, prefix))
    assert {s: c["outcome"] for s, c in after.items()} == {
        "vllm/_C.abi3.so": "passed",
        "torch": "passed",
    }


@needs_gxx
def test_torchs_own_library_missing_is_torchs_fix_not_vllms_pin(pytester, tmp_path):
    """The integration tier's real case: torch at exactly the version vLLM pins, but one of
    torch's own libraries (``libtorch_nvshmem.so``, which the cu13 wheel ships in torch/lib)
    absent. vLLM's extension's own libraries are all found; ``import torch`` fails first.
    The fix was "install the torch vLLM pins: torch==2.8.0" (already installed: applying it
    changes nothing); it is torch's reinstall, for the extension and for torch alike."""
    root = tmp_path / "libs"
    cudart = fake_cudart(root / "cudart", 12)
    nvshmem = fake_soname_lib(
        root / "nvshmem", "libtorch_nvshmem.so", 'extern "C" int nvshmem_init(void) { return 0; }\n'
    )
    torch = fake_torch(root / "torch")
    cxx_extension(
        torch / "libtorch_cuda.so",
        'extern "C" int nvshmem_init(void);\nextern "C" int cudaGetDeviceCount(int *);\n'
        'extern "C" int torch_cuda() { int n; cudaGetDeviceCount(&n); return nvshmem_init(); }\n',
        [cudart, nvshmem, RUNPATH],  # type: ignore[list-item]
    )
    libs = {
        "torch": torch,
        # vLLM's _C links libtorch_cuda.so (readelf -d on the 0.26.0 wheel)
        "ext": cxx_extension(
            root / "ext" / "_C.abi3.so",
            'extern "C" int torch_cuda();\nextern "C" int ext() { return torch_cuda(); }\n',
            [torch / "libtorch_cuda.so", cudart],
        ),
        "cudart": cudart,
    }
    prefix = closure_venv(tmp_path, libs)
    write_dist(
        prefix,
        "nvidia-cuda-runtime-cu12",
        "12.8.90",
        files={"nvidia/cuda_runtime/lib/libcudart.so.12": cudart.read_bytes()},
    )
    found = by_subject(needed_report(pytester, prefix))
    ext, torch_finding = found["vllm/_C.abi3.so"], found["torch"]
    assert ext["outcome"] == torch_finding["outcome"] == "failed"
    assert "libtorch_nvshmem.so (needed by libtorch_cuda.so)" in ext["summary"]
    for fix in (ext["fix"], torch_finding["fix"]):
        assert "libtorch_nvshmem.so is missing from torch/lib: reinstall torch" in fix, fix
        assert "torch==2.8.0" not in fix, fix


# -- one target for every fix of a run ------------------------------------------------------------
@needs_gxx
def test_every_fix_of_a_run_names_one_torch(pytester, tmp_path, parts):  # noqa: F811
    """Issue 21 saw ``torch==2.13.0`` beside ``torch==2.11.0`` in one run. vLLM 0.26.0 pins
    torch 2.11.0, the env holds torch 2.13.0 (CPU) and a torchvision pinning torch 2.9.0:
    abi.pins, abi.cudart, abi.symbols and pins.siblings all point at vLLM's torch; the
    torchvision fix is the torchvision built for it, not another torch."""
    prefix = venv_env(tmp_path, parts, torch="2.13.0", torch_cuda=None, libs="torch-cpu")
    # torchvision's ops link torch's libc10.so (DT_NEEDED): the pin is an ABI (failed)
    c10 = fake_soname_lib(tmp_path / "c10", "libc10.so", "int c10_version(void) { return 2; }\n")
    tv = cxx_extension(
        tmp_path / "tv" / "_C.so", 'extern "C" int uses_c10() { return 1; }\n', [c10]
    )
    ops = {"torchvision/_C.so": tv.read_bytes()}
    write_dist(prefix, "torchvision", "0.24.0", requires=["torch==2.9.0"], files=ops)
    result = pytester.runpytest(
        "--vllm-conformance",
        "-k",
        "test_abi or test_sibling_pins",
        f"--vllm-env={prefix}",
        "--vllm-env-report=r.json",
    )
    report = json.loads((pytester.path / "r.json").read_text())
    bad = [c for c in report["checks"] if c["outcome"] == "failed"]
    assert {c["id"] for c in bad} == {"abi.pins", "abi.cudart", "abi.symbols", "pins.siblings"}
    texts = " ".join(c["fix"] for c in bad)
    assert set(re.findall(r"torch==(\d[\w.+]*)", texts)) == {"2.11.0"}, texts
    (sibling,) = [c for c in bad if c["id"] == "pins.siblings"]
    assert "install the torchvision release built for torch 2.11.0" in sibling["fix"]
    # abi.pins, abi.cudart and abi.symbols ask for the same install: one entry of "fixes"
    torch_fix = [f for f in report["fixes"] if "abi.pins" in f["checks"]]
    assert len(torch_fix) == 1 and {"abi.cudart", "abi.symbols"} <= set(torch_fix[0]["checks"])
    # the terminal's "what to change" says each distinct fix once
    section = result.stdout.str().split("vllm-env: what to change", 1)[1]
    shown = [line for line in section.splitlines() if line.startswith("    fix: ")]
    assert len(shown) == len([f for f in report["fixes"] if f["outcome"] == "failed"]) == 2


# -- no impossible text -----------------------------------------------------------------------
def test_a_torch_index_in_a_fix_is_one_the_pytorch_index_serves(tmp_path):
    """A fix once said `--index-url .../whl/cu90`; an index comes from the variants PyTorch
    publishes, never from a CUDA number alone (there is no cu120: 12.0 gets cu121)."""
    from pytest_vllm_env.checks import cuda
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.toolkit import NvccRun, ToolkitFacts
    from pytest_vllm_env.tables import torch_archs
    from pytest_vllm_env.tables.archs import Arch

    assert torch_archs.lowest_variant_at_least("12.0") == "cu121"
    assert torch_archs.lowest_variant_at_least("12.8") == "cu128"
    assert torch_archs.lowest_variant_at_least("99.0") is None
    # a CUDA 11.8 toolkit and torch asked to build for 12.0 (CUDA >= 12.8)
    nvcc = NvccRun("/env/bin/nvcc", True, "11.8.89", gpu_archs=("compute_80", "compute_90"))
    kit = ToolkitFacts(
        tmp_path, [], None, nvcc, {}, [], [], [], {}, {}, [], None, torch_cuda="11.8"
    )
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (bad,) = cuda.arch_supported(PixiEnv(prefix=venv), kit, [Arch(12, 0)], "--cuda-arch")
    assert bad.outcome == "failed"
    assert '--index-url https://download.pytorch.org/whl/cu128 "torch"`' in bad.fix, bad.fix


def test_xformers_fix_for_a_venv_is_a_pip_command(tmp_path):
    """xformers.decision's fix was a pixi.toml line in every env: a venv gets pip's
    command (issue 21: in the env's language)."""
    from pytest_vllm_env.checks import xformers as X
    from pytest_vllm_env.facts.env import PixiEnv

    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    fix = X.install_xformers_fix(X.Installed(torch="2.9.0"), False, PixiEnv(prefix=venv))
    assert "pixi" not in fix
    command = r'-m pip install "xformers==0\.0\.\d+[\w.]*"` \(the xformers release'
    assert re.search(command, fix), fix
    pixi = X.install_xformers_fix(X.Installed(torch="2.9.0"), False)
    assert pixi.startswith('add `xformers = "==') and "pixi.toml" in pixi
