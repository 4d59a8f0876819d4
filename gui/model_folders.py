"""The primary model's folders, judged from their JSON alone (the GUI never imports torch).

A primary folder is an ensemble (its JSON + one bundle folder per member) or a single bundle;
models/bundle.py owns both formats and reads them without torch. Members whose model args
record a `backbone_dir` (heads on WavLM / Wav2Vec2) need that Hugging Face backbone folder; the
others (Whisper heads, whose encoder comes from a pinned pip package) need none. The checks are
plain functions, testable without a window; the Model folders dialog and the model selector
both use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.bundle import (BUNDLE_JSON, ENSEMBLE_JSON, is_bundle_folder, is_ensemble_folder, peek_bundle_meta,
                           peek_ensemble_meta)

BACKBONE_REQUIRED = ("config.json", "preprocessor_config.json")
BACKBONE_WEIGHTS = ("pytorch_model.bin", "model.safetensors")
PRIMARY_UNSET_TITLE = "primary (choose it in Settings → Model folders)"


@dataclass(frozen=True)
class FolderCheck:
    """Result of checking one folder: ok, or the list of problems (missing files first)."""

    folder: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        return "OK" if self.ok else "; ".join(self.problems)


def _member_metas(folder: str) -> list[Any]:
    """The JSON of every member bundle ([the bundle itself] for a single-bundle folder; None where unreadable)."""
    path = Path(folder)
    manifest = peek_ensemble_meta(path)
    if manifest is not None and isinstance(manifest.get("members"), list):
        return [peek_bundle_meta(path / str(m)) for m in manifest["members"]]
    return [peek_bundle_meta(path)] if is_bundle_folder(path) else []


def _model_args(meta: Any) -> dict[str, Any]:
    model = meta.get("model") if isinstance(meta, dict) else None
    args = model.get("args") if isinstance(model, dict) else None
    return args if isinstance(args, dict) else {}


def check_backbone_folder(folder: str) -> FolderCheck:
    """A Hugging Face backbone folder needs config.json, preprocessor_config.json and
    pytorch_model.bin or model.safetensors."""
    path = Path(folder)
    if not folder or not path.is_dir():
        return FolderCheck(folder, (f"folder not found: {folder or '(empty)'}",))
    missing = [name for name in BACKBONE_REQUIRED if not (path / name).is_file()]
    if not any((path / name).is_file() for name in BACKBONE_WEIGHTS):
        missing.append(" or ".join(BACKBONE_WEIGHTS))
    return FolderCheck(folder, (f"missing {', '.join(missing)}",) if missing else ())


def check_primary_folder(folder: str) -> FolderCheck:
    """An ensemble folder needs its JSON (kind "ensemble") and every member's bundle JSON;
    a single-bundle folder needs a readable bundle JSON."""
    path = Path(folder)
    if not folder or not path.is_dir():
        return FolderCheck(folder, (f"folder not found: {folder or '(empty)'}",))
    if not is_ensemble_folder(path):
        if is_bundle_folder(path):
            ok = peek_bundle_meta(path) is not None
            return FolderCheck(folder, () if ok else (f"{BUNDLE_JSON} is unreadable",))
        return FolderCheck(folder, (f"missing {ENSEMBLE_JSON} (or {BUNDLE_JSON})",))
    data = peek_ensemble_meta(path)
    if data is None:
        return FolderCheck(folder, (f"{ENSEMBLE_JSON} is unreadable",))
    if data.get("kind") != "ensemble":
        return FolderCheck(folder, (f'{ENSEMBLE_JSON} is not an ensemble manifest (kind != "ensemble")',))
    members = data.get("members") or []
    absent = [str(m) for m in members if not is_bundle_folder(path / str(m))]
    problems = []
    if not members:
        problems.append(f"{ENSEMBLE_JSON} lists no members")
    if absent:
        problems.append(f"member bundles missing: {', '.join(absent)}")
    return FolderCheck(folder, tuple(problems))


def needs_backbone(primary_dir: str) -> bool:
    """True when a member's model args record a backbone_dir (WavLM / Wav2Vec2 heads);
    False for members whose encoder ships as a package (Whisper) or an unset folder."""
    return bool(primary_dir) and any("backbone_dir" in _model_args(meta) for meta in _member_metas(primary_dir))


def recorded_backbone_dir(primary_dir: str) -> str:
    """The backbone folder recorded at training time, looked up as the loader does: the first
    member's own, else the ensemble's; an existing folder wins ('' when none is recorded)."""
    data = peek_ensemble_meta(primary_dir)
    metas = _member_metas(primary_dir)
    candidates = [str(value) for value in (_model_args(metas[0]).get("backbone_dir") if metas else None,
                                           data.get("backbone_dir") if isinstance(data, dict) else None) if value]
    return next((c for c in candidates if Path(c).expanduser().is_dir()), candidates[0] if candidates else "")


def effective_backbone_dir(primary_dir: str, backbone_dir: str) -> str:
    """The user's backbone folder, else the one recorded at training time."""
    return backbone_dir or (recorded_backbone_dir(primary_dir) if primary_dir else "")


def primary_usable(primary_dir: str, backbone_dir: str) -> bool:
    """True when the primary can be offered: its folder is complete and, when its members
    need a backbone, that folder (chosen or recorded) is complete too."""
    if not primary_dir or not check_primary_folder(primary_dir).ok:
        return False
    if not needs_backbone(primary_dir):
        return True
    return check_backbone_folder(effective_backbone_dir(primary_dir, backbone_dir)).ok


def _encoder_name(args: dict) -> str:
    """"tiny.en" for a Whisper head, the backbone folder's name for a WavLM one, else ""."""
    return str(args.get("encoder") or (Path(str(args["backbone_dir"])).name if args.get("backbone_dir") else ""))


def primary_title(primary_dir: str) -> str:
    """The selector's title, from JSON only: "whisper-ultimate tiny.en ×5 (primary)" (model names,
    their encoders or backbone folder names, member count; a fused ensemble reads "tiny.en + base ×10");
    a generic title when unset/unreadable."""
    every = _member_metas(primary_dir) if primary_dir else []
    metas = [m for m in every if isinstance(m, dict)]
    names = list(dict.fromkeys(str(m.get("model", {}).get("name", "?")) for m in metas
                               if isinstance(m.get("model"), dict)))
    if not names:
        return PRIMARY_UNSET_TITLE
    encoders = [e for e in dict.fromkeys(_encoder_name(_model_args(m)) for m in metas) if e]
    parts = [" + ".join(names)] + ([" + ".join(encoders)] if encoders else []) + ([f"×{len(every)}"] if len(every) > 1 else [])
    return " ".join(parts) + " (primary)"
