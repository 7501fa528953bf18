"""The launch arguments a user starts vLLM with, read from what they already have: a ``vllm
serve`` command line, a shell script or recipe holding one, vLLM's own ``--config`` YAML
file, or a Python recipe calling ``LLM(...)``. Only the arguments that change how a
checkpoint loads are taken: the tensor-parallel size, ``quantization`` and ``moe_backend``
(``--moe-backend``, ``KernelConfig.moe_backend``: the MoE experts' kernel, in place of
vLLM's choice).

Spellings (vLLM 0.26.0 and 0.33.0 ``engine/arg_utils.py``: ``--tensor-parallel-size`` /
``-tp``, ``--quantization`` / ``-q``; ``--config FILE`` reads a YAML mapping of the same
names, dashes or underscores; ``LLM(tensor_parallel_size=..., quantization=...)``). Also the
FlashAttention version forced through ``--attention-config`` / ``-ac`` (a JSON object, or
the dotted ``--attention-config.flash_attn_version=2``; ``LLM(attention_config={...})``),
which decides whether FA2 runs on a Hopper GPU (``driver.ptx-jit``).

A reader: it says what the text holds, never whether it is right; text it cannot read is a
:class:`ServeArgsError` naming the place, which the plugin turns into a usage error.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_vllm_env import files

TP_FLAGS = ("--tensor-parallel-size", "-tp")
Q_FLAGS = ("--quantization", "-q")
MOE_FLAGS = ("--moe-backend",)
# --kv-cache-dtype (engine/arg_utils.py; "auto" takes the checkpoint's): attention-backend
KV_FLAGS = ("--kv-cache-dtype",)
AC_FLAGS = ("--attention-config", "-ac")
AC_DOTTED = tuple(f"{f}.flash_attn_version" for f in AC_FLAGS)  # vLLM's nested-key syntax
# LLM(attention_config={"flash_attn_version": 2}) or AttentionConfig(flash_attn_version=2)
PY_FA = re.compile(
    r"""\battention_config\s*=\s*(?:\w+\()?\{?[^)}]*?\bflash_attn_version["']?\s*[:=]\s*(\d+)"""
)
PY_KV = re.compile(r"""\bkv_cache_dtype["']?\s*[=:]\s*["']([\w.-]+)["']""")
PY_TP = re.compile(r"\btensor_parallel_size\s*=\s*(\d+)")
PY_Q = re.compile(r"""\bquantization\s*=\s*(?:["']([\w.-]+)["']|None)""")
# LLM(moe_backend="marlin") or kernel_config={"moe_backend": "marlin"}
PY_MOE = re.compile(r"""\bmoe_backend["']?\s*[=:]\s*["']([\w.-]+)["']""")


class ServeArgsError(ValueError):
    """Launch arguments that cannot be read (what, and where)."""


@dataclass(frozen=True)
class ServeArgs:
    """``tensor_parallel_size`` and ``quantization`` as given (None: not given), and where
    each came from (for messages)."""

    tensor_parallel_size: int | None = None
    quantization: str | None = None
    tp_from: str = ""
    q_from: str = ""
    moe_backend: str | None = None  # as vLLM normalizes it: lower case, "-" -> "_"
    moe_from: str = ""
    # attention_config.flash_attn_version (``--attention-config.flash_attn_version=2``,
    # ``--attention-config '{"flash_attn_version": 2}'``, ``-ac``): the FA version vLLM >= 0.13
    # is forced to (v1/attention/backends/fa_utils.py:get_flash_attn_version)
    flash_attn_version: int | None = None
    fa_from: str = ""
    kv_cache_dtype: str | None = None  # --kv-cache-dtype as given
    kv_from: str = ""


def _moe(value: str) -> str:
    # config/kernel.py:KernelConfig._normalize_moe_backend (and arg_utils' --moe-backend type)
    return value.lower().replace("-", "_")


def _int(value: str, where: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ServeArgsError(
            f"{where}: tensor-parallel size {value!r} is not a whole number"
        ) from None
    if number < 1:
        raise ServeArgsError(f"{where}: tensor-parallel size {number} is not >= 1")
    return number


def _fa(value: str, where: str) -> int:
    """A ``flash_attn_version`` as vLLM's ``AttentionConfig`` takes it: 2, 3 or 4."""
    if value.strip() not in ("2", "3", "4"):
        raise ServeArgsError(f"{where}: flash_attn_version {value!r} is not 2, 3 or 4")
    return int(value)


def _fa_of_json(value: str, where: str) -> int | None:
    """``flash_attn_version`` of an ``--attention-config`` JSON object (None when absent)."""
    try:
        data = files.loads_json(value)
    except ValueError:
        raise ServeArgsError(f"{where}: --attention-config {value!r} is not JSON") from None
    if not isinstance(data, dict) or data.get("flash_attn_version") is None:
        return None
    return _fa(str(data["flash_attn_version"]), where)


def parse_tokens(
    tokens: list[str], where: str, read_config: Callable[[str], str] | None = None
) -> ServeArgs:
    """The arguments of one command line's tokens (``vllm serve MODEL`` may lead)."""
    tp = q = moe = fa = kv = None
    tp_from = q_from = moe_from = fa_from = kv_from = ""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name, eq, value = tok.partition("=")
        if name in AC_DOTTED + AC_FLAGS:
            if not eq:
                if i + 1 >= len(tokens):
                    raise ServeArgsError(f"{where}: {name} has no value")
                value = tokens[i + 1]
                i += 1
            got = _fa(value, where) if name in AC_DOTTED else _fa_of_json(value, where)
            if got is not None:
                fa, fa_from = got, f"{name} in {where}"
        elif name in TP_FLAGS + Q_FLAGS + MOE_FLAGS + KV_FLAGS + ("--config",):
            if not eq:
                if i + 1 >= len(tokens):
                    raise ServeArgsError(f"{where}: {name} has no value")
                value = tokens[i + 1]
                i += 1
            if name in TP_FLAGS:
                tp, tp_from = _int(value, where), f"{name} in {where}"
            elif name in Q_FLAGS:
                q, q_from = value, f"{name} in {where}"
            elif name in MOE_FLAGS:
                moe, moe_from = _moe(value), f"{name} in {where}"
            elif name in KV_FLAGS:
                kv, kv_from = value, f"{name} in {where}"
            elif read_config is not None:
                sub = parse_yaml(read_config(value), f"{value} (--config of {where})")
                tp, tp_from = (
                    (sub.tensor_parallel_size, sub.tp_from)
                    if tp is None and sub.tensor_parallel_size
                    else (tp, tp_from)
                )
                q, q_from = (
                    (sub.quantization, sub.q_from)
                    if q is None and sub.quantization
                    else (q, q_from)
                )
                if moe is None and sub.moe_backend:
                    moe, moe_from = sub.moe_backend, sub.moe_from
                if kv is None and sub.kv_cache_dtype:
                    kv, kv_from = sub.kv_cache_dtype, sub.kv_from
        i += 1
    return ServeArgs(tp, q, tp_from, q_from, moe, moe_from, fa, fa_from, kv, kv_from)


def parse_yaml(text: str, where: str) -> ServeArgs:
    """vLLM's ``--config`` file: a flat YAML mapping (``tensor-parallel-size: 2``)."""
    tp = q = moe = kv = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key = key.strip().replace("_", "-")
        value = value.strip().strip("'\"")
        if key in ("tensor-parallel-size", "tp"):
            tp = _int(value, where)
        elif key == "quantization" and value and value.lower() not in ("null", "none", "~"):
            q = value
        elif key == "moe-backend" and value:
            moe = _moe(value)
        elif key == "kv-cache-dtype" and value:
            kv = value
    return ServeArgs(
        tp,
        q,
        f"tensor-parallel-size in {where}" if tp else "",
        f"quantization in {where}" if q else "",
        moe,
        f"moe-backend in {where}" if moe else "",
        kv_cache_dtype=kv,
        kv_from=f"kv-cache-dtype in {where}" if kv else "",
    )


def parse_text(text: str, where: str, read_config: Callable[[str], str] | None = None) -> ServeArgs:
    """A command line, a shell script / recipe (its ``vllm serve`` line, ``\\``-continued),
    a YAML config, or a Python recipe (``LLM(...)`` keyword arguments)."""
    joined = re.sub(r"\\\r?\n", " ", text)
    lines = [ln for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    serve = [
        ln
        for ln in lines
        if re.search(
            r"\bvllm\s+serve\b|--tensor-parallel-size|--quantization|--moe-backend"
            r"|--attention-config|--kv-cache-dtype|(^|\s)-(tp|ac)\s",
            ln,
        )
    ]
    if serve:
        out = ServeArgs()
        for ln in serve:
            try:
                tokens = shlex.split(ln, comments=True)
            except ValueError as exc:
                raise ServeArgsError(f"{where}: cannot split {ln.strip()[:80]!r} ({exc})") from None
            got = parse_tokens(tokens, where, read_config)
            out = ServeArgs(
                got.tensor_parallel_size or out.tensor_parallel_size,
                got.quantization or out.quantization,
                got.tp_from or out.tp_from,
                got.q_from or out.q_from,
                got.moe_backend or out.moe_backend,
                got.moe_from or out.moe_from,
                got.flash_attn_version or out.flash_attn_version,
                got.fa_from or out.fa_from,
                got.kv_cache_dtype or out.kv_cache_dtype,
                got.kv_from or out.kv_from,
            )
        return out
    tp_m, q_m = PY_TP.search(text), PY_Q.search(text)
    moe_m, fa_m, kv_m = PY_MOE.search(text), PY_FA.search(text), PY_KV.search(text)
    if tp_m or q_m or moe_m or fa_m or kv_m:
        return ServeArgs(
            _int(tp_m.group(1), where) if tp_m else None,
            q_m.group(1) if q_m and q_m.group(1) else None,
            f"tensor_parallel_size= in {where}" if tp_m else "",
            f"quantization= in {where}" if q_m and q_m.group(1) else "",
            _moe(moe_m.group(1)) if moe_m else None,
            f"moe_backend= in {where}" if moe_m else "",
            _fa(fa_m.group(1), where) if fa_m else None,
            f"attention_config= in {where}" if fa_m else "",
            kv_m.group(1) if kv_m else None,
            f"kv_cache_dtype= in {where}" if kv_m else "",
        )
    if any(":" in ln for ln in lines):
        return parse_yaml(text, where)
    return parse_tokens(shlex.split(joined, comments=True), where, read_config)


def read(spec: str, base: Path) -> ServeArgs:
    """``--vllm-serve-args``: the arguments themselves, or ``@FILE`` (relative to ``base``)
    holding a command, script, YAML config or Python recipe."""

    def read_file(name: str, rel_to: Path = base) -> str:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else rel_to / path
        try:
            return files.read_text(path, files.CONFIG)
        except OSError as exc:
            raise ServeArgsError(f"cannot read {path}: {exc}") from None

    if spec.startswith("@"):
        name = spec[1:]
        path = Path(name).expanduser()
        path = path if path.is_absolute() else base / path
        text = read_file(name)
        return parse_text(text, str(path), lambda n: read_file(n, path.parent))
    try:
        return parse_text(spec, "--vllm-serve-args", read_file)
    except ValueError as exc:
        raise ServeArgsError(str(exc)) from None
