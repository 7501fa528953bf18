"""The CUDA tools the run-time compilers call (ptxas, nvcc), and the CUDA release each reports.

A binary is run once with ``--version`` (its whole process group killed past the timeout,
through :mod:`pytest_vllm_env.proc`), and the release is read as Triton (``knobs.NvidiaTool.
from_path``), FlashInfer (``cpp_ext.get_cuda_version``) and DeepGEMM read it: ``release
(\\d+\\.\\d+)``. The answer is cached per path and file identity (:mod:`pytest_vllm_env.cache`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_vllm_env import files, proc
from pytest_vllm_env.facts.static_tools import cuda_tool_release

RELEASE = re.compile(r"release (\d+\.\d+)")
VERSION_TIMEOUT = 30.0
# A fact getter: (name, compute, deps) -> value, the session's FactCache.get.
Facts = Callable[[str, Callable[[], Any], list[str]], Any]


@dataclass(frozen=True)
class Binary:
    """One tool binary and the CUDA release it reports; ``problem`` when it cannot be used."""

    path: str
    release: str | None = None
    how: str = ""  # "`ptxas --version`", "the measured bundle of triton 3.6.0"
    problem: str = ""
    not_run: str = ""  # --vllm-static: why it was not run (``release`` then from its files)


def release_of(path: Path, facts: Facts | None = None, env: Any = None) -> Binary:
    """Run ``path --version`` once (cached) and read its CUDA release. Not run
    (``--vllm-static``): the release the env's files give it (the package that installed it:
    :func:`pytest_vllm_env.facts.static_tools.cuda_tool_release`), when ``env`` is given."""

    def compute() -> dict[str, Any]:
        if not files.regular(path):
            return asdict(Binary(str(path), problem=files.describe(path)))
        result = proc.run(
            [path, "--version"], timeout=VERSION_TIMEOUT, env={"PATH": "/usr/bin:/bin"}
        )
        if result.not_run:
            return asdict(Binary(str(path), problem=result.describe(), not_run=result.not_run))
        match = RELEASE.search(result.output)
        if not result.ok or match is None:
            return asdict(Binary(str(path), problem=result.describe()))
        return asdict(Binary(str(path), match.group(1), f"`{path.name} --version`"))

    data = facts("tool-release", compute, [str(path)]) if facts else compute()
    binary = Binary(**data)
    if binary.not_run and env is not None:
        version, how = cuda_tool_release(env, path)
        if version:
            release = ".".join(version.split(".")[:2])
            return Binary(binary.path, release, f"not run; {how}", not_run=binary.not_run)
    return binary


def torch_cuda_or_why(env: Any) -> tuple[str | None, str]:
    """``torch.version.cuda`` of the env's torch, read from ``torch/version.py``, and why
    that file could not be read ("" when it was, or torch or the file is absent): a FIFO
    there is an unknown CUDA, not a CPU-only torch."""
    text, why = env.package_text_or_why("torch", "torch/version.py")
    if text is None:
        return None, why
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", text, re.M)
    return (match.group(1) if match else None), ""
