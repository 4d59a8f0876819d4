"""The readable name the window shows for a prediction's model id, from its session's timeline header.

The header records the fast model ("model": {"name": id, "display_name": ...}) and, when one ran,
the primary ("primary_model": {"bundle": folder, "display_name": ...}). Every prediction not made
by the fast model came from the primary (its utterance results, or its cheapest branch's live
traces). Timelines written before display names existed get the model family of the id.
"""
from __future__ import annotations

from typing import Any, Mapping

from models.display_names import FAST_ROLE, derived_display_name, family_name, folder_display_name


def _entry(header: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = header.get(key)
    return value if isinstance(value, Mapping) else {}


class ModelNames:
    """model id -> readable name for one session (an empty header: every id by its family)."""

    def __init__(self, header: Mapping[str, Any] | None = None) -> None:
        header = header if isinstance(header, Mapping) else {}
        fast, primary = _entry(header, "model"), _entry(header, "primary_model")
        self.fast_id = str(fast.get("name") or "")
        self.fast_name = str(fast.get("display_name") or "") or (
            derived_display_name([self.fast_id], FAST_ROLE) if self.fast_id else "")
        self.primary_name = ""
        if primary:
            self.primary_name = str(primary.get("display_name") or "") or folder_display_name(primary.get("bundle"))

    def readable(self, model_id: str) -> str:
        """The name to show for `model_id` ("—" for none)."""
        if not model_id:
            return "—"
        if model_id == self.fast_id:
            return self.fast_name
        return self.primary_name or family_name(model_id)
