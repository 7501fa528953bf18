"""Everything the load plan needs from the env's vLLM source, read once (``ast``, never
imported) and kept as JSON: the loader-wide rules, the model class of each architecture
asked for, the KV-scale renames and ModelOpt's config classes. The recorded facts of the
real 0.26.0 and 0.33.0 wheels are in fixtures/loader_truth/ (tests/test_loader_truth.py
reads them; the integration tier checks they equal a fresh read of the wheels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.readers import (
    vllm_kv_naming,
    vllm_loader,
    vllm_model_file,
    vllm_model_loading,
    vllm_source,
)
from pytest_vllm_env.readers.vllm_kv_naming import KvScaleNaming
from pytest_vllm_env.readers.vllm_loader import LoaderSource
from pytest_vllm_env.readers.vllm_model_file import ModelFile
from pytest_vllm_env.readers.vllm_source import ModelOptSource


@dataclass
class VllmLoaderFacts:
    """What one vLLM's source says (see the module docstring)."""

    version: str | None
    loader: LoaderSource
    kv: KvScaleNaming
    modelopt: ModelOptSource
    models: dict[str, ModelFile] = field(default_factory=dict)
    registry: dict[str, tuple[str, str]] = field(default_factory=dict)
    # source files that are there and cannot be read (a FIFO, a device, a dangling link):
    # "path: cannot be read: why"; the plan built without them would be a guess
    unreadable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "loader": self.loader.to_json(),
            "kv": self.kv.to_json(),
            "modelopt": self.modelopt.to_json(),
            "models": {k: v.to_json() for k, v in sorted(self.models.items())},
            "registry": {k: list(v) for k, v in sorted(self.registry.items())},
        }
        if self.unreadable:  # absent from a healthy read (the recorded truths stay as they are)
            out["unreadable"] = list(self.unreadable)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VllmLoaderFacts:
        return cls(
            data.get("version"),
            LoaderSource.from_json(data["loader"]),
            KvScaleNaming.from_json(data["kv"]),
            ModelOptSource.from_json(data["modelopt"]),
            {k: ModelFile.from_json(v) for k, v in data["models"].items()},
            {k: (v[0], v[1]) for k, v in data.get("registry", {}).items()},
            list(data.get("unreadable", [])),
        )


def source_loader(root: Path, unreadable: list[str] | None = None):
    """``load(relative path) -> text | None`` over an installed vLLM (``root`` holds the
    ``vllm`` package): the one door, through :mod:`pytest_vllm_env.files`. None for a file
    that is not there; one that is there and cannot be read (a FIFO...) is None too, and its
    reason goes to ``unreadable``: absent is "this vLLM has no such file", unreadable is not."""

    def load(rel: str) -> str | None:
        text, why = files.read_text_if_present(root / rel, files.SOURCE)
        if why and unreadable is not None and why not in unreadable:
            unreadable.append(why)
        return text

    return load


def read(root: Path, archs: Sequence[str], version: str | None = None) -> VllmLoaderFacts:
    """The facts of the vLLM installed under ``root`` (its site-packages) for ``archs``."""
    unreadable: list[str] = []
    load = source_loader(root, unreadable)
    registry = vllm_model_loading.parse_registry_map(load(vllm_model_file.REGISTRY_PY) or "")
    kv = vllm_kv_naming.parse(
        load(vllm_kv_naming.BASE_CONFIG_PY),
        load(vllm_kv_naming.MODELS_UTILS_PY),
        load(vllm_kv_naming.WEIGHT_UTILS_PY),
    )
    text = load(vllm_source.MODELOPT_PY)
    modelopt = (
        vllm_source.parse_modelopt(text, vllm_source.MODELOPT_PY)
        if text is not None
        else vllm_source.not_found(f"{vllm_source.MODELOPT_PY} is not there")
    )
    models = {a: vllm_model_file.read_model_file(a, registry, load) for a in archs}
    keep = {a: registry[a] for a in archs if a in registry}
    loader = vllm_loader.parse(load)
    return VllmLoaderFacts(version, loader, kv, modelopt, models, keep, unreadable)
