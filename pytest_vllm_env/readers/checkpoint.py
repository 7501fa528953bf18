"""Locate a ModelOpt-quantized Hugging Face checkpoint and read its facts, header-only.

A checkpoint is a directory (or a Hugging Face repo id already in the local hub cache:
resolved with ``local_files_only=True``, never downloaded at test time) holding
``config.json``, usually ``hf_quant_config.json`` (ModelOpt's own file), and either one
``model.safetensors`` or shards listed by ``model.safetensors.index.json``.

Facts are the two JSON files and every tensor's name, dtype, shape and byte range from
the safetensors headers. Nothing here decides pass or fail: a file that cannot be read
becomes a :class:`Problem` naming it, for ``modelopt.files-readable`` to judge.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress, repeat
from operator import itemgetter, or_
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.readers.safetensors_header import (
    SafetensorsError,
    TensorInfo,
    read_float_sample,
    read_header,
    read_many_floats,
)
from pytest_vllm_env.readers.weight_sample import WeightSample, sample_of
from pytest_vllm_env.tables.quant_formats import FLOAT_DTYPES

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# config.json files are small; one that is not is not a config (and must not be slurped).
MAX_JSON_BYTES = 64 * 1024 * 1024
SCALE_SUFFIXES = ("weight_scale", "weight_scale_2", "input_scale", "k_scale", "v_scale")
# compressed-tensors NVFP4's global scales, fine-grained FP8's block scales (issue 22)
SCALE_SUFFIXES += ("weight_global_scale", "input_global_scale", "weight_scale_inv")


class CheckpointNotFound(Exception):
    """The spec names neither a directory nor a cached Hugging Face repo."""


@dataclass(frozen=True)
class Problem:
    """A file of the checkpoint that could not be read, and why."""

    path: Path
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class Checkpoint:
    """What a checkpoint's files say (no weights read)."""

    spec: str
    path: Path
    config: dict[str, Any] | None = None
    hf_quant_config: dict[str, Any] | None = None
    shards: list[Path] = field(default_factory=list)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    located: bool = True

    @classmethod
    def not_found(cls, spec: str, why: str) -> Checkpoint:
        """A spec that names nothing: one problem, and every other check skips."""
        return cls(spec=spec, path=Path(spec), problems=[Problem(Path(spec), why)], located=False)

    @cached_property
    def modules(self) -> dict[str, dict[str, TensorInfo]]:
        """Tensors grouped by module: ``{"model.layers.0.mlp.up_proj": {"weight": ...,
        "weight_scale": ..., "input_scale": ...}}``; computed once for every judgement."""
        modules: dict[str, dict[str, TensorInfo]] = {}
        for name, info in self.tensors.items():
            prefix, _, leaf = name.rpartition(".")
            parts = modules.get(prefix)
            if parts is None:
                parts = modules[prefix] = {}
            parts[leaf] = info
        return modules

    @property
    def label(self) -> str:
        """How messages and test ids name it: the repo id, else the folder's name."""
        return short_name(self.spec)

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        """config.json's ``quantization_config`` block (``text_config``'s for some VL models,
        where vLLM also looks)."""
        if not isinstance(self.config, dict):
            return None
        block = self.config.get("quantization_config")
        if block is None and isinstance(self.config.get("text_config"), dict):
            block = self.config["text_config"].get("quantization_config")
        return block if isinstance(block, dict) else None

    @property
    def config_readable(self) -> bool:
        return self.located and not any(p.path.name == "config.json" for p in self.problems)

    @property
    def quant_files_readable(self) -> bool:
        names = {"config.json", "hf_quant_config.json"}
        return self.located and not any(p.path.name in names for p in self.problems)

    @property
    def tensors_readable(self) -> bool:
        return self.located and not any(
            p.path.name not in ("config.json", "hf_quant_config.json") for p in self.problems
        )


def looks_like_repo_id(spec: str) -> bool:
    """``org/name`` and not a path that exists: a Hugging Face repo id."""
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()


def short_name(spec: str) -> str:
    """``org/name`` stays; a path becomes its last part (``.../tiny-fp8`` -> ``tiny-fp8``)."""
    if looks_like_repo_id(spec):
        return spec
    return Path(spec.rstrip("/")).name or spec


def resolve(spec: str, base: Path | None = None) -> tuple[Path, str]:
    """``spec`` -> (directory, how it was found). A path that exists wins; else a repo id
    (``org/name``) looked up in the local hub cache only."""
    candidate = Path(os.path.expanduser(spec))
    if not candidate.is_absolute() and base is not None:
        candidate = base / candidate
    if candidate.is_dir():
        return candidate, "directory"
    if candidate.exists():
        raise CheckpointNotFound("not a directory (pass the checkpoint's folder)")
    if looks_like_repo_id(spec):
        from pytest_vllm_env.readers.hf_cache import NotCached, snapshot

        try:  # as huggingface_hub's snapshot_download(local_files_only=True) finds it
            folder = snapshot(spec)
        except NotCached as exc:
            raise CheckpointNotFound(
                "no such directory, and not in the local Hugging Face cache "
                f"({exc.reason}). Download it first, outside the test run: "
                f"`hf download {spec}`"
            ) from None
        return folder, "Hugging Face cache"
    raise CheckpointNotFound("no such directory")


def read_checkpoint(spec: str, path: Path) -> Checkpoint:
    """Read config.json, hf_quant_config.json, the index and every shard's header."""
    ckpt = Checkpoint(spec=spec, path=path)
    ckpt.config = _read_json(path / "config.json", ckpt.problems, required=True)
    absurd = absurd_sizes(ckpt.config) if ckpt.config is not None else []
    if absurd:
        # read as unreadable: every judgement that loops or sizes by them skips
        ckpt.problems.append(
            Problem(
                path / "config.json",
                f"{'; '.join(absurd[:3])}: no model is that large, this is not a real config",
            )
        )
        ckpt.config = None
    ckpt.hf_quant_config = _read_json(path / "hf_quant_config.json", ckpt.problems)
    ckpt.shards, index = _shards(path, ckpt.problems)
    for shard in ckpt.shards:
        try:
            header = read_header(shard)
        except SafetensorsError as exc:
            ckpt.problems.append(Problem(exc.path, exc.what))
            continue
        for name in sorted(ckpt.tensors.keys() & header.tensors.keys()):
            other = ckpt.tensors[name].file.name
            ckpt.problems.append(
                Problem(shard, f"tensor {name!r} is also in {other}; which one loads is undefined")
            )
        ckpt.tensors.update(header.tensors)
    if index is not None and len(ckpt.shards) == len(set(index.values())):
        # An index from another export (or a shard from another download) names tensors
        # no shard holds: they would silently not load.
        absent = sorted(index.keys() - ckpt.tensors.keys())
        if absent:
            where = sorted({index[n] for n in absent})
            ckpt.problems.append(
                Problem(
                    path / INDEX,
                    f"maps {len(absent)} tensor(s) to {', '.join(where)} that no shard holds "
                    f"(e.g. {absent[0]!r})",
                )
            )
    return ckpt


# What no real model's config exceeds (the largest today: ~200 layers, ~1,000 heads, a
# hidden size of ~30,000, a vocabulary of ~1M, ~1,000 experts); far above them, far below what
# a loop over them (one per layer: checks/gdn_prefill.py gdn_layers) can take.
PLAUSIBLE = {
    "num_hidden_layers": 100_000,
    "num_layers": 100_000,
    "n_layer": 100_000,
    "num_attention_heads": 1_000_000,
    "num_key_value_heads": 1_000_000,
    "hidden_size": 100_000_000,
    "intermediate_size": 1_000_000_000,
    "vocab_size": 1_000_000_000,
    "num_experts": 10_000_000,
    "num_local_experts": 10_000_000,
    "n_routed_experts": 10_000_000,
    "head_dim": 100_000_000,
    "full_attention_interval": 100_000,
}


def absurd_sizes(config: dict[str, Any]) -> list[str]:
    """``key = value (at most N)`` for each size in ``config`` (and its nested configs, as
    ``text_config``) past what any real model has."""
    out: list[str] = []
    tables = [("", config)]
    tables += [(f"{k}.", v) for k, v in config.items() if isinstance(v, dict)]
    for where, table in tables:
        for key, most in PLAUSIBLE.items():
            value = table.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > most:
                out.append(f"{where}{key} = {value} (at most {most:,} is plausible)")
    return out


def _read_json(path: Path, problems: list[Problem], *, required: bool = False) -> dict | None:
    """A JSON object read through :mod:`pytest_vllm_env.files` (a FIFO, a device or a file
    over :data:`MAX_JSON_BYTES` is refused, never read); a problem when it cannot be."""
    try:
        data = files.load_json(path, MAX_JSON_BYTES)
    except FileNotFoundError:
        if required:
            problems.append(Problem(path, "missing: every Hugging Face checkpoint has one"))
        return None
    except OSError as exc:  # a symlink loop, no permission, not a regular file, too big
        problems.append(Problem(path, f"cannot read: {exc.strerror or exc}"))
        return None
    except ValueError as exc:  # bad JSON (UnicodeDecodeError is one)
        problems.append(Problem(path, f"not JSON ({exc})"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(path, "JSON but not an object"))
        return None
    return data


def _shards(path: Path, problems: list[Problem]) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files to read, and the index's weight_map when there is one."""
    index_path = path / INDEX
    index = _read_json(index_path, problems) if _exists(index_path) else None
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not set(map(type, weight_map.values())) <= {str}:
            problems.append(Problem(index_path, "no weight_map object of tensor -> file"))
            return [], None
        shards: list[Path] = []
        counts = Counter(weight_map.values())  # one pass: not one per shard name
        for name in sorted(counts):
            shard = path / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                problems.append(
                    Problem(index_path, f"shard {name!r} points outside the checkpoint")
                )
            elif not _exists(shard):
                problems.append(
                    Problem(shard, f"missing, though {INDEX} maps {counts[name]} tensors to it")
                )
            else:
                shards.append(shard)
        return shards, weight_map
    if _exists(index_path):
        return [], None  # the index was unreadable: already a problem
    single = path / SINGLE
    if _exists(single):
        return [single], None
    found = sorted(p for p in path.glob("*.safetensors"))
    if not found:
        problems.append(Problem(path / SINGLE, f"missing: no {SINGLE}, {INDEX} or *.safetensors"))
    return found, None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def scale_tensors(ckpt: Checkpoint) -> list[TensorInfo]:
    """The only tensors whose bytes we read: float per-tensor/per-channel scales. NVFP4's
    FP8 block scales are left out: an all-zero weight block legitimately has a zero scale."""
    # Whole-list operations (loops in C): the dtype first, then the name's last part (one
    # of SCALE_SUFFIXES, as ``.``-suffix or the whole name); thousands of tensors.
    infos = ckpt.tensors.values()
    floats = list(compress(infos, map(_FLOAT_SCALE_DTYPES.__contains__, map(_DTYPE, infos))))
    names = list(map(_NAME, floats))
    leaf_ok = map(
        or_,
        map(str.endswith, names, repeat(_DOTTED_SUFFIXES)),
        map(_SCALE_LEAVES.__contains__, names),
    )
    return list(compress(floats, leaf_ok))


_NAME, _DTYPE = itemgetter(0), itemgetter(1)
_SCALE_LEAVES, _FLOAT_SCALE_DTYPES = frozenset(SCALE_SUFFIXES), FLOAT_DTYPES
_DOTTED_SUFFIXES = tuple(f".{s}" for s in SCALE_SUFFIXES)


def read_scales(ckpt: Checkpoint) -> tuple[dict[str, list[float]], dict[str, str]]:
    """(name -> values, name -> why it could not be read) for :func:`scale_tensors`."""
    wanted = scale_tensors(ckpt)
    try:
        return read_many_floats(wanted), {}
    except (SafetensorsError, ValueError):
        pass  # find out which ones, one by one
    values: dict[str, list[float]] = {}
    unread: dict[str, str] = {}
    for tensor in wanted:
        try:
            values.update(read_many_floats([tensor]))
        except (SafetensorsError, ValueError) as exc:
            unread[tensor.name] = str(exc)
    return values, unread


# A correct export has no float weight beside a scale; a broken one may have many: sampling
# a few tells which kind they are without reading gigabytes.
MAX_SAMPLED_WEIGHTS = 32


def float_weights_to_sample(modules: dict[str, dict[str, TensorInfo]]) -> list[TensorInfo]:
    """The weights whose numbers are worth a sample: float-stored weights of modules that
    carry a ``weight_scale`` (rare; a correct export has none)."""
    out = []
    for parts in modules.values():
        weight = parts.get("weight")
        if weight is not None and weight.dtype in FLOAT_DTYPES and "weight_scale" in parts:
            out.append(weight)
    return out


def read_weight_samples(ckpt: Checkpoint) -> dict[str, WeightSample]:
    """What about 64k values of each float-stored weight of a module with scales say (at
    most :data:`MAX_SAMPLED_WEIGHTS` of them): are they FP8 numbers, in range, which
    magnitude? The only weight bytes the suite reads, and only for such modules; one that
    cannot be read is left out (``modelopt.tensors-complete`` then says it was not read)."""
    samples: dict[str, WeightSample] = {}
    for tensor in float_weights_to_sample(ckpt.modules)[:MAX_SAMPLED_WEIGHTS]:
        try:
            samples[tensor.name] = sample_of(read_float_sample(tensor))
        except (SafetensorsError, ValueError):
            continue
    return samples
