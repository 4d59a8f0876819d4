"""Backbone references: a local folder, or a Hugging Face hub id resolved through the standard cache.

`resolve_backbone("microsoft/wavlm-base-plus")` first looks for the copy in the Hugging Face
cache (HF_HUB_CACHE, by default ~/.cache/huggingface/hub) without touching the network. Only
when there is none, and HF_HUB_OFFLINE is not set, does it download the files a backbone needs,
once, with huggingface_hub's progress bars; later runs read the cached copy. Everything after
that (models/backbone.py, bundles, the real-time engine) works on the resulting local folder
and stays offline. A cache filled by `hf download` or by transformers works the same way.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from models.backbone import EXPECTED_LAYOUT, BackboneError, check_backbone_dir

# "owner/name" as the hub spells repository ids; a path that exists locally always wins.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What check_backbone_dir needs; both weight formats because repos ship either or both.
HUB_FILES = ["config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin"]


def is_hub_id(ref: str) -> bool:
    """'microsoft/wavlm-base-plus' -> True; './wavlm', '/models/wavlm', 'a/b/c' -> False."""
    return bool(_HUB_ID_RE.match(ref)) and ".." not in ref


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids network access."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_backbone(ref: str | os.PathLike) -> Path:
    """A local backbone folder or a hub id -> a checked local folder (raises BackboneError, one line)."""
    text = str(ref)
    folder = Path(text).expanduser()
    if folder.is_dir():
        check_backbone_dir(folder)
        return folder
    if not is_hub_id(text):
        raise BackboneError(f"backbone {text!r} is neither a folder nor a hub id such as "
                            f"microsoft/wavlm-base-plus; a folder needs {EXPECTED_LAYOUT}")
    return _from_hub(text)


def _from_hub(repo_id: str) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True)
    except LocalEntryNotFoundError:
        if hub_offline():
            raise BackboneError(_not_cached(repo_id, "HF_HUB_OFFLINE=1 forbids downloading it")) from None
        try:
            snapshot = huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FILES)
        except Exception as err:  # no network, proxy, unknown or gated repo: the same advice helps
            raise BackboneError(_not_cached(repo_id, f"downloading it failed ({_first_line(err)})")) from None
    check_backbone_dir(snapshot)  # a repo without these files is not a speech backbone
    return Path(snapshot)


def _not_cached(repo_id: str, reason: str) -> str:
    from huggingface_hub import constants

    name = repo_id.split("/")[-1]
    return (f"backbone {repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}; "
            f"on a machine with internet run `hf download {repo_id} --local-dir {name}`, copy that folder "
            f"here and pass --backbone {name}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
