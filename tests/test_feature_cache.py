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


def _tiny_wavlm(tmp_path):
    folder = make_tiny_backbone(tmp_path / "wavlm", "wavlm")
    return build_model("wavlm-ultimate", backbone_dir=str(folder))


def test_augmented_copies_are_cached_once_and_reused_across_folds(tmp_path):
    import numpy as np
    import torch

    from train.augment import AugmentConfig
    from train.distributed import dist_info
    from train.feature_cache import cached_augmented_copies, cached_feature_data

    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 12000, 9600)]
    model, cpu, dist = _tiny_wavlm(tmp_path), torch.device("cpu"), dist_info()
    cfg = AugmentConfig.microphone()
    clean, _, _ = cached_feature_data(model, waves, tmp_path / "cache", cpu, dist)
    copies = cached_augmented_copies(model, waves, cfg, 2, 0, tmp_path / "cache", cpu, dist)
    assert len(copies) == 2 and all(len(paths) == 3 for paths, _ in copies)
    files = {p for paths, _ in copies for p in paths}
    assert len(files) == 6 and not files & set(clean)
    first = [np.load(p) for p in copies[0][0]]
    # a copy differs from the clean clip's features, and copies differ from each other
    assert not np.array_equal(first[0], np.load(clean[0]))
    assert not np.array_equal(first[0], np.load(copies[1][0][0]))
    # another fold that holds clip 1 and 2 (in another order) gets the very same files, nothing recomputed
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = cached_augmented_copies(model, [waves[2], waves[1]], cfg, 2, 0, tmp_path / "cache", cpu, dist)
    assert again[0][0] == [copies[0][0][2], copies[0][0][1]]
    assert all(p.stat().st_mtime_ns == stamps[p] for p in files)
    # other augmentation settings or another seed are other copies
    other = cached_augmented_copies(model, waves, AugmentConfig(), 1, 0, tmp_path / "cache", cpu, dist)
    assert not set(other[0][0]) & files
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cached_items_draw_clean_or_a_copy_per_epoch_reproducibly(tmp_path):
    from pathlib import Path

    from train.feature_cache import CachedItems

    variants = [[Path(f"v{v}_c{i}") for i in range(50)] for v in range(3)]
    items = CachedItems(variants, seed=4)
    picks = []
    for epoch in range(3):
        items.epoch = epoch
        picks.append([items[i][1].name.split("_")[0] for i in range(50)])
    assert all(set(p) == {"v0", "v1", "v2"} for p in picks)   # every variant is used
    assert picks[0] != picks[1]                              # a new draw each epoch
    items.epoch = 1
    assert [items[i][1].name.split("_")[0] for i in range(50)] == picks[1]
    assert [i for i, _ in (items[j] for j in range(50))] == list(range(50))
    assert CachedItems(variants[:1], seed=4)[7] == (7, variants[0][7])


def test_paired_cached_items_give_the_clean_clip_and_one_copy_for_consistency_training(tmp_path):
    from pathlib import Path

    import pytest

    from train.feature_cache import CachedItems
    from train.loop import TrainConfig

    variants = [[Path(f"v{v}_c{i}") for i in range(40)] for v in range(3)]
    items = CachedItems(variants, seed=4, paired=True)
    drawn = set()
    for epoch in range(2):
        items.epoch = epoch
        for i in range(40):
            (i0, clean), (i1, copy) = items[i]
            assert i0 == i1 == i and clean == variants[0][i] and copy in (variants[1][i], variants[2][i])
            drawn.add(copy.name.split("_")[0])
    assert drawn == {"v1", "v2"}  # both copies are used, never the clean clip twice
    items.epoch = 1
    again = [items[i][1] for i in range(40)]
    items.epoch = 1
    assert again == [items[i][1] for i in range(40)]
    with pytest.raises(ValueError, match="at least one augmented copy"):
        CachedItems(variants[:1], seed=4, paired=True)
    with pytest.raises(ValueError, match="cached_augment_copies >= 1"):
        TrainConfig(consistency_weight=1.0)
    with pytest.raises(ValueError, match="no Mixup"):
        TrainConfig(consistency_weight=1.0, cached_augment_copies=1, mixup_alpha=0.2)
