"""What an installed xformers says it was built for (its ``cpp_lib.json``)."""

from __future__ import annotations

from pathlib import Path

from pytest_vllm_env import files


def read_build_torch(package_dir: Path) -> str | None:
    """The torch version xformers' C++ ops were built for, from its ``cpp_lib.json``
    (``{"version": {"torch": "2.10.0+cu128", ...}}``); None when absent or unreadable."""
    return read_build_torch_or_why(package_dir)[0]


def read_build_torch_or_why(package_dir: Path) -> tuple[str | None, str]:
    """:func:`read_build_torch`, and why ``cpp_lib.json`` could not be read ("" when it was,
    or is absent, or says no torch): a FIFO or device there is named, never taken as absent."""
    path = package_dir / "cpp_lib.json"
    text, why = files.read_text_if_present(path, files.CONFIG)
    if text is None:
        return None, why
    try:
        value = files.loads_json(text)["version"]["torch"]
    except (ValueError, KeyError, TypeError):
        return None, ""
    return (value if isinstance(value, str) else None), ""
