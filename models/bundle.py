"""Trained-model folders on disk, the one owner of their format: every writer and reader goes through here.

A bundle is a folder with BUNDLE_JSON ("bundle.json", format_version 2) plus model.safetensors (torch)
or model.joblib (sklearn). An ensemble is a folder with ENSEMBLE_JSON ("ensemble.json",
format_version 1) naming member bundle folders below it.

    save_bundle(out_dir, model, name, meta)         -> Path of the bundle folder written
    save_ensemble(out_dir, members, shared_backbone, backbone_dir, name) -> Path of the ensemble folder
    update_bundle_meta(bundle_dir, change)          edit an existing bundle's JSON as stored (weights untouched)
    copy_bundle(src_dir, dst_dir, also)             a bundle's JSON and weights (and `also` files) copied
    read_bundle_meta(bundle_dir)                    -> validated format-2 dict (format 1 is upgraded)
    read_ensemble_meta(ensemble_dir)                -> validated ensemble dict
    peek_bundle_meta / peek_ensemble_meta(folder)   -> the raw dict or None, never raises (titles, notes)
    is_bundle_folder / is_ensemble_folder / holds_model(folder) -> bool
    upgrade_state_v1(state)                         -> a format-1 state dict with format-2 key names

Loading weights and building Classifiers is models/loader.py. Every problem with a folder raises
`BundleError` with one readable line. Reading touches local files only; nothing is downloaded.
Importing this module does not import torch (the GUI reads bundle JSON through it). Both JSON
formats are versioned and keep unknown optional top-level keys (a reader ignores what it does not use).

Format 1 (until 2026-12-02) called the openSMILE functionals "egemaps" whatever
their set: feature type "logmel+egemaps", args egemaps_hidden/egemaps_dropout,
buffers egemaps_mean/egemaps_std. Format 2 says "functionals". Format-1
bundles keep loading: `read_bundle_meta` and `upgrade_state_v1` rename on the fly.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from models.atomic import write_atomically
from models.classifier import SAMPLE_RATE_HZ
from models.labels import EMOTIONS
from models.registry import UnknownModelError, get_spec

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ENSEMBLE_FORMAT_VERSION = 1
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
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    from models.contract import FunctionalsModel, TrainableModel

    get_spec(name)
    meta = dict(meta or {})
    while isinstance(model, (DataParallel, DistributedDataParallel)):  # they prefix state-dict keys "module."
        model = model.module
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
    _write_json(out / BUNDLE_JSON, doc)
    return out


def update_bundle_meta(bundle_dir: str | Path, change: Callable[[dict[str, Any]], object]) -> Path:
    """Rewrite an existing bundle's JSON in place: change(doc) edits the dict as stored (not upgraded,
    so a format-1 file stays format 1 and matches its weights), which is then written atomically; the
    weights stay. Returns the file's path; load the bundle afterwards to check it. BundleError when
    the folder holds no readable bundle JSON."""
    path = Path(bundle_dir) / BUNDLE_JSON
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a bundle folder (no {BUNDLE_JSON})")
    doc = _read_json(path)
    change(doc)
    _write_json(path, doc)
    return path


def save_ensemble(out_dir: str | Path, members: list[str], shared_backbone: bool,
                  backbone_dir: str | None = None, name: str | None = None, **extra: Any) -> Path:
    """Write out_dir/ENSEMBLE_JSON naming `members` (bundle folders relative to out_dir, which must
    already hold their BUNDLE_JSON); return out_dir.

    shared_backbone: the members are heads on one frozen front end (one pass per distinct front end).
    backbone_dir: the pretrained-backbone folder at training time (None for pip-packaged encoders).
    name: shown in the monitor (default "ensemble-<first member's model>"). extra: further optional keys."""
    out = Path(out_dir)
    if not members or not all(isinstance(m, str) and m for m in members):
        raise ValueError(f"an ensemble needs a non-empty list of member folder names, got {members!r}")
    missing = [m for m in members if not is_bundle_folder(out / m)]
    if missing:
        raise BundleError(f"ensemble {out}: member folder(s) without {BUNDLE_JSON}: {', '.join(missing)}")
    reserved = {"format_version", "kind", "members", "shared_backbone", "backbone_dir", "name"}
    if reserved & set(extra):
        raise ValueError(f"extra keys may not set {', '.join(sorted(reserved & set(extra)))}")
    doc: dict[str, Any] = {"format_version": ENSEMBLE_FORMAT_VERSION, "kind": "ensemble", "members": list(members),
                           "shared_backbone": bool(shared_backbone), "backbone_dir": backbone_dir}
    if name is not None:
        doc["name"] = name
    _write_json(out / ENSEMBLE_JSON, {**doc, **extra})
    return out


def copy_bundle(src_dir: str | Path, dst_dir: str | Path, also: tuple[str, ...] = ()) -> Path:
    """Copy a bundle folder's JSON and weights (plus the files named in `also`, when present) into
    dst_dir, each file written atomically; returns dst_dir. Plots and training state stay behind."""
    src, dst = Path(src_dir), Path(dst_dir)
    if not is_bundle_folder(src):
        raise BundleError(f"{src} is not a bundle folder (no {BUNDLE_JSON})")
    dst.mkdir(parents=True, exist_ok=True)
    for name in (BUNDLE_JSON, *WEIGHT_FILES.values(), *also):
        if (src / name).is_file():
            write_atomically(dst / name, lambda tmp, name=name: shutil.copyfile(src / name, tmp))
    return dst


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=1, sort_keys=False, default=_json_default)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and Paths in metrics or provenance become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{BUNDLE_JSON} cannot store {type(value).__name__} values")


# ---------------------------------------------------------------- reading
def _read_json(path: Path, schema_checked: bool = True) -> dict[str, Any]:
    """The one place bundle and ensemble JSON is parsed: a file holding one JSON object -> dict.
    Anything else (missing, not a regular file, not JSON, nested too deep, NaN, wrong types for
    its schema) is a BundleError (one line naming the file and field); models/safe_json.py parses.
    schema_checked=False: any JSON object (the peek_* views of partial or foreign files)."""
    from models.safe_json import BUNDLE_SCHEMA, ENSEMBLE_SCHEMA, InputFileError, read_json

    schema = {BUNDLE_JSON: BUNDLE_SCHEMA, ENSEMBLE_JSON: ENSEMBLE_SCHEMA}.get(Path(path).name, dict)
    schema = schema if schema_checked else dict
    try:
        return read_json(path, schema, what=Path(path).name)
    except InputFileError as err:
        raise BundleError(str(err)) from None


def is_bundle_folder(folder: str | Path) -> bool:
    """True when `folder` holds a bundle's JSON (its contents are checked only on reading)."""
    return (Path(folder) / BUNDLE_JSON).is_file()


def is_ensemble_folder(folder: str | Path) -> bool:
    """True when `folder` holds an ensemble's JSON (its contents are checked only on reading)."""
    return (Path(folder) / ENSEMBLE_JSON).is_file()


def holds_model(folder: str | Path) -> bool:
    """True when `folder` is a bundle or an ensemble folder: something load_classifier may load."""
    return is_ensemble_folder(folder) or is_bundle_folder(folder)


def peek_bundle_meta(folder: str | Path) -> dict[str, Any] | None:
    """The bundle's JSON as stored (not validated, not upgraded), or None when it is missing or
    unreadable; never raises. For titles and notes; load_* for anything that runs the model."""
    return _peek(Path(folder) / BUNDLE_JSON)


def peek_ensemble_meta(folder: str | Path) -> dict[str, Any] | None:
    """The ensemble's JSON as stored (not validated), or None when missing or unreadable; never raises."""
    return _peek(Path(folder) / ENSEMBLE_JSON)


def _peek(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return _read_json(path, schema_checked=False)
    except BundleError:
        return None


def read_bundle_meta(bundle_dir: str | Path) -> dict[str, Any]:
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
    meta = _read_json(json_path)
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


def read_ensemble_meta(ensemble_dir: str | Path) -> dict[str, Any]:
    """Parse and validate an ensemble folder's JSON; raises BundleError (one line) on any problem.

    {"format_version": 1, "kind": "ensemble", "members": ["fold0", ...],
     "shared_backbone": bool, "backbone_dir": str | null, "name": str (optional)}"""
    folder = Path(ensemble_dir)
    path = folder / ENSEMBLE_JSON
    if not folder.is_dir():
        raise BundleError(f"ensemble folder not found: {folder}")
    if not path.is_file():
        raise BundleError(f"{folder} has no {ENSEMBLE_JSON}; not an ensemble folder")
    doc = _read_json(path)
    if doc.get("format_version") != ENSEMBLE_FORMAT_VERSION or doc.get("kind") != "ensemble":
        raise BundleError(f"{path} needs format_version {ENSEMBLE_FORMAT_VERSION} and kind \"ensemble\", "
                          f"found {doc.get('format_version')!r} / {doc.get('kind')!r}")
    members = doc.get("members")
    if not (isinstance(members, list) and members and all(isinstance(m, str) for m in members)):
        raise BundleError(f"{path} needs a non-empty list of member folder names in \"members\"")
    missing = [m for m in members if not is_bundle_folder(folder / m)]
    if missing:
        raise BundleError(f"ensemble {folder} is missing member bundle(s): {', '.join(missing)} "
                          f"(each needs {BUNDLE_JSON})")
    return doc


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
