"""Header-only means the cost does not grow with weight bytes.

Builds a ~100 GB ModelOpt FP8 checkpoint (a 70B-class Llama with more layers: real
headers, real scale values, holes for the weights, so it takes almost no disk) and the
same layout (same tensor names, count and shards) at ~1/1000 of the bytes, then times,
in one run:

- ``parse``: just open each shard and ``json.loads`` its header (the floor any header
  reader pays);
- ``judge``: the whole modelopt verdict: locate and read the checkpoint (index and
  headers validated), read every scale tensor's bytes, run every judgement;
- ``judge (small)``: the same on the small twin: equal to ``judge`` when the cost does
  not grow with weight bytes.

and prints the figures and ratios (targets: judge <= 2x parse; judge / judge (small) ~ 1).
Usage::

    python benchmarks/modelopt_headers.py [--dir DIR] [--gb 100] [--repeat 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import checkpoints as ckpts  # noqa: E402
from fixtures.vllm_standin import modelopt_text, registry_text  # noqa: E402
from pytest_vllm_env.checks import modelopt  # noqa: E402
from pytest_vllm_env.readers.checkpoint import read_checkpoint, read_scales, resolve  # noqa: E402
from pytest_vllm_env.readers.vllm_source import parse_modelopt, parse_registry  # noqa: E402
from pytest_vllm_env.tables.archs import parse_arch  # noqa: E402

SHARD_GB = 5  # what Hugging Face exports use


def build(folder: Path, gb: float, scale: int = 1) -> Path:
    """Llama-3-70B widths (divided by ``scale``); layers chosen to reach ``gb`` at scale 1
    (FP8: one byte per weight)."""
    hidden, inter, heads, kv, vocab = 8192, 28672, 64, 8, 128256
    per_layer = 2 * hidden * hidden + 2 * kv * 128 * hidden + 3 * hidden * inter
    layers = max(1, round((gb * 1e9 - 2 * vocab * hidden * 2) / per_layer))
    dims = ckpts.Dims(
        layers=layers,
        hidden=hidden // scale,
        heads=heads,
        kv_heads=kv,
        intermediate=inter // scale,
        vocab=vocab // scale,
    )
    builder = ckpts.llama(dims=dims, shards=max(1, round(gb / SHARD_GB)))
    if not (folder / "model.safetensors.index.json").exists():
        builder.write(folder)
    return folder


def parse_only(folder: Path) -> int:
    """The floor: read each header and json.loads it, nothing else."""
    count = 0
    for shard in sorted(folder.glob("*.safetensors")):
        with open(shard, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            count += len(json.loads(fh.read(length)))
    return count


def judge(folder: Path, source, registry) -> list:
    path, _ = resolve(str(folder))
    ckpt = read_checkpoint(str(folder), path)
    values, unread = read_scales(ckpt)
    return [
        modelopt.files_readable(ckpt),
        modelopt.quant_config(ckpt),
        modelopt.quant_algo_supported(ckpt, source, "0.26.0"),
        modelopt.tensors_complete(ckpt),
        modelopt.shapes_match_config(ckpt),
        modelopt.scales_sane(ckpt, values, unread),
        modelopt.architecture_registered(ckpt, registry, "0.26.0"),
        modelopt.min_capability(ckpt, source, "0.26.0", [parse_arch("9.0")], "--cuda-arch"),
        modelopt.vision_tower(ckpt, registry),
    ]


def best_of(repeat: int, func, *args) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "pytest-vllm-env-bench-100g"
    )
    parser.add_argument("--gb", type=float, default=100.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    start = time.perf_counter()
    folder = build(args.dir, args.gb)
    small = build(args.dir.with_name(args.dir.name + "-small"), args.gb, scale=32)
    built = time.perf_counter() - start
    small_bytes = sum(os.path.getsize(p) for p in small.glob("*.safetensors"))
    nominal = sum(os.path.getsize(p) for p in folder.glob("*.safetensors"))
    on_disk = sum(os.stat(p).st_blocks * 512 for p in folder.glob("*.safetensors"))
    source = parse_modelopt(modelopt_text(["FP8", "NVFP4"]))
    registry = parse_registry(registry_text(["LlamaForCausalLM"], [], {}))

    parse_s, tensors = best_of(args.repeat, parse_only, folder)
    judge_s, findings = best_of(args.repeat, judge, folder, source, registry)
    small_s, _ = best_of(args.repeat, judge, small, source, registry)
    outcomes = {f.id: f.outcome for f in findings}
    bad = [f.render() for f in findings if f.bad]
    ratio = judge_s / parse_s
    result = {
        "checkpoint": str(folder),
        "nominal_bytes": nominal,
        "on_disk_bytes": on_disk,
        "shards": len(list(folder.glob("*.safetensors"))),
        "tensors": tensors,
        "build_s": round(built, 3),
        "parse_headers_s": round(parse_s, 5),
        "judge_s": round(judge_s, 5),
        "ratio": round(ratio, 2),
        "small_nominal_bytes": small_bytes,
        "judge_small_s": round(small_s, 5),
        "growth_ratio": round(judge_s / small_s, 2),
        "target_ratio": 2.0,
        "outcomes": outcomes,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(
        f"checkpoint: {folder} ({nominal / 1e9:.1f} GB nominal, {on_disk / 1e6:.1f} MB on "
        f"disk, {result['shards']} shards, {tensors} tensors)"
    )
    print(f"parse headers' JSON only: {parse_s * 1000:.2f} ms (best of {args.repeat})")
    print(f"full modelopt verdict:    {judge_s * 1000:.2f} ms (best of {args.repeat})")
    print(f"ratio: {ratio:.2f}x (target <= 2x)")
    print(
        f"same layout at {small_bytes / 1e9:.2f} GB: {small_s * 1000:.2f} ms; "
        f"100 GB / small = {judge_s / small_s:.2f}x (1.0 = no growth with weight bytes)"
    )
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in outcomes.items()))
    for text in bad:
        print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ratio <= 2.0 and not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
