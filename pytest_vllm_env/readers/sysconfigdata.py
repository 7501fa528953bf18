"""A Python installation's ``_sysconfigdata_*.py``: its ``build_time_vars``, read as data.

``sysconfig`` takes the include dir, the compiler and the ABI flags of an interpreter from
this module of its own standard library (``lib/pythonX.Y/_sysconfigdata_{abiflags}_linux_
{multiarch}.py``: ``_sysconfigdata__linux_x86_64-linux-gnu.py`` on Debian, conda-forge and
python-build-standalone alike). It is a literal dict, so :func:`ast.literal_eval` reads it
without running anything of the judged env.
"""

from __future__ import annotations

import ast
from typing import Any

KEYS = ("INCLUDEPY", "prefix", "ABIFLAGS", "VERSION", "MULTIARCH", "CC", "LDVERSION", "SOABI")


def parse(source: str) -> dict[str, Any]:
    """The selected :data:`KEYS` of ``build_time_vars``; ValueError when there is none."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"does not parse: {exc.msg}") from None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "build_time_vars"
            and isinstance(node.value, ast.Dict)
        ):
            out: dict[str, Any] = {}
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in KEYS:
                    try:
                        out[str(key.value)] = ast.literal_eval(value)
                    except ValueError:
                        continue
            return out
    raise ValueError("no build_time_vars dict")
