"""Record what a real vLLM's own code does with quantization configs, on the CPU (no GPU):
which scheme ``CompressedTensorsConfig._get_scheme_from_parts`` picks (or the error it
raises), what ``Fp8Config.from_config`` refuses, and what each scheme's ``create_weights``
registers on a Linear (names, dtypes, shapes), with kernel selection stubbed out (the kernel
is the GPU's business; ``tables/quant_kernels.py`` models it).

Run with the Python of an env that has vLLM (and its torch, compressed-tensors) installed::

    ~/.cache/pytest-vllm-env/venvs/vllm-0.26.0/bin/python scripts/quant_schemes_truth.py \\
        fixtures/quant_export fixtures/quant_export/schemes_truth-0.26.0.json

The JSON is what tests/test_quant_plan.py holds facts/quant_plan.py and the rows of
tables/quant_schemes.py against. Imports take a minute or two on two cores.
"""

from __future__ import annotations

import copy
import json
import sys
import types
from pathlib import Path

# Configs beside the real exports: the cases the exports cannot show (each a config group).
NVFP4_W = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}
INT4_G = {"num_bits": 4, "type": "int", "strategy": "group", "symmetric": True}
FP8_CH = {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True}
SYNTHETIC = {
    "w4a16-g16": ({**INT4_G, "group_size": 16}, None, "pack-quantized"),
    "w4a16-g256": ({**INT4_G, "group_size": 256}, None, "pack-quantized"),
    "w4a16-actorder-group": (
        {**INT4_G, "group_size": 128, "actorder": "group"},
        None,
        "pack-quantized",
    ),
    "w4a16-channel": ({**INT4_G, "strategy": "channel"}, None, "pack-quantized"),
    "w8a16-g128": ({**INT4_G, "num_bits": 8, "group_size": 128}, None, "pack-quantized"),
    "nvfp4-w-fp8-a": (
        NVFP4_W,
        {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True},
        "nvfp4-pack-quantized",
    ),
    "fp8-w-int8-a": (
        FP8_CH,
        {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
        "float-quantized",
    ),
    "int8-static-asym": (
        {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True},
        {"num_bits": 8, "type": "int", "strategy": "tensor", "symmetric": False},
        "int-quantized",
    ),
    "int4-w-a16-int-quantized": ({**INT4_G, "group_size": 128}, None, "int-quantized"),
}
FP8_CONFIGS = {
    "block-dynamic": {
        "quant_method": "fp8",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128],
    },
    "block-static": {
        "quant_method": "fp8",
        "activation_scheme": "static",
        "weight_block_size": [128, 128],
    },
    "block-3d": {
        "quant_method": "fp8",
        "activation_scheme": "dynamic",
        "weight_block_size": [1, 128, 128],
    },
    "tensor-static": {"quant_method": "fp8", "activation_scheme": "static"},
    "tensor-dynamic": {"quant_method": "fp8", "activation_scheme": "dynamic"},
    "bad-activation": {"quant_method": "fp8", "activation_scheme": "per-token"},
}


def _recorder(name: str, real: type) -> type:
    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args = kwargs
            self.name = name

        @classmethod
        def get_min_capability(cls) -> int:
            return real.get_min_capability()

    return Recorded


def _group(weights, inputs, fmt) -> dict:
    return {
        "format": fmt,
        "quant_method": "compressed-tensors",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": inputs,
                "format": fmt,
            }
        },
        "ignore": ["lm_head"],
    }


def schemes(configs: dict[str, dict]) -> dict[str, dict]:
    """``_get_scheme_from_parts`` for the Linear target of each config."""
    from vllm.model_executor.layers.quantization.compressed_tensors import compressed_tensors as ct

    real = {k: getattr(ct, k) for k in dir(ct) if k.startswith("CompressedTensorsW")}
    out: dict[str, dict] = {}
    for name, cfg in configs.items():
        for k, cls in real.items():
            setattr(ct, k, _recorder(k, cls))
        try:
            conf = ct.CompressedTensorsConfig.from_config(copy.deepcopy(cfg))
            sd = conf.target_scheme_map["Linear"]
            got = conf._get_scheme_from_parts(
                sd["weights"],
                sd["input_activations"],
                sd.get("output_activations"),
                sd.get("format"),
                "layer",
            )
            args = {k: str(v) for k, v in got.args.items() if k != "layer_name"}
            out[name] = {"scheme": got.name, "args": args}
        except Exception as exc:  # what vLLM raises is the fact recorded
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for k, cls in real.items():
                setattr(ct, k, cls)
    return out


def _stub_kernels() -> None:
    """create_weights picks a kernel for the current GPU; there is none: a stub."""
    import torch

    kernel = types.SimpleNamespace(process_weights_after_loading=lambda layer: None)
    vllm_config = types.SimpleNamespace(model_config=types.SimpleNamespace(dtype=torch.bfloat16))
    names = (
        "init_fp8_linear_kernel",
        "init_int8_linear_kernel",
        "init_nvfp4_linear_kernel",
        "expose_input_quant_key",
        "validate_fp8_block_shape",
    )
    for mod in list(sys.modules.values()):
        modname = getattr(mod, "__name__", "") or ""
        if not modname.startswith("vllm.model_executor.layers.quantization"):
            continue
        for n in names:
            if hasattr(mod, n):
                setattr(mod, n, lambda *a, **k: kernel)
        if hasattr(mod, "choose_mp_linear_kernel"):
            mod.choose_mp_linear_kernel = lambda *a, **k: lambda *a, **k: kernel
        if hasattr(mod, "get_current_vllm_config"):
            mod.get_current_vllm_config = lambda: vllm_config


def _one_process_group() -> None:
    """The Linear parameters ask for the tensor-parallel rank: a one-process gloo group on
    the loopback address."""
    import socket

    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import parallel_state as ps

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with set_current_vllm_config(VllmConfig()):
        ps.init_distributed_environment(
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method=f"tcp://127.0.0.1:{port}",
            backend="gloo",
        )
        ps.initialize_model_parallel(1, 1)


def registered(method, out: int = 256, inp: int = 512) -> dict[str, list]:
    """What ``create_weights`` registers on one Linear ``[out, inp]`` (one partition)."""
    import torch

    layer = torch.nn.Module()
    method.create_weights(
        layer=layer,
        input_size_per_partition=inp,
        output_partition_sizes=[out],
        input_size=inp,
        output_size=out,
        params_dtype=torch.bfloat16,
        weight_loader=lambda *a, **k: None,
    )
    return {
        n: [str(p.dtype).removeprefix("torch."), list(p.shape)]
        for n, p in layer.named_parameters(recurse=False)
        if p is not None
    }


def create_weights(configs: dict[str, dict]) -> dict[str, dict]:
    """The parameters of each compressed-tensors scheme and of Fp8LinearMethod."""
    from vllm.model_executor.layers.quantization.compressed_tensors import compressed_tensors as ct
    from vllm.model_executor.layers.quantization.fp8 import Fp8Config, Fp8LinearMethod

    _stub_kernels()
    _one_process_group()
    out: dict[str, dict] = {}
    for name, cfg in configs.items():
        try:
            conf = ct.CompressedTensorsConfig.from_config(copy.deepcopy(cfg))
            sd = conf.target_scheme_map["Linear"]
            scheme = conf._get_scheme_from_parts(
                sd["weights"],
                sd["input_activations"],
                sd.get("output_activations"),
                sd.get("format"),
                "layer",
            )
            out[name] = {"scheme": type(scheme).__name__, "params": registered(scheme)}
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    for name, cfg in FP8_CONFIGS.items():
        try:
            conf = Fp8Config.from_config(dict(cfg))
            out[f"fp8:{name}"] = {
                "scheme": "Fp8LinearMethod",
                "params": registered(Fp8LinearMethod(conf)),
            }
        except Exception as exc:
            out[f"fp8:{name}"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def main(root: Path, out: Path) -> None:
    import vllm
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    # no GPU here: the CPU platform, whose capability is None (as _check_scheme_supported
    # then treats every scheme as supported)
    platforms._current_platform = CpuPlatform()

    configs = {}
    for d in sorted(root.iterdir()):
        cfg = d / "config.json"
        if cfg.is_file():
            block = json.loads(cfg.read_text()).get("quantization_config")
            if isinstance(block, dict) and block.get("quant_method") == "compressed-tensors":
                configs[d.name] = block
    configs |= {f"synthetic:{k}": _group(*v) for k, v in SYNTHETIC.items()}
    report = {
        "vllm": vllm.__version__,
        "schemes": schemes(configs),
        "create_weights": create_weights(configs),
        "configs": configs,
    }
    # vLLM logs to stdout: the record goes to its own file
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
