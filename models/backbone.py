"""Pretrained self-supervised speech backbones (WavLM, Wav2Vec2) from a local folder.

Nothing here touches the network: folders are checked first, then loaded with
`local_files_only=True` and `HF_HUB_OFFLINE=1`. The expected folder is what
`save_pretrained` writes (the layout of microsoft/wavlm-base-plus or
facebook/wav2vec2-base on the Hugging Face hub):

    config.json, model.safetensors or pytorch_model.bin, preprocessor_config.json

`prepare_waveforms` applies the preprocessor's per-utterance normalisation over
the valid samples only; `run_backbone` runs the model so that padding never
changes a clip's hidden states (see its docstring).
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

KINDS = ("wavlm", "wav2vec2")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
EXPECTED_LAYOUT = ("config.json, model.safetensors or pytorch_model.bin, preprocessor_config.json "
                   "(the layout of microsoft/wavlm-base-plus / facebook/wav2vec2-base, "
                   "as written by save_pretrained)")
# The conv feature encoder of base models has a 400-sample (25 ms) receptive field;
# shorter clips would give zero frames, so they are zero-padded up to this length.
MIN_SAMPLES = 400
_NORM_EPS = 1e-7  # the same epsilon as Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


class BackboneError(ValueError):
    """A backbone folder is missing, incomplete or of an unsupported kind (one clear line)."""


@dataclass(frozen=True)
class BackboneInfo:
    """What the heads need to know about a loaded backbone.

    num_layers counts transformer layers; the model yields num_layers + 1
    hidden states (embedding output + one per layer), each [B, T', hidden_size].
    pads_safely: True when a padded batch gives exactly the per-clip hidden
    states (layer-normed conv encoder and an attention mask); otherwise clips
    are run in groups of equal length.
    """

    kind: str
    hidden_size: int
    num_layers: int
    do_normalize: bool
    return_attention_mask: bool
    sample_rate_hz: int
    feat_extract_norm: str
    path: str

    @property
    def pads_safely(self) -> bool:
        return self.feat_extract_norm == "layer" and self.return_attention_mask


@dataclass(frozen=True)
class LoadedBackbone:
    """Result of `load_backbone`; unpacks as `model, info = load_backbone(dir)`."""

    model: torch.nn.Module = field(repr=False)
    info: BackboneInfo

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.info))


def _set_offline_env() -> None:
    """Make sure huggingface_hub never tries the network (the user may have set these already)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' per-tensor load/save bars (noise on every ensemble member load)."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def check_backbone_dir(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a backbone folder and return its parsed config.json.

    Raises BackboneError naming every missing file and the expected layout.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BackboneError(f"backbone folder {str(folder)!r} does not exist; expected a folder with "
                            f"{EXPECTED_LAYOUT}")
    missing = [name for name in ("config.json", "preprocessor_config.json")
               if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.insert(1, " or ".join(WEIGHT_FILES))
    if missing:
        raise BackboneError(f"backbone folder {str(folder)!r} is missing {', '.join(missing)}; "
                            f"expected {EXPECTED_LAYOUT}")
    for name in WEIGHT_FILES:
        weights = folder / name
        if weights.is_file() and weights.stat().st_size < 1024 and \
                weights.read_bytes().startswith(b"version https://git-lfs"):
            raise BackboneError(f"{str(weights)!r} is a Git LFS pointer, not the weights; "
                                "run `git lfs pull` in that folder (or download it again)")
    try:
        config = json.loads((folder / "config.json").read_text())
        json.loads((folder / "preprocessor_config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BackboneError(f"backbone folder {str(folder)!r} has an unreadable config: {err}") from None
    if not isinstance(config, dict):
        raise BackboneError(f"backbone folder {str(folder)!r}: config.json is not a JSON object")
    return config


def _read_preprocessor(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "preprocessor_config.json").read_text())


def load_backbone(path: str | os.PathLike, kind: str = "auto") -> LoadedBackbone:
    """Load a WavLM or Wav2Vec2 model from a local folder, in eval mode, without the network.

    kind: "auto" (from config.json's model_type), "wavlm" or "wav2vec2".
    """
    if kind not in ("auto", *KINDS):
        raise BackboneError(f"unknown backbone kind {kind!r}; choose auto, {', '.join(KINDS)}")
    folder = Path(path).expanduser()
    config = check_backbone_dir(folder)
    model_type = str(config.get("model_type", ""))
    if model_type not in KINDS:
        raise BackboneError(f"backbone folder {str(folder)!r} holds model_type {model_type!r}; "
                            f"supported: {', '.join(KINDS)}")
    if kind != "auto" and kind != model_type:
        raise BackboneError(f"backbone folder {str(folder)!r} holds a {model_type} model, "
                            f"but {kind} was requested")
    _set_offline_env()
    import transformers  # imported here: the environment must be offline first

    model_class = transformers.WavLMModel if model_type == "wavlm" else transformers.Wav2Vec2Model
    from safetensors import SafetensorError

    try:
        with _quiet_progress_bars():
            model = model_class.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackboneError(f"could not load backbone from {str(folder)!r}: {first_line}") from None
    model.eval()
    prep = _read_preprocessor(folder)
    cfg = model.config
    info = BackboneInfo(
        kind=model_type,
        hidden_size=int(cfg.hidden_size),
        num_layers=int(cfg.num_hidden_layers),
        do_normalize=bool(prep.get("do_normalize", True)),
        return_attention_mask=bool(prep.get("return_attention_mask", False)),
        sample_rate_hz=int(prep.get("sampling_rate", 16_000)),
        feat_extract_norm=str(getattr(cfg, "feat_extract_norm", "group")),
        path=str(folder.resolve()),
    )
    if info.sample_rate_hz != 16_000:
        raise BackboneError(f"backbone folder {str(folder)!r} expects {info.sample_rate_hz} Hz audio; "
                            "VED feeds 16000 Hz")
    return LoadedBackbone(model, info)


# ---------------------------------------------------------------- sharing inside an ensemble
_SHARED: dict[str, Any] | None = None  # key -> loaded frozen backbone (any kind)
_T = TypeVar("_T")


@contextlib.contextmanager
def sharing_frozen_backbones() -> Iterator[None]:
    """Inside this block, frozen heads built from the same folder reuse one loaded backbone.

    Used by the ensemble loader so K frozen heads hold one backbone in memory.
    """
    global _SHARED
    previous, _SHARED = _SHARED, {}
    try:
        yield
    finally:
        _SHARED = previous


def shared_frozen(key: str, load: Callable[[], _T]) -> _T:
    """`load()`, reusing the object already loaded under `key` inside `sharing_frozen_backbones()`."""
    if _SHARED is None:
        return load()
    if key not in _SHARED:
        _SHARED[key] = load()
    return _SHARED[key]


def load_backbone_for_frozen_head(path: str | os.PathLike, kind: str = "auto") -> LoadedBackbone:
    """`load_backbone`, reusing an already loaded copy inside `sharing_frozen_backbones()`."""
    return shared_frozen(f"{Path(path).expanduser().resolve()}|{kind}", lambda: load_backbone(path, kind))


# ---------------------------------------------------------------- running
def prepare_waveforms(wave: torch.Tensor, lengths: torch.Tensor,
                      info: BackboneInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to MIN_SAMPLES, normalise per utterance (valid samples only), zero the padding.

    wave: [B, T] float32; lengths: [B] int64 samples.
    Returns (wave [B, max(T, MIN_SAMPLES)], lengths [B] clamped to >= MIN_SAMPLES).
    """
    if wave.shape[1] < MIN_SAMPLES:
        wave = torch.nn.functional.pad(wave, (0, MIN_SAMPLES - wave.shape[1]))
    lengths = lengths.to(wave.device).clamp(min=MIN_SAMPLES, max=wave.shape[1])
    valid = (torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]).to(wave.dtype)
    wave = wave * valid
    if info.do_normalize:
        count = lengths.to(wave.dtype)[:, None]
        mean = wave.sum(dim=1, keepdim=True) / count
        var = (((wave - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
        wave = (wave - mean) / torch.sqrt(var + _NORM_EPS) * valid
    return wave, lengths


def _hidden_states(model: torch.nn.Module, wave: torch.Tensor, lengths: torch.Tensor,
                   info: BackboneInfo) -> torch.Tensor:
    """One backbone call. Returns stacked hidden states [B, L+1, T', D]."""
    mask = None
    # An all-ones mask changes nothing, and WavLM warns about any mask; pass one only for padding.
    if info.return_attention_mask and bool((lengths < wave.shape[1]).any()):
        mask = (torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]).long()
    out = model(wave, attention_mask=mask, output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=1)


def run_backbone(model: torch.nn.Module, wave: torch.Tensor, lengths: torch.Tensor,
                 info: BackboneInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """All hidden states of a batch, independent of how much padding each clip got.

    wave: [B, T] float32 raw audio at 16 kHz; lengths: [B] int64 valid samples.
    Returns (feats [B, L+1, T', D], feat_lengths [B] int64 valid frames).

    Why groups: a group-normed conv encoder (base models) normalises over time,
    so padded zeros would change the statistics, and without an attention mask
    the transformer attends to padding. Such backbones run each set of
    equal-length clips as its own batch (no padding at all); a real-time engine
    sends one utterance at a time and training clips are often equal-length,
    so this costs little.
    """
    wave, lengths = prepare_waveforms(wave, lengths, info)
    feat_lengths = model._get_feat_extract_output_lengths(lengths).long()
    max_frames = int(feat_lengths.max())
    if info.pads_safely or bool((lengths == lengths[0]).all()):
        width = int(lengths.max())
        feats = _hidden_states(model, wave[:, :width], lengths, info)[:, :, :max_frames]
        return feats, feat_lengths
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []  # (batch rows, their hidden states)
    for length in torch.unique(lengths).tolist():
        rows = torch.nonzero(lengths == length).flatten()
        parts.append((rows, _hidden_states(model, wave[rows, :length], lengths[rows], info)))
    first = parts[0][1]
    feats = first.new_zeros((wave.shape[0], first.shape[1], max_frames, first.shape[3]))
    for rows, states in parts:
        feats[rows, :, :states.shape[2]] = states
    return feats, feat_lengths


# ---------------------------------------------------------------- synthetic backbones
def _save_preprocessor(folder: Path, do_normalize: bool, return_attention_mask: bool) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0,
                             do_normalize=do_normalize,
                             return_attention_mask=return_attention_mask).save_pretrained(str(folder))


def make_tiny_backbone(path: str | os.PathLike, kind: str = "wavlm", *, hidden_size: int = 32,
                       num_layers: int = 2, feat_extract_norm: str = "group",
                       do_normalize: bool | None = None, return_attention_mask: bool | None = None,
                       seed: int = 0) -> Path:
    """Write a tiny random WavLM / Wav2Vec2 folder (same layout as a hub download).

    Frame rate and receptive field match the base models (conv strides kept),
    so sequence lengths are realistic; only widths and depth are tiny.
    Defaults follow the real models: wavlm-base-plus (no normalisation, attention
    mask), wav2vec2-base (normalisation, no attention mask).
    """
    if kind not in KINDS:
        raise BackboneError(f"unknown backbone kind {kind!r}; choose {', '.join(KINDS)}")
    _set_offline_env()
    import transformers

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    common = dict(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=2,
                  intermediate_size=2 * hidden_size, conv_dim=(16,) * 7,
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                  feat_extract_norm=feat_extract_norm, do_stable_layer_norm=feat_extract_norm == "layer")
    if kind == "wavlm":
        model = transformers.WavLMModel(transformers.WavLMConfig(num_buckets=32, **common))
    else:
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**common))
    with _quiet_progress_bars():
        model.save_pretrained(str(folder))
    _save_preprocessor(folder,
                       do_normalize=(kind == "wav2vec2") if do_normalize is None else do_normalize,
                       return_attention_mask=(kind == "wavlm") if return_attention_mask is None
                       else return_attention_mask)
    return folder


def make_base_plus_shaped(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a full-size WavLM shaped like microsoft/wavlm-base-plus with random weights.

    768 hidden, 12 layers, 12 heads, 3072 FFN, 512-channel group-normed conv
    encoder with base strides, 128-tap positional conv (~94 M parameters, ~380 MB).
    For benchmarks only: the weights are random, the compute is real.
    """
    _set_offline_env()
    import transformers

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = transformers.WavLMConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                      intermediate_size=3072, feat_extract_norm="group",
                                      do_stable_layer_norm=False, conv_bias=False,
                                      num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)
    with _quiet_progress_bars():
        transformers.WavLMModel(config).save_pretrained(str(folder))
    _save_preprocessor(folder, do_normalize=False, return_attention_mask=True)
    return folder
