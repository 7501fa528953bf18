"""A Hugging Face repo id in the local hub cache, found the way huggingface_hub finds it,
read from the cache's own layout (no huggingface_hub import, no network).

``--modelopt-checkpoint=org/name`` names a model already downloaded (``hf download``); the
suite never downloads. What ``huggingface_hub.snapshot_download(repo_id,
local_files_only=True)`` returns for it (huggingface_hub 2.4.0,
``_snapshot_download.py:snapshot_download``, the ``local_files_only`` branch):

- the cache folder: ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else
  ``$HF_HOME/hub``, ``$HF_HOME`` defaulting to ``$XDG_CACHE_HOME/huggingface`` and that to
  ``~/.cache/huggingface`` (``constants.py``; ``~`` and ``$VARS`` expanded);
- the repo's folder in it: ``models--{org}--{name}`` (``file_download.repo_folder_name``);
- the revision ``main`` read from ``refs/main`` (a commit hash), and the answer
  ``snapshots/<hash>`` when that folder exists; otherwise ``LocalEntryNotFoundError``;
- a repo id that ``utils.validate_repo_id`` refuses: ``HFValidationError``.

Reading the layout instead of calling the library keeps huggingface_hub out of this
plugin's dependencies: installed, it brought httpx and anyio, and anyio's pytest plugin
then loaded in every pytest run of the user's repo (issue 21, "Cost when unused").
``tests/test_hf_cache.py`` checks each answer against the real ``snapshot_download``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from pytest_vllm_env import files

# huggingface_hub utils/_validators.py: REPO_ID_REGEX (ASCII only) and validate_repo_id
_REPO_ID = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b", re.ASCII)


class NotCached(LookupError):
    """The repo id is not in the local cache; ``reason`` is the huggingface_hub error the
    same lookup raises (``LocalEntryNotFoundError`` or ``HFValidationError``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def hub_cache(environ: Mapping[str, str]) -> Path:
    """The hub cache folder huggingface_hub uses under ``environ`` (``constants.py``: each
    variable read with ``os.getenv(NAME, default)``, so a variable set empty is used as is)."""

    def expand(value: str) -> str:
        return os.path.expandvars(os.path.expanduser(value))

    default_home = os.path.join(os.path.expanduser("~"), ".cache")
    home = expand(
        environ.get(
            "HF_HOME", os.path.join(environ.get("XDG_CACHE_HOME", default_home), "huggingface")
        )
    )
    legacy = environ.get("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))
    return Path(expand(environ.get("HF_HUB_CACHE", legacy)))


def valid_repo_id(repo_id: str) -> bool:
    """What ``huggingface_hub.utils.validate_repo_id`` accepts."""
    return (
        repo_id.count("/") <= 1
        and _REPO_ID.fullmatch(repo_id) is not None
        and "--" not in repo_id
        and ".." not in repo_id
        and not repo_id.endswith(".git")
    )


def snapshot(repo_id: str, environ: Mapping[str, str] | None = None) -> Path:
    """The cached snapshot of model ``repo_id`` at ``main``; raise :class:`NotCached`."""
    if not valid_repo_id(repo_id):
        raise NotCached("HFValidationError", f"{repo_id!r} is not a valid repo id")
    cache = hub_cache(os.environ if environ is None else environ)
    storage = cache / "--".join(["models", *repo_id.split("/")])
    ref = storage / "refs" / "main"
    try:
        # huggingface_hub reads the whole file as the hash (no strip)
        commit = files.read_text(ref, files.CONFIG)
    except OSError:
        raise NotCached("LocalEntryNotFoundError", f"no {ref}") from None
    folder = storage / "snapshots" / commit
    if not folder.exists():
        raise NotCached("LocalEntryNotFoundError", f"no {folder}")
    return folder
