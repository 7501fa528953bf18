"""The ELF reader against readelf on g++-built libraries, and bad input."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fixtures.elf import fake_extension, fake_torch
from pytest_vllm_env.readers.elf import ElfError, read_elf

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
    from pytest_vllm_env.readers.elf import defined_names

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


def _many_symbols_lib(out: Path, hash_style: str) -> Path:
    """A library of 600 functions, some named by another's tail (the linker may then store
    one string for both: a name that starts inside a string), built with
    ``--hash-style=hash_style``."""
    src = out.with_suffix(".c")
    body = [f"int fn_{i}(void) {{ return {i}; }}" for i in range(600)]
    body += ["int tail(void) { return 1; }", "int with_tail(void) { return 2; }"]
    body += ['extern int puts(const char *); int say(void) { return puts("x"); }']
    src.write_text("\n".join(body) + "\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", f"-Wl,--hash-style={hash_style}", "-o", out, src], check=True
    )
    return out


def _asked(lib: Path) -> list[str]:
    from pytest_vllm_env.readers.elf import defined_names, undefined_names

    full = sorted(defined_names(lib))
    return (
        full
        + [n for n, _ in undefined_names(lib)]
        + [n + "_" for n in full]
        + [n[1:] for n in full]
        + ["", "fn_600", "fü_1"]
    )


@pytest.mark.parametrize("style", ["gnu", "sysv", "both"])
def test_symbol_index_answers_as_the_whole_table(tmp_path, ext, style):
    """abi.symbols and abi.undefined ask the hash table (as the loader does) instead of
    listing every name: each answer equals membership in defined_names, with .gnu.hash and
    without it (sysv-only: every name read)."""
    from pytest_vllm_env.readers.elf import SymbolIndex, defined_names

    for lib in (_many_symbols_lib(tmp_path / f"lib{style}.so", style), ext):
        index = SymbolIndex(lib)
        assert index._hashed == (style != "sysv" or lib == ext)
        full = defined_names(lib)
        for name in _asked(lib):
            assert index.defines(name) == (name in full), name


def test_symbol_index_with_a_malformed_hash_table_reads_every_name(tmp_path):
    from pytest_vllm_env.readers.elf import SymbolIndex, defined_names

    lib = _many_symbols_lib(tmp_path / "libgnu.so", "gnu")
    data = bytearray(lib.read_bytes())
    out = subprocess.run(["readelf", "-SW", lib], capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if ".gnu.hash" in x)
    offset = int(line.split(".gnu.hash")[1].split()[2], 16)
    data[offset : offset + 4] = b"\0\0\0\0"  # nbuckets = 0
    bad = tmp_path / "libbad.so"
    bad.write_bytes(bytes(data))
    index = SymbolIndex(bad)
    assert not index._hashed
    full = defined_names(bad)
    assert all(index.defines(n) == (n in full) for n in _asked(bad))


def test_defines_any_finds_torchs_cxx11_flag(tmp_path):
    from pytest_vllm_env.facts.binaries import TORCH_SIDE
    from pytest_vllm_env.readers.elf import SymbolIndex, defined_names

    def torch_side(name: str) -> bool:
        return TORCH_SIDE.match(name) is not None

    for flag in (1, 0):
        c10 = fake_torch(tmp_path / f"t{flag}", cxx11=flag) / "libc10.so"
        want = any("cxx11" in n and torch_side(n) for n in defined_names(c10))
        assert want == bool(flag)
        assert SymbolIndex(c10).defines_any("cxx11", torch_side) == want
        assert SymbolIndex(c10).defines_any("no-such-text", torch_side) is False


def test_head_and_imports_agree_with_the_full_reader(ext, tmp_path):
    from pytest_vllm_env.readers.elf import undefined_names

    full = read_elf(ext)
    head = read_elf(ext, symbols=False, versions=True)
    assert not head.symbols
    assert (head.needed, head.soname, head.runpath, head.rpath) == (
        full.needed, full.soname, full.runpath, full.rpath,
    )  # fmt: skip
    assert head.version_needs == full.version_needs and head.version_defs == full.version_defs
    assert head.version_needs  # GLIBC_* of libc.so.6
    assert undefined_names(ext) == [(s.name, s.weak) for s in full.undefined]
    # a symbol table past the end: the same sentence from the head-only read
    data = bytearray(ext.read_bytes())
    out = subprocess.run(["readelf", "-SW", ext], capture_output=True, text=True).stdout
    index = next(int(x.split("[")[1].split("]")[0]) for x in out.splitlines() if " .dynsym " in x)
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    at = shoff + index * 64 + 0x18  # sh_offset
    data[at : at + 8] = (len(data) * 4).to_bytes(8, "little")
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(data))
    with pytest.raises(ElfError) as whole:
        read_elf(bad)
    with pytest.raises(ElfError) as part:
        read_elf(bad, symbols=False, versions=True)
    assert str(whole.value) == str(part.value) and "points past the end" in str(part.value)
