"""The header reader: valid files, every kind of bad input, and agreement with the
safetensors library (the ground truth for what a loader accepts)."""

from __future__ import annotations

import json
import math
import struct
import tracemalloc
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from safetensors import _safetensors_rust as st_rust

from fixtures.checkpoints import bf16, f32, write_safetensors
from fixtures.text import lit
from pytest_vllm_env.readers.safetensors_header import (
    MAX_HEADER_BYTES,
    SafetensorsError,
    read_floats,
    read_header,
)

TENSORS = {
    "w": ("F8_E4M3", [4, 8], bytes(range(32))),
    "w_scale": ("F32", [], f32(0.5)),
    "b": ("BF16", [3], bf16(1.0, -2.0, 0.25)),
    "h": ("F16", [2], struct.pack("<2e", 1.5, 3.0)),
}


def library_accepts(path: Path) -> bool:
    try:
        st_rust.deserialize(path.read_bytes())
    except st_rust.SafetensorError:
        return False
    return True


def raw_file(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def test_valid_file_is_read_like_the_library_reads_it(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {"format": "pt"})
    header = read_header(path)
    ours = {n: (t.dtype, list(t.shape)) for n, t in header.tensors.items()}
    theirs = {n: (d["dtype"], d["shape"]) for n, d in st_rust.deserialize(path.read_bytes())}
    assert ours == theirs
    assert header.metadata == {"format": "pt"}
    assert header.tensors["w"].nbytes == 32


def test_scale_values_decode(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS)
    tensors = read_header(path).tensors
    assert read_floats(tensors["w_scale"]) == [0.5]
    assert read_floats(tensors["b"]) == [1.0, -2.0, 0.25]
    assert read_floats(tensors["h"]) == [1.5, 3.0]
    with pytest.raises(ValueError, match="F8_E4M3 is not a float dtype"):
        read_floats(tensors["w"])
    with pytest.raises(SafetensorsError, match="not read"):
        read_floats(tensors["b"], limit=2)


def test_nan_scale_decodes_as_nan(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", {"s": ("F32", [], f32(float("nan")))})
    assert math.isnan(read_floats(read_header(path).tensors["s"])[0])


def _valid(tmp_path: Path) -> Path:
    return write_safetensors(tmp_path / "m.safetensors", TENSORS)


def _entry(offsets: list[int], dtype: str = "F32", shape: list[int] | None = None) -> dict:
    return {"dtype": dtype, "shape": shape if shape is not None else [1], "data_offsets": offsets}


BAD = {
    "truncated data": (
        lambda p: p.write_bytes(_valid(p.parent).read_bytes()[:-5]) and p,
        "truncated: tensor * ends at data byte * but the file holds only * data bytes",
    ),
    "shorter than 8 bytes": (lambda p: p.write_bytes(b"\x01\x02") and p, "truncated: 2 bytes*"),
    "header length past the end": (
        lambda p: raw_file(p, b"{}", length=4096),
        "truncated: the header length field says 4096 bytes but the file has only 2 after it",
    ),
    "absurd header length": (
        lambda p: raw_file(p, b"{}", length=2**63),
        f"header length field says {2**63} bytes (limit {MAX_HEADER_BYTES})*",
    ),
    "header not JSON": (lambda p: raw_file(p, b"\x89PNG\r\n\x1a\n"), "header is not JSON*"),
    "header a JSON list": (lambda p: raw_file(p, b"[1, 2]"), "header is JSON but not an object"),
    "unknown dtype": (
        lambda p: raw_file(p, json.dumps({"a": _entry([0, 4], "F12")}).encode(), b"\0" * 4),
        "tensor 'a': unknown dtype 'F12'",
    ),
    "overlapping offsets": (
        lambda p: raw_file(
            p, json.dumps({"a": _entry([0, 4]), "b": _entry([2, 6])}).encode(), b"\0" * 6
        ),
        "tensor 'b' overlaps tensor 'a'*",
    ),
    "offsets past the end": (
        lambda p: raw_file(p, json.dumps({"a": _entry([0, 4])}).encode(), b"\0" * 2),
        "truncated: tensor 'a' ends at data byte 4 but the file holds only 2 data bytes",
    ),
    "size disagrees with shape": (
        lambda p: raw_file(p, json.dumps({"a": _entry([0, 8])}).encode(), b"\0" * 8),
        "tensor 'a': F32 [1] needs 4 bytes but data_offsets span 8",
    ),
    "negative offset": (
        lambda p: raw_file(p, json.dumps({"a": _entry([-4, 0])}).encode()),
        "tensor 'a': data_offsets [-4, 0] is not [begin, end]",
    ),
    "gap in the data": (
        lambda p: raw_file(p, json.dumps({"a": _entry([4, 8])}).encode(), b"\0" * 8),
        "gap in the data: nothing covers data bytes 0..4",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_clear_error_the_library_also_refuses(tmp_path, case):
    make, message = BAD[case]
    path = make(tmp_path / "bad.safetensors")
    with pytest.raises(SafetensorsError) as info:
        read_header(path)
    assert str(info.value).startswith(f"{path}: ")
    assert fnmatchcase(info.value.what, lit(message)), info.value.what
    assert not library_accepts(path)


def test_absurd_header_length_allocates_nothing(tmp_path):
    # A 100 MB limit is the library's; a just-under-the-limit claim on a small file must
    # still fail on the file size before reading.
    path = raw_file(tmp_path / "bad.safetensors", b"{}", length=MAX_HEADER_BYTES - 1)
    tracemalloc.start()
    with pytest.raises(SafetensorsError, match="truncated"):
        read_header(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


def test_unreadable_path_is_an_error_not_a_traceback(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(SafetensorsError, match="cannot read"):
        read_header(tmp_path / "loop")


def test_fast_and_entry_by_entry_validation_agree(tmp_path):
    from pytest_vllm_env.readers import safetensors_header as sh

    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {"format": "pt"})
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    size = len(raw)
    fast = sh._validate(path, json.loads(raw[8 : 8 + length]), length, size)
    slow = sh._validate_slowly(path, json.loads(raw[8 : 8 + length]), length, size)
    assert fast == slow


def test_random_corruption_never_escapes_as_a_traceback(tmp_path):
    """Flip bytes anywhere in the header and the JSON files: every result is a verdict."""
    import random

    from fixtures import checkpoints as ckpts
    from pytest_vllm_env.checks import modelopt
    from pytest_vllm_env.readers import checkpoint
    from pytest_vllm_env.readers.vllm_source import not_found

    rng = random.Random(5)
    good = ckpts.llama(kv_cache="FP8").write(tmp_path / "good")
    originals = {p.name: p.read_bytes() for p in good.iterdir()}
    for _ in range(150):
        for name, data in originals.items():
            (good / name).write_bytes(data)
        name = rng.choice(sorted(originals))
        data = bytearray(originals[name])
        limit = len(data) if not name.endswith(".safetensors") else min(len(data), 4096)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(limit)] = rng.randrange(256)
        (good / name).write_bytes(bytes(data))
        ckpt = checkpoint.read_checkpoint("good", good)
        values, unread = checkpoint.read_scales(ckpt)
        findings = [
            modelopt.files_readable(ckpt),
            modelopt.quant_config(ckpt),
            modelopt.quant_algo_supported(ckpt, not_found("none"), None),
            modelopt.tensors_complete(ckpt),
            modelopt.shapes_match_config(ckpt),
            modelopt.scales_sane(ckpt, values, unread),
            modelopt.vision_tower(ckpt, None),
        ]
        assert all(f.outcome in ("passed", "failed", "skipped", "error") for f in findings)


@pytest.mark.parametrize(
    "config, hf",
    [
        ({"quantization_config": "FP8"}, {"quantization": []}),
        ({"architectures": "Llama", "num_attention_heads": 0, "hidden_size": "x"}, None),
        ({"quantization_config": {"quant_method": "modelopt", "quant_algo": None}}, {}),
        (
            {
                "quantization_config": {
                    "quant_method": "modelopt",
                    "quant_algo": "FP8",
                    "ignore": "x",
                }
            },
            None,
        ),
        (
            {
                "quantization_config": {
                    "quant_method": "modelopt",
                    "quant_algo": "FP8",
                    "ignore": ["[", 1],
                }
            },
            None,
        ),
    ],
)
def test_odd_json_values_give_verdicts(tmp_path, config, hf):
    from fixtures import checkpoints as ckpts
    from pytest_vllm_env.checks import modelopt
    from pytest_vllm_env.readers import checkpoint
    from pytest_vllm_env.readers.vllm_source import not_found

    builder = ckpts.llama()
    builder.config = {**{"architectures": ["LlamaForCausalLM"]}, **config}
    builder.hf_quant_config = hf
    ckpt = checkpoint.read_checkpoint("odd", builder.write(tmp_path / "odd"))
    for finding in (
        modelopt.quant_config(ckpt),
        modelopt.quant_algo_supported(ckpt, not_found("none"), None),
        modelopt.tensors_complete(ckpt),
        modelopt.shapes_match_config(ckpt),
        modelopt.architecture_registered(ckpt, checkpoint_registry(), "0.26.0"),
        modelopt.vision_tower(ckpt, None),
    ):
        assert finding.outcome in ("passed", "failed", "skipped", "error")


def checkpoint_registry():
    from pytest_vllm_env.readers.vllm_source import Registry

    return Registry("r.py", frozenset({"LlamaForCausalLM"}))


def test_fast_validation_accepts_exactly_what_entry_by_entry_accepts(tmp_path):
    """The fast path checks contiguity in header order (the safetensors writer's) and sorts
    otherwise: shuffled key orders and nudged offsets must get the same verdict both ways."""
    import random

    from pytest_vllm_env.readers import safetensors_header as sh

    rng = random.Random(7)
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {"format": "pt"})
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    outcomes = set()
    for _ in range(300):
        items = list(header.items())
        rng.shuffle(items)
        entries = json.loads(json.dumps(dict(items)))
        if rng.random() < 0.7:
            entry = entries[rng.choice([k for k in entries if k != "__metadata__"])]
            delta = rng.choice([-4, -2, -1, 1, 2, 4])
            if rng.random() < 0.5:  # the whole tensor moves: its size still matches
                entry["data_offsets"] = [o + delta for o in entry["data_offsets"]]
            else:
                entry["data_offsets"][rng.randrange(2)] += delta

        def verdict(validate, entries=entries):
            try:
                return validate(path, json.loads(json.dumps(entries)), length, len(raw))
            except SafetensorsError as exc:
                return exc.what

        fast, slow = verdict(sh._validate), verdict(sh._validate_slowly)
        assert fast == slow
        outcomes.add(isinstance(fast, str))
    assert outcomes == {True, False}
