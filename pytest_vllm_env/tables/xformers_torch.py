"""xformers <-> torch: the xformers release whose wheel pins each torch.

Read by ``xformers.*`` (the pixi.toml line that brings xformers for the env's torch) and by
``abi.symbols`` (the xformers to install when its ops were built for another torch).
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

# torch -> the xformers release whose wheel metadata pins it (PyPI Requires-Dist, read for
# each release with `pip install --dry-run --report`; docs/xformers.md).
XFORMERS_FOR_TORCH = {
    "2.6.0": "0.0.29.post2",
    "2.7.0": "0.0.30",
    "2.7.1": "0.0.31",
    "2.8.0": "0.0.32.post2",
    "2.9.0": "0.0.33.post1",
    "2.9.1": "0.0.33.post2",
    "2.10.0": "0.0.34",
}
XFORMERS_OPEN_PIN = ("0.0.35", Version("2.10"))  # 0.0.35: Requires-Dist torch>=2.10


def xformers_for_torch(torch_version: str | None) -> str | None:
    """The xformers release whose wheel pins this torch (local part like +cu130 ignored)."""
    if not torch_version:
        return None
    public = torch_version.split("+", 1)[0]
    if public in XFORMERS_FOR_TORCH:
        return XFORMERS_FOR_TORCH[public]
    try:
        if Version(public) >= XFORMERS_OPEN_PIN[1]:
            return XFORMERS_OPEN_PIN[0]
    except InvalidVersion:
        return None
    return None
