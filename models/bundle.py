"""Trained-model bundles on disk: a folder with bundle.json plus model.safetensors (torch) or model.joblib (sklearn).

    save_bundle(out_dir, model, name, meta)   -> Path of the folder written (format_version 2)
    read_bundle_json(bundle_dir)              -> bundle.json as a format-2 dict (format 1 is upgraded)
    upgrade_state_v1(state)                   -> a format-1 state dict with format-2 key names

Loading (weights, checks, Classifier) is models/loader.py; this module is the
file format only. Every problem with a bundle raises `BundleError` with one
readable line. Reading touches local files only; nothing is downloaded.

Format 1 (until 2026-12-02) called the openSMILE functionals "egemaps" whatever
their set: feature type "logmel+egemaps", args egemaps_hidden/egemaps_dropout,
buffers egemaps_mean/egemaps_std. Format 2 says "functionals". Format-1
bundles keep loading: `read_bundle_json` and `upgrade_state_v1` rename on the fly.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.atomic import write_atomically
from models.classifier import SAMPLE_RATE_HZ
from models.contract import FunctionalsModel, TrainableModel
from models.labels import EMOTIONS
from models.registry import UnknownModelError, get_spec

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
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


def save_bundle(out_dir: str | Path, model: Any, name: str, meta: dict[str, Any] | None = None) -> Path:
    """Write `model` (an nn.Module or a functionals classifier) as a format-2 bundle folder; return its path.

    name: registry name (checked). meta: optional values for bundle.json keys
    feature, fold, metrics, training, data, git_commit; other keys are stored
    as extra top-level entries. The model must provide model_args().
    """
    from torch import nn

    get_spec(name)
    meta = dict(meta or {})
    # DistributedDataParallel (.module) and torch.compile (._orig_mod) wrappers prefix the state-dict keys.
    for wrapper_attr in ("module", "_orig_mod"):
        inner = getattr(model, wrapper_attr, None)
        if isinstance(model, nn.Module) and isinstance(inner, nn.Module):
            model = inner
    kind = "torch" if isinstance(model, nn.Module) else "sklearn"
    if not isinstance(model, (TrainableModel, FunctionalsModel)):
        raise TypeError(f"{type(model).__name__} is neither a TrainableModel nor a FunctionalsModel "
                        "(models/contract.py); cannot bundle it")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHT_FILES[kind]
    if kind == "torch":
        from safetensors.torch import save_file

        state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
        write_atomically(weights, lambda tmp: save_file(state, str(tmp), metadata={"model": name}))
    else:
        import joblib

        write_atomically(weights, lambda tmp: joblib.dump(model, tmp))
    reserved = {"format_version", "kind", "model", "labels", "sample_rate_hz", "created_utc"}
    clashes = sorted(reserved & set(meta))
    if clashes:
        raise ValueError(f"meta may not set {', '.join(clashes)}; save_bundle derives them")
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": {"name": name, "args": model.model_args()},
        "labels": list(EMOTIONS),
        "feature": meta.pop("feature", None) or model.feature_config(),
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
    write_atomically(out / BUNDLE_JSON, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    return out


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and Paths in metrics or provenance become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"bundle.json cannot store {type(value).__name__} values")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object (bundle.json, ensemble.json) -> dict; anything else is a BundleError."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"cannot read {path}: {err}") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{path} must hold a JSON object, found {type(doc).__name__}")
    return doc


def read_bundle_json(bundle_dir: str | Path) -> dict[str, Any]:
    """Parse and validate bundle.json (format, kind, model name, labels, sample rate) -> format-2 dict.

    A format-1 file is upgraded in memory (its dict gains "upgraded_from": 1). Raises BundleError."""
    folder = Path(bundle_dir)
    if not folder.exists():
        raise BundleError(f"bundle folder not found: {folder}")
    if not folder.is_dir():
        raise BundleError(f"bundle path is not a folder: {folder}")
    json_path = folder / BUNDLE_JSON
    if not json_path.is_file():
        if (folder / ENSEMBLE_JSON).is_file():
            raise BundleError(f"{folder} is an ensemble folder; load it with models.loader.load_classifier")
        present = [f for f in WEIGHT_FILES.values() if (folder / f).is_file()]
        missing = [BUNDLE_JSON] + ([] if present else ["model.safetensors or model.joblib"])
        raise BundleError(f"bundle {folder} is missing {' and '.join(missing)}")
    meta = read_json_object(json_path)
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise BundleError(f"{json_path} has format_version {version!r}; this VED reads format_version "
                          f"{' or '.join(map(str, READABLE_VERSIONS))}")
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
    rate = meta.get("sample_rate_hz")
    if rate != SAMPLE_RATE_HZ or isinstance(rate, bool):
        raise BundleError(f"{json_path} was made for sample_rate_hz {rate!r}; VED's models run at "
                          f"{SAMPLE_RATE_HZ} Hz")
    weights = folder / WEIGHT_FILES[kind]
    if not weights.is_file():
        raise BundleError(f"bundle {folder} is missing its weights file {weights.name}")
    return _upgrade_v1(meta) if version == 1 else meta


_V1_ARGS = {"egemaps_hidden": "functionals_hidden", "egemaps_dropout": "functionals_dropout"}
_V1_STATE_PREFIX, _V2_STATE_PREFIX = "egemaps_", "functionals_"


def _upgrade_v1(meta: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2 in memory: the functionals' arguments and feature entry get their format-2 names."""
    meta = {**meta, "format_version": FORMAT_VERSION, "upgraded_from": 1}
    args = meta["model"].get("args", {})
    meta["model"] = {**meta["model"], "args": {_V1_ARGS.get(key, key): value for key, value in args.items()}}
    feature = meta.get("feature")
    if isinstance(feature, dict):
        feature = dict(feature)
        if feature.get("type") == "logmel+egemaps":  # doublestream-v4
            feature["type"] = "logmel+functionals"
            old = feature.pop("egemaps", {}) or {}
            feature["functionals"] = {"feature_set": old.get("feature_set"), "dim": old.get("functionals")}
        elif feature.get("type") == "egemaps":  # functionals classifiers (SVM, logistic regression)
            feature["type"] = "functionals"
            feature["dim"] = feature.pop("functionals", None)
        meta["feature"] = feature
    return meta


def upgrade_state_v1(state: dict[str, Any]) -> dict[str, Any]:
    """Format-1 state-dict keys -> format 2 (egemaps_mean, egemaps_branch.0.weight, ... -> functionals_*)."""
    return {(_V2_STATE_PREFIX + key[len(_V1_STATE_PREFIX):] if key.startswith(_V1_STATE_PREFIX) else key): value
            for key, value in state.items()}
