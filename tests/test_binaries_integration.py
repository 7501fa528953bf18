"""Real wheels for issue 12 (opt-in, --run-integration): torch 2.6.0, the old C++ ABI that
vLLM 0.8.x pins, against flash-attn-style extensions built for other torches (F5.3, F5.5);
xformers 0.0.30's Hopper-only FA3 against 0.0.33.post1's capped one (F4.3)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.text import lit
from fixtures.wheels import members
from pytest_vllm_env.facts import binaries
from pytest_vllm_env.readers.elf import read_elf

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found"),
]

TORCH26 = re.compile(r"^torch/(version\.py|lib/libc10(_cuda)?\.so)$")


@pytest.fixture(scope="session")
def torch26() -> Path:
    """torch 2.6.0 (PyPI default: +cu124, _GLIBCXX_USE_CXX11_ABI=0): version.py, libc10,
    libc10_cuda, extracted once."""
    return members(downloads.wheel("torch==2.6.0"), lambda n: bool(TORCH26.match(n)))


def test_torch_260_exports_only_old_abi_strings(torch26):
    """Every libc10/libc10_cuda export that c++filt shows with a pre-C++11 std::string is found
    by old_abi_string (measured: 171 of 1,991 mangled exports; the former regex found 130)."""
    names = sorted(
        {
            s.name
            for lib in ("libc10.so", "libc10_cuda.so")
            for s in read_elf(torch26 / "torch/lib" / lib).symbols
            if s.name.startswith("_Z")
        }
    )
    # F5.3's missing symbol, in the form torch 2.6.0 does export
    assert "_ZN3c105ErrorC2ENS_14SourceLocationESs" in names
    assert not any("__cxx11" in n for n in names if n.startswith("_ZN3c10"))
    ours = {n for n in names if binaries.old_abi_string(n)}
    if shutil.which("c++filt") is None:
        assert len(ours) > 150
        return
    shown = subprocess.run(
        ["c++filt"], input="\n".join(names), capture_output=True, text=True, timeout=60
    ).stdout.splitlines()
    string = re.compile(r"std::(string|wstring|basic_string<)")
    truth = {n for n, d in zip(names, shown, strict=True) if string.search(d)}
    assert truth <= ours, sorted(truth - ours)[:5]
    # the one extra is a template's return type, which c++filt does not print
    assert len(ours - truth) <= 1, sorted(ours - truth)


# flash-attn's extension as built for another torch: F5.3 (CXX11 ABI) and F5.5 (torch 2.2's
# c10::cuda::SetDevice(int), which 2.3+ replaced by SetDevice(DeviceIndex = int8_t))
FA_SRC = """
#include <string>
namespace c10 {
struct SourceLocation { const char *f; const char *file; unsigned line; };
struct Error { Error(SourceLocation loc, std::string msg); };
namespace cuda { %(setdevice)s }
}
extern "C" void fa_entry() {
    %(call)s
}
"""


def _flash_attn_ext(out: Path, *, cxx11: int, old_setdevice: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".cc")
    src.write_text(
        FA_SRC
        % {
            "setdevice": "void SetDevice(int);" if old_setdevice else "",
            "call": "c10::cuda::SetDevice(0);"
            if old_setdevice
            else 'c10::Error e({"f", "file", 1}, std::string("x"));',
        }
    )
    subprocess.run(
        ["g++", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={cxx11}", "-o", out, src],
        check=True,
        timeout=120,
    )
    return out


def _fa_env(env_builder, torch26: Path, ext: Path, version: str, url: str | None) -> Path:
    env_builder.python("3.12")
    # only the members asked for: the shared download cache may hold more of the same wheel
    files = {
        rel: p.read_bytes()
        for p in (torch26 / "torch").rglob("*")
        if p.is_file() and TORCH26.match(rel := p.relative_to(torch26).as_posix())
    }
    env_builder.dist("torch", "2.6.0", files=files)
    info = env_builder.dist(
        "flash-attn",
        version,
        requires=["torch", "einops"],
        files={"flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so": ext.read_bytes()},
    )
    if url:
        (info / "direct_url.json").write_text(json.dumps({"url": url, "archive_info": {}}))
    return env_builder.prefix


def test_flash_attn_cxx11_on_torch_260_fails(pytester, env_builder, torch26, tmp_path):
    """huggingface/open-r1#684 (F5.3): flash-attn 2.8.0.post2 (CXX11 ABI) on torch 2.6.0:
    "undefined symbol: _ZN3c105ErrorC2ENS_14SourceLocationENSt7__cxx1112basic_string..."."""
    ext = _flash_attn_ext(tmp_path / "fa" / "fa.so", cxx11=1, old_setdevice=False)
    prefix = _fa_env(env_builder, torch26, ext, "2.8.0.post2", None)
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_symbols or test_cxx11", "--vllm-env", str(prefix)
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*missing: c10::Error::Error(c10::SourceLocation, std::__cxx11::basic_string<char*",
            lit(
                "*[abi.cxx11] FAILED: flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so was built "
                "with _GLIBCXX_USE_CXX11_ABI=1, torch 2.6.0 with 0*"
            ),
            lit(
                "*fix: install the flash-attn wheel built for torch 2.6 (release assets of "
                "https://github.com/Dao-AILab/flash-attention/releases are named "
                "`flash_attn-<version>+cu12torch2.6cxx11abiFALSE-cp312-cp312-linux_x86_64.whl`): "
                'add `flash-attn = { url = "<asset URL>" }` to [pypi-dependencies] in pixi.toml; '
                'or build it against this torch: list `"flash-attn"` in `no-build-isolation = '
                "[...]` of [pypi-options] in pixi.toml; then run `pixi reinstall -e default "
                "flash-attn`*"
            ),
        ]
    )


def test_flash_attn_built_for_torch_22_on_260(pytester, env_builder, torch26, tmp_path):
    """Dao-AILab/flash-attention#931 (F5.5): "undefined symbol: _ZN3c104cuda9SetDeviceEi",
    a wheel built for torch 2.2 next to a newer torch; the built-for torch comes from the
    wheel name pip recorded, not from vLLM's pin."""
    ext = _flash_attn_ext(tmp_path / "fa22" / "fa.so", cxx11=0, old_setdevice=True)
    url = (
        "https://github.com/Dao-AILab/flash-attention/releases/download/v2.5.7/"
        "flash_attn-2.5.7+cu122torch2.2cxx11abiFALSE-cp312-cp312-linux_x86_64.whl"
    )
    prefix = _fa_env(env_builder, torch26, ext, "2.5.7", url)
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_symbols", "--vllm-env", str(prefix)
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[abi.symbols] FAILED: flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so: "
                "resolved 0 of 1 torch symbols; 1 missing (likely cause: built for torch 2.2 (the "
                "flash-attn wheel name in direct_url.json (flash_attn-2.5.7+cu122torch2.2"
                "cxx11abiFALSE-cp312-cp312-linux_x86_64.whl)), env has 2.6.0)*"
            ),
            "*missing: c10::cuda::SetDevice(int)*",
        ]
    )


# -- xformers' FA3 dispatch on Blackwell (F4.3) ---------------------------------------------
XF = re.compile(
    r"^xformers/(_C\.so|_C_flashattention3\.so|flash_attn_3/_C\.so|ops/fmha/flash3\.py)$"
)


@pytest.mark.parametrize(("version", "fa3_fails"), [("0.0.30", True), ("0.0.33.post1", False)])
def test_real_xformers_fa3_on_rtx5090(pytester, env_builder, version, fa3_fails):
    root = members(downloads.wheel(f"xformers=={version}"), lambda n: bool(XF.match(n)))
    env_builder.python("3.12")
    files = {
        rel: p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and XF.match(rel := p.relative_to(root).as_posix())
    }
    env_builder.dist("xformers", version, files=files)
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_arch.py", "--vllm-env", str(env_builder.prefix),
        "--cuda-arch", "12.0", "--cuda-arch", "9.0", "--vllm-env-report", "r.json",
    )  # fmt: skip
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    fa3 = [c for c in checks if "FA3" in c["summary"] or "flash" in c["summary"].split(":")[0]]
    bad = [c for c in fa3 if c["outcome"] == "failed"]
    assert bool(bad) is fa3_fails, [c["summary"] for c in checks]
    if fa3_fails:
        assert "xformers dispatches FA3 on sm_120" in bad[0]["summary"]
    # on the H100 FA3 is the right kernel either way
    assert any("runs on sm_90 via SASS sm_90a" in c["summary"] for c in fa3)
    assert "Traceback" not in result.stdout.str()
