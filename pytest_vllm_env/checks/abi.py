"""Will vLLM's compiled extensions load against this torch?  Read, never import.

Four questions, each a check (the loader's, ``abi.needed`` and ``abi.undefined``, are
:mod:`pytest_vllm_env.checks.abi_loader`; a source tree's torch, ``abi.source-torch``,
:mod:`pytest_vllm_env.checks.abi_source`):

- ``abi.pins``: vLLM's ``Requires-Dist`` pins for torch & co. against what is installed
  (a vLLM wheel built for torch 2.11.0 next to torch 2.13.0 fails at import with
  ``undefined symbol``; pip/uv only warn when a later install breaks the pin).
- ``abi.cudart``: each extension's ``libcudart.so.N`` against torch's CUDA major.
- ``abi.symbols``: every torch-side undefined symbol of each extension is defined by the
  env's ``torch/lib/*.so`` (per extension: ``_C_stable_libtorch`` uses torch's stable C ABI,
  FA2 the C++ one, so one may load while the other does not).
- ``abi.cxx11``: the ``_GLIBCXX_USE_CXX11_ABI`` flag of an extension matches torch's.

Pure: torch and the extensions arrive as facts (:mod:`pytest_vllm_env.facts.binaries`:
``torch_facts``, ``extension_facts``, ``built_for``), the names an extension imports already
demangled. What torch exports is asked of ``torch.exports`` by name: that fact looks each name
up in torch's ``.gnu.hash`` tables on first ask rather than listing 41,000 names beforehand
(:class:`pytest_vllm_env.facts.binaries.TorchExports`). Each judgement takes the env (``env=``)
its fixes are written for (:mod:`pytest_vllm_env.checks.abi_fixes`); without one, fixes speak
of a Pixi env whose manifest is not known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import abi_cudart
from pytest_vllm_env.checks.abi_fixes import (
    NO_ENV,
    for_torch_cuda,
    pin_torch,
    rebuild,
    same_release,
    torch_for_cuda,
    torch_package,
    unreadable,
    vllm_rebuild,
)
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import (
    BuiltFor,
    ExtensionFacts,
    TorchFacts,
    dist_name,
    label,
    owner_of,
)
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.findings import Finding

PINNED = ("torch", "torchvision", "torchaudio", "xformers", "flashinfer-python")


def pins(
    requires: Iterable[str],
    installed: dict[str, str | None],
    who: str = "vllm",
    *,
    env: PixiEnv | None = None,
) -> list[Finding]:
    """``abi.pins``: each pinned package's installed version satisfies ``who``'s specifier;
    the fix pins it in ``env``'s language (the manifest line that declares it, or pip)."""
    env = env or NO_ENV
    out: list[Finding] = []
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        if name not in PINNED or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        have = installed.get(name)
        cid = "abi.pins"
        if have is None:
            if name == "torch":
                out.append(
                    F.failed(
                        cid,
                        f"{who} requires {req}, torch is not installed",
                        fixes.add(env, torch_package(env, str(req.specifier))),
                    )
                )
            continue
        try:
            ok = SpecifierSet(str(req.specifier), prereleases=True).contains(
                Version(have), prereleases=True
            )
        except InvalidVersion:
            ok = False
        if ok:
            out.append(F.passed(cid, f"{name} {have} satisfies {who}'s {req}"))
        else:
            out.append(
                F.failed(
                    cid,
                    f"{who} requires {req} but the env has {name} {have}",
                    fixes.pin(
                        env,
                        torch_package(env, str(req.specifier))
                        if name == "torch"
                        else Package(name, str(req.specifier), pypi=True),
                    )
                    + f", or install the {who} release built for {name} {have}",
                    requirement=str(req),
                    installed=have,
                )
            )
    if not out:
        out.append(F.skipped("abi.pins", f"{who} pins none of {', '.join(PINNED)}"))
    return out


def cudart(
    ext: ExtensionFacts,
    torch: TorchFacts | None,
    toolkit: str | None = None,
    *,
    env: PixiEnv | None = None,
    built: BuiltFor | str | None = None,
    vllm_version: str | None = None,
    resolved: dict[str, Path | None] | None = None,
    held: Sequence[Path] = (),
    site_packages: Path | None = None,
) -> Finding:
    """``abi.cudart``: the extension's libcudart major equals torch's CUDA major (and the
    toolkit's). ``built``: the torch the extension's package pins (the release to install
    when torch is absent). Another major than torch's is judged by where the loader finds
    that runtime (``resolved``: the extension's ``DT_NEEDED`` as found; ``held``: copies the
    env holds elsewhere), :mod:`pytest_vllm_env.checks.abi_cudart`; without ``resolved`` (a
    wheel judged before install) it fails as before."""
    env = env or NO_ENV
    cid, name = "abi.cudart", label(ext.path)
    if ext.error:
        return F.error(
            cid, f"{name}: {ext.error}", unreadable(env, ext.path, name), path=str(ext.path)
        )
    major = ext.cudart
    if major is None:
        return F.skipped(cid, f"{name} does not link libcudart.so.N", needed=ext.needed)
    if torch is not None and torch.cuda_error:  # unknown, not CPU-only: name the file
        again = fixes.reinstall(env, "pytorch") if env.conda("pytorch") else ""
        again = again or fixes.reinstall(env, "torch", pypi=True)
        return F.error(cid, f"torch's CUDA is unknown: {torch.cuda_error}",
                       f"reinstall torch: {again}", path=str(torch.root))  # fmt: skip
    if torch is None or not torch.cuda:
        pin = built.torch if isinstance(built, BuiltFor) else built
        release = torch.version if torch is not None else pin
        return F.failed(
            cid,
            f"{name} needs libcudart.so.{major} but torch is "
            + ("absent" if torch is None else "a CPU-only build"),
            f"install a CUDA {major} build of torch: {torch_for_cuda(env, release, major)}",
        )
    if torch.cuda.split(".")[0] != major:
        owner = owner_of(name)
        fix = (
            f"install {for_torch_cuda(env, owner, torch, vllm_version)}; or a torch built for "
            f"CUDA {major}: {torch_for_cuda(env, torch.version, major)}"
        )
        if resolved is not None:  # round 11a: a CUDA 12 xformers loads once the env has .so.12
            return abi_cudart.other_runtime(cid, name, major, torch, fix, env=env,
                                            found=resolved.get(f"libcudart.so.{major}"),
                                            held=held, site_packages=site_packages)  # fmt: skip
        return F.failed(
            cid,
            f"{name} was built for CUDA {major} (libcudart.so.{major}); "
            f"torch {torch.version} is CUDA {torch.cuda}",
            fix,
        )
    if toolkit and toolkit.split(".")[0] != major:
        return F.failed(
            cid,
            f"{name} and torch use CUDA {major}, the env's toolkit is CUDA {toolkit}",
            fixes.pin(env, Package("cuda-version", f"{major}.*"))
            + " so nvcc and cudart match torch",
        )
    return F.passed(cid, f"{name}: libcudart.so.{major} matches torch CUDA {torch.cuda}")


def symbols(
    ext: ExtensionFacts,
    torch: TorchFacts | None,
    built: BuiltFor | str | None = None,
    *,
    env: PixiEnv | None = None,
) -> Finding:
    """``abi.symbols``: every torch-side undefined symbol of ``ext`` is exported by torch/lib."""
    env = env or NO_ENV
    cid, name = "abi.symbols", label(ext.path)
    if isinstance(built, str) or built is None:
        built = BuiltFor(built, "vLLM's Requires-Dist" if built else "", owner=owner_of(name))
    if ext.error:
        return F.error(
            cid, f"{name}: {ext.error}", unreadable(env, ext.path, name), path=str(ext.path)
        )
    if torch is None:
        return F.skipped(cid, f"torch is not installed; cannot resolve {name}")
    need = ext.torch_symbols
    if not need:
        return F.skipped(cid, f"{name} imports no torch symbols")
    missing = [s for s in need if s not in torch.exports]
    if not missing:
        return F.passed(
            cid,
            f"{name}: resolved {len(need)} of {len(need)} torch symbols in torch {torch.version}",
        )
    owner = built.owner or owner_of(name)
    other = bool(built.torch) and not same_release(built.torch or "", torch.version)
    cause = (
        f"built for torch {built.torch} ({built.where}), env has {torch.version}"
        if other
        else (
            f"built against a different torch build than "
            f"{torch.version} (C++ ABI flag, CUDA variant)"
            + (f"; {built.where} says {built.torch}" if built.torch else "")
        )
    )
    if other and owner == "vllm":
        fix = (
            f"install the torch it was built for: {pin_torch(env, built.torch or '')}; or "
            + rebuild(name, owner, torch, env)
        )
    elif other:
        fix = (
            rebuild(name, owner, torch, env)
            + f"; or install torch {built.torch}, which it was built for: "
            + pin_torch(env, built.torch or "")
        )
    else:
        fix = rebuild(name, owner, torch, env)
    return F.failed(
        cid,
        f"{name}: resolved {len(need) - len(missing)} of {len(need)} torch symbols; "
        f"{len(missing)} missing (likely cause: {cause})",
        fix,
        missing=ext.shown(missing),
    )


def cxx11(ext: ExtensionFacts, torch: TorchFacts | None, *, env: PixiEnv | None = None) -> Finding:
    """``abi.cxx11``: ``_GLIBCXX_USE_CXX11_ABI`` of ``ext`` equals torch's."""
    env = env or NO_ENV
    cid, name = "abi.cxx11", label(ext.path)
    if ext.error:
        return F.error(
            cid, f"{name}: {ext.error}", unreadable(env, ext.path, name), path=str(ext.path)
        )
    if torch is None or torch.cxx11 is None:
        return F.skipped(cid, "torch's C++11 ABI flag could not be read (no libc10/libtorch)")
    flag = ext.cxx11
    if flag is None:
        return F.skipped(
            cid, f"{name} passes no std::string across torch's API; the flag does not matter"
        )
    if flag == torch.cxx11:
        return F.passed(cid, f"{name}: _GLIBCXX_USE_CXX11_ABI={int(flag)} like torch")
    owner = owner_of(name)
    if owner == "flash-attn":
        fix = rebuild(name, owner, torch, env)
    elif owner == "vllm":
        # vLLM #13608: torch 2.6.0+cu124 is the old ABI, 2.6.0+cu126 and 2.7+ the new one
        fix = (
            f"{vllm_rebuild(env, torch)} (it then gets -D_GLIBCXX_USE_CXX11_ABI="
            f"{int(torch.cxx11)}); or install the torch variant it was built with (PyPI torch "
            "2.6.0+cu124 and older use the old ABI, 2.6.0+cu126 and 2.7+ the new one)"
        )
    else:
        fix = (
            f"rebuild {name} against this torch, so it gets -D_GLIBCXX_USE_CXX11_ABI="
            f"{int(torch.cxx11)} (torch.compiled_with_cxx11_abi()): "
            + fixes.rebuild(env, dist_name(owner))
            + "; or install the torch build with the matching ABI"
        )
    return F.failed(
        cid,
        f"{name} was built with _GLIBCXX_USE_CXX11_ABI={int(flag)}, "
        f"torch {torch.version} with {int(torch.cxx11)}",
        fix,
    )
