# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The run-time layer on real wheels (opt-in, --run-integration): Triton 3.2.0, 3.5.1, 3.6.0 and
3.9.0 with their own bundled ptxas, run for real; flashinfer-python 0.6.14 and 0.7.2.post1 with
PyPI's newest flashinfer-cubin (0.6.13) and a real CUDA 12.8 nvcc; vLLM 0.26.0 and 0.33.0's own
envs.py, arg_utils.py and vendored DeepGEMM; and the real torch 2.11.0+cu130 / vLLM 0.26.0 env
judged with --cuda-arch=9.0, which must show no failure from this layer.

Where a verdict rests on a tool, the test asks the tool too: the ptxas a finding names is run
on a kernel for the ``--gpu-name`` it names, and must agree with the verdict."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.envs import EnvBuilder
from fixtures.wheels import members

pytestmark = pytest.mark.integration

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")
TRITON_FILES = re.compile(
    r"^triton/(__init__\.py|knobs\.py|runtime/build\.py|backends/nvidia/(compiler\.py|bin/ptxas.*))$"
)
FI_FILES = re.compile(
    r"^flashinfer/(__init__\.py|version\.py|compilation_context\.py|jit/(cpp_ext|env|__init__)\.py)$"
)


def wheel_tree(requirement: str, wanted, python_version: str = "3.12") -> Path:
    """Members of a real wheel (dist-info included), extracted once into the cache, with the
    executable bits of its ``bin/`` tools."""
    whl = downloads.wheel(requirement, python_version=python_version)
    root = members(whl, lambda n: ".dist-info/" in n or wanted(n))
    for tool in root.rglob("bin/*"):
        if tool.is_file():
            tool.chmod(0o755)
    return root


def link_into(env: EnvBuilder, tree: Path) -> None:
    """Put a wheel's extracted files into the env's site-packages: its dist-info copied (real
    METADATA, RECORD), its other files linked."""
    sp = env.site_packages
    sp.mkdir(parents=True, exist_ok=True)
    for path in tree.rglob("*"):
        rel = path.relative_to(tree)
        dest = sp / rel
        if path.is_dir() or dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0].endswith(".dist-info"):
            shutil.copy(path, dest)
        else:
            dest.symlink_to(path)


def run(pytester, env: EnvBuilder, k: str, arch: str) -> list[dict]:
    report = pytester.path / "report.json"
    args = [*SUITE, "-k", k, f"--vllm-env={env.prefix}", f"--vllm-env-report={report}"]
    args += [f"--cuda-arch={a}" for a in arch.split(",")]
    result = pytester.runpytest(*args)
    assert "Traceback" not in result.stdout.str()
    return json.loads(report.read_text())["checks"]


def by(checks: list[dict], cid: str) -> list[dict]:
    return [c for c in checks if c["id"] == cid]


# Session fixtures: extracted before pytester moves HOME (and with it the download cache).
@pytest.fixture(scope="session")
def triton_trees() -> dict[str, Path]:
    return {
        v: wheel_tree(f"triton=={v}", lambda n: bool(TRITON_FILES.match(n)))
        for v in ("3.2.0", "3.5.1", "3.6.0", "3.9.0")
    }


@pytest.fixture(scope="session")
def cu13() -> Path:
    """PyPI's nvidia-cuda-nvcc 13.0.88, unpacked: nvidia/cu13/bin/{nvcc,ptxas}."""
    return downloads.unpacked("nvidia-cuda-nvcc==13.0.88")


@pytest.fixture(scope="session")
def flashinfer_trees() -> dict[str, Path]:
    trees = {
        v: wheel_tree(f"flashinfer-python=={v}", lambda n: bool(FI_FILES.match(n)))
        for v in ("0.6.14", "0.7.2.post1")
    }
    trees["cubin-0.6.13"] = wheel_tree(
        "flashinfer-cubin==0.6.13", lambda n: n.startswith("flashinfer_cubin/_")
    )
    return trees


@pytest.fixture(scope="session")
def vllm_trees() -> dict[str, Path]:
    """vLLM's Python sources and its vendored DeepGEMM (headers, compiled module)."""

    def wanted(n: str) -> bool:
        if n.startswith("vllm/third_party/deep_gemm/"):
            return n.endswith((".py", ".cuh", ".hpp", ".h")) or bool(
                re.search(r"/_C[\w.-]*\.so$", n) and ("cpython-312" in n or "abi3" in n)
            )
        return n.startswith("vllm/") and n.endswith(".py") and "/third_party/" not in n

    return {v: wheel_tree(f"vllm=={v}", wanted) for v in ("0.26.0", "0.33.0")}


# -- Triton's bundled ptxas, for real ----------------------------------------------------------
def real_ptxas_accepts(ptxas: str, gpu_name: str, tmp: Path) -> bool:
    """Ask the binary itself, with the PTX Triton writes (scripts/measure_ptxas.py)."""
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    major, minor = (int(x) for x in re.search(r"release (\d+)\.(\d+)", out).groups())
    isa = (80 + minor - (minor >= 6)) if major == 12 else 90 + (major - 13) * 10 + minor
    src = tmp / f"{gpu_name}.ptx"
    src.write_text(
        f".version {isa // 10}.{isa % 10}\n.target {gpu_name}\n.address_size 64\n\n"
        ".visible .entry k()\n{\n\tret;\n}\n"
    )
    cmd = [ptxas, f"--gpu-name={gpu_name}", str(src), "-o", str(src.with_suffix(".o"))]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.mark.parametrize(
    "version, archs, expected",
    [
        ("3.2.0", "12.0,9.0", {"sm_120": "failed", "sm_90a": "passed"}),  # fish-speech#907
        ("3.5.1", "12.1,9.0", {"sm_121a": "failed", "sm_90a": "passed"}),  # triton#8539
        (
            "3.6.0",
            "12.1,11.0,9.0",
            {"sm_121a": "passed", "sm_110a": "failed", "sm_90a": "passed"},
        ),  # vllm#31338
        (
            "3.9.0",
            "12.1,11.0,9.0,7.0",
            {"sm_121a": "passed", "sm_110a": "passed", "sm_90a": "passed", "sm_70": "passed"},
        ),
    ],
)
def test_real_triton_ptxas_verdicts_agree_with_the_real_ptxas(
    pytester, env_builder, triton_trees, tmp_path, version, archs, expected
):
    env_builder.python("3.12")
    link_into(env_builder, triton_trees[version])
    checks = by(run(pytester, env_builder, "test_triton_ptxas", archs), "triton.ptxas")
    found = {f["evidence"]["gpu_name"]: f for f in checks}
    assert {k: f["outcome"] for k, f in found.items()} == expected
    for gpu_name, f in found.items():
        used = f["evidence"]["used"].split(": CUDA")[0]
        assert real_ptxas_accepts(used, gpu_name, tmp_path) == (f["outcome"] == "passed")


def test_real_thor_fix_points_the_blackwell_override_at_cuda_13(
    pytester, env_builder, triton_trees, cu13
):
    """Triton 3.6.0 on Thor (sm_110a): its ptxas-blackwell is CUDA 12.9. PyPI's nvidia-cuda-nvcc
    13.0.88 in the env, and the verdict names it; applied, the real 13.0 ptxas assembles sm_110a."""
    env_builder.python("3.12")
    link_into(env_builder, triton_trees["3.6.0"])
    ptxas = env_builder.site_packages / "nvidia" / "cu13" / "bin" / "ptxas"
    ptxas.parent.mkdir(parents=True)
    ptxas.symlink_to(cu13 / "nvidia" / "cu13" / "bin" / "ptxas")
    (f,) = by(run(pytester, env_builder, "test_triton_ptxas", "11.0"), "triton.ptxas")
    assert f["outcome"] == "failed"
    value = "${CONDA_PREFIX}/lib/python3.12/site-packages/nvidia/cu13/bin/ptxas"
    assert f["fix"] == (
        f'set `TRITON_PTXAS_BLACKWELL_PATH = "{value}"` in [activation.env] in pixi.toml '
        "(CUDA 13.0's ptxas, already in the env, accepts sm_110a)"
    )
    env_builder.manifest(f'[activation.env]\nTRITON_PTXAS_BLACKWELL_PATH = "{value}"\n')
    (f,) = by(run(pytester, env_builder, "test_triton_ptxas", "11.0"), "triton.ptxas")
    assert f["outcome"] == "passed", f


# -- FlashInfer, for real -------------------------------------------------------------------------
@pytest.mark.parametrize("version, outcome", [("0.6.14", "failed"), ("0.7.2.post1", "warning")])
def test_real_cubin_0613_next_to_flashinfer(
    pytester, env_builder, flashinfer_trees, version, outcome
):
    """PyPI's newest flashinfer-cubin (0.6.13) next to flashinfer-python 0.6.14 (vLLM 0.26.0's
    pin): the import raises; next to 0.7.2.post1 (vLLM 0.33.0's pin): ignored, cubins downloaded."""
    env_builder.python("3.12")
    link_into(env_builder, flashinfer_trees[version])
    link_into(env_builder, flashinfer_trees["cubin-0.6.13"])
    checks = run(pytester, env_builder, "test_flashinfer_kernel_wheels", "9.0")
    (f,) = by(checks, "flashinfer.kernel-wheels")
    assert f["outcome"] == outcome
    assert (
        f"flashinfer-cubin version (0.6.13) does not match flashinfer version ({version})"
        in f["summary"]
    )


@pytest.mark.parametrize("version, gate", [("0.6.14", "raises"), ("0.7.2.post1", "120a")])
def test_real_flashinfer_gate_on_sm120_with_cuda_128(
    pytester, tmp_path, env_builder, flashinfer_trees, vllm_trees, cu13, version, gate
):
    """vllm-project/vllm#50705: sm_120 where FlashInfer's CUDA is 12.8. Here it is torch 2.9.0's
    (PyPI, cu128: torch/version.py), which get_cuda_version falls back to when $CUDA_HOME holds
    no nvcc (PyPI has no CUDA 12.8 nvcc to run). 0.6.14's gate raises "SM 12.x requires CUDA >=
    12.9"; 0.7.2.post1's compiles for sm_120a from 12.8, and fails only for want of nvcc. With a
    real CUDA 13.0 nvcc (PyPI's nvidia-cuda-nvcc 13.0.88) both compile sm_120f at first start."""
    env_builder.python("3.12")
    link_into(env_builder, flashinfer_trees[version])
    link_into(env_builder, vllm_trees["0.26.0"])  # its envs.py: the FlashInfer sampler is on
    link_into(env_builder, wheel_tree("torch==2.9.0", lambda n: n == "torch/version.py"))
    (tmp_path / "no-nvcc").mkdir()
    env_builder.manifest(f'[activation.env]\nCUDA_HOME = "{tmp_path / "no-nvcc"}"\n')
    (f,) = by(run(pytester, env_builder, "test_flashinfer_jit", "12.0"), "flashinfer.jit")
    assert f["outcome"] == "failed", f
    assert f["evidence"]["cuda_version"] == "12.8 (torch.version.cuda (no nvcc))"
    if gate == "raises":
        assert 'its arch gate raises "SM 12.x requires CUDA >= 12.9"' in f["summary"]
    else:
        assert f["evidence"]["compiled_as"] == "sm_120a"
        assert "its nvcc does not run" in f["summary"]
    env_builder.manifest(f'[activation.env]\nCUDA_HOME = "{cu13 / "nvidia" / "cu13"}"\n')
    (f,) = by(run(pytester, env_builder, "test_flashinfer_jit", "12.0"), "flashinfer.jit")
    assert f["outcome"] == "warning", f
    assert "JIT-compiles FlashInfer's kernels for sm_120f" in f["summary"]
    assert f["evidence"]["nvcc"].endswith("bin/nvcc: CUDA 13.0")


# -- vLLM's settings and DeepGEMM, for real -----------------------------------------------------
@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_real_vllm_settings(pytester, env_builder, vllm_trees, version):
    env_builder.python("3.12")
    link_into(env_builder, vllm_trees[version])
    env_builder.manifest(
        '[activation.env]\nVLLM_ATTENTION_BACKEND = "FLASHINFER"\nVLLM_TRITON_ATTN_USE_TD = "1"\n'
        'VLLM_USE_DEEP_GEMM = "1"\n[tasks]\n'
        'serve = "vllm serve Qwen/Qwen3-0.6B --max-model-len 4096 --attention-backend FLASH_ATTN '
        '--gpu-memory-utilization=0.8 --no-enable-prefix-caching --no-such-option"\n'
    )
    checks = by(run(pytester, env_builder, "test_settings_unread", "9.0"), "settings.unread")
    found = {(f["evidence"].get("set") or f["evidence"].get("passed")): f for f in checks}
    assert set(found) == {
        "VLLM_ATTENTION_BACKEND=FLASHINFER",
        "VLLM_TRITON_ATTN_USE_TD=1",
        "--no-such-option",
    }
    backend = found["VLLM_ATTENTION_BACKEND=FLASHINFER"]
    assert backend["outcome"] == "warning"
    assert "this release takes it as the `--attention-backend` option" in backend["summary"]
    td = found["VLLM_TRITON_ATTN_USE_TD=1"]
    if version == "0.26.0":  # kept in envs.py to warn: "Use VLLM_TRITON_USE_TD instead"
        assert td["summary"].startswith(
            "vLLM 0.26.0 marks VLLM_TRITON_ATTN_USE_TD deprecated (vllm/envs.py): use VLLM_TRITON_USE_TD"
        )
    else:  # gone from 0.33.0's table: it does nothing
        assert td["summary"].startswith("vLLM 0.33.0 does not read VLLM_TRITON_ATTN_USE_TD")
    assert found["--no-such-option"]["outcome"] == "failed"


@pytest.mark.parametrize(
    "version, floor",
    [("0.26.0", "nvcc >= 12.3 (best >= 12.9)"), ("0.33.0", "nvcc >= 12.9 (best >= ?)")],
)
def test_real_vendored_deepgemm(pytester, env_builder, vllm_trees, cu13, version, floor):
    """vLLM's own DeepGEMM: its gate (9.0, 10.x, 12.x), its header trees, and the nvcc floor its
    compiled module states (0.26.0: >= 12.3, best 12.9; 0.33.0: "must be at least 12.9"), read
    from the wheel; a real CUDA 13.0 nvcc passes (below the floor: tests/test_runtime.py)."""
    env_builder.python("3.12")
    link_into(env_builder, vllm_trees[version])
    env_builder.manifest(f'[activation.env]\nCUDA_HOME = "{cu13 / "nvidia" / "cu13"}"\n')
    checks = by(
        run(pytester, env_builder, "test_deepgemm_jit", "9.0,10.0,12.0,8.0"), "deepgemm.jit"
    )
    assert sorted(c["outcome"] for c in checks) == ["passed", "passed", "passed", "skipped"], checks
    for c in checks:
        if c["outcome"] == "passed":
            assert c["evidence"]["needs"] == f"{floor}, read from its compiled module"


# -- the env of the mission: torch 2.11.0+cu130, vLLM 0.26.0, --cuda-arch=9.0 -------------------
def test_real_torch_211_vllm_026_env_shows_no_failure_from_this_layer(
    pytester, tmp_path, triton_trees, flashinfer_trees, vllm_trees
):
    """A venv of the interpreter running these tests (its own headers, this machine's gcc)
    holding the real metadata and files of torch 2.11.0 (+cu130), triton 3.6.0 (its pin),
    vLLM 0.26.0 and flashinfer-python 0.6.14 (vLLM's pin)."""
    torch_tree = wheel_tree("torch==2.11.0", lambda n: n == "torch/version.py")
    prefix = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    env = EnvBuilder(tmp_path, "venv", bare=True)
    (env.prefix / "conda-meta").rmdir()
    env.python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for tree in (
        torch_tree,
        triton_trees["3.6.0"],
        vllm_trees["0.26.0"],
        flashinfer_trees["0.6.14"],
    ):
        link_into(env, tree)
    checks = run(pytester, env, "test_runtime.py", "9.0")
    areas = ("triton", "inductor", "flashinfer", "deepgemm", "pins", "settings")
    mine = [c for c in checks if c["id"].split(".")[0] in areas]
    assert {c["id"] for c in mine} >= {
        "triton.ptxas", "inductor.python-headers", "inductor.c-compiler", "flashinfer.jit",
        "deepgemm.jit", "pins.siblings",
    }  # fmt: skip
    assert [c for c in mine if c["outcome"] in ("failed", "error")] == []
    (ptxas,) = by(mine, "triton.ptxas")
    assert ptxas["outcome"] == "passed" and "--gpu-name=sm_90a" in ptxas["summary"]
    (pins,) = by(mine, "pins.siblings")
    assert pins["outcome"] == "passed" and "torch 2.11.0: triton==3.6.0" in pins["summary"]
    assert by(mine, "inductor.python-headers")[0]["outcome"] == "passed"
    if not os.path.isdir("/usr/local/cuda"):
        pytest.skip("the FlashInfer/DeepGEMM JIT verdicts below need an nvcc at /usr/local/cuda")
    assert by(mine, "deepgemm.jit")[0]["outcome"] == "passed"
    assert by(mine, "flashinfer.jit")[0]["outcome"] == "warning"  # compiles at first start


# -- recorded truth: round 12 on the H100 (fixtures/measured/round12_h100.json) ----------------
ROUND12 = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "measured" / "round12_h100.json").read_text()
)


@pytest.mark.parametrize("name", ["bundled", "missing_override"])
def test_triton_ptxas_agrees_with_the_h100(pytester, env_builder, triton_trees, name):
    """Real Triton 3.6.0 on the H100 ran its kernel with its bundled ptxas, and with
    TRITON_PTXAS_PATH naming a file that does not exist (passed over): the verdict on the
    same wheel never fails either, and says when the setting does nothing."""
    truth = ROUND12["triton_ptxas"]
    measured = truth["runs"][name]
    env_builder.python("3.12")
    link_into(env_builder, triton_trees[truth["triton"]])
    if measured["TRITON_PTXAS_PATH"]:
        env_builder.manifest(
            f'[activation.env]\nTRITON_PTXAS_PATH = "{measured["TRITON_PTXAS_PATH"]}"\n'
        )
    (f,) = by(run(pytester, env_builder, "test_triton_ptxas", truth["arch"]), "triton.ptxas")
    assert measured["kernel_ran"] and f["outcome"] != "failed"
    if name == "bundled":
        assert (
            f["outcome"] == "passed" and f["summary"] == truth["suite"]["bundled"].split(": ", 1)[1]
        )
    else:
        assert f["outcome"] == "warning" and "the setting does nothing" in f["summary"]
