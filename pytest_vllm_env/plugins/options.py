"""The options and ini keys of the area plugins, declared at start without importing them.

pytest must know every option before it parses the command line, but an area plugin
(``plugins/<area>.py``) is registered only by a run that uses it (``plugin.py``: an option
or ini key of ours, the bundled suite, ``--fixtures``, or a test asking for one of our
fixtures). So the areas' settings are declared here, in the order the areas are listed in
``plugin.AREA_PLUGINS`` (``pytest --help`` lists them in that order), each beside the name
of the area that reads it. An area plugin must not implement ``pytest_addoption`` itself:
registered late, pytest would replay it and declare its options a second time.
"""

from __future__ import annotations

import pytest

from pytest_vllm_env import defaults
from pytest_vllm_env.plugins import settings


def add_area_options(parser: pytest.Parser) -> None:
    """Declare every area plugin's options and ini keys (:func:`settings.add_setting`,
    :func:`settings.add_flag`)."""
    add = settings.add_setting
    # plugins/cuda.py
    add(
        parser,
        "--cuda-tool-timeout",
        "seconds each nvcc/ptxas/cmake run may take before it is killed and judged; "
        f"default {defaults.CUDA_TOOL_TIMEOUT:.0f}",
        metavar="SECONDS",
    )
    add(
        parser,
        "--cmake",
        "the cmake to predict for and probe with; default: cmake on the env's activated PATH",
        metavar="PATH",
    )
    # plugins/binaries.py
    add(
        parser,
        "--vllm-source",
        "a vLLM source tree (checkout of a tag) to judge before building it: its torch pins "
        "(pyproject.toml, requirements/cuda.txt) and scalar types against the env's torch, "
        "its build/ CMake cache, its CMake floor",
        metavar="DIR",
    )
    # plugins/modelopt.py
    add(
        parser,
        "--vllm-additional-config",
        "the additional_config (a JSON object) you give vLLM: --additional-config / "
        'LLM(additional_config=...); e.g. {"gdn_prefill_backend": "triton"} (read by '
        "modelopt.gdn-prefill-backend; the gpu probe loads with it)",
        metavar="JSON",
    )
    # plugins/checkpoint.py
    add(
        parser,
        "--tensor-parallel-size",
        "the tensor_parallel_size you start vLLM with (--tensor-parallel-size / -tp); judged by "
        "launch.tensor-parallel against each checkpoint's heads, sizes and format blocks",
        metavar="N",
    )
    add(
        parser,
        "--vllm-quantization",
        "the quantization= you give vLLM (--quantization / -q / LLM(quantization=...)); judged "
        "by launch.quantization against what each checkpoint declares",
        metavar="NAME",
    )
    add(
        parser,
        "--vllm-serve-args",
        "the arguments you start vLLM with: a `vllm serve` command line, or @FILE (a script or "
        "recipe holding one, vLLM's --config YAML, or a Python LLM(...) recipe); "
        "--tensor-parallel-size and --vllm-quantization win over it",
        metavar="ARGS|@FILE",
    )
    add(
        parser,
        "--vllm-load-probe",
        "opt-in: also run the env's own vLLM on the CPU to build each checkpoint's model and "
        "run its weight loader (meta: no weight bytes, any size; load: the real tensors, for "
        "small checkpoints); checkpoint.load-probe says what it did and where the static "
        "verdict differs",
        metavar="MODE",
    )
    # plugins/quant.py
    add(
        parser,
        "--vllm-checkpoint",
        "a quantized checkpoint of any format vLLM loads (compressed-tensors, fp8, mxfp4, "
        "modelopt): a dir or cached HF repo id; read by the quant.* checks",
        multiple=True,
        metavar="PATH|REPO_ID",
    )
    # plugins/gpu.py
    add(
        parser,
        "--reference-checkpoint",
        "the BF16 original(s) of the --modelopt-checkpoint(s), for gpu.vllm-reference: one "
        "for all, or one per checkpoint in the same order",
        multiple=True,
    )
    add(parser, "--vllm-build-log", "build log(s) of vLLM to judge (buildlog tier)", multiple=True)
    add(
        parser,
        "--vllm-probe-timeout",
        f"seconds a gpu probe (one vLLM load) may take; {defaults.PROBE_TIMEOUT:.0f}",
    )
    add(
        parser,
        "--vllm-logprob-tolerance",
        "nats the first-token logprob of a checkpoint may differ from its "
        f"--reference-checkpoint's; {defaults.LOGPROB_TOL}",
    )
    add(
        parser,
        "--vllm-perplexity-exponent",
        "gpu.vllm-perplexity fails above vocab_size ** this (uniform guessing scores "
        f"vocab_size); {defaults.PERPLEXITY_EXPONENT}",
    )
    add(
        parser,
        "--vllm-parallel-loads",
        "how many --modelopt-checkpoint loads share the GPU at once (small models, big GPU); 1",
        metavar="N",
    )
    parser.getgroup(settings.GROUP).addoption(
        "--vllm-fresh-process",
        action="store_true",
        default=False,
        help="load each --modelopt-checkpoint a second time in a fresh process and compare "
        "the tokens (default: one load, two generations in it)",
    )
    # plugins/build.py
    add(
        parser,
        "--build-timeout",
        "seconds one torch extension build may take before it is killed; "
        f"{defaults.BUILD_TIMEOUT:.0f}",
        metavar="SECONDS",
    )
    # plugins/lock.py
    settings.add_flag(
        parser,
        "--vllm-from-lock",
        "judge Pixi envs from pixi.lock even when installed, as before `pixi install`",
        "judge Pixi envs from pixi.lock (true/false)",
    )
    add(
        parser,
        "--pixi-platform",
        "the platform of pixi.lock to judge (linux-64, linux-aarch64...); default: this machine's",
        metavar="PLATFORM",
    )
    # plugins/source.py
    add(
        parser,
        "--vllm-project",
        "the project a venv is installed from (a folder with pyproject.toml, "
        "requirements*.txt or uv.lock, or one such file), for pypi.build-isolation; for a "
        "Pixi or conda env, the requirements installed into it with pip; default: the folder "
        "holding the venv when it has one",
        metavar="PATH",
    )
    # plugins/driver.py
    add(
        parser,
        "--cuda-driver",
        "the NVIDIA driver the GPU nodes run (nvidia-smi's Driver Version, e.g. 550.144.03), "
        "to judge the env against it from a machine without the GPU; default: this machine's "
        "driver (NVML, /proc/driver/nvidia/version)",
        metavar="VERSION",
    )
