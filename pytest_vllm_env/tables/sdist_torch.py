"""Sdists whose build needs torch: which release declares what in its ``[build-system]``, read
from their PyPI sdists (docs/facts-additions.md, "Sdists whose setup.py imports torch"), and
which have no wheel on PyPI at all. Read by :mod:`pytest_vllm_env.facts.pypi` (how pip and uv
build them) and the ``pypi.build-isolation`` checks."""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

# Per release: "undeclared" (an isolated build fails "No module named
# 'torch'"), "unpinned" (an isolated build uses the index's newest torch), "pinned" (vLLM: the
# torch its pyproject pins). Per name, (versions, how, why), first match wins.
_NO_PYPROJECT = (
    "its setup.py imports torch but the sdist declares no build requirements (flash-attention#1421)"
)
_UNPINNED = "its [build-system] asks an unpinned torch"
TORCH_AT_BUILD: dict[str, list[tuple[str, str, str]]] = {
    "flash-attn": [("", "undeclared", _NO_PYPROJECT)],  # 2.7.2.post1 .. 2.8.3.post2 read
    "mamba-ssm": [
        (
            ">=2.3.2",
            "undeclared",
            "its setup.py imports torch but its [build-system] leaves torch out on purpose "
            "(mamba-ssm 2.3.2 on: install torch first, then build with --no-build-isolation)",
        ),
        (">=2.2.3", "unpinned", _UNPINNED),
        ("", "undeclared", _NO_PYPROJECT),  # 2.2.2 has no pyproject.toml
    ],
    "causal-conv1d": [(">=1.5.1", "unpinned", _UNPINNED), ("", "undeclared", _NO_PYPROJECT)],
    "torch-scatter": [("", "undeclared", _NO_PYPROJECT)],
    "torch-sparse": [("", "undeclared", _NO_PYPROJECT)],
    "torch-cluster": [("", "undeclared", _NO_PYPROJECT)],
    "vllm": [("", "pinned", "its [build-system] pins the torch of that vLLM release")],
}
# Releases whose sdists were read; a spec that pins none is judged by the newest it allows.
MEASURED = {
    "flash-attn": ["2.7.2.post1", "2.8.1", "2.8.3", "2.8.3.post2"],
    "mamba-ssm": [
        "2.2.2",
        "2.2.3.post2",
        "2.2.4",
        "2.2.5",
        "2.2.6.post3",
        "2.3.0",
        "2.3.1",
        "2.3.2.post1",
    ],
    "causal-conv1d": [
        "1.4.0",
        "1.5.0.post5",
        "1.5.0.post8",
        "1.5.1",
        "1.5.2",
        "1.6.2.post1",
        "1.7.0",
    ],
    "torch-scatter": ["2.1.2"],
    "torch-sparse": ["0.6.18"],
    "torch-cluster": ["1.6.3"],
}
# No wheel of any release on PyPI (measured): pip and uv always build these from the sdist.
SDIST_ONLY = {
    "flash-attn",
    "causal-conv1d",
    "mamba-ssm",
    "torch-scatter",
    "torch-sparse",
    "torch-cluster",
}


def torch_rule(name: str, spec: str = "", version: str | None = None) -> tuple[str, str] | None:
    """``(how, why)`` for a package whose build needs torch, at the release ``version`` (or
    the one ``spec`` picks: its exact pin, else the newest measured release it allows)."""
    rules = TORCH_AT_BUILD.get(canonicalize_name(name))
    if rules is None:
        return None
    if version is None:
        version = _picked_version(canonicalize_name(name), spec)
    for versions, how, why in rules:
        if not versions or version is None or _allows(versions, version):
            return how, why
    return rules[-1][1], rules[-1][2]


def _picked_version(name: str, spec: str) -> str | None:
    measured = MEASURED.get(name, [])
    try:
        specifier = SpecifierSet(spec.strip() if spec.strip() not in ("*", "") else "")
    except InvalidSpecifier:
        return measured[-1] if measured else None
    pins = [s.version for s in specifier if s.operator in ("==", "===") and "*" not in s.version]
    if pins:
        return pins[0]
    allowed = sorted(specifier.filter(measured, prereleases=True), key=Version)
    return allowed[-1] if allowed else (measured[-1] if measured else None)


def _allows(spec: str, version: str) -> bool:
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


def sdist_has_pyproject(name: str, spec: str = "", version: str | None = None) -> bool:
    """Whether the sdist pip would build ships a pyproject.toml (read from PyPI's sdists for
    the packages of :data:`TORCH_AT_BUILD`; assumed for any other)."""
    rule = torch_rule(name, spec, version)
    return rule is None or rule[1] != _NO_PYPROJECT
