"""The one loading path: bundle and ensemble folders -> checked models and warmed-up Classifiers.

    load_classifier(path, device, backbone_dir)        any folder (single, sklearn, ensemble) -> Classifier
    load_bundle_classifier(bundle_dir, device, ...)    one bundle folder -> Classifier
    load_bundle(bundle_dir, device, backbone_dir)      one bundle folder -> (model, its JSON as a dict)
    load_ensemble(ensemble_dir, device, ...)           ensemble folder -> EnsembleClassifier

Every model is validated on the way in; any failure is a `BundleError` with one line:
* the architecture arguments go through the model's config `__post_init__` (type and range);
* every weight tensor has the architecture's name and shape, a float dtype where the
  architecture has one, and only finite values (no NaN / inf);
* the bundle's feature settings (rate, framing, mel bins, openSMILE set...) equal what
  this version of the code computes;
* a warm-up prediction returns finite probabilities that sum to 1.
JSON reading and the file format live in models/bundle.py; models are built here from it.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.backbone import BackboneError, sharing_frozen_backbones
from models.bundle import (BUNDLE_JSON, WEIGHT_FILES, BundleError, file_hash, is_ensemble_folder,
                           read_bundle_meta, read_ensemble_meta, upgrade_state_v1)
from models.baseline import BaselineConfig
from models.calibration import CalibratedClassifier, Calibration, CalibrationError
from models.classifier import Classifier
from models.contract import FunctionalsModel, shares_frontend
from models.device import DeviceError, resolve_device
from models.ensemble import EnsembleClassifier
from models.labels import EMOTIONS
from models.registry import build_model

# The bundle's "feature" keys that decide what a model sees; they must equal the code's values.
_ANALYSIS_KEYS = ("type", "kind", "sample_rate_hz", "win_ms", "hop_ms", "n_mels", "f_min_hz", "f_max_hz",
                  "log_floor", "min_clip_ms", "utterance_norm", "level_dbfs", "n_fft", "hop_samples", "frames_per_s",
                  "feature_set", "dim", "functionals")


def checked_device(device: str | None) -> str:
    """models.device.resolve_device with its error as a BundleError."""
    try:
        return resolve_device(device)
    except DeviceError as err:
        raise BundleError(str(err)) from None


# ---------------------------------------------------------------- one bundle
def build_from_meta(meta: dict[str, Any], folder: Path, backbone_dir: str | None = None) -> Any:
    """The untrained architecture the bundle's JSON describes; bad arguments -> BundleError (one line)."""
    name, args = meta["model"]["name"], dict(meta["model"].get("args", {}))
    if backbone_dir is not None and "backbone_dir" in args:
        args["backbone_dir"] = str(backbone_dir)
    try:
        return build_model(name, **args)
    except BackboneError as err:
        raise BundleError(f"{folder}: {err}") from None
    except (TypeError, ValueError, OverflowError, MemoryError, RuntimeError) as err:  # RuntimeError: allocation
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BundleError(f"model args in {folder / BUNDLE_JSON} do not fit {name!r}: {first}") from None


def _read_state(weights: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(weights), device="cpu")
    except SafetensorError as err:
        raise BundleError(f"{weights} is corrupt or truncated ({err})") from None
    except OSError as err:
        raise BundleError(f"cannot read {weights}: {err}") from None


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Names, shapes, dtypes and finiteness of a loaded state dict against the model's; BundleError."""
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
        raise BundleError(f"weights in {where} do not match the architecture in {BUNDLE_JSON}; "
                          + "; ".join(problems))
    not_float = [f"{k} ({str(state[k].dtype).removeprefix('torch.')})" for k in expected
                 if expected[k].is_floating_point() and not state[k].is_floating_point()]
    if not_float:
        raise BundleError(f"weights in {where} must be floating point; {', '.join(not_float[:3])}"
                          + (f" (+{len(not_float) - 3} more)" if len(not_float) > 3 else ""))
    not_finite = [k for k in expected if state[k].is_floating_point() and not torch.isfinite(state[k]).all()]
    if not_finite:
        raise BundleError(f"weights in {where} hold NaN or infinite values in {', '.join(not_finite[:3])}"
                          + (f" (+{len(not_finite) - 3} more)" if len(not_finite) > 3 else ""))


def _check_feature(model: Any, meta: dict[str, Any], folder: Path) -> None:
    """The analysis settings stored in the bundle's JSON must equal those the code computes for this model."""
    stored = meta.get("feature")
    if not (isinstance(stored, dict) and stored):
        return  # nothing recorded (older heads): the architecture arguments already decide the features
    code = json.loads(json.dumps(model.feature_config()))
    flat_stored = {**stored, **(stored.get("functionals") if isinstance(stored.get("functionals"), dict) else {})}
    flat_code = {**code, **(code.get("functionals") if isinstance(code.get("functionals"), dict) else {})}
    differs = [f"{key} {flat_stored[key]!r} (this code: {flat_code[key]!r})" for key in _ANALYSIS_KEYS
               if key in flat_stored and key in flat_code and not isinstance(flat_code[key], dict)
               and flat_stored[key] != flat_code[key]]
    if differs:
        raise BundleError(f"{folder / BUNDLE_JSON} feature settings differ from this VED's: {', '.join(differs[:3])}")


def _load_torch(folder: Path, meta: dict[str, Any], backbone_dir: str | None) -> nn.Module:
    model = build_from_meta(meta, folder, backbone_dir)
    if not isinstance(model, nn.Module):
        raise BundleError(f"{folder}: model {meta['model']['name']!r} is not a torch model but the bundle "
                          "kind is torch")
    weights = folder / WEIGHT_FILES["torch"]
    state = _read_state(weights)
    if meta.get("upgraded_from") == 1:
        state = upgrade_state_v1(state)
    _check_state(model, state, weights)
    _check_feature(model, meta, folder)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _load_sklearn(folder: Path, meta: dict[str, Any]) -> Any:
    import joblib

    weights = folder / WEIGHT_FILES["sklearn"]
    try:
        model = joblib.load(weights)
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, IndexError, AttributeError,
            ModuleNotFoundError, OSError) as err:
        raise BundleError(f"{weights} is corrupt or truncated ({type(err).__name__}: {err})") from None
    if not isinstance(model, FunctionalsModel):  # the pickle may hold anything
        raise BundleError(f"{weights} does not hold a classifier on openSMILE functionals (models/svm.py)")
    classes = [int(c) for c in model.classes_]
    if not classes or any(c < 0 or c >= len(EMOTIONS) for c in classes):
        raise BundleError(f"{weights} was trained on class indices {classes}, not 0..{len(EMOTIONS) - 1}")
    _check_feature(model, meta, folder)
    return model


def load_bundle(bundle_dir: str | Path, device: str | None = "cpu",
                backbone_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a torch or sklearn bundle -> (model in eval mode on `device` | fitted classifier, its JSON as a dict).

    device: "cpu", "cuda", "cuda:0" or None (cuda when available). The dict is
    format 2 (a format-1 file is upgraded) and gains "checkpoint_hash" (first 12
    hex of the weights file's sha256). backbone_dir: for heads on a pretrained
    backbone, the backbone folder on this machine (replaces the one recorded at training time).
    """
    folder = Path(bundle_dir)
    meta = read_bundle_meta(folder)
    if meta["kind"] == "torch":
        model = _load_torch(folder, meta, None if backbone_dir is None else str(backbone_dir))
        model = model.to(checked_device(device))
    else:
        model = _load_sklearn(folder, meta)
    meta["checkpoint_hash"] = file_hash(folder / WEIGHT_FILES[meta["kind"]])
    return model, meta


def _display_name(meta: dict[str, Any]) -> str:
    name = meta["model"]["name"]
    return name if meta.get("fold") is None else f"{name}-fold{meta['fold']}"


def _wrap(model: Any, meta: dict[str, Any], device: str, name: str | None = None) -> Classifier:
    if meta["kind"] == "torch":
        from models.torch_classifier import TorchClassifier

        return TorchClassifier(model, name=name or _display_name(meta), device=device,
                               checkpoint_hash=meta["checkpoint_hash"])
    from models.svm import SklearnClassifier

    return SklearnClassifier(model, name=name or _display_name(meta), checkpoint_hash=meta["checkpoint_hash"])


def checked_warmup(classifier: Classifier, where: Path) -> Classifier:
    """Warm `classifier` up; its probabilities must be finite, in [0, 1] and sum to 1 per row, else BundleError."""
    probs = np.asarray(classifier.warmup())
    if probs.ndim != 2 or probs.shape[1] != len(EMOTIONS) or probs.shape[0] < 1:
        raise BundleError(f"{where}: the warm-up prediction has shape {probs.shape}, not [1, {len(EMOTIONS)}]")
    if not np.isfinite(probs).all():
        raise BundleError(f"{where}: the warm-up prediction is not finite (NaN or inf); the weights are unusable")
    if (probs < -1e-6).any() or (probs > 1 + 1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise BundleError(f"{where}: the warm-up probabilities {np.round(probs[0], 4).tolist()} do not sum to 1")
    return classifier


def load_bundle_classifier(bundle_dir: str | Path, device: str | None = None,
                           backbone_dir: str | Path | None = None) -> Classifier:
    """One bundle folder (torch or sklearn) -> checked, warmed-up Classifier; raises BundleError."""
    folder = Path(bundle_dir)
    device = checked_device(device)
    model, meta = load_bundle(folder, device, backbone_dir=backbone_dir)
    baseline = speaker_baseline(meta, folder)
    if baseline is None:
        classifier = _wrap(model, meta, device)
    elif meta["kind"] == "torch" and shares_frontend(model):  # the baseline lives on the shared front end
        classifier = EnsembleClassifier(_display_name(meta), device, tuple(meta["labels"]), [model], [],
                                        [meta["checkpoint_hash"]], baseline)
    else:
        raise BundleError(f"{folder}: a per-speaker baseline needs a head on a frozen encoder")
    return checked_warmup(calibrated(classifier, meta, folder), folder)


def speaker_baseline(meta: dict[str, Any], folder: Path) -> BaselineConfig | None:
    """The per-speaker baseline a bundle was trained with (its training record), or None."""
    recorded = (meta.get("training") or {}).get("speaker_baseline")
    if recorded is None:
        return None
    try:
        return BaselineConfig(**recorded)
    except (TypeError, ValueError) as err:
        raise BundleError(f"{folder}: training.speaker_baseline {recorded!r} is not valid ({err})") from None


def calibrated(classifier: Classifier, meta: dict[str, Any], folder: Path) -> Classifier:
    """The classifier under the calibration its JSON stores (models/calibration.py); itself when the
    JSON has none (bundles and ensembles written before calibration existed). A member's own
    calibration is not applied inside an ensemble: the ensemble's applies to the averaged probabilities."""
    try:
        calibration = Calibration.from_json(meta.get("calibration"))
    except CalibrationError as err:
        raise BundleError(f"{folder}: {err}") from None
    return classifier if calibration is None else CalibratedClassifier(classifier, calibration)


def load_classifier(path: str | Path, device: str | None = None,
                    backbone_dir: str | Path | None = None) -> Classifier:
    """Any trained folder (single bundle, SVM or ensemble) -> checked, warmed-up Classifier.

    device: None picks cuda when available. backbone_dir: pretrained-backbone folder on this
    machine, for WavLM / Wav2Vec2 heads. Raises BundleError (one line)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise BundleError(f"bundle folder not found: {folder}")
    if is_ensemble_folder(folder):
        return load_ensemble(folder, device, backbone_dir=None if backbone_dir is None else str(backbone_dir))
    return load_bundle_classifier(folder, device, backbone_dir=backbone_dir)


# ---------------------------------------------------------------- ensembles
def _resolve_backbone_dir(recorded: str | None, override: str | None, fallback: str | None,
                          where: Path) -> str | None:
    """The override wins; else the folder recorded in the bundle, else the ensemble's."""
    if override is not None:
        return str(override)
    for candidate in (recorded, fallback):
        if candidate and Path(candidate).expanduser().is_dir():
            return candidate
    if recorded or fallback:
        raise BundleError(f"{where}: backbone folder {recorded or fallback!r} recorded at training time "
                          "was not found; pass backbone_dir= (--backbone-dir) pointing at your copy")
    return None


def load_ensemble(ensemble_dir: str | Path, device: str | None = None, backbone_dir: str | None = None,
                  warmup: bool = True) -> Classifier:
    """Load an ensemble folder as a (checked, warmed-up) Classifier.

    device: None picks cuda when available, else cpu; chosen once here.
    backbone_dir: use this local backbone folder instead of the one recorded at
    training time (for bundles trained on another machine).
    Every member gets the checks of a single bundle. Raises BundleError (one line). An EnsembleClassifier,
    or a CalibratedClassifier around one when the ensemble's JSON stores a calibration.
    """
    folder = Path(ensemble_dir).expanduser()
    doc = read_ensemble_meta(folder)
    device = checked_device(device)
    metas = [(folder / m, read_bundle_meta(folder / m)) for m in doc["members"]]
    labels = {tuple(meta["labels"]) for _, meta in metas}
    if len(labels) != 1:
        raise BundleError(f"ensemble {folder} mixes members with different label maps: {sorted(labels)}")
    member_labels = labels.pop()
    if member_labels != EMOTIONS:
        raise BundleError(f"ensemble {folder} label map {list(member_labels)} is not {list(EMOTIONS)}")
    hashes = [file_hash(path / WEIGHT_FILES[meta["kind"]]) for path, meta in metas]
    for (_, meta), digest in zip(metas, hashes):
        meta["checkpoint_hash"] = digest
    name = doc.get("name") or f"ensemble-{metas[0][1]['model']['name']}"

    torch_models: list[nn.Module] = []
    with sharing_frozen_backbones():
        for path, meta in metas:
            if meta["kind"] != "torch":
                break
            recorded = meta["model"].get("args", {}).get("backbone_dir")
            resolved = _resolve_backbone_dir(recorded, backbone_dir, doc.get("backbone_dir"), path)
            torch_models.append(_load_torch(path, meta, resolved))
    all_torch = len(torch_models) == len(metas)
    # Heads on frozen front ends share them: one pass per distinct front end (models/ensemble.py).
    sharing = all_torch and bool(doc.get("shared_backbone")) and all(shares_frontend(m) for m in torch_models)
    baselines = {repr(speaker_baseline(meta, path)) for path, meta in metas}
    if len(baselines) > 1:
        raise BundleError(f"ensemble {folder} mixes members trained with different per-speaker baselines")
    baseline = speaker_baseline(*metas[0][::-1])
    if baseline is not None and not sharing:
        raise BundleError(f"ensemble {folder}: a per-speaker baseline needs heads on shared frozen encoders")
    if sharing:
        ensemble = EnsembleClassifier(name, device, member_labels, torch_models, [], hashes, baseline)
    else:
        members = [_wrap(torch_models[i] if i < len(torch_models) else _load_member(path, meta, backbone_dir),
                         meta, device, name=f"{meta['model']['name']}-{path.name}")
                   for i, (path, meta) in enumerate(metas)]
        ensemble = EnsembleClassifier(name, device, member_labels, [], members, hashes)
    ensemble = calibrated(ensemble, doc, folder)
    return checked_warmup(ensemble, folder) if warmup else ensemble


def _load_member(path: Path, meta: dict[str, Any], backbone_dir: str | None) -> Any:
    """A member of a mixed ensemble, torch or sklearn, on the CPU (the Classifier moves it)."""
    if meta["kind"] == "sklearn":
        return _load_sklearn(path, meta)
    recorded = meta["model"].get("args", {}).get("backbone_dir")
    return _load_torch(path, meta, _resolve_backbone_dir(recorded, backbone_dir, None, path))
