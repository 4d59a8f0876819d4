"""K-fold ensembles: the mean of the members' class probabilities, as one `Classifier`.

An ensemble folder (written by `python -m train cv`; format in models/bundle.py) holds

    its JSON        {"format_version": 1, "kind": "ensemble", "members": ["fold0", ...],
                     "shared_backbone": bool, "backbone_dir": str | null}
    fold0/ ...      one ordinary bundle per member (its JSON + weights)

When every member is a head on a frozen backbone (wavlm-ultimate in frozen
mode, whisper-ultimate), each distinct front end is loaded once and each batch
goes through it once; its states feed every head on it ("shared" mode). A fused
ensemble of heads on two encoders (tiny.en and base) costs two encoder passes,
not one per head. Otherwise every member runs on its own ("separate" mode: K
backbone passes for fine-tuned SSL models, or any mix of log-mel / SVM
members). `describe()` says which.

`cheapest_branch()` (the Classifier contract) is, in shared mode with several
front ends, the heads on the front end whose group holds the fewest parameters
(encoder counted once, plus its heads): for the shipped primary, tiny.en and its
five heads. The engine gives live windows to it (realtime/worker.py).

This module is the runtime class only; models/loader.py (`load_ensemble`)
reads the folder, checks every member and builds it.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from torch import nn

from models.baseline import BaselineConfig, SpeakerBaseline
from models.classifier import Classifier
from models.features import pad_batch

RECENT_CLIPS = 8  # front-end states kept per ensemble for clips classified again (speculation, then final)


class EnsembleClassifier(Classifier):
    """Mean of K members' probabilities. Build it with models.loader.load_ensemble.

    heads: the K frozen-backbone heads in shared mode (one frontend pass per
    batch and distinct `frontend_key()`), else empty. members: K Classifiers in
    separate mode, else empty.
    """

    def __init__(self, name: str, device: str, labels: tuple[str, ...], heads: list[nn.Module],
                 members: list[Classifier], member_hashes: list[str], baseline: BaselineConfig | None = None,
                 baselines: dict[str, SpeakerBaseline] | None = None) -> None:
        """baseline: the heads were trained on encoder states z-scored per speaker (models/baseline.py);
        one SpeakerBaseline per front end then learns the session's speaker from predict_utterance.
        baselines: those of the ensemble this one is a branch of (shared, so live windows use
        what the utterances taught)."""
        if bool(heads) == bool(members):
            raise ValueError("an ensemble runs either shared heads or separate members")
        if baseline is not None and not heads:
            raise ValueError("a per-speaker baseline needs heads on shared frozen front ends")
        self.name = name
        self.device = device
        self.labels = labels
        self.heads = [head.to(device).eval() for head in heads]
        groups: dict[str, list[nn.Module]] = {}
        for head in self.heads:
            groups.setdefault(head.frontend_key(), []).append(head)
        self._groups = list(groups.values())
        self.baseline = baseline
        self.learns_speaker = baseline is not None
        self._baselines = baselines if baselines is not None else (
            {key: SpeakerBaseline(baseline) for key in groups} if baseline is not None else {})
        # With a baseline, the front-end states of the last few single clips are kept (clip digest
        # -> states): the engine classifies an utterance speculatively during the VAD hangover
        # (predict) and then, once it is final, adds it to the baseline (predict_utterance), which
        # must not cost a second encoder pass. The lock: speculation runs on a thread of its own.
        self._recent: OrderedDict[tuple[str, bytes], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.members = members
        self._member_hashes = list(member_hashes)
        self._branch: EnsembleClassifier | None = None
        self._pin = device.startswith("cuda")
        self._hash = hashlib.sha256("|".join(member_hashes).encode()).hexdigest()[:12]

    @property
    def shared(self) -> bool:
        return bool(self.heads)

    @property
    def size(self) -> int:
        return len(self.heads) or len(self.members)

    @property
    def frontend_passes(self) -> int:
        """Front-end passes per batch: distinct front ends in shared mode, else one per member."""
        return len(self._groups) if self.shared else len(self.members)

    @property
    def checkpoint_hash(self) -> str:
        return self._hash

    def predict(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """list of float32 16 kHz mono arrays -> mean probabilities float32 [B, len(labels)]."""
        return self.predict_members(waveforms).mean(axis=0)

    def predict_utterance(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """predict(), after adding each utterance, in order, to the speaker baseline (when there is one)."""
        return self.predict_members(waveforms, learn=True).mean(axis=0)

    def reset_session(self) -> None:
        with self._lock:
            for baseline in self._baselines.values():
                baseline.reset()

    def predict_members(self, waveforms: Sequence[np.ndarray], learn: bool = False) -> np.ndarray:
        """Each member's probabilities, in the ensemble's member order: float32 [K, B, len(labels)].
        Shared mode runs one front-end pass per distinct front end for all its heads. learn: the
        clips are utterances of the session's speaker, added in order to its baseline."""
        if len(waveforms) == 0:
            return np.zeros((self.size, 0, len(self.labels)), dtype=np.float32)
        if not self.shared:
            return np.stack([m.predict(waveforms) for m in self.members]).astype(np.float32)
        arrays = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms]
        wave, lengths = pad_batch(arrays, device=self.device, pin_memory=self._pin)
        by_head: dict[int, torch.Tensor] = {}
        digest = hashlib.blake2b(arrays[0].tobytes(), digest_size=16).digest() \
            if self._baselines and len(arrays) == 1 else None
        with torch.inference_mode():
            for group in self._groups:
                feats, feat_lengths = self._frontend(group[0], wave, lengths, digest)
                if self._baselines:
                    feats = self._normalised(group[0], feats, feat_lengths, learn)
                for head in group:
                    by_head[id(head)] = torch.softmax(head.forward_features(feats, feat_lengths).float(), dim=-1)
            probs = torch.stack([by_head[id(head)] for head in self.heads])
        return probs.cpu().numpy().astype(np.float32, copy=False)

    def _frontend(self, frontend: nn.Module, wave: torch.Tensor, lengths: torch.Tensor,
                  digest: bytes | None) -> tuple[torch.Tensor, torch.Tensor]:
        """frontend_features of the batch; a single clip's are looked up by `digest` first, then kept."""
        key = None if digest is None else (frontend.frontend_key(), digest)
        if key is not None:
            with self._lock:
                if key in self._recent:
                    return self._recent[key]
        out = frontend.frontend_features(wave, lengths)
        if key is not None:
            with self._lock:
                self._recent[key] = out
                while len(self._recent) > RECENT_CLIPS:
                    self._recent.popitem(last=False)
        return out

    def _normalised(self, frontend: nn.Module, feats: torch.Tensor, feat_lengths: torch.Tensor,
                    learn: bool) -> torch.Tensor:
        """feats [B, ..., F, ...] (frame axis frontend.frontend_time_axis) z-scored with the speaker
        baseline of this front end; with learn, row b's valid frames join it before row b is scored."""
        baseline = self._baselines[frontend.frontend_key()]
        frames_first = feats.movedim(frontend.frontend_time_axis, 1)   # [B, F, ...]
        rows = []
        for b in range(frames_first.shape[0]):
            with self._lock:
                if learn:
                    baseline.push(frames_first[b, :int(feat_lengths[b])].float().cpu().numpy())
                stats = baseline.statistics()
            if stats is None:
                rows.append(frames_first[b])
                continue
            mean, std = (torch.from_numpy(x).to(frames_first.device, frames_first.dtype) for x in stats)
            rows.append((frames_first[b] - mean) / std)
        return torch.stack(rows).movedim(1, frontend.frontend_time_axis)

    def member_probabilities(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """Each member on its own (K passes): float32 [K, B, len(labels)]. For checks and reports."""
        if not self.shared:
            return np.stack([m.predict(waveforms) for m in self.members]).astype(np.float32)
        wave, lengths = pad_batch([np.asarray(w, np.float32) for w in waveforms], device=self.device)
        with torch.inference_mode():
            return np.stack([torch.softmax(head(wave, lengths).float(), -1).cpu().numpy()
                             for head in self.heads]).astype(np.float32)

    def cheapest_branch(self) -> Classifier:
        """The group of heads sharing the smallest front end, as an ensemble of its own (built
        once; it shares the modules, so it costs no memory). Itself when there is no cheaper
        part: one front end, or separate members (each a whole model)."""
        if not self.shared or len(self._groups) < 2:
            return self
        if self._branch is None:
            group = min(self._groups, key=_group_parameters)
            hashes = [h for head, h in zip(self.heads, self._member_hashes) if any(head is g for g in group)]
            self._branch = EnsembleClassifier(f"{self.name} [{len(group)} of {self.size} heads]", self.device,
                                              self.labels, group, [], hashes, self.baseline, self._baselines)
            self._branch._lock = self._lock   # one lock for the baselines both use
        return self._branch

    def warmup(self, seconds: float = 2.5, repeats: int = 2) -> np.ndarray:
        """A couple of passes on generated audio so the first real call is not slow -> last probs [1, 6]."""
        for _ in range(repeats):
            probs = super().warmup(seconds)
        return probs

    def describe(self) -> str:
        if self.shared and self.frontend_passes == 1:
            how = "one shared backbone pass feeding all heads"
        elif self.shared:
            how = f"{self.frontend_passes} shared backbone passes, one per encoder"
        else:
            how = f"{self.size} separate passes"
        return f"{self.name}: ensemble of {self.size} ({how}) on {self.device} [{self._hash}]"


def _group_parameters(group: list[nn.Module]) -> int:
    """Parameters of heads that share one front end, each tensor counted once (the front end too)."""
    unique = {id(p): p.numel() for head in group for p in head.parameters()}
    return sum(unique.values())
