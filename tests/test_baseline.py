"""The per-speaker baseline: pure running statistics that normalise one voice, reset per session."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import models.baseline as baseline_module
from models.baseline import BaselineConfig, SpeakerBaseline, running_statistics


def _utterance(rng: np.random.Generator, frames: int, offset: float, scale: float) -> np.ndarray:
    return (offset + scale * rng.standard_normal((frames, 3, 4))).astype(np.float32)


def test_statistics_equal_those_of_all_frames_pushed():
    rng = np.random.default_rng(0)
    utterances = [_utterance(rng, n, 2.0, 3.0) for n in (17, 40, 9)]
    baseline = SpeakerBaseline()
    for u in utterances:
        baseline.push(u)
    mean, std = baseline.statistics()
    frames = np.concatenate(utterances).astype(np.float64)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-4)
    normalised = baseline.normalise(frames)
    np.testing.assert_allclose(normalised.reshape(-1, 12).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised.reshape(-1, 12).std(axis=0), 1.0, atol=1e-3)


def test_speaker_offset_is_removed():
    """Two voices with different offsets and scales look alike after their own baselines."""
    rng = np.random.default_rng(1)
    quiet, loud = SpeakerBaseline(), SpeakerBaseline()
    for _ in range(5):
        quiet.push(_utterance(rng, 30, -1.0, 0.5))
        loud.push(_utterance(rng, 30, 4.0, 2.0))
    a = quiet.normalise(_utterance(rng, 200, -1.0, 0.5))
    b = loud.normalise(_utterance(rng, 200, 4.0, 2.0))
    assert abs(a.mean() - b.mean()) < 0.1 and abs(a.std() - b.std()) < 0.1


def test_reset_forgets_the_speaker_and_nothing_pushed_means_unchanged():
    rng = np.random.default_rng(2)
    baseline = SpeakerBaseline()
    x = _utterance(rng, 10, 5.0, 1.0)
    np.testing.assert_array_equal(baseline.normalise(x), x)
    baseline.push(x)
    assert baseline.utterances == 1 and not np.allclose(baseline.normalise(x), x)
    baseline.reset()
    assert baseline.utterances == 0 and baseline.statistics() is None
    np.testing.assert_array_equal(baseline.normalise(x), x)


def test_max_utterances_freezes_the_baseline():
    rng = np.random.default_rng(3)
    baseline = SpeakerBaseline(BaselineConfig(max_utterances=2))
    baseline.push(_utterance(rng, 20, 0.0, 1.0))
    baseline.push(_utterance(rng, 20, 0.0, 1.0))
    frozen = baseline.statistics()
    baseline.push(_utterance(rng, 20, 50.0, 9.0))
    assert baseline.utterances == 2
    np.testing.assert_array_equal(baseline.statistics()[0], frozen[0])
    with pytest.raises(ValueError):
        BaselineConfig(max_utterances=0)


def test_running_statistics_are_causal_per_speaker():
    rng = np.random.default_rng(4)
    clips = [_utterance(rng, 12, o, 1.0) for o in (0.0, 10.0, 1.0, 11.0, 2.0)]
    speakers = ["a", "b", "a", "b", "a"]
    stats = running_statistics(speakers, lambda i: clips[i])
    np.testing.assert_allclose(stats[0][0], clips[0].mean(axis=0), rtol=1e-5)      # only itself
    np.testing.assert_allclose(stats[2][0], np.concatenate([clips[0], clips[2]]).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats[3][0], np.concatenate([clips[1], clips[3]]).mean(axis=0), rtol=1e-5)
    first2 = running_statistics(speakers, lambda i: clips[i], BaselineConfig(max_utterances=2))
    np.testing.assert_array_equal(first2[4][0], first2[2][0])                       # frozen after 2 of a's


def test_baseline_is_pure():
    source = inspect.getsource(baseline_module)
    for forbidden in ("import threading", "import time", "open(", "import torch", "np.load", "Path("):
        assert forbidden not in source
