"""The safetensors files of a checkpoint folder as vLLM's loader finds them: the index, the
files present, and each file's tensors (headers only).

A reader: it says what is there and never decides pass or fail. What vLLM then does with it
(``facts/checkpoint_load.py``) is read from vLLM 0.26.0's and 0.33.0's loader, which agree:

- ``DefaultModelLoader._prepare_weights`` (``model_loader/default_loader.py``) globs
  ``*.safetensors`` in the folder (``load_format`` ``auto``: ``consolidated*.safetensors``
  present selects the Mistral format instead);
- ``weight_utils.filter_duplicate_safetensors_files``: when ``model.safetensors.index.json``
  exists, every file its ``weight_map`` names must exist (else ``FileNotFoundError: Weight
  files referenced in index but missing``) and only those files are read;
- ``weight_utils.safetensors_weights_iterator`` reads the kept files in natural-sort order
  (``_natural_sort_key``) and yields every tensor of each: the index's tensor -> file
  pairing is never consulted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import files
from pytest_vllm_env.readers.safetensors_header import SafetensorsError, TensorInfo, read_header

INDEX = "model.safetensors.index.json"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ShardFile:
    """One ``*.safetensors`` file: its tensors, or why its header could not be read."""

    name: str
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class ShardLayout:
    """What a checkpoint folder holds for the safetensors loader.

    ``weight_map``: the index's tensor -> file map (None without an index, or when the
    index could not be read: ``index_problem`` says why); ``present``: the
    ``*.safetensors`` regular files in the folder, in vLLM's natural-sort order;
    ``files``: the header of each present file."""

    folder: Path
    weight_map: dict[str, str] | None
    index_problem: str | None
    present: tuple[str, ...]
    files: dict[str, ShardFile]
    has_index: bool = False
    mistral_files: tuple[str, ...] = ()  # consolidated*.safetensors: vLLM's Mistral format


def natural_key(name: str) -> list[int | str]:
    """vLLM's ``_natural_sort_key``: ``model-00002-of-00010`` before ``model-00010-of-00010``."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", os.path.basename(name))]


def read_layout(folder: Path) -> ShardLayout:
    """The index (if any), the ``*.safetensors`` files present and their headers."""
    index_path = folder / INDEX
    weight_map: dict[str, str] | None = None
    problem = None
    has_index = files.regular(index_path) or os.path.lexists(index_path)
    if has_index:
        try:
            data = files.load_json(index_path, files.CONFIG * 4)
        except (OSError, ValueError) as exc:
            problem = f"cannot be read: {exc}"
        else:
            wm = data.get("weight_map") if isinstance(data, dict) else None
            if isinstance(wm, dict) and all(isinstance(v, str) for v in wm.values()):
                weight_map = {str(k): v for k, v in wm.items()}
            else:
                problem = "has no weight_map object of tensor name -> file name"
    try:
        names = sorted(
            (p.name for p in folder.iterdir() if p.name.endswith(SUFFIX) and files.regular(p)),
            key=natural_key,
        )
    except OSError:
        names = []
    shard_files: dict[str, ShardFile] = {}
    for name in names:
        try:
            header = read_header(folder / name)
        except SafetensorsError as exc:
            shard_files[name] = ShardFile(name, {}, exc.what)
            continue
        shard_files[name] = ShardFile(name, dict(header.tensors))
    mistral = tuple(n for n in names if n.startswith("consolidated"))
    return ShardLayout(
        folder, weight_map, problem, tuple(names), shard_files, bool(has_index), mistral
    )


def read_samples(tensor: TensorInfo, chunks: int = 4, size: int = 1 << 16) -> bytes:
    """Up to ``chunks`` spans of ``size`` bytes spread over a tensor's data (all of it when
    smaller): enough to tell two copies apart without reading gigabytes."""
    total = tensor.end - tensor.begin
    with files.open_regular(tensor.file) as fh:
        if total <= chunks * size:
            fh.seek(tensor.begin)
            return fh.read(total)
        out = []
        for i in range(chunks):
            fh.seek(tensor.begin + (total - size) * i // max(1, chunks - 1))
            out.append(fh.read(size))
        return b"".join(out)
