"""The mixed-precision (WNA16) kernels' shape rules as the env's own vLLM writes them, read
with ``ast`` (never imported): Marlin's thread tile and group sizes
(``quantization/utils/marlin_utils.py``: ``GPTQ_MARLIN_MIN_THREAD_N``/``_K``,
``MARLIN_SUPPORTED_GROUP_SIZES``), whether ``MarlinLinearKernel.can_implement``
(``kernels/linear/mixed_precision/marlin.py``) keeps the strict
``check_marlin_supports_shape`` (always, or for act-order only: 0.26.0) and refuses a group
split over ranks (``partition_weight_shape[0] % c.group_size``: 0.26.0 and 0.33.0), Machete's
prepacked block (``machete_utils.py``: ``MACHETE_PREPACKED_BLOCK_SHAPE = [in, out]``), the
Triton W4A16 group sizes, and the capabilities where Humming outranks Marlin
(``quantization/utils/humming/priority.py``: ``_HUMMING_PREFERRED_CAPABILITIES``; 0.33.0).
What a file does not say stays None: the kernel table's value for the release then stands.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass
from typing import Any

from pytest_vllm_env.readers.pyrules import parse_or_none

_Q = "vllm/model_executor/layers/quantization/utils"
MARLIN_UTILS_PY = f"{_Q}/marlin_utils.py"
MACHETE_UTILS_PY = f"{_Q}/machete_utils.py"
HUMMING_PRIORITY_PY = f"{_Q}/humming/priority.py"
MARLIN_MP_PY = "vllm/model_executor/kernels/linear/mixed_precision/marlin.py"
TRITON_W4A16_PY = "vllm/model_executor/kernels/linear/mixed_precision/triton_w4a16.py"
FILES = (MARLIN_UTILS_PY, MACHETE_UTILS_PY, MARLIN_MP_PY, TRITON_W4A16_PY, HUMMING_PRIORITY_PY)


@dataclass(frozen=True)
class MpKernelRules:
    """The rules read (None: not read). ``marlin_strict``: "always" (every share must fit
    the thread tile), "act-order" (only with g_idx; others are zero-padded), "no" (never);
    ``marlin_straddle``: a rank's input that is not a whole number of groups is refused."""

    marlin_tile: tuple[int, int] | None = None  # (N multiple, K multiple)
    marlin_groups: tuple[int, ...] | None = None
    marlin_strict: str | None = None
    marlin_straddle: bool | None = None
    machete_block: tuple[int, int] | None = None  # (in multiple, out multiple)
    triton_groups: tuple[int, ...] | None = None
    humming_preferred: tuple[int, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data for the fact cache."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MpKernelRules:
        """The inverse of :meth:`to_json`."""

        def tup(key: str) -> Any:
            value = data.get(key)
            return tuple(value) if value is not None else None

        return cls(
            tup("marlin_tile"),
            tup("marlin_groups"),
            data.get("marlin_strict"),
            data.get("marlin_straddle"),
            tup("machete_block"),
            tup("triton_groups"),
            tup("humming_preferred"),
        )


def _literals(tree: ast.Module | None) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` (lists, tuples, sets, ``frozenset({...})``)."""
    out: dict[str, Any] = {}
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in ("frozenset", "set", "tuple", "list")
            and len(value.args) == 1
        ):
            value = value.args[0]
        try:
            out[target.id] = ast.literal_eval(value)
        except ValueError:
            continue
    return out


def _ints(value: Any, size: int | None = None) -> tuple[int, ...] | None:
    if not isinstance(value, (list, tuple, set, frozenset)):
        return None
    items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if not all(isinstance(v, int) for v in items) or (size is not None and len(items) != size):
        return None
    return tuple(items)


def _marlin_can_implement(tree: ast.Module | None) -> tuple[str | None, bool | None]:
    """(strict, straddle) of ``MarlinLinearKernel.can_implement``."""
    cls = next(
        (
            n
            for n in (tree.body if tree is not None else ())
            if isinstance(n, ast.ClassDef) and n.name == "MarlinLinearKernel"
        ),
        None,
    )
    func = next(
        (
            n
            for n in (cls.body if cls is not None else ())
            if isinstance(n, ast.FunctionDef) and n.name == "can_implement"
        ),
        None,
    )
    if func is None:
        return None, None
    strict = "no"
    for node in ast.walk(func):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "check_marlin_supports_shape"
        ):
            continue
        guarded = any(
            isinstance(parent, ast.If)
            and "has_g_idx" in ast.unparse(parent.test)
            and any(node is sub for stmt in parent.body for sub in ast.walk(stmt))
            for parent in ast.walk(func)
        )
        strict = "act-order" if guarded else "always"
        break
    straddle = "partition_weight_shape[0] % c.group_size" in ast.unparse(func)
    return strict, straddle or strict == "always"


def parse(
    marlin_utils: str | None,
    machete_utils: str | None,
    marlin_mp: str | None,
    triton_w4a16: str | None,
    humming_priority: str | None,
) -> MpKernelRules:
    """Read the files' texts (None: absent); never raises for odd text."""
    marlin = _literals(parse_or_none(marlin_utils))
    n, k = marlin.get("GPTQ_MARLIN_MIN_THREAD_N"), marlin.get("GPTQ_MARLIN_MIN_THREAD_K")
    tile = (n, k) if isinstance(n, int) and isinstance(k, int) else None
    strict, straddle = _marlin_can_implement(parse_or_none(marlin_mp))
    machete = _ints(_literals(parse_or_none(machete_utils)).get("MACHETE_PREPACKED_BLOCK_SHAPE"), 2)
    triton = _literals(parse_or_none(triton_w4a16)).get("TRITON_W4A16_SUPPORTED_GROUP_SIZES")
    preferred = None
    if humming_priority is not None:
        # a release without the file has no preference (0.26.0): an empty one
        found = _literals(parse_or_none(humming_priority)).get("_HUMMING_PREFERRED_CAPABILITIES")
        preferred = _ints(found)
    return MpKernelRules(
        tile,
        _ints(marlin.get("MARLIN_SUPPORTED_GROUP_SIZES")),
        strict,
        straddle,
        machete,  # type: ignore[arg-type]
        _ints(triton),
        preferred,
    )
