"""Which overrides of the FlashAttention version the env's vLLM reads, from its own source.

vLLM picks the FA version in ``get_flash_attn_version`` (``fa_utils.py``): FA3 on every sm 9.x
where ``_vllm_fa3_C`` loads, FA4 on sm 10.x where it is supported, FA2 elsewhere; then "2.
override if passed by environment or config". What it overrides from moved between releases:

- 0.8 to 0.12 (``vllm/vllm_flash_attn/fa_utils.py``, then ``vllm/attention/utils/
  fa_utils.py``): ``envs.VLLM_FLASH_ATTN_VERSION``, the variable of that name;
- 0.26.0 and 0.33.0 (``vllm/v1/attention/backends/fa_utils.py``):
  ``vllm_config.attention_config.flash_attn_version``, set with ``--attention-config`` /
  ``-ac`` (``engine/arg_utils.py``; ``--attention-config.flash_attn_version=2`` is the
  spelling vLLM's own TurboQuant warning names); ``VLLM_FLASH_ATTN_VERSION`` is no longer in
  ``envs.py`` and does nothing.

The reader finds the function and says which of the two it reads (attribute names in its
body), so a release nobody listed is read the same way. A reader: it never judges.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from pytest_vllm_env.readers.pyrules import function_named, parse_or_none

# where get_flash_attn_version lives, newest first (package-relative paths)
FA_UTILS = (
    "vllm/v1/attention/backends/fa_utils.py",  # 0.13 .. 0.33.0
    "vllm/attention/utils/fa_utils.py",  # 0.9 .. 0.12
    "vllm/vllm_flash_attn/fa_utils.py",  # 0.8
)
FUNCTION = "get_flash_attn_version"
ENV_VAR = "VLLM_FLASH_ATTN_VERSION"


@dataclass(frozen=True)
class FaOverrides:
    """What ``get_flash_attn_version`` of one vLLM reads to override its default.

    ``where``: ``path:get_flash_attn_version`` ("" when the function was not found);
    ``env_var``: it reads ``envs.VLLM_FLASH_ATTN_VERSION``; ``config``: it reads
    ``attention_config.flash_attn_version``."""

    where: str = ""
    env_var: bool = False
    config: bool = False

    @property
    def found(self) -> bool:
        return bool(self.where)


def parse(text: str | None, rel: str) -> FaOverrides:
    """The overrides ``get_flash_attn_version`` in ``text`` (the file ``rel``) reads."""
    func = function_named(parse_or_none(text), FUNCTION)
    if func is None:
        return FaOverrides()
    env_var = config = False
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute):
            if node.attr == ENV_VAR:
                env_var = True
            elif (
                node.attr == "flash_attn_version"
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "attention_config"
            ):
                config = True
        elif isinstance(node, ast.Constant) and node.value == ENV_VAR:
            env_var = True  # os.environ.get("VLLM_FLASH_ATTN_VERSION")
    return FaOverrides(f"{rel}:{FUNCTION}", env_var, config)
