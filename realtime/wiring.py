"""Building a ready-to-start Engine from user choices; shared by main.py, the GUI factory and bench/.

Torch is imported only when a model is actually loaded, so `main.py --help`,
`--list-devices` and `--export-csv` stay fast.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from models.bundle import holds_model
from models.classifier import Classifier
from models.display_names import FAST_ROLE, derived_display_name, folder_display_name
from realtime.engine import Engine, EngineConfig
from realtime.source import TARGET_RATE_HZ, AudioSource
from realtime.timeline import TimelineWriter, default_timeline_path

APP_VERSION = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE_DIR = REPO_ROOT / "models" / "default"
DEFAULT_PRIMARY_DIR = REPO_ROOT / "models" / "primary"
NO_PRIMARY = "none"
GUI_MODEL_CHOICES = ("default", "primary")


def torch_device(compute: str) -> str | None:
    """--compute value -> device for the model loaders (None lets them pick cuda when present)."""
    return None if compute == "auto" else compute


def resolve_bundle_dir(spec: str | os.PathLike | None) -> Path:
    """A bundle folder, or a registry name whose trained bundle lives in models/<name>/.

    None or "default" -> the default bundle (models/default/; "conformer", its old name, still works).
    Raises BundleError.
    """
    from models.bundle import BundleError

    if spec is None or str(spec) in ("", "conformer", "default"):
        path = DEFAULT_BUNDLE_DIR
    else:
        path = Path(spec).expanduser()
        if not path.exists() and os.sep not in str(spec):
            from models.registry import UnknownModelError, get_spec

            try:
                get_spec(str(spec))
            except UnknownModelError as err:
                raise BundleError(f"--model {spec!r} is neither a bundle folder nor a registry name ({err})") from None
            path = REPO_ROOT / "models" / str(spec)
            if not path.exists():
                raise BundleError(f"no trained bundle for registry model {spec!r} (looked in {path}); "
                                  "pass the bundle folder written by `python -m train`")
    if not path.exists():
        hint = " (train it with `python -m train`, or pass --model FOLDER)" if path == DEFAULT_BUNDLE_DIR else ""
        raise BundleError(f"model bundle not found: {path}{hint}")
    return path


def resolve_primary(spec: str | os.PathLike | None) -> Path | None:
    """--primary value -> the accurate model's folder, or None to run on the fast model alone.

    None -> models/primary/ when it is installed (holds an ensemble or a bundle), else None;
    "none" -> None; anything else -> that folder (checked when the engine loads it)."""
    if spec is None:
        return DEFAULT_PRIMARY_DIR if holds_model(DEFAULT_PRIMARY_DIR) else None
    if str(spec).lower() == NO_PRIMARY:
        return None
    return Path(spec).expanduser()


def load_model(spec: str | os.PathLike | None, compute: str = "auto",
               backbone_dir: str | None = None) -> Classifier:
    """Load a bundle or ensemble folder as a warmed-up Classifier; raises BundleError (one line)."""
    from models.loader import load_classifier

    folder = resolve_bundle_dir(spec)
    return load_classifier(folder, device=torch_device(compute), backbone_dir=backbone_dir)


def primary_loader(primary_dir: str | os.PathLike, compute: str = "auto",
                   backbone_dir: str | None = None) -> Callable[[], Classifier]:
    """Deferred loading of the accurate model: the engine calls it in start(), and a failure
    becomes one status message while the session runs on the fallback."""
    def load() -> Classifier:
        return load_model(str(primary_dir), compute=compute, backbone_dir=backbone_dir)

    load.name = Path(primary_dir).name  # type: ignore[attr-defined]  (shown in the status message)
    return load


def make_source(source: str | int | None, pace: str = "realtime", file_block_ms: int = 100) -> AudioSource:
    """str path -> FileSource; int index / None (default) -> MicrophoneSource.
    Raises AudioFileError or DeviceError (one line)."""
    from realtime.sources import FileSource, MicrophoneSource

    if isinstance(source, (str, os.PathLike)) and not str(source).strip().isdigit():
        return FileSource(source, pace=pace, block_ms=file_block_ms)
    return MicrophoneSource(source)


def open_source(input_path: str | os.PathLike | None, device: str | int | None, pace: str = "realtime",
                file_block_ms: int = 100) -> AudioSource:
    """--input FILE -> FileSource; else the microphone chosen by --device (index, digits or name
    part; None = default input). Raises AudioFileError or DeviceError (one line)."""
    from realtime.sources import FileSource, MicrophoneSource

    if input_path:
        return FileSource(input_path, pace=pace, block_ms=file_block_ms)
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    return MicrophoneSource(device)


def session_header(source: AudioSource, fallback: Classifier, cfg: EngineConfig,
                   primary_dir: str | os.PathLike | None, compute: str,
                   fallback_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The timeline header fields (TimelineWriter adds type, format_version, started_utc)."""
    return {
        "app": "VED", "app_version": APP_VERSION,
        "input": source.description,
        "input_kind": "microphone" if source.is_live else "file",
        "input_path": source.input_path,
        "sample_rate_hz": TARGET_RATE_HZ,
        "model": {"name": fallback.name, "checkpoint_hash": fallback.checkpoint_hash,
                  "device": fallback.device, "bundle": str(fallback_dir) if fallback_dir else None,
                  "display_name": folder_display_name(fallback_dir, FAST_ROLE)
                  or derived_display_name([fallback.name], FAST_ROLE)},
        "primary_model": {"bundle": str(primary_dir), "display_name": folder_display_name(primary_dir)}
        if primary_dir else None,
        "fallback_model": fallback.name if primary_dir else None,
        "compute": compute,
        "vad": asdict(cfg.vad),
        "engine": cfg.to_dict(),
    }


def build_engine(source: AudioSource, fallback: Classifier, cfg: EngineConfig,
                 timeline_path: str | os.PathLike | None, listener: Callable[[object], None] | None,
                 primary_dir: str | os.PathLike | None = None, backbone_dir: str | None = None,
                 compute: str = "auto", fallback_dir: str | os.PathLike | None = None) -> Engine:
    """Open the timeline (checks the location now; raises TimelineError) and build the Engine."""
    path = Path(timeline_path) if timeline_path else default_timeline_path()
    header = session_header(source, fallback, cfg, primary_dir, compute, fallback_dir)
    timeline = TimelineWriter(path, header)
    primary = primary_loader(primary_dir, compute, backbone_dir) if primary_dir else None
    return Engine(source, fallback, cfg, primary=primary, timeline=timeline, listener=listener)


def gui_engine_factory(cfg: EngineConfig, fallback_spec: str | None = None,
                       compute: str = "auto") -> Callable[..., Engine]:
    """The factory gui/app.py expects:
    factory(source, model_choice, listener, *, timeline_path, primary_dir=None, backbone_dir=None) -> Engine.
    "primary" runs primary_dir with the fallback bundle under the latency budget; the fallback
    bundle is loaded once and reused across sessions."""
    cache: dict[str, Classifier] = {}

    def factory(source: str | int | None, model_choice: str, listener: Callable[[object], None], *,
                timeline_path: str | os.PathLike, primary_dir: str | None = None,
                backbone_dir: str | None = None) -> Engine:
        if model_choice not in GUI_MODEL_CHOICES:
            raise ValueError(f"unknown model choice {model_choice!r}; choose {' or '.join(GUI_MODEL_CHOICES)}")
        if model_choice == "primary" and not primary_dir:
            raise ValueError("the primary model needs its folder (Settings → Model folders)")
        audio = make_source(source, pace="realtime")
        if "fallback" not in cache:
            cache["fallback"] = load_model(fallback_spec, compute)
        return build_engine(audio, cache["fallback"], cfg, timeline_path, listener,
                            primary_dir=primary_dir if model_choice == "primary" else None,
                            backbone_dir=backbone_dir, compute=compute,
                            fallback_dir=resolve_bundle_dir(fallback_spec))

    return factory
