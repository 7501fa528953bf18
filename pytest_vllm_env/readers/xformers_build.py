"""What an installed xformers says it was built for (its ``cpp_lib.json``)."""

from __future__ import annotations

from pathlib import Path

from pytest_vllm_env import files


def read_build_torch(package_dir: Path) -> str | None:
    """The torch version xformers' C++ ops were built for, from its ``cpp_lib.json``
    (``{"version": {"torch": "2.10.0+cu128", ...}}``); None when absent or unreadable."""
    try:
        data = files.load_json(package_dir / "cpp_lib.json", files.CONFIG)
        value = data["version"]["torch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None
