"""Names a user can read ("Whisper ensemble", "Conformer (fast)") for models whose internal ids
("whisper-ultimate-tiny.en+base-robust-js4-x10", "conformer-v1") stay in timeline headers and model cards.

A bundle's or ensemble's JSON may carry an optional "display_name" (a short string); without one
(every bundle written before it existed) the name is derived from the model family of its
members, plus "ensemble" for several members and "(fast)" for the fast model's role. Reads JSON
only, never torch: the GUI uses it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

MAX_DISPLAY_NAME = 40
FAST_ROLE = "fast"
# Registry-name prefixes -> family names, the first match wins.
FAMILIES = (("whisper", "Whisper"), ("wavlm", "WavLM"), ("wav2vec2", "Wav2Vec2"), ("hubert", "HuBERT"),
            ("conformer", "Conformer"), ("doublestream", "Double-stream"), ("crnn", "CRNN"), ("cnn", "CNN"),
            ("egemaps", "eGeMAPS"), ("compare", "ComParE"), ("fusion", "Fusion"))


def family_name(model_name: str) -> str:
    """"whisper-ultimate" -> "Whisper"; an unknown name is returned as it is."""
    lowered = model_name.lower()
    return next((family for prefix, family in FAMILIES if lowered.startswith(prefix)), model_name)


def explicit_display_name(meta: Mapping[str, Any] | None) -> str:
    """The JSON's own "display_name" when it is a usable short string, else ""."""
    value = meta.get("display_name") if isinstance(meta, Mapping) else None
    return value.strip() if isinstance(value, str) and 0 < len(value.strip()) <= MAX_DISPLAY_NAME else ""


def derived_display_name(member_models: Sequence[str], role: str = "") -> str:
    """From the members' registry names: "Whisper ensemble", "Conformer (fast)", "Whisper + WavLM ensemble"."""
    families = list(dict.fromkeys(family_name(name) for name in member_models)) or ["model"]
    text = " + ".join(families) + (" ensemble" if len(member_models) > 1 else "")
    return f"{text} (fast)" if role == FAST_ROLE else text


def folder_display_name(folder: str | Path | None, role: str = "") -> str:
    """The display name of a bundle or ensemble folder, from its JSON ("" when unreadable or unset)."""
    from models.bundle import is_ensemble_folder, peek_bundle_meta, peek_ensemble_meta

    if not folder:
        return ""
    path = Path(folder)
    if is_ensemble_folder(path):
        doc = peek_ensemble_meta(path) or {}
        members = doc.get("members") if isinstance(doc.get("members"), list) else []
        metas = [peek_bundle_meta(path / str(m)) or {} for m in members]
    else:
        doc = peek_bundle_meta(path)
        if doc is None:
            return ""
        metas = [doc]
    explicit = explicit_display_name(doc)
    if explicit:
        return explicit
    names = [str(m["model"]["name"]) for m in metas if isinstance(m.get("model"), Mapping) and m["model"].get("name")]
    return derived_display_name(names, role) if names else ""
