"""Each rank's share of each quantized layer, as the GEMM kernel vLLM picks for it sees it.

vLLM chooses a layer's kernel inside the quantization scheme's ``create_weights``, from the
rank's partition, not the whole layer: ``CompressedTensorsWNA16.create_weights`` builds
``MPLinearLayerConfig(full_weight_shape=(input_size, output_size),
partition_weight_shape=(input_size_per_partition, sum(output_partition_sizes)))`` and calls
``choose_mp_linear_kernel`` (``model_executor/kernels/linear/__init__.py``) with it; the FP8
and NVFP4 kernels are chosen the same way from the layer's per-rank weight. So Machete's
tile (the rank's in % 64, out % 128), Marlin's group rule ("A group straddling TP ranks
cannot be fixed by padding"), DeepGEMM's N % 64 / K % 128 and CUTLASS SM120's N % 128 are
all rules on the rank's share. Right after the kernel choice, WNA16's ``create_weights``
refuses a rank input that is not a whole number of groups
(``distributed/utils.py:verify_group_size_divides_partition``): a kernel may be chosen for
such a share (Machete on sm 9.0, Humming) and the load still refused.

The split is ``facts.vllm_tp.format_split``'s (config.json's heads and sizes, kv heads
replicated below ``tp``); layers it does not size (other architectures) are split as vLLM's
``ColumnParallelLinear`` (outputs) and ``RowParallelLinear`` (inputs) split them. Checked
against the real loader's configs on the CPU, ranks simulated, for 0.26.0 and 0.33.0
(``fixtures/loader_truth/kernel_choice-*.json``, scripts/kernel_choice_truth.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_vllm_env.facts.quant_plan import QuantPlan, Scheme, layer_shapes
from pytest_vllm_env.facts.vllm_tp import format_schemes, format_split
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.readers.vllm_mp_kernels import MpKernelRules
from pytest_vllm_env.tables.quant_kernels import Kernel

# the leaves vLLM's decoder models build as RowParallelLinear (their input is split): Llama's
# o_proj/down_proj (Qwen2/Qwen3/Mistral reuse them), gpt2/phi dense/fc2, mixtral w2, and
# others' out_proj/wo
ROW_LEAVES = frozenset({"o_proj", "down_proj", "dense", "out_proj", "fc2", "w2", "wo"})
# the layers vLLM never splits (ReplicatedLinear in the models this suite reads)
REPLICATED_LEAVES = frozenset({"gate", "router"})


@dataclass(frozen=True)
class RankLayer:
    """One vLLM layer on one rank: ``n`` and ``k`` (the rank's summed outputs and input, what
    the kernel chooser is given), ``full_n`` and ``full_k`` (the whole layer), and
    ``straddles``: the rank's input is not a whole number of the scheme's groups (WNA16's
    ``create_weights`` then refuses it, after the kernel choice)."""

    scheme: Scheme
    n: int
    k: int
    full_n: int
    full_k: int
    straddles: bool = False

    @property
    def split(self) -> bool:
        """Whether the rank holds less than the whole layer."""
        return (self.n, self.k) != (self.full_n, self.full_k)


def rank_layers(
    plan: QuantPlan,
    modules: Mapping[str, Mapping[str, TensorInfo]],
    config: Mapping[str, Any] | None,
    tp: int,
) -> dict[str, RankLayer]:
    """Each quantized layer (``facts.quant_plan.layer_shapes``: fused names) with its rank's
    share under ``tensor_parallel_size`` ``tp``. MoE experts keep their whole sizes (their
    kernel rules take ``tp`` themselves)."""
    shapes = layer_shapes(plan, modules)
    per_leaf: dict[str, tuple[tuple[int, ...], int]] = {}
    if tp > 1:
        split = format_split(dict(config or {}), format_schemes(plan.schemes, plan.method), tp)
        # every decoder layer has layer 0's shares: keyed by the leaf (self_attn.qkv_proj)
        for name, share in split.shapes.items():
            per_leaf[name.split(".layers.0.", 1)[-1]] = share
    out: dict[str, RankLayer] = {}
    for layer, (scheme, n, k) in shapes.items():
        if tp <= 1 or scheme.kernel_family == "mxfp4_moe" or scheme.row.producer == "mxfp4":
            out[layer] = RankLayer(scheme, n, k, n, k)
            continue
        leaf = layer.rsplit(".", 1)[-1]
        known = next((v for key, v in per_leaf.items() if layer.endswith("." + key)), None)
        if known is not None:
            outs, rank_k = known
            rank_n = sum(outs)
        elif leaf in ROW_LEAVES:
            rank_n, rank_k = n, k // tp
        elif leaf in REPLICATED_LEAVES:
            rank_n, rank_k = n, k
        else:
            rank_n, rank_k = n // tp, k
        out[layer] = RankLayer(scheme, rank_n, rank_k, n, k, _straddles(scheme, rank_k, k))
    return out


def _straddles(scheme: Scheme, rank_k: int, full_k: int) -> bool:
    # compressed_tensors_wNa16.py:create_weights: scales are split with the input unless
    # marlin_repeat_scales_on_all_ranks (channelwise; 0.26.0 act-order, row-parallel), then
    # verify_group_size_divides_partition; act-order is left to the releases' own rules
    # (facts/vllm_tp.py:format_split judges it the same way)
    if scheme.kernel_family != "wna16" or "g_idx" in scheme.flags:
        return False
    group = int(scheme.settings.get("group") or -1)
    return 0 < group < full_k and rank_k % group != 0 and rank_k != full_k


def with_rules(kernels: Sequence[Kernel], rules: MpKernelRules | None) -> tuple[Kernel, ...]:
    """The WNA16 kernels with the shape rules the env's own source states
    (readers/vllm_mp_kernels.py) in place of the table's: Marlin's tile, group sizes, strict
    check (always / act-order only / never) and group-split rule, Machete's prepacked block,
    Triton W4A16's group sizes. A rule not read keeps the table's value."""
    if rules is None:
        return tuple(kernels)
    out = []
    for k in kernels:
        if k.name == "MarlinLinearKernel":
            tile = rules.marlin_tile or k.g_idx_tile or (64, 128)
            if rules.marlin_groups is not None:
                k = replace(k, group_sizes=frozenset(rules.marlin_groups))
            if rules.marlin_straddle is not None:
                k = replace(k, straddle=rules.marlin_straddle)
            if rules.marlin_strict == "always":  # check_marlin_supports_shape, no padding
                k = replace(k, n_multiple=tile[0], k_multiple=tile[1], g_idx_tile=(), pads=())
            elif rules.marlin_strict == "act-order":
                k = replace(k, g_idx_tile=tile)
            elif rules.marlin_strict == "no":
                k = replace(k, g_idx_tile=())
        elif k.name == "MacheteLinearKernel" and rules.machete_block is not None:
            k = replace(k, k_multiple=rules.machete_block[0], n_multiple=rules.machete_block[1])
        elif k.name == "TritonW4A16LinearKernel" and rules.triton_groups is not None:
            k = replace(k, group_sizes=frozenset(rules.triton_groups))
        out.append(k)
    return tuple(out)
