"""The one door for reading untrusted files: FIFOs, devices, loops and huge files are refused,
at once, with the reason; regular files (through symlinks too) read as before."""

from __future__ import annotations

import os
import threading

import pytest

from pytest_vllm_env import files


def _returns_within(fn, seconds=5.0):
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - carried to the test thread
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the read blocked"
    return out


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # nobody writes: a plain open() would block for ever
    out = _returns_within(lambda: files.read_text(fifo, files.CONFIG))
    assert isinstance(out["error"], files.Refused)
    assert "a FIFO" in str(out["error"])
    assert isinstance(out["error"], OSError)  # readers' "could not read" paths catch it
    assert files.describe(fifo) == "a FIFO"
    assert not files.regular(fifo)


def test_dev_zero_behind_a_symlink_is_refused(tmp_path):
    link = tmp_path / "model.safetensors"
    link.symlink_to("/dev/zero")
    out = _returns_within(lambda: files.read_bytes(link, files.HEADER))
    assert "a character device" in str(out["error"])


def test_size_bound_and_symlinked_regular_file(tmp_path):
    real = tmp_path / "real.json"
    real.write_text('{"a": 1}')
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert files.load_json(link) == {"a": 1}
    with pytest.raises(files.Refused, match="over the 4 bytes"):
        files.read_bytes(real, 4)


def test_symlink_loop_and_directory(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OSError):
        files.read_text(loop, files.CONFIG)
    with pytest.raises(files.Refused, match="a directory"):
        files.read_text(tmp_path, files.CONFIG)
    assert files.describe(tmp_path / "nothing") == "missing"


def test_deep_json_is_a_value_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        files.load_json(deep)
