"""The FlashAttention version the user forces on the env's vLLM, and whether that vLLM reads it.

On a Hopper GPU vLLM runs FA3 wherever ``_vllm_fa3_C`` loads, so FA2's kernels (and the PTX
they carry) are not launched there (``driver.ptx-jit``). A user who forces FA2 changes that:
vLLM's ``get_flash_attn_version`` ("2. override if passed by environment or config") then
returns 2 on sm 9.x, and FA2's SASS or PTX for the GPU is what runs. Which override a vLLM
reads is read from its own ``fa_utils.py`` (:mod:`pytest_vllm_env.readers.vllm_fa_version`):
``VLLM_FLASH_ATTN_VERSION`` up to 0.12, ``attention_config.flash_attn_version``
(``--attention-config``) in 0.26.0 and 0.33.0. Where the user sets it is read statically:
the env's activation variables and its Pixi tasks' ``vllm serve`` options
(:func:`pytest_vllm_env.facts.vllm_settings.settings_of`), and the launch arguments the suite
was given (``--vllm-serve-args`` / ini ``vllm_serve_args``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.vllm_settings import settings_of
from pytest_vllm_env.readers import vllm_fa_version as reader
from pytest_vllm_env.readers.serve_args import ServeArgsError, parse_tokens


@dataclass(frozen=True)
class FaVersion:
    """``forced``: the FA version the env's vLLM is forced to (None: its default), from
    ``forced_from``; ``rule``: the function that reads it (``path:get_flash_attn_version``, or
    why it could not be read); ``ignored``: overrides the user gives that this vLLM does not
    read (each with where, and what it reads instead)."""

    forced: int | None = None
    forced_from: str = ""
    rule: str = ""
    ignored: tuple[str, ...] = ()


def read(env: PixiEnv, launch_fa: int | None = None, launch_from: str = "") -> FaVersion:
    """The FA version forced on ``env``'s vLLM: ``launch_fa`` (``--vllm-serve-args``'s
    ``--attention-config``) first, then the env's own settings; a setting this vLLM does not
    read is listed in ``ignored``, never taken."""
    if env.dist("vllm") is None or env.locked is not None:
        return FaVersion()
    overrides, rule = reader.FaOverrides(), ""
    for rel in reader.FA_UTILS:
        text, why = env.package_text_or_why("vllm", rel)
        if why:  # there and unreadable: which override it reads is unknown, take either
            rule = why
            break
        if text is not None:
            overrides = reader.parse(text, rel)
            rule = overrides.where or f"{rel}: no {reader.FUNCTION}"
            break
    unknown = not overrides.found
    vllm = f"vLLM {env.version_of('vllm')}"
    given: list[tuple[str, int, str]] = []  # (kind, version, where)
    if launch_fa is not None:
        given.append(("config", launch_fa, launch_from))
    for s in settings_of(env):
        if s.kind == "env" and s.name == reader.ENV_VAR:
            version = _version(s.value)
            if version is not None:
                given.append(("env", version, f"{s.name}={s.value} ({s.where})"))
        elif s.kind == "flag" and s.name == "--attention-config":
            try:
                got = parse_tokens([s.value, *([s.arg] if s.arg else [])], s.where)
            except ServeArgsError:
                continue  # settings.unread and vLLM's parser judge a malformed option
            if got.flash_attn_version is not None:
                shown = f"{s.value} {s.arg}".strip()
                given.append(("config", got.flash_attn_version, f"{shown} ({s.where})"))
    forced, forced_from, ignored = None, "", []
    for kind, version, where in given:
        read_it = unknown or (overrides.env_var if kind == "env" else overrides.config)
        if not read_it:
            instead = (
                "attention_config.flash_attn_version (--attention-config.flash_attn_version=N)"
                if overrides.config
                else f"{reader.ENV_VAR}"
            )
            ignored.append(f"{where}: {vllm} does not read it ({rule} reads {instead})")
        elif forced is None:
            forced, forced_from = version, where
    return FaVersion(forced, forced_from, rule, tuple(ignored))


def _version(value: str) -> int | None:
    """``VLLM_FLASH_ATTN_VERSION``'s value as vLLM's ``maybe_convert_int`` takes it."""
    try:
        return int(value.strip().strip("\"'"))
    except ValueError:
        return None
