"""Which GEMM kernel vLLM takes for a quantized layer on a GPU, as its chooser does it: walk
the family's priority list (the env's own order, read from its
``kernels/linear/__init__.py`` where it can be, else the table's for the nearest release)
and take the first kernel that runs on the compute capability and can implement the layer
(group size, act-order, zero points, activation dtype, N/K multiples, packages present).
Pure: tables and facts in, a :class:`Choice` out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pytest_vllm_env.facts.triton_kernels_copy import TritonKernelsCopy
from pytest_vllm_env.tables.quant_kernels import (
    FAMILIES,
    HUMMING_PREFERRED,
    Failure,
    Kernel,
    release_for,
)

# the env's list names (readers.vllm_quant_source) for our families
ENV_LIST = {"fp8": "fp8", "fp8_block": "fp8_block", "int8": "int8", "wna16": "kernels"}
ENV_LIST |= {"nvfp4": "nvfp4"}


@dataclass(frozen=True)
class LayerAsk:
    """What a kernel's ``can_implement`` looks at for one vLLM layer: ``n`` and ``k``, one
    rank's share of its output (fused: the sum of its shards') and input
    (``MPLinearLayerConfig.partition_weight_shape``), ``full_k`` the whole layer's input
    (``full_weight_shape[0]``; 0: ``k``); MoE experts: ``n`` = 2 x intermediate, ``k`` =
    hidden, unsplit, and the ``tensor_parallel_size`` that splits them."""

    n: int
    k: int
    settings: Mapping[str, int] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    act_dtype: str = "bfloat16"
    model_type: str | None = None
    tp: int = 1
    full_k: int = 0


@dataclass(frozen=True)
class Choice:
    """The kernel vLLM takes (None: none can: vLLM raises), the failure it then meets on this
    GPU (None: it runs), and why the kernels before it were passed over."""

    kernel: Kernel | None
    failure: str | None
    passed_over: tuple[str, ...]
    unknown: tuple[str, ...] = ()
    kernels: tuple[Kernel, ...] = ()  # the list it was chosen from


def kernel_list(
    family: str, version: str | None, env_lists: Mapping[str, Sequence[str]] | None = None
) -> tuple[tuple[Kernel, ...], tuple[str, ...], str | None]:
    """(kernels in priority order, names the table does not know, the release whose table
    was used). The env's own order wins where it was read; unknown names are kept out of
    the walk but reported (the verdict then says it may differ)."""
    release = release_for(version) or "0.26.0"
    table = FAMILIES[release].get(family, ())
    names = (env_lists or {}).get(ENV_LIST.get(family, ""), ())
    if not names:
        return table, (), release
    # a name the env lists is the kernel as its own release's table defines it; another
    # release's definition only where this one's table has no such name
    known = {k.name: k for rel in FAMILIES.values() for k in rel.get(family, ())}
    known |= {k.name: k for k in table}
    ordered = tuple(known[n] for n in names if n in known)
    unknown = tuple(n for n in names if n not in known and not _never_for_us(n))
    return ordered, unknown, release


def _never_for_us(name: str) -> bool:
    # kernels of other platforms' lists or schemes the families above never reach (W4A8
    # activations, Humming/B12x/Torch/Emulation spares of other families)
    spare = ("CutlassW4A8", "Humming", "Torch", "Emulation", "B12x", "Fbgemm")
    return name.startswith(spare) or "Cudnn" in name or "Trtllm" in name


def prioritized(
    kernels: Sequence[Kernel],
    cc: int,
    release: str | None,
    preferred: Collection[int] | None = None,
) -> tuple[Kernel, ...]:
    """``kernels`` as vLLM orders them on ``cc``: 0.33.0's ``prioritize_humming`` moves the
    Humming kernel directly ahead of Marlin where Humming is preferred (``preferred``: as the
    env's source says, readers/vllm_mp_kernels.py; None: the table's for ``release``)."""
    out = list(kernels)
    if preferred is None:
        preferred = HUMMING_PREFERRED.get(release or "", frozenset())
    if cc not in preferred:
        return tuple(out)
    names = [k.name.lower() for k in out]
    hum = next((i for i, n in enumerate(names) if "humming" in n), None)
    mar = next((i for i, n in enumerate(names) if "marlin" in n), None)
    if hum is not None and mar is not None and hum > mar:
        out.insert(mar, out.pop(hum))
    return tuple(out)


def choose(
    kernels: Sequence[Kernel],
    cc: int,
    ask: LayerAsk,
    packages: Collection[str],
    release: str | None = None,
    preferred: Collection[int] | None = None,
) -> Choice:
    """The first kernel of ``kernels`` (as ``release`` orders them on ``cc``; see
    :func:`prioritized`) that runs on ``cc`` and can implement ``ask``."""
    passed_over: list[str] = []
    for kernel in prioritized(kernels, cc, release, preferred):
        why = _cannot(kernel, cc, ask, packages)
        if why:
            passed_over.append(f"{kernel.name}: {why}")
            continue
        return Choice(kernel, _failure(kernel.fails, cc, ask), tuple(passed_over))
    return Choice(None, None, tuple(passed_over))


def _cannot(kernel: Kernel, cc: int, ask: LayerAsk, packages: Collection[str]) -> str:
    if not kernel.runs_on(cc):
        return f"does not run on compute capability {cc}"
    if kernel.needs == "opt-in":
        return "off unless its environment variable is set"
    if kernel.needs and kernel.needs not in packages:
        return f"needs {kernel.needs}, not installed"
    group = ask.settings.get("group")
    full_k = ask.full_k or ask.k
    g_idx, zp = "g_idx" in ask.flags, "zero_point" in ask.flags
    if (
        kernel.group_sizes is not None
        and group is not None
        and group not in kernel.group_sizes
        and not (kernel.group_full_k and group == full_k)
    ):
        return f"group size {group} not in {sorted(kernel.group_sizes)}"
    if not kernel.g_idx and g_idx:
        return "no activation reordering (g_idx)"
    if g_idx and not kernel.g_idx_split_k and ask.k != full_k:
        return "no activation reordering (g_idx) with the input split over ranks"
    if not kernel.zero_points and zp:
        return "no zero points"
    bits = ask.settings.get("bits")
    if kernel.bits is not None and bits is not None and bits not in kernel.bits:
        return f"{bits}-bit weights not supported"
    if zp and kernel.zp_bits is not None and bits is not None and bits not in kernel.zp_bits:
        return f"{bits}-bit weights with zero points not supported"
    if kernel.act_dtypes is not None and ask.act_dtype not in kernel.act_dtypes:
        return f"activations {ask.act_dtype} not supported"
    if kernel.bf16_out and ask.act_dtype != "bfloat16":
        return "BF16 output only"
    return _shape(kernel, ask, group, full_k, g_idx) or (
        f"auto-disabled for {ask.model_type} on Blackwell"
        if cc // 10 in (10, 12) and ask.model_type in kernel.excluded_model_types
        else ""
    )


def _shape(kernel: Kernel, ask: LayerAsk, group: int | None, full_k: int, g_idx: bool) -> str:
    """What ``kernel`` says of the rank's share ``ask.n`` x ``ask.k`` (MPLinearLayerConfig's
    partition_weight_shape; the full input ``full_k``), its tile and group rules."""
    n, k, bits = ask.n, ask.k, ask.settings.get("bits")
    if n % kernel.n_multiple or k % kernel.k_multiple:
        return f"needs N % {kernel.n_multiple} and K % {kernel.k_multiple} == 0 (N={n}, K={k}" + (
            " per rank)" if k != full_k or ask.tp > 1 else ")"
        )
    if kernel.n_pack and bits and n % (32 // bits):
        return f"output features {n} not a multiple of the pack factor {32 // bits}"
    if kernel.full_k_div_group and (not group or group <= 0):
        return f"group size {group}: no channelwise quantization"
    if kernel.full_k_div_group and group and full_k % group:
        return f"group size {group} does not divide the input features ({full_k})"
    if kernel.k_div_group and group:
        eff = group if group > 0 else k
        if k % eff:
            return f"in_features {k} not divisible by group_size {eff}"
    straddles = bool(group and group > 0 and group < full_k and k % group)
    if g_idx and kernel.g_idx_tile:
        # 0.26.0 Marlin with act-order: check_marlin_supports_shape, no padding
        tile_n, tile_k = kernel.g_idx_tile
        if n % tile_n:
            return (
                f"act-order: Weight output_size_per_partition = {n} is not divisible by "
                f"min_thread_n = {tile_n}"
            )
        if k % tile_k:
            return (
                f"act-order: Weight input_size_per_partition = {k} is not divisible by "
                f"min_thread_k = {tile_k}"
            )
    if kernel.straddle and straddles:
        return f"in_features per partition {k} is not divisible by group_size = {group}"
    return ""


def _failure(fails: Sequence[Failure], cc: int, ask: LayerAsk) -> str | None:
    for f in fails:
        if not f.min_cc <= cc < f.max_cc:
            continue
        if f.n_not_multiple and ask.n % f.n_not_multiple == 0:
            continue
        if f.nk_multiple and (ask.n % f.nk_multiple or ask.k % f.nk_multiple):
            continue
        moe, block_n = "", 0
        if f.moe_n_at_most:
            # each rank's share of the intermediate size, padded as vLLM pads it
            # (FusedMoEConfig: intermediate // tp; maybe_roundup_sizes), and the hidden size
            share = -(-(ask.n // 2 // max(ask.tp, 1)) // f.moe_pad) * f.moe_pad
            small = [
                (what, cols)
                for what, cols in (("gate_up", 2 * share), ("down", ask.k))
                if cols <= f.moe_n_at_most
            ]
            if not small:
                continue
            moe = " and ".join(f"{cols} ({what})" for what, cols in small)
            # opt_flags_nvidia.compute_block_n below 129 columns: next_power_of_2, at least 16
            block_n = max(16, 1 << (min(cols for _, cols in small) - 1).bit_length())
        return f.message.format(cc=cc, n=ask.n, moe=moe, block_n=block_n)
    return None


TRITON_MOE = "TRITON (triton_kernels)"


def follow_copy(
    kernels: Sequence[Kernel], copy: TritonKernelsCopy | None
) -> tuple[tuple[Kernel, ...], tuple[str, ...]]:
    """The MXFP4 MoE list with its TRITON kernel's failures taken from the ``triton_kernels``
    vLLM imports (facts/triton_kernels_copy.py), not from the copy the table was measured on:
    a copy without the ``opt_flags`` package vLLM's ``_swizzle_mxfp4`` imports fails as soon
    as the experts load (``ModuleNotFoundError``, measured with the real PyPI triton-kernels
    0.1.0 and both real wheels); the Hopper BLOCK_N failure holds only where the copy has the
    assert and a ``compute_block_n`` that gives small outputs a smaller BLOCK_N, up to the
    copy's own threshold. Also returns what was assumed about the copy."""
    if copy is None or not copy.where:
        return tuple(kernels), ()
    out: list[Kernel] = []
    for kernel in kernels:
        if kernel.name != TRITON_MOE:
            out.append(kernel)
            continue
        fails: list[Failure] = []
        missing = copy.missing
        if missing is not None:
            module, importer = missing
            fails.append(
                Failure(
                    0,
                    1000,
                    f"ModuleNotFoundError: No module named 'triton_kernels.{module.split('.')[0]}' "
                    f"when vLLM converts the loaded MXFP4 experts for the kernel (it imports "
                    f"triton_kernels from {copy.label}, which has no {module}; {importer} "
                    "imports it)",
                    "utils/import_utils.py:import_triton_kernels, has_triton_kernels (still "
                    "true: TRITON is chosen); fused_moe/oracle/mxfp4.py's TRITON branch and "
                    "quantization/utils/mxfp4_utils.py:_swizzle_mxfp4; measured on the H100 "
                    "with vLLM 0.26.0 and the PyPI triton-kernels 0.1.0 (docs/gpu-runs.md "
                    "Round 14) and on the CPU with both real wheels",
                )
            )
        else:
            for f in kernel.fails:
                if not f.moe_n_at_most:
                    fails.append(f)
                elif copy.asserts and copy.small_n:
                    where = f" (triton_kernels: {copy.label})" if copy.where == "installed" else ""
                    fails.append(replace(f, moe_n_at_most=copy.small_n, message=f.message + where))
        out.append(replace(kernel, fails=tuple(fails)))
    return tuple(out), copy.assumed
