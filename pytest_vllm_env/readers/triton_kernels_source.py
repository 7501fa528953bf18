"""Static reads of a ``triton_kernels`` copy (vLLM's vendored ``vllm/third_party/triton_kernels``
or a separately installed one) and of what vLLM imports from it, with :mod:`ast` and text
search (never imported). Read from the copy vendored in the vLLM 0.26.0 and 0.33.0 wheels
(triton v3.5.1's ``python/triton_kernels``) and triton-lang/triton's later trees (the 3.6
``matmul_ogs`` API, the 3.8 ``matmul`` API).

- API generation, as vLLM 0.33.0 ``utils/import_utils.py:get_triton_kernels_version`` infers
  it by what imports: no ``triton_kernels.matmul_ogs`` -> "3.8"; ``matmul_ogs`` but no
  ``SparseMatrix`` in ``triton_kernels.tensor`` -> "3.5.1"; both -> "3.6".
- ``opt_flags_nvidia.py:compute_block_n``: the BLOCK_N a Hopper-swizzled MXFP4 GEMM gets. In
  v3.5.1 (and the 3.6 tree) only a 4-warp Hopper scale layout returns its own 128; the 8 warps
  vLLM asks for (``mxfp4_utils.py:_swizzle_mxfp4(num_warps=8)``) fall to the generic rule:
  256 where ``n > 128``, else ``next_power_of_2(n)``. Later trees (3.8) size BLOCK_N from the
  layout's warps for 4 and 8 (``2 * num_warps * 2 * 8``), which the kernel's assert wants.
- ``_matmul_ogs.py`` (3.5.1/3.6) or ``matmul_details/_matmul.py`` (3.8): the HOPPER_SCALE
  branch's ``tl.static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0)``.
- vLLM's ``quantization/utils/mxfp4_utils.py:_swizzle_mxfp4``: which ``opt_flags`` module it
  imports (0.26.0: ``triton_kernels.matmul_ogs_details.opt_flags``; 0.33.0 also
  ``triton_kernels.matmul_details.opt_flags`` when the API is 3.8).
"""

from __future__ import annotations

import ast
import re

from pytest_vllm_env.readers.pyrules import int_compared

MATMUL_OGS = "matmul_ogs_details"  # 3.5.1 / 3.6
MATMUL = "matmul_details"  # 3.8
MXFP4_UTILS_PY = "vllm/model_executor/layers/quantization/utils/mxfp4_utils.py"
# where the MXFP4 experts' weights are converted for the kernel after loading
# (process_weights_after_loading -> convert_weight_to_mxfp4_moe_kernel_format, 0.26.0 and 0.33.0)
MXFP4_ORACLE_PY = "vllm/model_executor/layers/fused_moe/oracle/mxfp4.py"
VENDORED = "vllm/third_party/triton_kernels"

_ASSERT = re.compile(
    r"static_assert\(\s*BLOCK_N\s*%\s*\(\s*2\s*\*\s*n_warps\s*\*\s*2\s*\*\s*8\s*\)\s*==\s*0\s*\)"
)


def api_generation(has_matmul_ogs: bool, tensor_text: str | None) -> str | None:
    """get_triton_kernels_version's answer for a copy (None: its tensor.py unread)."""
    if not has_matmul_ogs:
        return "3.8"
    if tensor_text is None:
        return None
    return "3.6" if re.search(r"\bSparseMatrix\b", tensor_text) else "3.5.1"


def kernel_file(api: str | None) -> str:
    """The file of the copy that holds the GEMM kernel's HOPPER_SCALE branch."""
    if api == "3.8":
        return f"{MATMUL}/_matmul.py"
    return f"{MATMUL_OGS}/_matmul_ogs.py"


def block_n_file(api: str | None) -> str:
    """The copy's ``opt_flags_nvidia.py`` (where ``compute_block_n`` is)."""
    return f"{MATMUL if api == '3.8' else MATMUL_OGS}/opt_flags_details/opt_flags_nvidia.py"


def hopper_assert(text: str) -> bool:
    """Whether the kernel asserts ``BLOCK_N % (2 * n_warps * 2 * 8) == 0`` (for the Hopper
    scale swizzle)."""
    return bool(_ASSERT.search(text))


def hopper_small_n(text: str, warps: int = 8) -> int | None:
    """``compute_block_n`` for a Hopper scale layout of ``warps`` warps: the largest output
    size N that gets a BLOCK_N below ``2 * warps * 2 * 8`` (the generic rule's threshold:
    128 in v3.5.1), 0 when the Hopper branch sizes BLOCK_N from those warps itself (later
    trees), None when the function is not there or not of either shape."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    fn = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "compute_block_n"),
        None,
    )
    if fn is None:
        return None
    hopper = next(
        (
            n
            for n in ast.walk(fn)
            if isinstance(n, ast.If)
            and any(
                (isinstance(x, ast.Name) and x.id.startswith("Hopper") and "Scale" in x.id)
                for x in ast.walk(n.test)
            )
        ),
        None,
    )
    if hopper is None:
        return None
    handled = _warps_handled(hopper)
    if handled is None or warps in handled:
        return 0
    # the generic rule it falls to: `... and n > T: return 256` (T is the threshold)
    return int_compared(fn, lambda x: isinstance(x, ast.Name) and x.id == "n", ast.Gt)


def _warps_handled(branch: ast.If) -> set[int] | None:
    """The warp counts the Hopper branch returns a BLOCK_N for: ``num_warps == 4`` -> {4},
    ``num_warps in [4, 8]`` -> {4, 8}; None: no condition on the warps (all)."""
    found: set[int] | None = None
    for node in ast.walk(branch):
        if not isinstance(node, ast.Compare) or len(node.ops) != 1:
            continue
        left = node.left
        if not (isinstance(left, ast.Attribute) and left.attr == "num_warps"):
            continue
        right = node.comparators[0]
        if isinstance(node.ops[0], ast.Eq) and isinstance(right, ast.Constant):
            found = (found or set()) | {int(right.value)}
        elif isinstance(node.ops[0], ast.In) and isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            found = (found or set()) | {
                int(e.value) for e in right.elts if isinstance(e, ast.Constant)
            }
    return found


def swizzle_imports(text: str) -> tuple[str, ...] | None:
    """The ``triton_kernels.<X>.opt_flags`` modules vLLM's ``_swizzle_mxfp4`` imports (X in
    order); None when the function is not there."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    fn = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_swizzle_mxfp4"),
        None,
    )
    if fn is None:
        return None
    out: list[str] = []
    for node in ast.walk(fn):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "triton_kernels" and parts[2] == "opt_flags":
                out.append(parts[1])
    return tuple(dict.fromkeys(out))


def triton_branch_imports(text: str) -> tuple[str, ...] | None:
    """The ``triton_kernels`` modules vLLM imports, unguarded, on the TRITON backend's branch
    of the MXFP4 weight conversion before it calls ``_swizzle_mxfp4``: the branch is an ``if``
    whose test names a TRITON backend and whose body calls ``_swizzle_mxfp4``; its ``from
    triton_kernels.X import ...`` statements that come before the first such call, in order.
    vLLM 0.26.0's ``oracle/mxfp4.py`` imports ``triton_kernels.matmul_ogs`` there (measured on
    the H100: a copy without it dies with "No module named 'triton_kernels.matmul_ogs'" after
    the weights load); 0.33.0's imports it at module level inside ``try`` (logged, not raised),
    so its branch imports nothing. None when no such branch is found."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    found: list[str] | None = None
    for node in ast.walk(tree):
        if not isinstance(node, ast.If) or "TRITON" not in ast.unparse(node.test):
            continue
        modules: list[str] = []
        for stmt in node.body:
            if _calls(stmt, "_swizzle_mxfp4"):
                found = (found or []) + modules
                break
            module = stmt.module if isinstance(stmt, ast.ImportFrom) else None
            if module and module.startswith("triton_kernels."):
                modules.append(module.split(".")[1])
    return tuple(dict.fromkeys(found)) if found is not None else None


def _calls(stmt: ast.stmt, name: str) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
        for n in ast.walk(stmt)
    )
