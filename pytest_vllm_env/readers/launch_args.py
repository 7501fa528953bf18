"""Engine arguments the user gives vLLM, as the suite is told them: ``--vllm-additional-config``
(vLLM's ``--additional-config`` / ``LLM(additional_config=...)``, a JSON object). Issue 22 adds
the tensor-parallel size, ``quantization=`` and serve-command files here."""

from __future__ import annotations

import json
from typing import Any

# what a request for vLLM's Triton Gated-DeltaNet prefill looks like (the example in errors)
TRITON_REQUEST = {"gdn_prefill_backend": "triton"}


def parse_additional_config(text: str | None) -> dict[str, Any]:
    """``--vllm-additional-config`` as a dict; raises ValueError naming what is wrong."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{text!r} is not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{text!r} is not a JSON object such as {json.dumps(TRITON_REQUEST)}")
    return value
