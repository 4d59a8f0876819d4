"""The primary model's folders, judged from their JSON alone (the GUI never imports torch).

A primary folder is an ensemble (ensemble.json + one bundle folder per member) or a single
bundle (bundle.json). Members whose model args record a `backbone_dir` (heads on WavLM /
Wav2Vec2) need that Hugging Face backbone folder; the others (Whisper heads, whose encoder
comes from a pinned pip package) need none. The checks are plain functions, testable
without a window; the Model folders dialog and the model selector both use them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _member_metas(folder: str) -> list[Any]:
    """bundle.json of every member ([the bundle itself] for a single-bundle folder; None where unreadable)."""
    path = Path(folder)
    manifest = _read_json(path / "ensemble.json")
    if isinstance(manifest, dict) and isinstance(manifest.get("members"), list):
        return [_read_json(path / str(m) / "bundle.json") for m in manifest["members"]]
    return [_read_json(path / "bundle.json")] if (path / "bundle.json").is_file() else []


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
    """An ensemble folder needs ensemble.json (kind "ensemble") and every member's bundle.json;
    a single-bundle folder needs a readable bundle.json."""
    path = Path(folder)
    if not folder or not path.is_dir():
        return FolderCheck(folder, (f"folder not found: {folder or '(empty)'}",))
    manifest = path / "ensemble.json"
    if not manifest.is_file():
        if (path / "bundle.json").is_file():
            ok = isinstance(_read_json(path / "bundle.json"), dict)
            return FolderCheck(folder, () if ok else ("bundle.json is unreadable",))
        return FolderCheck(folder, ("missing ensemble.json (or bundle.json)",))
    data = _read_json(manifest)
    if data is None:
        return FolderCheck(folder, ("ensemble.json is unreadable",))
    if not isinstance(data, dict) or data.get("kind") != "ensemble":
        return FolderCheck(folder, ('ensemble.json is not an ensemble manifest (kind != "ensemble")',))
    members = data.get("members") or []
    absent = [str(m) for m in members if not (path / str(m) / "bundle.json").is_file()]
    problems = []
    if not members:
        problems.append("ensemble.json lists no members")
    if absent:
        problems.append(f"member bundles missing: {', '.join(absent)}")
    return FolderCheck(folder, tuple(problems))


def needs_backbone(primary_dir: str) -> bool:
    """True when a member's model args record a backbone_dir (WavLM / Wav2Vec2 heads);
    False for members whose encoder ships as a package (Whisper) or an unset folder."""
    return bool(primary_dir) and any("backbone_dir" in _model_args(meta) for meta in _member_metas(primary_dir))


def recorded_backbone_dir(primary_dir: str) -> str:
    """The backbone folder recorded at training time, looked up as the loader does: the first
    member's own, else ensemble.json's; an existing folder wins ('' when none is recorded)."""
    data = _read_json(Path(primary_dir) / "ensemble.json")
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
