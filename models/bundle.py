"""Trained-model bundles: a folder with bundle.json plus model.safetensors (torch) or model.joblib (sklearn).

    save_bundle(out_dir, model, name, meta)        -> Path of the folder written
    load_bundle(bundle_dir, device)                -> (model, meta dict)        [torch or sklearn]
    load_bundle_classifier(bundle_dir, device)     -> warmed-up Classifier     [torch, sklearn, ensemble]

Every problem with a bundle (missing folder or files, corrupt JSON or weights,
wrong format_version, unknown model, weights that don't fit the architecture,
a label map that isn't EMOTIONS) raises `BundleError` with one readable line.
Loading reads local files only; nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.classifier import SAMPLE_RATE_HZ, Classifier
from models.labels import EMOTIONS
from models.registry import UnknownModelError, build_model, get_spec

FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
ENSEMBLE_JSON = "ensemble.json"
WEIGHT_FILES = {"torch": "model.safetensors", "sklearn": "model.joblib"}
# Keys of bundle.json the caller's `meta` may fill; the rest are derived from the model.
META_KEYS = ("feature", "fold", "metrics", "training", "data", "git_commit")
_REPO_ROOT = Path(__file__).resolve().parent.parent


class BundleError(Exception):
    """A bundle folder is missing, corrupt or does not match this version of VED (one-line message)."""


def git_commit(repo_dir: str | Path = _REPO_ROOT) -> str:
    """HEAD commit hash of the repository, or "unknown" (no git, not a repo, ...); never raises."""
    try:
        result = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else "unknown"


def file_hash(path: str | Path, length: int = 12) -> str:
    """First `length` hex digits of the file's sha256 (the checkpoint_hash of a bundle)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def resolve_device(device: str | None) -> str:
    """None -> "cuda" when available else "cpu"; a CUDA device without CUDA raises BundleError."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BundleError(f"device {device!r} requested but CUDA is not available; use device 'cpu'")
    try:
        torch.device(device)
    except RuntimeError as err:
        raise BundleError(f"invalid device {device!r}: {err}") from None
    return device


def _atomic_write_bytes(path: Path, write: Any) -> None:
    """Call write(tmp_path) then rename over `path`, so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _feature_config(model: Any) -> dict[str, Any]:
    describe = getattr(model, "feature_config", None)
    return describe() if callable(describe) else {}


def save_bundle(out_dir: str | Path, model: Any, name: str, meta: dict[str, Any] | None = None) -> Path:
    """Write `model` (an nn.Module or the eGeMAPS SVM) as a bundle folder and return its path.

    name: registry name (checked). meta: optional values for bundle.json keys
    feature, fold, metrics, training, data, git_commit; other keys are stored
    as extra top-level entries. The model must provide model_args().
    """
    get_spec(name)
    meta = dict(meta or {})
    # DistributedDataParallel (.module) and torch.compile (._orig_mod) wrappers prefix the state-dict keys.
    for wrapper_attr in ("module", "_orig_mod"):
        inner = getattr(model, wrapper_attr, None)
        if isinstance(model, nn.Module) and isinstance(inner, nn.Module):
            model = inner
    kind = "torch" if isinstance(model, nn.Module) else "sklearn"
    if not callable(getattr(model, "model_args", None)):
        raise TypeError(f"{type(model).__name__} has no model_args(); cannot bundle it")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHT_FILES[kind]
    if kind == "torch":
        from safetensors.torch import save_file

        state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
        _atomic_write_bytes(weights, lambda tmp: save_file(state, str(tmp), metadata={"model": name}))
    else:
        import joblib

        _atomic_write_bytes(weights, lambda tmp: joblib.dump(model, tmp))
    reserved = {"format_version", "kind", "model", "labels", "sample_rate_hz", "created_utc"}
    clashes = sorted(reserved & set(meta))
    if clashes:
        raise ValueError(f"meta may not set {', '.join(clashes)}; save_bundle derives them")
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": {"name": name, "args": model.model_args()},
        "labels": list(EMOTIONS),
        "feature": meta.pop("feature", None) or _feature_config(model),
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "fold": meta.pop("fold", None),
        "metrics": meta.pop("metrics", {}),
        "training": meta.pop("training", {}),
        "data": meta.pop("data", {}),
        "git_commit": meta.pop("git_commit", None) or git_commit(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **meta,
    }
    text = json.dumps(doc, indent=2, sort_keys=False, default=_json_default)
    _atomic_write_bytes(out / BUNDLE_JSON, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    return out


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and Paths in metrics or provenance become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"bundle.json cannot store {type(value).__name__} values")


def read_bundle_json(bundle_dir: str | Path) -> dict[str, Any]:
    """Parse and validate bundle.json (format, kind, model name, labels); raises BundleError."""
    folder = Path(bundle_dir)
    if not folder.exists():
        raise BundleError(f"bundle folder not found: {folder}")
    if not folder.is_dir():
        raise BundleError(f"bundle path is not a folder: {folder}")
    json_path = folder / BUNDLE_JSON
    if not json_path.is_file():
        if (folder / ENSEMBLE_JSON).is_file():
            raise BundleError(f"{folder} is an ensemble folder; load it with load_bundle_classifier")
        present = [f for f in WEIGHT_FILES.values() if (folder / f).is_file()]
        missing = [BUNDLE_JSON] + ([] if present else ["model.safetensors or model.joblib"])
        raise BundleError(f"bundle {folder} is missing {' and '.join(missing)}")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(
            f"{json_path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"cannot read {json_path}: {err}") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{json_path} must hold a JSON object, found {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{json_path} has format_version {version!r}; this VED reads format_version "
                          f"{FORMAT_VERSION}")
    kind = meta.get("kind")
    if kind not in WEIGHT_FILES:
        raise BundleError(f"{json_path} has kind {kind!r}; expected one of {', '.join(WEIGHT_FILES)}")
    model_entry = meta.get("model")
    if not (isinstance(model_entry, dict) and isinstance(model_entry.get("name"), str)
            and isinstance(model_entry.get("args", {}), dict)):
        raise BundleError(f"{json_path} needs \"model\": {{\"name\": str, \"args\": {{...}}}}")
    labels = meta.get("labels")
    if labels is None or tuple(labels) != EMOTIONS:
        raise BundleError(f"{json_path} label map {labels} does not match VED's classes {list(EMOTIONS)}")
    try:
        get_spec(model_entry["name"])
    except UnknownModelError as err:
        raise BundleError(f"{json_path}: {err}") from None
    weights = folder / WEIGHT_FILES[kind]
    if not weights.is_file():
        raise BundleError(f"bundle {folder} is missing its weights file {weights.name}")
    return meta


def _check_state_matches(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Compare a loaded state dict with the model's; raise BundleError naming the differences."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k} (file {list(state[k].shape)} vs model {list(expected[k].shape)})"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatch", wrong_shape)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise BundleError(f"weights in {where} do not match the architecture in bundle.json; "
                          + "; ".join(problems))


def load_bundle(bundle_dir: str | Path, device: str | None = "cpu",
                backbone_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a torch or sklearn bundle -> (model in eval mode on `device` | fitted SVM, bundle.json dict).

    device: "cpu", "cuda", "cuda:0" or None (cuda when available). The dict
    gains "checkpoint_hash" (first 12 hex of the weights file's sha256).
    backbone_dir: for heads on a pretrained backbone, the backbone folder on this
    machine (replaces the folder recorded at training time).
    """
    folder = Path(bundle_dir)
    meta = read_bundle_json(folder)
    name, args = meta["model"]["name"], dict(meta["model"].get("args", {}))
    if backbone_dir is not None and "backbone_dir" in args:
        args["backbone_dir"] = str(backbone_dir)
    weights = folder / WEIGHT_FILES[meta["kind"]]
    if meta["kind"] == "torch":
        model = _load_torch(weights, name, args, resolve_device(device))
    else:
        model = _load_sklearn(weights)
    meta["checkpoint_hash"] = file_hash(weights)
    return model, meta


def _build(name: str, args: dict[str, Any], where: Path) -> Any:
    try:
        return build_model(name, **args)
    except (TypeError, ValueError) as err:
        raise BundleError(f"model args in {where} do not fit {name!r}: {err}") from None


def _load_torch(weights: Path, name: str, args: dict[str, Any], device: str) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = _build(name, args, weights.with_name(BUNDLE_JSON))
    if not isinstance(model, nn.Module):
        raise BundleError(f"{weights.parent}: model {name!r} is not a torch model but the bundle kind is torch")
    try:
        state = load_file(str(weights), device="cpu")
    except SafetensorError as err:
        raise BundleError(f"{weights} is corrupt or truncated ({err})") from None
    except OSError as err:
        raise BundleError(f"cannot read {weights}: {err}") from None
    _check_state_matches(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _load_sklearn(weights: Path) -> Any:
    import joblib

    try:
        model = joblib.load(weights)
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, IndexError, AttributeError,
            ModuleNotFoundError, OSError) as err:
        raise BundleError(f"{weights} is corrupt or truncated ({type(err).__name__}: {err})") from None
    if not callable(getattr(model, "predict_proba", None)):
        raise BundleError(f"{weights} does not hold a classifier with predict_proba")
    classes = [int(c) for c in getattr(model, "classes_", [])]
    if not classes or any(c < 0 or c >= len(EMOTIONS) for c in classes):
        raise BundleError(f"{weights} was trained on class indices {classes}, not 0..{len(EMOTIONS) - 1}")
    return model


def _display_name(meta: dict[str, Any]) -> str:
    name = meta["model"]["name"]
    return name if meta.get("fold") is None else f"{name}-fold{meta['fold']}"


def load_bundle_classifier(bundle_dir: str | Path, device: str | None = None,
                           backbone_dir: str | Path | None = None) -> Classifier:
    """Any bundle folder (torch, sklearn or ensemble) -> warmed-up Classifier; raises BundleError.

    backbone_dir overrides the pretrained-backbone folder recorded in the bundle."""
    folder = Path(bundle_dir)
    if not folder.exists():
        raise BundleError(f"bundle folder not found: {folder}")
    if (folder / ENSEMBLE_JSON).is_file():
        try:
            from models.ensemble import load_ensemble
        except ImportError as err:
            raise BundleError(f"{folder} is an ensemble but ensemble support is unavailable ({err})") from None
        return load_ensemble(folder, device, backbone_dir=backbone_dir)
    model, meta = load_bundle(folder, device, backbone_dir=backbone_dir)
    if meta["kind"] == "torch":
        from models.torch_classifier import TorchClassifier

        classifier: Classifier = TorchClassifier(model, name=_display_name(meta), device=resolve_device(device),
                                                 checkpoint_hash=meta["checkpoint_hash"])
    else:
        from models.svm import SklearnClassifier

        classifier = SklearnClassifier(model, name=_display_name(meta), checkpoint_hash=meta["checkpoint_hash"])
    classifier.warmup()
    return classifier
