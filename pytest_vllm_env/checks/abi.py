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
from dataclasses import replace
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
    torch_unreadable,
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
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.findings import Finding

PINNED = ("torch", "torchvision", "torchaudio", "xformers", "flashinfer-python")


def pins(
    requires: Iterable[str],
    installed: dict[str, str | None],
    who: str = "vllm",
    *,
    env: PixiEnv | None = None,
    targets: FixTargets | None = None,
) -> list[Finding]:
    """``abi.pins``: each pinned package's installed version satisfies ``who``'s specifier;
    the fix pins it in ``env``'s language (the manifest line that declares it, or pip); torch
    at the run's target (``targets``: vLLM's pin, from the index of the CUDA build the
    extensions and the driver need)."""
    env = env or NO_ENV

    def torch_fix(spec: str) -> str:
        if targets is not None and targets.torch and _allows(spec, targets.torch):
            return targets.torch_fix(env)
        return fixes.pin(env, torch_package(env, spec))

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
                        torch_fix(str(req.specifier))
                        if targets is not None
                        else fixes.add(env, torch_package(env, str(req.specifier))),
                        subject="torch",
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
            out.append(F.passed(cid, f"{name} {have} satisfies {who}'s {req}", subject=name))
        else:
            pin = (
                torch_fix(str(req.specifier))
                if name == "torch"
                else fixes.pin(env, Package(name, str(req.specifier), pypi=True))
            )
            out.append(
                F.failed(
                    cid,
                    f"{who} requires {req} but the env has {name} {have}",
                    fixes.otherwise(
                        pin, f"install the {who} release built for {name} {have}", ", or "
                    ),
                    requirement=str(req),
                    installed=have,
                    subject=name,
                )
            )
    if not out:
        out.append(F.skipped("abi.pins", f"{who} pins none of {', '.join(PINNED)}"))
    return out


def _allows(spec: str, version: str) -> bool:
    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except (InvalidVersion, ValueError):
        return False


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
    targets: FixTargets | None = None,
) -> Finding:
    """``abi.cudart``: the extension's libcudart major equals torch's CUDA major (and the
    toolkit's). ``built``: the torch the extension's package pins (the release to install
    when torch is absent). Another major than torch's is judged by where the loader finds
    that runtime (``resolved``: the extension's ``DT_NEEDED`` as found; ``held``: copies the
    env holds elsewhere), :mod:`pytest_vllm_env.checks.abi_cudart`; without ``resolved`` (a
    wheel judged before install) it fails as before. ``targets``: the torch and CUDA every
    fix of the run points at."""
    env = env or NO_ENV
    cid, name = "abi.cudart", label(ext.path)
    if ext.error:
        return F.error(
            cid,
            f"{name}: {ext.error}",
            unreadable(env, ext.path, name),
            path=str(ext.path),
            subject=name,
        )
    major = ext.cudart
    if major is None:
        return F.skipped(
            cid, f"{name} does not link libcudart.so.N", needed=ext.needed, subject=name
        )
    if torch is not None and torch.cuda_error:  # unknown, not CPU-only: name the file
        again = fixes.reinstall(env, "pytorch") if env.conda("pytorch") else ""
        again = again or fixes.reinstall(env, "torch", pypi=True)
        return F.error(cid, f"torch's CUDA is unknown: {torch.cuda_error}",
                       "reinstall torch: " + again, path=str(torch.root),
                       subject=name)  # fmt: skip
    target = targets.cuda_major if targets is not None else None
    if torch is None or not torch.cuda:
        pin = built.torch if isinstance(built, BuiltFor) else built
        release = torch.version if torch is not None else pin
        if targets is not None and targets.torch and target == major:
            fix = f"install a CUDA {major} build of torch: " + targets.torch_fix(env)
        else:
            fix = f"install a CUDA {major} build of torch: " + torch_for_cuda(env, release, major)
        return F.failed(
            cid,
            f"{name} needs libcudart.so.{major} but torch is "
            + ("absent" if torch is None else "a CPU-only build"),
            fix,
            subject=name,
        )
    if torch.cuda.split(".")[0] != major:
        owner = owner_of(name)
        if target == major and targets is not None and targets.torch:
            # the run's target is a torch of the extension's CUDA (the driver or the pins
            # decided it): that torch, not another build of the extension
            fix = f"install torch {targets.torch} built for CUDA {targets.cuda}: " + (
                targets.torch_fix(env)
            )
        else:
            cuda = targets.cuda if targets is not None and targets.cuda else torch.cuda
            fix = fixes.otherwise(
                "install " + for_torch_cuda(env, owner, torch, vllm_version, cuda),
                f"a torch built for CUDA {major}: " + torch_for_cuda(env, torch.version, major),
            )
        if resolved is not None:  # round 11a: a CUDA 12 xformers loads once the env has .so.12
            return replace(
                abi_cudart.other_runtime(cid, name, major, torch, fix, env=env,
                                         found=resolved.get(f"libcudart.so.{major}"),
                                         held=held, site_packages=site_packages,
                                         targets=targets),
                subject=name,
            )  # fmt: skip
        return F.failed(
            cid,
            f"{name} was built for CUDA {major} (libcudart.so.{major}); "
            f"torch {torch.version} is CUDA {torch.cuda}",
            fix,
            subject=name,
        )
    if toolkit and toolkit.split(".")[0] != major:
        cuda = targets.cuda if targets is not None and targets.cuda_major == major else None
        return F.failed(
            cid,
            f"{name} and torch use CUDA {major}, the env's toolkit is CUDA {toolkit}",
            fixes.pin(env, Package("cuda-version", f"{cuda or major}.*"))
            + " so nvcc and cudart match torch",
            subject=name,
        )
    return F.passed(
        cid, f"{name}: libcudart.so.{major} matches torch CUDA {torch.cuda}", subject=name
    )


def symbols(
    ext: ExtensionFacts,
    torch: TorchFacts | None,
    built: BuiltFor | str | None = None,
    *,
    env: PixiEnv | None = None,
    targets: FixTargets | None = None,
) -> Finding:
    """``abi.symbols``: every torch-side undefined symbol of ``ext`` is exported by torch/lib.
    The fix installs the run's target torch (``targets``: vLLM's pin) where the extension was
    built for it, else rebuilds the extension for that torch."""
    env = env or NO_ENV
    cid, name = "abi.symbols", label(ext.path)
    if isinstance(built, str) or built is None:
        built = BuiltFor(built, "vLLM's Requires-Dist" if built else "", owner=owner_of(name))
    if ext.error:
        return F.error(
            cid,
            f"{name}: {ext.error}",
            unreadable(env, ext.path, name),
            path=str(ext.path),
            subject=name,
        )
    if torch is None:
        return F.skipped(cid, f"torch is not installed; cannot resolve {name}", subject=name)
    need = ext.torch_symbols
    if not need:
        return F.skipped(cid, f"{name} imports no torch symbols", subject=name)
    missing = [s for s in need if s not in torch.exports]
    if missing and torch.errors:  # a torch library there and unreadable: not "another build"
        return torch_unreadable(cid, name, torch, env)
    if not missing:
        return F.passed(
            cid,
            f"{name}: resolved {len(need)} of {len(need)} torch symbols in torch {torch.version}",
            subject=name,
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
    target = targets.torch if targets is not None else None
    # the torch the run installs (vLLM's pin) when it is not the one installed
    moving = target is not None and not same_release(target, torch.version)
    if other and owner == "vllm":
        install = targets.torch_fix(env) if target else pin_torch(env, built.torch or "")
        fix = fixes.otherwise(
            "install the torch it was built for: " + install, rebuild(name, owner, torch, env)
        )
    elif other and target and not same_release(built.torch or "", target):
        # built for a torch the run does not install: rebuild it for the one it does
        fix = rebuild(name, owner, _at(torch, target), env) + (
            f" (for torch {target}: {targets.torch_why})" if targets else ""
        )
    elif other:
        fix = fixes.otherwise(
            rebuild(name, owner, torch, env),
            f"install torch {built.torch}, which it was built for: "
            + (targets.torch_fix(env) if target else pin_torch(env, built.torch or "")),
        )
    elif moving:
        fix = rebuild(name, owner, _at(torch, target or ""), env)
    else:
        fix = rebuild(name, owner, torch, env)
    return F.failed(
        cid,
        f"{name}: resolved {len(need) - len(missing)} of {len(need)} torch symbols; "
        f"{len(missing)} missing (likely cause: {cause})",
        fix,
        missing=ext.shown(missing),
        subject=name,
    )


def _at(torch: TorchFacts, version: str) -> TorchFacts:
    """``torch`` as the run's target release (what a rebuild is for)."""
    return TorchFacts(version, torch.root, torch.cuda, torch.libs, torch.cxx11, torch.errors)


def cxx11(ext: ExtensionFacts, torch: TorchFacts | None, *, env: PixiEnv | None = None) -> Finding:
    """``abi.cxx11``: ``_GLIBCXX_USE_CXX11_ABI`` of ``ext`` equals torch's."""
    env = env or NO_ENV
    cid, name = "abi.cxx11", label(ext.path)
    if ext.error:
        return F.error(
            cid,
            f"{name}: {ext.error}",
            unreadable(env, ext.path, name),
            path=str(ext.path),
            subject=name,
        )
    if torch is None or torch.cxx11 is None:
        return F.skipped(
            cid, "torch's C++11 ABI flag could not be read (no libc10/libtorch)", subject=name
        )
    flag = ext.cxx11
    if flag is None:
        return F.skipped(
            cid,
            f"{name} passes no std::string across torch's API; the flag does not matter",
            subject=name,
        )
    if flag == torch.cxx11:
        return F.passed(cid, f"{name}: _GLIBCXX_USE_CXX11_ABI={int(flag)} like torch", subject=name)
    if torch.errors and not torch.cxx11:  # the unread library may hold the cxx11 names
        return torch_unreadable(cid, name, torch, env)
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
        subject=name,
    )
