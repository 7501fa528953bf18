"""The env's vLLM attention backends (:mod:`pytest_vllm_env.readers.vllm_attn_backends`) and
what of the env they depend on: which packages their modules import that the env lacks
(FlashInfer: the backend is an ``ImportError``), and which FlashAttention libraries
``vllm/vllm_flash_attn`` holds (``_vllm_fa2_C``, ``_vllm_fa3_C``: what
``flash_attn_interface.is_fa_version_supported`` finds, so what ``get_flash_attn_version``
returns on the GPU)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import vllm_attn_backends as reader
from pytest_vllm_env.readers.vllm_attn_backends import AttnBackends

FA_DIR = "vllm/vllm_flash_attn"
# vllm_flash_attn/flash_attn_interface.py: FA2 is ``from vllm.vllm_flash_attn import
# _vllm_fa2_C``, FA3 ``_vllm_fa3_C`` (each: FAn_AVAILABLE, else the import's error)
FA_LIB = re.compile(r"^_vllm_fa(\d)_C(\.[\w.-]+)?\.so$")


@dataclass(frozen=True)
class VllmAttention:
    """``backends`` (None: vLLM not installed or its source unreadable: ``why``), ``absent``
    (import names the backends need that the env does not have), ``fa_libs`` (the FA versions
    whose library is in ``vllm/vllm_flash_attn``; None when that folder is not there)."""

    backends: AttnBackends | None = None
    absent: frozenset[str] = frozenset()
    fa_libs: tuple[int, ...] | None = None
    fa_dir: str = ""
    why: str = ""
    imports: tuple[str, ...] = field(default_factory=tuple)


def importable(env: PixiEnv, name: str) -> bool:
    """Does ``import name`` find something in the env's site-packages (a package folder, a
    module, an extension module)?"""
    for sp in env.site_packages:
        if (sp / name).is_dir() or (sp / f"{name}.py").is_file():
            return True
        if any(sp.glob(f"{name}.*.so")) or any(sp.glob(f"{name}.so")):
            return True
    return False


def fa_libraries(env: PixiEnv) -> tuple[tuple[int, ...] | None, str]:
    """The FA versions whose ``_vllm_faN_C`` library the env's vLLM ships, and the folder."""
    for sp in env.site_packages:
        folder = sp / FA_DIR
        if folder.is_dir():
            found = sorted(
                {int(m.group(1)) for p in folder.iterdir() if (m := FA_LIB.match(p.name))}
            )
            return tuple(found), str(folder)
    return None, ""


def read(env: PixiEnv) -> VllmAttention:
    """The attention facts of ``env``'s vLLM."""
    if env.dist("vllm") is None:
        return VllmAttention(why=f"vLLM is not installed in {env.prefix}")
    unreadable: list[str] = []

    def load(rel: str) -> str | None:
        text, why = env.package_text_or_why("vllm", rel)
        if why and why not in unreadable:
            unreadable.append(why)
        return text

    backends = reader.read(load)
    if unreadable and not backends.found:
        return VllmAttention(why=unreadable[0])
    imports = tuple(dict.fromkeys(m for b in backends.backends.values() for m in b.imports))
    absent = frozenset(m for m in imports if not importable(env, m))
    libs, folder = fa_libraries(env)
    return VllmAttention(backends, absent, libs, folder, "", imports)
