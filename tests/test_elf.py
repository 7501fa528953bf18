"""The ELF reader against readelf on g++-built libraries, and bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.elf import fake_extension, fake_torch
from pytest_vllm_env.elf import ElfError, read_elf

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")


@pytest.fixture(scope="module")
def ext(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("elf")
    return fake_extension(root / "e" / "_C.so", fake_torch(root / "t"))


def test_needed_and_symbols_match_readelf(ext):
    elf = read_elf(ext)
    assert elf.needed[0] == "libcudart.so.13"
    names = {s.name: s for s in elf.symbols}
    assert not names["aoti_torch_get_current_cuda_stream"].defined
    assert names["ext_entry"].defined
    if shutil.which("readelf"):
        out = subprocess.run(["readelf", "-d", ext], capture_output=True, text=True).stdout
        assert [
            line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line
        ] == (elf.needed)


def test_symbol_versions_are_read(ext):
    versions = {s.version for s in read_elf(ext).symbols if s.name.startswith("__cxa_finalize")}
    assert versions and all(v.startswith("GLIBC_") for v in versions)


def test_runpath(tmp_path):
    src = tmp_path / "x.c"
    src.write_text("int x(void) { return 1; }\n")
    out = tmp_path / "libx.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib", "-o", out, src],
        check=True,
    )
    assert read_elf(out).runpath == ["$ORIGIN/../lib"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not an ELF file"),
        (b"INPUT(libfoo.so.1)\n", "not an ELF file"),
        (b"\x7fELF\x01\x01\x01" + b"\0" * 60, "not a 64-bit little-endian ELF"),
    ],
)
def test_bad_input(tmp_path, content, message):
    path = tmp_path / "bad.so"
    path.write_bytes(content)
    with pytest.raises(ElfError, match=message):
        read_elf(path)


def test_section_table_past_the_end(ext, tmp_path):
    data = bytearray(ext.read_bytes())
    data[0x28:0x30] = (len(data) * 4).to_bytes(8, "little")
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="points past the end"):
        read_elf(bad)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ElfError, match="cannot read"):
        read_elf(tmp_path)
    with pytest.raises(ElfError, match="cannot read"):
        read_elf(tmp_path / "nope.so")


def test_defined_names_agree_with_the_full_reader(ext, tmp_path):
    # The fast path torch_facts takes (100,000 exports of torch 2.11): the same names.
    from pytest_vllm_env.elf import defined_names

    torch_lib = next((ext.parents[1] / "t").rglob("*.so"))
    for lib in (ext, torch_lib):
        assert defined_names(lib) == read_elf(lib).defined - {""}
    assert "ext_entry" in defined_names(ext) and defined_names(torch_lib)
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"INPUT(libfoo.so.1)\n")
    with pytest.raises(ElfError, match="not an ELF file"):
        defined_names(bad)
    with pytest.raises(ElfError, match="cannot read"):
        defined_names(tmp_path / "nope.so")
