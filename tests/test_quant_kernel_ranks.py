# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""quant.kernel-arch on each rank's share: vLLM chooses a layer's mixed-precision kernel from
``MPLinearLayerConfig.partition_weight_shape`` (``choose_mp_linear_kernel``), so the
tensor_parallel_size decides which kernel runs and whether one does.

Held against the real ``choose_mp_linear_kernel`` of vLLM 0.26.0 and 0.33.0 under each arch
(``fixtures/loader_truth/kernel_choice-*.json``, made by scripts/kernel_choice_truth.py): a
grid of per-rank configs, and the configs the real CPU loader passed it for tiny
compressed-tensors W4A16 Llamas at tensor_parallel_size 1, 2 and 4 (every rank simulated)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.field_reports import Shape, resized
from fixtures.quant_standin import _add_g_idx, group_weights, install_vllm_quant
from pytest_vllm_env.checks.quant_kernels import kernel_arch
from pytest_vllm_env.facts.quant_kernel_choice import LayerAsk, choose
from pytest_vllm_env.facts.quant_kernel_ranks import rank_layers, with_rules
from pytest_vllm_env.facts.quant_plan import plan
from pytest_vllm_env.readers.checkpoint import read_checkpoint
from pytest_vllm_env.readers.vllm_mp_kernels import FILES, MpKernelRules, parse
from pytest_vllm_env.tables.archs import parse_arch
from pytest_vllm_env.tables.quant_kernels import FAMILIES
from tests.test_quant_checks import run, verdicts

TRUTH = Path(__file__).resolve().parents[1] / "fixtures" / "loader_truth"
RELEASES = ("0.26.0", "0.33.0")
# the tiny Llamas the truth script loaded (scripts/kernel_choice_truth.py:SHAPES)
SHAPES = {"h512-i1408": Shape(512, 8, 64, 2, 1408), "h384-i1536": Shape(384, 4, 96, 2, 1536)}


def truth(release: str) -> dict:
    """What the real chooser and loader of ``release`` said."""
    return json.loads((TRUTH / f"kernel_choice-{release}.json").read_text())


def modelled(release: str, ask: LayerAsk, cc: str, packages: frozenset[str], rules=None) -> str:
    """The kernel the table and chooser name for ``ask`` on ``cc`` ("none": vLLM raises),
    with the shape rules ``rules`` read from the env's source in place of the table's."""
    kernels = with_rules(FAMILIES[release]["wna16"], rules)
    preferred = rules.humming_preferred if rules is not None else None
    got = choose(kernels, parse_arch(cc).number, ask, packages, release, preferred)
    return got.kernel.name if got.kernel else "none"


@pytest.mark.parametrize("from_source", [False, True], ids=["table", "env-source"])
@pytest.mark.parametrize("release", RELEASES)
def test_the_chooser_agrees_with_the_real_one_on_every_rank_share(release, from_source):
    """Every per-rank config of the grid (splits that break Machete's tile, straddle a group,
    leave N not a multiple of 8; 4/8-bit, zero points, act-order on 0.26.0, BF16/FP16, group
    -1/16/32/64/128/256) on 7 archs: the kernel the real chooser takes, or none."""
    data = truth(release)
    packages = frozenset({"humming"} if data["installed"]["humming"] else ())
    rules = MpKernelRules.from_json(data["rules"]) if from_source else None
    wrong = []
    for case in data["grid"]:
        flags = frozenset(
            f for f, on in (("g_idx", case["g_idx"]), ("zero_point", case["zp"])) if on
        )
        (k, n), full_k = case["part"], case["full"][0]
        settings = {"bits": case["bits"], "group": case["group"]}
        ask = LayerAsk(n, k, settings, flags, case["act"], full_k=full_k)
        for cc, real in case["cuda"].items():
            if modelled(release, ask, cc, packages, rules) != real:
                wrong.append((cc, real, case))
    assert len(data["grid"]) * 7 >= 3000
    assert not wrong, wrong[:3]


@pytest.mark.parametrize("release", RELEASES)
def test_each_ranks_share_is_the_one_the_real_loader_builds(release, tmp_path):
    """The loader's own MPLinearLayerConfig per layer and rank (tp 1, 2, 4): our split gives
    the same partition and full input, the kernel it leads to on every arch is the real
    chooser's, and a share that straddles a group is the one the loader refused."""
    data = truth(release)
    packages = frozenset({"humming"} if data["installed"]["humming"] else ())
    refused = {(o["name"], o["tp"]): o["refused"] or "" for o in data["loads"]}
    assert refused[("h512-i1408", 1)] == "" and refused[("h384-i1536", 1)] == ""
    assert "input_size_per_partition=704" in refused[("h512-i1408", 2)]
    layers = {}
    for name, shape in SHAPES.items():
        folder = resized("ct-w4a16-g128", "ct-w4a16-g128", shape, tmp_path / name)
        ckpt = read_checkpoint(name, folder)
        for tp in (1, 2, 4):
            layers[(name, tp)] = rank_layers(plan(ckpt), ckpt.modules, ckpt.config, tp)
    assert len(data["layers"]) >= 18
    for rec in data["layers"]:
        rl = layers[(rec["name"], rec["tp"])][rec["layer"]]
        cfg = rec["config"]
        assert [rl.k, rl.n] == cfg["part"], rec["layer"]
        assert rl.full_k == cfg["full"][0]
        ask = LayerAsk(
            rl.n, rl.k, rl.scheme.settings, rl.scheme.flags, cfg["act"], full_k=rl.full_k
        )
        for cc, real in rec["cuda"].items():
            assert modelled(release, ask, cc, packages) == real["chosen"], (rec["layer"], cc)
        layer_refused = f"'{rec['layer']}'" in refused[(rec["name"], rec["tp"])]
        assert rl.straddles == layer_refused, (rec["name"], rec["tp"], rec["layer"])


def _actorder(tmp_path: Path) -> Path:
    """A W4A16 group-128 act-order Llama (0.26.0 builds it) whose shares at tp 2 break
    Marlin's strict act-order tile: qkv 960 -> 480 rows a rank, o_proj's input 640 -> 320."""
    folder = resized("ct-w4a16-g128", "ct-w4a16-g128", Shape(512, 8, 80, 2, 1536), tmp_path / "ao")
    cfg = json.loads((folder / "config.json").read_text())
    group_weights(cfg).update(actorder="group")
    (folder / "config.json").write_text(json.dumps(cfg))
    _add_g_idx(folder)
    return folder


def judge(folder: Path, tp: int, archs=("8.0", "9.0", "12.0"), packages=frozenset()):
    """quant.kernel-arch (vLLM 0.26.0) on ``folder`` at ``tp`` for ``archs``."""
    ckpt = read_checkpoint(folder.name, folder)
    return kernel_arch(
        ckpt, plan(ckpt), "0.26.0", [parse_arch(a) for a in archs], "x", packages, tp=tp
    )


def test_act_order_shares_off_marlins_tile_have_no_kernel(tmp_path):
    """0.26.0 Marlin keeps the strict check_marlin_supports_shape for act-order (no padding),
    Machete and Exllama refuse act-order with a split input, Triton any act-order: at tp 2
    vLLM raises; at tp 1 Marlin (and Machete on sm 9.0) take every layer."""
    folder = _actorder(tmp_path)
    ok = judge(folder, 1)
    assert ok.outcome == "passed", ok.summary
    assert "9.0: MacheteLinearKernel, MarlinLinearKernel" in ok.summary
    bad = judge(folder, 2)
    assert bad.outcome == "failed"
    assert (
        "model.layers.0.self_attn.qkv_proj [N=480, K=512 per rank of 960 x 512 at tensor_parallel_size=2]"
        in bad.summary
    )
    assert (
        "MarlinLinearKernel: act-order: Weight output_size_per_partition = 480 is not divisible by min_thread_n = 64"
        in bad.summary
    )
    assert (
        "ExllamaLinearKernel: no activation reordering (g_idx) with the input split over ranks"
        in bad.summary
    )
    assert bad.fix.startswith("start vLLM with --tensor-parallel-size=1 ")
    assert "re-quantize without act-order" in bad.fix


def test_humming_takes_what_marlin_refuses_where_installed(tmp_path):
    """humming-kernels is a dependency of both wheels; with it the chooser never runs dry on
    a straddled group: Humming is taken, and create_weights then refuses the rank's input."""
    folder = resized("ct-w4a16-g128", "ct-w4a16-g128", SHAPES["h512-i1408"], tmp_path / "h")
    f = judge(folder, 2, archs=("8.0",), packages=frozenset({"humming"}))
    assert f.outcome == "failed"
    assert (
        "8.0: vLLM takes HummingLinearKernel for 1 layer(s), e.g. model.layers.0.mlp.down_proj [N=512, K=704 per rank of 512 x 1408 at tensor_parallel_size=2], then refuses the rank's input: Weight input_size_per_partition=704 ... is not divisible by group_size=128"
        in f.summary
    )
    assert "--tensor-parallel-size=1 " in f.fix


# -- as users run it ----------------------------------------------------------------------------
@pytest.fixture
def env(env_builder: EnvBuilder) -> EnvBuilder:
    """A Pixi env with a stand-in vLLM 0.26.0 (its quantization files' structure)."""
    install_vllm_quant(env_builder, "0.26.0")
    return env_builder


def test_tensor_parallel_size_splits_a_group_no_kernel_takes(pytester, env, tmp_path):
    """W4A16 group 128, intermediate 1408: at tp 1 Machete serves sm 9.0 and Marlin sm 12.0;
    at --tensor-parallel-size=2 each rank's down_proj input is 704 (5.5 groups): Marlin and
    Triton refuse it, so on sm 12.0 vLLM raises "Failed to find a kernel"; on sm 9.0 Machete
    (704 % 64 == 0) is taken and create_weights refuses the share."""
    folder = resized("ct-w4a16-g128", "ct-w4a16-g128", SHAPES["h512-i1408"], tmp_path / "w4")
    run(pytester, env, folder, arch="9.0,12.0")
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "passed", k
    assert k["summary"].endswith("12.0: MarlinLinearKernel; 9.0: MacheteLinearKernel")
    pytester.path.joinpath("report.json").unlink()
    run(pytester, env, folder, arch="9.0,12.0", extra=("--tensor-parallel-size=2",))
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "failed", k
    assert (
        "12.0: vLLM raises 'Failed to find a kernel that can implement the ... linear layer' for 1 layer(s), e.g. model.layers.0.mlp.down_proj [N=512, K=704 per rank of 512 x 1408 at tensor_parallel_size=2]"
        in k["summary"]
    )
    assert (
        "MarlinLinearKernel: in_features per partition 704 is not divisible by group_size = 128"
        in k["summary"]
    )
    assert "9.0: vLLM takes MacheteLinearKernel for 1 layer(s)" in k["summary"]
    assert k["fix"].startswith("start vLLM with --tensor-parallel-size=1 ")
    assert k["evidence"]["tensor_parallel_size"] == 2


# -- the rules as the env's own source writes them ---------------------------------------------
def test_the_rules_read_are_the_wheels_own():
    """readers/vllm_mp_kernels.py on the two wheels' files (recorded by the truth script):
    0.26.0 keeps Marlin's strict check for act-order, 0.33.0 drops it and prefers Humming on
    sm 9.0; both refuse a group split over ranks; Machete's block is [64, 128]."""
    old, new = (MpKernelRules.from_json(truth(r)["rules"]) for r in RELEASES)
    assert (old.marlin_strict, new.marlin_strict) == ("act-order", "no")
    assert old.marlin_straddle and new.marlin_straddle
    assert old.marlin_tile == new.marlin_tile == (64, 128)
    assert old.machete_block == new.machete_block == (64, 128)
    assert (old.humming_preferred, new.humming_preferred) == (None, (90,))


@pytest.mark.integration
@pytest.mark.parametrize("release", RELEASES)
def test_the_reader_still_reads_the_cached_wheels(release):
    """The reader on the cached real venvs' files gives what was recorded."""
    site = (
        Path.home()
        / ".cache/pytest-vllm-env/venvs"
        / f"vllm-{release}/lib/python3.12/site-packages"
    )
    if not (site / "vllm").is_dir():
        pytest.skip(f"no {site}: make it as scripts/loader_truth_cpu.py says")
    texts = [(site / f).read_text() if (site / f).exists() else None for f in FILES]
    assert parse(*texts) == MpKernelRules.from_json(truth(release)["rules"])


MARLIN_ALWAYS_STRICT = """
class MarlinLinearKernel(MPLinearKernel):
    @classmethod
    def can_implement(cls, c):
        if c.group_size not in MARLIN_SUPPORTED_GROUP_SIZES:
            return False, "group"
        return check_marlin_supports_shape(
            c.partition_weight_shape[1], c.partition_weight_shape[0],
            c.full_weight_shape[0], c.group_size)
"""


def test_a_marlin_that_does_not_pad_leaves_the_share_to_triton(tmp_path):
    """Group 32, hidden 512, 8 heads x 80: at tp 2 each rank's qkv is 480 rows (not a multiple
    of 64) and o_proj's input 320 (not of 128). 0.26.0/0.33.0's Marlin pads them (passed); a
    vLLM whose MarlinLinearKernel calls check_marlin_supports_shape for every share (as before
    padding came) refuses them and the Triton W4A16 fallback takes them (a warning): the
    verdict follows the source it reads, not a release number."""
    folder = resized(
        "ct-w4a16-gptq-g32", "ct-w4a16-g32", Shape(512, 8, 80, 2, 1536), tmp_path / "g32"
    )
    ckpt = read_checkpoint(folder.name, folder)
    archs = [parse_arch("8.0")]
    ok = kernel_arch(ckpt, plan(ckpt), "0.26.0", archs, "x", frozenset(), tp=2)
    assert ok.outcome == "passed", ok.summary
    assert ok.summary.endswith("8.0: MarlinLinearKernel")
    assert (
        "MarlinLinearKernel: model.layers.0.self_attn.qkv_proj [N=480, K=512 per rank"
        in ok.evidence["padded"]["8.0"]
    )
    strict = parse(
        "GPTQ_MARLIN_MIN_THREAD_N = 64\nGPTQ_MARLIN_MIN_THREAD_K = 128\n",
        None,
        MARLIN_ALWAYS_STRICT,
        None,
        None,
    )
    assert strict.marlin_strict == "always"
    bad = kernel_arch(ckpt, plan(ckpt), "0.26.0", archs, "x", frozenset(), tp=2, mp_rules=strict)
    assert bad.outcome == "warning", bad.summary
    assert (
        "8.0: TritonW4A16LinearKernel for 2 layer(s), e.g. model.layers.0.self_attn.o_proj "
        "[N=512, K=320 per rank of 512 x 640 at tensor_parallel_size=2]: the Triton W4A16 "
        "fallback" in bad.summary
    )


def test_the_envs_own_marlin_source_reaches_the_verdict(pytester, env_builder, tmp_path):
    """As users run it: an env whose vLLM's MarlinLinearKernel never pads (its marlin.py and
    marlin_utils.py read from the env) gets the Triton fallback for the shares 0.26.0 pads."""
    from fixtures.quant_standin import install_vllm, quant_files
    from pytest_vllm_env.readers.vllm_mp_kernels import MARLIN_MP_PY, MARLIN_UTILS_PY

    extra = quant_files("0.26.0") | {
        MARLIN_MP_PY: MARLIN_ALWAYS_STRICT,
        MARLIN_UTILS_PY: "GPTQ_MARLIN_MIN_THREAD_N = 64\nGPTQ_MARLIN_MIN_THREAD_K = 128\n",
    }
    install_vllm(env_builder, "0.26.0", extra=extra)
    folder = resized(
        "ct-w4a16-gptq-g32", "ct-w4a16-g32", Shape(512, 8, 80, 2, 1536), tmp_path / "g32"
    )
    run(pytester, env_builder, folder, arch="8.0", extra=("--tensor-parallel-size=2",))
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "warning", k
    assert "8.0: TritonW4A16LinearKernel for 2 layer(s)" in k["summary"]
