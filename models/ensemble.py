"""K-fold ensembles: the mean of the members' class probabilities, as one `Classifier`.

An ensemble folder (written by `python -m train cv`) holds

    ensemble.json   {"format_version": 1, "kind": "ensemble", "members": ["fold0", ...],
                     "shared_backbone": bool, "backbone_dir": str | null}
    fold0/ ...      one ordinary bundle per member (bundle.json + weights)

When every member is a head on the same frozen backbone (wavlm-ultimate in
frozen mode), the backbone is loaded once and each batch goes through it once;
its hidden states feed all K heads ("shared" mode). Otherwise every member
runs on its own ("separate" mode: K backbone passes for fine-tuned SSL models,
or any mix of log-mel / SVM members). `describe()` says which.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from models.backbone import BackboneError, sharing_frozen_backbones
from models.bundle import (BUNDLE_JSON, ENSEMBLE_JSON, WEIGHT_FILES, BundleError, file_hash,
                           load_bundle_classifier, read_bundle_json, resolve_device)
from models.classifier import Classifier
from models.features import pad_batch
from models.labels import EMOTIONS
from models.registry import build_model

ENSEMBLE_FORMAT_VERSION = 1


def read_ensemble_json(folder: Path) -> dict[str, Any]:
    """Parse and validate ensemble.json; raises BundleError (one line) on any problem."""
    path = folder / ENSEMBLE_JSON
    if not folder.is_dir():
        raise BundleError(f"ensemble folder not found: {folder}")
    if not path.is_file():
        raise BundleError(f"{folder} has no {ENSEMBLE_JSON}; not an ensemble folder")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"cannot read {path}: {err}") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{path} must hold a JSON object")
    if doc.get("format_version") != ENSEMBLE_FORMAT_VERSION or doc.get("kind") != "ensemble":
        raise BundleError(f"{path} needs format_version {ENSEMBLE_FORMAT_VERSION} and kind \"ensemble\", "
                          f"found {doc.get('format_version')!r} / {doc.get('kind')!r}")
    members = doc.get("members")
    if not (isinstance(members, list) and members and all(isinstance(m, str) for m in members)):
        raise BundleError(f"{path} needs a non-empty list of member folder names in \"members\"")
    missing = [m for m in members if not (folder / m / BUNDLE_JSON).is_file()]
    if missing:
        raise BundleError(f"ensemble {folder} is missing member bundle(s): {', '.join(missing)} "
                          f"(each needs {BUNDLE_JSON})")
    return doc


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


def _load_torch_member(folder: Path, meta: dict[str, Any], backbone_dir: str | None) -> nn.Module:
    """Build a member's architecture (with the resolved backbone folder) and load its weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    name, args = meta["model"]["name"], dict(meta["model"].get("args", {}))
    if "backbone_dir" in args:
        args["backbone_dir"] = backbone_dir
    try:
        model = build_model(name, **args)
    except BackboneError as err:
        raise BundleError(f"{folder}: {err}") from None
    except (TypeError, ValueError) as err:
        raise BundleError(f"model args in {folder / BUNDLE_JSON} do not fit {name!r}: {err}") from None
    weights = folder / WEIGHT_FILES["torch"]
    try:
        state = load_file(str(weights), device="cpu")
        model.load_state_dict(state, strict=True)
    except SafetensorError as err:
        raise BundleError(f"{weights} is corrupt or truncated ({err})") from None
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise BundleError(f"weights in {weights} do not match the architecture in bundle.json: {first}") from None
    return model.eval()


class EnsembleClassifier(Classifier):
    """Mean of K members' probabilities. Build it with `load_ensemble`.

    heads: the K frozen-backbone heads in shared mode (one frontend pass per
    batch), else empty. members: K Classifiers in separate mode, else empty.
    """

    def __init__(self, name: str, device: str, labels: tuple[str, ...], heads: list[nn.Module],
                 members: list[Classifier], member_hashes: list[str]) -> None:
        if bool(heads) == bool(members):
            raise ValueError("an ensemble runs either shared heads or separate members")
        self.name = name
        self.device = device
        self.labels = labels
        self.heads = [head.to(device).eval() for head in heads]
        self.members = members
        self._pin = device.startswith("cuda")
        self._hash = hashlib.sha256("|".join(member_hashes).encode()).hexdigest()[:12]

    @property
    def shared(self) -> bool:
        return bool(self.heads)

    @property
    def size(self) -> int:
        return len(self.heads) or len(self.members)

    @property
    def checkpoint_hash(self) -> str:
        return self._hash

    def predict(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """list of float32 16 kHz mono arrays -> mean probabilities float32 [B, len(labels)]."""
        if len(waveforms) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if not self.shared:
            return np.mean([m.predict(waveforms) for m in self.members], axis=0).astype(np.float32)
        arrays = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms]
        wave, lengths = pad_batch(arrays, device=self.device, pin_memory=self._pin)
        with torch.inference_mode():
            feats, feat_lengths = self.heads[0].frontend_features(wave, lengths)
            probs = torch.stack([torch.softmax(head.forward_features(feats, feat_lengths).float(), dim=-1)
                                 for head in self.heads]).mean(dim=0)
        return probs.cpu().numpy().astype(np.float32, copy=False)

    def member_probabilities(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """Each member on its own (K passes): float32 [K, B, len(labels)]. For checks and reports."""
        if not self.shared:
            return np.stack([m.predict(waveforms) for m in self.members]).astype(np.float32)
        wave, lengths = pad_batch([np.asarray(w, np.float32) for w in waveforms], device=self.device)
        with torch.inference_mode():
            return np.stack([torch.softmax(head(wave, lengths).float(), -1).cpu().numpy()
                             for head in self.heads]).astype(np.float32)

    def warmup(self, seconds: float = 2.5, repeats: int = 2) -> None:
        """A couple of passes on generated audio so the first real call is not slow."""
        for _ in range(repeats):
            super().warmup(seconds)

    def describe(self) -> str:
        if self.shared:
            how = "one shared backbone pass feeding all heads"
        else:
            how = f"{self.size} separate passes"
        return f"{self.name}: ensemble of {self.size} ({how}) on {self.device} [{self._hash}]"


def load_ensemble(ensemble_dir: str | Path, device: str | None = None, backbone_dir: str | None = None,
                  warmup: bool = True) -> EnsembleClassifier:
    """Load an ensemble folder as a (warmed-up) Classifier.

    device: None picks cuda when available, else cpu; chosen once here.
    backbone_dir: use this local backbone folder instead of the one recorded at
    training time (for bundles trained on another machine).
    Raises BundleError (one line) for missing members, mismatched labels, bad files.
    """
    folder = Path(ensemble_dir).expanduser()
    doc = read_ensemble_json(folder)
    device = resolve_device(device)
    metas = [(folder / m, read_bundle_json(folder / m)) for m in doc["members"]]
    labels = {tuple(meta["labels"]) for _, meta in metas}
    if len(labels) != 1:
        raise BundleError(f"ensemble {folder} mixes members with different label maps: {sorted(labels)}")
    member_labels = labels.pop()
    if member_labels != EMOTIONS:
        raise BundleError(f"ensemble {folder} label map {list(member_labels)} is not {list(EMOTIONS)}")
    hashes = [file_hash(path / WEIGHT_FILES[meta["kind"]]) for path, meta in metas]
    name = doc.get("name") or f"ensemble-{metas[0][1]['model']['name']}"

    torch_models: list[nn.Module] = []
    with sharing_frozen_backbones():
        for path, meta in metas:
            if meta["kind"] != "torch":
                break
            recorded = meta["model"].get("args", {}).get("backbone_dir")
            resolved = _resolve_backbone_dir(recorded, backbone_dir, doc.get("backbone_dir"), path)
            torch_models.append(_load_torch_member(path, meta, resolved))
    all_torch = len(torch_models) == len(metas)
    keys = {m.frontend_key() if callable(getattr(m, "frontend_key", None)) else None for m in torch_models}
    can_share = (all_torch and bool(doc.get("shared_backbone")) and len(keys) == 1 and None not in keys
                 and all(getattr(m, "frozen_backbone", False) for m in torch_models))
    if can_share:
        ensemble = EnsembleClassifier(name, device, member_labels, torch_models, [], hashes)
    else:
        ensemble = EnsembleClassifier(name, device, member_labels, [],
                                      _separate_members(metas, torch_models, hashes, device), hashes)
    if warmup:
        ensemble.warmup()
    return ensemble


def _separate_members(metas: list[tuple[Path, dict[str, Any]]], torch_models: list[nn.Module],
                      hashes: list[str], device: str) -> list[Classifier]:
    """One Classifier per member: torch models already built, anything else via the bundle loader."""
    from models.torch_classifier import TorchClassifier

    members: list[Classifier] = []
    for i, (path, meta) in enumerate(metas):
        if i < len(torch_models):
            members.append(TorchClassifier(torch_models[i], name=f"{meta['model']['name']}-{path.name}",
                                           device=device, checkpoint_hash=hashes[i]))
        else:
            members.append(load_bundle_classifier(path, device))
    return members
