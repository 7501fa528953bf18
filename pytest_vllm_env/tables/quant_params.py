"""The parameters a quantized Linear registers, in the words every format row uses: a
:class:`Param` (name, dtypes as safetensors names them, the shapes it may take relative to the
Linear's ``[out, in]``, and when it exists) made of :class:`Dim` s. Read by
:mod:`pytest_vllm_env.tables.quant_formats` and :mod:`pytest_vllm_env.tables.quant_schemes`
rows, by ``quant.tensors-complete``, and by any loader model that needs the parameter set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Dim:
    """One dimension of a parameter, relative to its Linear's ``[out, in]`` (one checkpoint
    module, before vLLM fuses shards or splits ranks): ``of`` times ``mul``, divided by
    ``div`` (rounded up when ``ceil``, else it must divide), or the constant ``const``.
    ``div`` may name a setting of the layer: ``"group"`` (group size), ``"block_n"`` /
    ``"block_k"`` (a block's rows / columns), ``"pack"`` (values per stored int32)."""

    of: Literal["out", "in", "const"] = "const"
    div: int | str = 1
    mul: int = 1
    ceil: bool = False
    const: int = 1

    def size(self, out: int, inp: int, settings: Mapping[str, int]) -> int | None:
        """The size for a Linear ``[out, inp]`` (None: ``div`` does not divide it)."""
        if self.of == "const":
            return self.const
        value = (out if self.of == "out" else inp) * self.mul
        div = settings.get(self.div, 0) if isinstance(self.div, str) else self.div
        if div <= 0:
            return None
        if self.ceil:
            return -(-value // div)
        return value // div if value % div == 0 else None

    @property
    def text(self) -> str:
        """As messages quote it: ``out``, ``in/group``, ``ceil(out/block_n)``, ``1``."""
        if self.of == "const":
            return str(self.const)
        base = self.of if self.mul == 1 else f"{self.of}*{self.mul}"
        if self.div == 1:
            return base
        return f"ceil({base}/{self.div})" if self.ceil else f"{base}/{self.div}"


@dataclass(frozen=True)
class Param:
    """One parameter vLLM's ``create_weights`` registers on a quantized Linear, as the
    checkpoint stores it under ``<module>.<name>``: the dtypes (safetensors names) it may
    have, the shapes it may take (alternatives; ``()`` is a scalar), and when it exists:
    always, or only with a setting of the layer (``when``: ``"zero_point"`` (asymmetric
    weights), ``"g_idx"`` (activation reordering by group), ``"static_input"`` (a calibrated
    activation scale), ``"asym_input"`` (an activation zero point)). ``required``: vLLM
    keeps an unset placeholder (garbage, or a refused load) without it."""

    name: str
    dtypes: frozenset[str] | None
    shapes: tuple[tuple[Dim, ...], ...]
    when: str = ""
    required: bool = True
    role: Literal["weight", "scale", "zero_point", "index", "shape"] = "scale"

    def fits(self, shape: tuple[int, ...], out: int, inp: int, settings: Mapping[str, int]) -> bool:
        """Does a stored tensor of ``shape`` load into the parameter of a Linear ``[out, inp]``?"""
        return any(
            len(alt) == len(shape)
            and all(d.size(out, inp, settings) == n for d, n in zip(alt, shape, strict=True))
            for alt in self.shapes
        )

    @property
    def shape_text(self) -> str:
        """The accepted shapes, as messages quote them."""
        return " or ".join("[" + ", ".join(d.text for d in alt) + "]" for alt in self.shapes)


OUT, IN, ONE = Dim("out"), Dim("in"), Dim(const=1)
SCALAR = ((), (ONE,))  # PerTensorScaleParameter: [] or [1] (vLLM's _is_1d_and_scalar)
