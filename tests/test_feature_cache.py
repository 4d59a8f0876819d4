"""The frozen-backbone feature cache must not serve features of replaced backbone weights."""
from __future__ import annotations

import os

from models.backbone import make_tiny_backbone
from models.registry import build_model
from train.feature_cache import _model_key


def test_cache_key_changes_when_backbone_weights_change_in_place(tmp_path):
    folder = make_tiny_backbone(tmp_path / "wavlm", "wavlm")
    model = build_model("wavlm-ultimate", backbone_dir=str(folder))
    before = _model_key(model)
    assert _model_key(build_model("wavlm-ultimate", backbone_dir=str(folder))) == before  # stable

    make_tiny_backbone(folder, "wavlm", seed=1)       # new weights, same folder, same config
    weights = next(p for p in folder.iterdir() if p.name in ("model.safetensors", "pytorch_model.bin"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert _model_key(build_model("wavlm-ultimate", backbone_dir=str(folder))) != before
