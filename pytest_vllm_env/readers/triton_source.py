"""Static reads of the env's own Triton source: which ptxas it runs, for which ``--gpu-name``,
what overrides it, and which C compiler builds its launcher.

The rules moved between releases, so they are read from the installed copy, never assumed
(all read with :mod:`ast` through :mod:`pytest_vllm_env.readers.pyrules`, never imported):

- ``triton/backends/nvidia/compiler.py``, ``CUDABackend.make_cubin``: the ptxas it runs
  (``ptxas = get_ptxas(self.target.arch).path`` in 3.6+, where ``get_ptxas`` picks
  ``knobs.nvidia.ptxas_blackwell`` for ``arch >= 100`` (3.6) or ``arch >= 90`` (3.9);
  ``get_ptxas().path`` in 3.4/3.5, one binary; ``_path_to_binary("ptxas")`` in 3.2; and
  ``"ptxas-blackwell" if arch >= 100`` in 3.3) and the ``--gpu-name=`` it passes
  (``sm_arch_from_capability``: ``"a"`` for capability >= 90 since 3.3; only for == 90 in 3.2,
  so 3.2 asks for plain ``sm_120``);
- the variable that overrides a binary: ``f"TRITON_{binary.upper().replace('-', '_')}_PATH"``
  (``knobs.env_nvidia_tool``, 3.6+: ``TRITON_PTXAS_BLACKWELL_PATH``) or
  ``f"TRITON_{binary.upper()}_PATH"`` (3.2-3.5, ``_path_to_binary`` / knobs: 3.3's blackwell
  override is spelled ``TRITON_PTXAS-BLACKWELL_PATH``, which no shell can export);
- ``triton/runtime/build.py`` (``_build``, 3.9's ``_find_compiler``): ``$CC``, else ``gcc`` on
  PATH, else ``clang``: the C compiler that builds Triton's launcher modules (with
  ``Python.h``), at the first kernel launch.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_vllm_env.readers.pyrules import (
    Evaluator,
    Unknown,
    dotted,
    enclosing_function,
    scope_before,
)
from pytest_vllm_env.readers.pyrules import (
    function_named as _function,
)
from pytest_vllm_env.readers.pyrules import (
    parse_or_none as _parse,
)

COMPILER_PY = "triton/backends/nvidia/compiler.py"
KNOBS_PY = "triton/knobs.py"
BUILD_PY = "triton/runtime/build.py"
BIN_DIR = "triton/backends/nvidia/bin"


@dataclass(frozen=True)
class Tool:
    """A ptxas binary of Triton's bundle, by name (``ptxas``, ``ptxas-blackwell``)."""

    name: str


@dataclass(frozen=True)
class PtxasChoice:
    """What Triton runs to assemble for one device capability (``120`` for 12.0)."""

    capability: int
    tool: str  # "ptxas" / "ptxas-blackwell": the bundled binary's name
    gpu_name: str  # "sm_120a"
    variable: str | None  # "TRITON_PTXAS_BLACKWELL_PATH": overrides the binary


@dataclass(frozen=True)
class TritonRules:
    """The rules read from one installed Triton; ``missing`` says what was not found."""

    compiler: str
    choices: tuple[PtxasChoice, ...] = ()
    cc_variable: str | None = None
    cc_programs: tuple[str, ...] = ()
    missing: tuple[str, ...] = field(default_factory=tuple)
    # conda-forge's Triton (feedstock patch "Use system PATH to find tools (in CONDA_PREFIX)")
    # adds `shutil.which(binary)` after the override and the bundled binary
    path_fallback: bool = False

    def choice(self, capability: int) -> PtxasChoice | None:
        return next((c for c in self.choices if c.capability == capability), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TritonRules:
        return cls(
            compiler=data["compiler"],
            choices=tuple(PtxasChoice(**c) for c in data["choices"]),
            cc_variable=data["cc_variable"],
            cc_programs=tuple(data["cc_programs"]),
            missing=tuple(data["missing"]),
            path_fallback=bool(data.get("path_fallback")),
        )


def read_rules(
    compiler_src: str,
    capabilities: list[int],
    *,
    knobs_src: str | None = None,
    build_src: str | None = None,
    path: str = COMPILER_PY,
) -> TritonRules:
    """Triton's ptxas choice for each of ``capabilities`` and its C compiler rule."""
    missing: list[str] = []
    try:
        tree = ast.parse(compiler_src)
    except SyntaxError as exc:
        return TritonRules(path, missing=(f"{path} does not parse: {exc.msg}",))
    knobs = _parse(knobs_src)
    make_cubin = _function(tree, "make_cubin")
    if make_cubin is None:
        return TritonRules(path, missing=(f"no make_cubin in {path}",))
    choices = []
    for cap in capabilities:
        try:
            tool = _tool(tree, make_cubin, cap)
            gpu_name = _gpu_name(tree, make_cubin, cap)
        except Unknown as exc:
            missing.append(f"capability {cap}: {exc}")
            continue
        choices.append(PtxasChoice(cap, tool, gpu_name, _variable(tool, tree, knobs)))
    cc_variable, cc_programs = read_cc_rule(build_src) if build_src else (None, ())
    if build_src is not None and not cc_programs:
        missing.append(f"no C compiler rule in {BUILD_PY}")
    fallback = _path_fallback(tree, knobs)
    return TritonRules(
        path, tuple(choices), cc_variable, cc_programs, tuple(missing), path_fallback=fallback
    )


def _path_fallback(*trees: ast.Module | None) -> bool:
    """Whether the binary search ends with ``shutil.which(binary)``: in ``_path_to_binary``
    (compiler.py, 3.2/3.3) or ``env_nvidia_tool`` (knobs.py, 3.4+)."""
    for tree in trees:
        if tree is None:
            continue
        for node in ast.walk(tree):
            scope = None
            if isinstance(node, ast.FunctionDef) and node.name == "_path_to_binary":
                scope = node
            elif isinstance(node, ast.ClassDef) and node.name == "env_nvidia_tool":
                scope = node
            if scope is not None and any(
                isinstance(n, ast.Call) and dotted(n.func) == "shutil.which"
                for n in ast.walk(scope)
            ):
                return True
    return False


def _evaluator(tree: ast.Module, capability: int) -> Evaluator:
    attrs: dict[str, Any] = {"self.target.arch": capability, "self.capability": capability}
    for node in ast.walk(tree):
        chain = dotted(node) if isinstance(node, ast.Attribute) else None
        # knobs.nvidia.ptxas / knobs.nvidia.ptxas_blackwell: the bundled binary of that name
        if chain and chain.startswith("knobs.nvidia.ptxas") and chain.count(".") == 2:
            name = chain.rsplit(".", 1)[1]
            if name.replace("_", "").isalpha() and "option" not in name:
                attrs[chain] = Tool(name.replace("_", "-"))

    def path_of(tool: Any) -> Tool:
        if isinstance(tool, Tool):
            return tool  # NvidiaTool.path: the binary itself
        raise Unknown("attribute path of something not a tool")

    attrs["*.path"] = path_of
    return Evaluator(
        tree,
        attrs=attrs,
        # _path_to_binary(name) (3.2, 3.3): the override's path or the bundled binary `name`
        calls={"_path_to_binary": lambda name: Tool(str(name))},
    )


def _tool(tree: ast.Module, make_cubin: ast.FunctionDef, capability: int) -> str:
    """The binary ``make_cubin`` runs: the value of its ``ptxas = ...`` assignment."""
    for node in ast.walk(make_cubin):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        first = target.elts[0] if isinstance(target, ast.Tuple) and target.elts else target
        if isinstance(first, ast.Name) and first.id == "ptxas":
            ev = _evaluator(tree, capability)
            value = ev.expr(node.value, {"capability": capability})
            if isinstance(value, Tool):
                return value.name
            raise Unknown("make_cubin's ptxas is not one of the bundled binaries")
    raise Unknown("no `ptxas = ...` in make_cubin")


def _gpu_name(tree: ast.Module, make_cubin: ast.FunctionDef, capability: int) -> str:
    """The ``--gpu-name=`` f-string of ``make_cubin``, evaluated for ``capability``."""
    for node in ast.walk(make_cubin):
        if not isinstance(node, ast.JoinedStr) or not node.values:
            continue
        head = node.values[0]
        if isinstance(head, ast.Constant) and str(head.value).startswith("--gpu-name="):
            ev = _evaluator(tree, capability)
            scope = scope_before(ev, make_cubin, node.lineno, {"capability": capability})
            return str(ev.expr(node, scope)).removeprefix("--gpu-name=")
    raise Unknown("no --gpu-name= in make_cubin")


def _variable(tool: str, *trees: ast.Module | None) -> str | None:
    """``TRITON_PTXAS_BLACKWELL_PATH``: the f-string ``TRITON_{binary...}_PATH`` evaluated."""
    for tree in trees:
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.JoinedStr):
                continue
            consts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if consts and str(consts[0]).startswith("TRITON_") and "binary" in names:
                func = enclosing_function(tree, node)
                if func is None:
                    continue
                ev = Evaluator(tree, calls={"sysconfig.get_config_var": lambda _n: ""})
                scope = scope_before(ev, func, node.lineno, {"binary": tool})
                scope["binary"] = tool  # `binary += EXE` is "" on Linux
                try:
                    return str(ev.expr(node, scope))
                except Unknown:
                    continue
    return None


def read_cc_rule(build_src: str) -> tuple[str | None, tuple[str, ...]]:
    """``("CC", ("gcc", "clang"))``: the variable Triton's ``_build`` reads first, then the
    programs it looks up on PATH in the order it prefers them (``gcc if gcc is not None else
    clang``: gcc first, though ``clang`` is looked up first)."""
    tree = _parse(build_src)
    if tree is None:
        return None, ()
    func = _function(tree, "_find_compiler") or _function(tree, "_build")
    if func is None:
        return None, ()
    variable = None
    which: dict[str, str] = {}
    order: list[str] = []
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and dotted(node.func) in ("os.environ.get", "os.getenv"):
            arg = node.args[0] if node.args else None
            if variable is None and isinstance(arg, ast.Constant) and arg.value in ("CC",):
                variable = str(arg.value)
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Call)
            and dotted(node.value.func) == "shutil.which"
            and node.value.args
            and isinstance(node.value.args[0], ast.Constant)
        ):
            which[node.targets[0].id] = str(node.value.args[0].value)
    for node in ast.walk(func):
        if isinstance(node, ast.IfExp) and isinstance(node.body, ast.Name):
            if node.body.id in which and isinstance(node.orelse, ast.Name):
                pair = [which[node.body.id], which.get(node.orelse.id, "++")]
                if not any("++" in p for p in pair):  # 3.9's C++ rule (g++, clang++) aside
                    order = pair
                    break
    c_programs = [p for p in which.values() if "++" not in p]
    if not order:
        order = c_programs
    return variable, tuple(p for p in order if "++" not in p)
