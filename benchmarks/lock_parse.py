"""How long does judging an env from pixi.lock take, and which parser should read the lock?

Prints, for a 500-package lock (seed 001's packages plus filler wheels, written by
fixtures/pixi_locks.py in formats 5, 6 and 7):

- the import time of each candidate in a fresh interpreter (PyYAML with libyaml, ruamel.yaml,
  py-rattler), and the size of its installed files;
- the parse time of that lock with each (best of 5), to the same answer: the packages of
  one env on one platform;
- end to end: ``pytest --vllm-conformance -m toolchain -k test_lock`` in lock mode on that
  lock, the number the goal (<= 0.5 s of lock work) is judged on, with pytest's own start-up
  measured on an empty run in the same way for comparison.

ruamel.yaml and py-rattler are optional here: install them in the venv to compare
(``pip install ruamel.yaml py-rattler``); the plugin itself uses PyYAML only.

    .venv/bin/python benchmarks/lock_parse.py [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fixtures import pixi_locks  # noqa: E402

N = 500


def import_time(module: str) -> float | None:
    """Seconds to import ``module`` in a fresh interpreter (best of 3), None if missing."""
    best = None
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        value = float(done.stdout.strip())
        best = value if best is None else min(best, value)
    return best


def installed_mb(dist: str) -> float | None:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    total = 0
    for f in files:
        try:
            total += f.locate().stat().st_size
        except OSError:
            pass
    return total / 1e6


def best_of(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def parse_pyyaml(path: Path) -> int:
    from pytest_vllm_env.pixilock import read_lock

    return len(read_lock(path).env("default", "linux-64"))


def parse_pyyaml_pure(path: Path) -> int:
    """The fallback when PyYAML was built without libyaml: same reader, Python loader."""
    from unittest import mock

    import yaml

    from pytest_vllm_env import pixilock

    with mock.patch.object(pixilock, "_Loader", yaml.BaseLoader):
        return len(pixilock.read_lock(path).env("default", "linux-64"))


def parse_ruamel(path: Path) -> int:
    from ruamel.yaml import YAML

    doc = YAML(typ="safe", pure=False).load(path.read_text())
    return len(doc["environments"]["default"]["packages"]["linux-64"])


def parse_rattler(path: Path) -> int:
    import rattler

    lock = rattler.LockFile.from_path(path)
    env = lock.environment("default")
    platform = next(p for p in env.platforms() if str(p) == "linux-64")
    return len(env.packages(platform))


def end_to_end(workspace: Path) -> tuple[float, float]:
    """Wall seconds of the lock-mode conformance run, and of an empty pytest run."""
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    lock_run = base + [
        "--vllm-conformance",
        "-m",
        "toolchain",
        "-k",
        "test_lock",
        f"--pixi-manifest={workspace / 'pixi.toml'}",
        "--vllm-env=default",
        "--cuda-arch=12.0",
    ]
    empty = workspace / "test_nothing.py"
    empty.write_text("def test_nothing():\n    pass\n")
    times = {}
    for label, cmd in (("lock", lock_run), ("empty", base + [str(empty)])):
        best = None
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(cmd, cwd=workspace, capture_output=True, text=True)
            value = time.perf_counter() - t
            best = value if best is None else min(best, value)
        times[label] = best
    return times["lock"], times["empty"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict = {"packages": N, "python": sys.version.split()[0]}
    import yaml

    results["libyaml"] = bool(getattr(yaml, "__with_libyaml__", False))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for module, dist in (
            ("yaml", "PyYAML"),
            ("ruamel.yaml", "ruamel.yaml"),
            ("rattler", "py-rattler"),
        ):
            results[f"import_s[{dist}]"] = import_time(module)
            results[f"installed_mb[{dist}]"] = installed_mb(dist)
        for version in (5, 6, 7):
            path = workdir / f"pixi-v{version}.lock"
            pixi_locks.big_lock(N, version).write(path)
            results[f"lock_kb[v{version}]"] = round(path.stat().st_size / 1024)
            for label, fn in (
                ("PyYAML", parse_pyyaml),
                ("ruamel.yaml", parse_ruamel),
                ("py-rattler", parse_rattler),
            ):
                try:
                    count = fn(path)
                except ImportError:
                    continue
                except Exception as exc:  # a parser that cannot read this version
                    results[f"parse_s[{label}, v{version}]"] = f"failed: {type(exc).__name__}"
                    continue
                results[f"parse_s[{label}, v{version}]"] = round(
                    best_of(lambda fn=fn, path=path: fn(path)), 4
                )
                results[f"packages[{label}, v{version}]"] = count
        ws = workdir / "ws"
        ws.mkdir()
        (ws / "pixi.toml").write_text(pixi_locks.SEED_001_MANIFEST)
        pixi_locks.big_lock(N, 6).write(ws / "pixi.lock")
        lock_s, empty_s = end_to_end(ws)
        results["end_to_end_s[lock mode, 500 packages]"] = round(lock_s, 3)
        results["end_to_end_s[empty pytest run]"] = round(empty_s, 3)
        results["lock_work_s (difference)"] = round(lock_s - empty_s, 3)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
