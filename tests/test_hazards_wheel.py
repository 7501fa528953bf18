"""``--vllm-wheel`` reads a zip someone else built: it must never be the hazard (issue 21).

Real crafted zips: member names that climb out (``../``) or are absolute (zip-slip), a zip
bomb, a RECORD that names one member 20,000 times, a wheel that is a FIFO. Each run ends in
seconds, writes nothing outside its own scratch folder, and says what it refused.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.text import lit
from fixtures.wheels import build_wheel
from pytest_vllm_env.readers import wheel as reader


def run(pytester: pytest.Pytester, prefix: Path, whl: Path) -> pytest.RunResult:
    return pytester.runpytest(
        "--vllm-conformance", "-k", "test_built_wheels", "--vllm-env", str(prefix),
        "--vllm-wheel", str(whl), "-p", "no:randomly",
    )  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_member_names_never_leave_the_scratch_folder(pytester, env_builder: EnvBuilder, tmp_path):
    """A member named ``../../x.so``, ``/abs/x.so`` or ``vllm/../../x.so`` is read, never
    written where its name points: not next to the scratch folder, not over a file of the
    judged env (the old extraction joined scratch and name: the absolute one replaced the
    env's own extension mid-run)."""
    env_builder.python()
    env_builder.dist("vllm", "0.26.0", files={"vllm/_C.abi3.so": b"the env's own extension"})
    own = env_builder.site_packages / "vllm" / "_C.abi3.so"
    before = _sha(own)
    outside = tmp_path / "outside"
    outside.mkdir()
    climb = "../" * 40  # past the root, whatever the depth of the scratch folder
    names = {
        climb + str(outside / "dotdot.so").lstrip("/"): b"\x7fELF climbing",
        str(outside / "absolute.so"): b"\x7fELF absolute",
        "vllm/" + climb + str(outside / "nested.so").lstrip("/"): b"\x7fELF nested",
        str(own): b"\x7fELF replaces the env's extension",
    }
    whl = build_wheel(tmp_path / "dist", names)
    result = run(pytester, env_builder.prefix, whl)
    assert list(outside.iterdir()) == []
    assert _sha(own) == before
    out = result.stdout.str()
    assert "Traceback" not in out
    for name in names:  # each member judged, by its own name, as not a library
        assert f"{name}: " in out, name


def test_zip_bomb_stops_at_the_budget(pytester, env_builder: EnvBuilder, tmp_path, monkeypatch):
    """A wheel of ~100 KB whose one member unpacks to 100 MB of zeros: read up to the budget
    (30x the wheel, at least FLOOR: 256 MiB, here 32 MiB to stay fast), then refused with the
    bound named; no scratch copy is left (the old extraction kept 6.1 GB of a 6 MB wheel)."""
    monkeypatch.setattr(reader, "FLOOR", 32 * 1024 * 1024)
    env_builder.python()
    whl = tmp_path / "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("vllm-0.26.0.dist-info/METADATA", "Name: vllm\nVersion: 0.26.0\n")
        with zf.open("vllm/_C.abi3.so", "w") as fh:
            block = bytes(1 << 20)
            for _ in range(100):
                fh.write(block)
        zf.writestr("vllm-0.26.0.dist-info/RECORD", "vllm/_C.abi3.so,sha256=AAAA,1\n")
    assert whl.stat().st_size < 1 << 20
    result = run(pytester, env_builder.prefix, whl)
    result.stdout.fnmatch_lines(
        [
            lit("*[wheel.record] ERROR: RECORD not checked: vllm/_C.abi3.so: the wheel unpacks "
                "to more than 32.0 MiB (30x its size): not read further (a zip bomb*"),
            lit("*[wheel.coverage] ERROR: vllm/_C.abi3.so: the wheel unpacks to more than 32.0*"),
        ]
    )  # fmt: skip
    scratch = list(pytester.path.parent.rglob("wheel-members*"))
    assert scratch and [p for d in scratch for p in d.rglob("*") if p.is_file()] == []


def test_record_naming_one_member_20000_times_hashes_it_once(tmp_path):
    """A 418 KB RECORD naming one member 20,000 times hung the old check on hashing (20,000
    passes over the member); each (member, algorithm) is hashed once."""
    big = os.urandom(4 << 20)
    whl = build_wheel(tmp_path / "dist", {"vllm/_C.abi3.so": big})
    digest = reader._digest(zipfile.ZipFile(whl), "vllm/_C.abi3.so", "sha256", reader.Budget(0))
    record = "".join(f"vllm/_C.abi3.so,sha256={digest},{len(big)}\n" for _ in range(20_000))
    hostile = tmp_path / "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(hostile, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, record.encode() if info.filename.endswith("RECORD") else data)
    assert len(record) > 400_000
    zf, budget = reader.open_wheel(hostile)
    start = time.monotonic()
    with zf:
        check = reader.check_record(zf, "vllm-0.26.0.dist-info", budget)
    assert time.monotonic() - start < 5
    assert check.problem == "" and check.bad == [] and check.rows == 20_000
    assert budget.total - budget.left < 2 * len(big) + len(record)  # read once, not 20,000x


def test_a_wheel_that_is_a_fifo_is_an_error(pytester, env_builder: EnvBuilder, tmp_path):
    env_builder.python()
    fifo = tmp_path / "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    os.mkfifo(fifo)
    result = run(pytester, env_builder.prefix, fifo)
    result.stdout.fnmatch_lines(
        ["*[[]wheel.record] ERROR: *.whl is not a readable zip: not a regular file (a FIFO)*"]
    )


def test_member_copy_is_bounded_and_removed(tmp_path, monkeypatch):
    """The reader on its own: a member claiming more than MAX_MEMBER is not copied; one
    whose bytes do not match its claim is refused (zipfile reads no further than the claim);
    the copy is removed whether it was read or refused."""
    whl = build_wheel(tmp_path / "dist", {"vllm/_C.abi3.so": bytes(3 << 20)})
    scratch = tmp_path / "scratch"
    zf, budget = reader.open_wheel(whl)
    with zf:
        info = zf.getinfo("vllm/_C.abi3.so")
        with reader.member_file(zf, info, scratch, budget) as so:
            assert so.parent == scratch and so.stat().st_size == 3 << 20
        assert list(scratch.iterdir()) == []
        monkeypatch.setattr(reader, "MAX_MEMBER", 1 << 20)
        with pytest.raises(reader.WheelError, match="claims 3145728 bytes"):
            with reader.member_file(zf, info, scratch, budget):
                pass
        info.file_size = 1  # a zip that lies: zipfile stops at the size claimed, CRC fails
        with pytest.raises(reader.READ_ERRORS):
            with reader.member_file(zf, info, scratch, budget):
                pass
    assert list(scratch.iterdir()) == []
