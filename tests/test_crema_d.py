"""CREMA-D loader on real shared FLAC clips: decoded-sample verification, skipped clips, reuse of
the decoded audio, demographics. Fixtures copy a few real clips into a tmp folder (never into the repo)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.audio_file import read_mono_16k
from train.corpora import AudioCache, DataError, LoadOptions, load_datasets
from train.corpora.crema_d import decode_checked, load, pcm_sha256, read_demographics

# Two actors (one male, one female in VideoDemographics.csv), all six classes each.
ACTORS = ("1003", "1005")
SENTENCE = "DFA"
CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


@pytest.fixture(scope="module")
def crema_shared(shared_data: Path) -> Path:
    folder = shared_data / "crema-d"
    if not (folder / "AudioFLAC").is_dir() or not (folder / "flac_manifest.csv").is_file():
        pytest.skip(f"CREMA-D FLAC copy not found at {folder}/AudioFLAC")
    return folder


def _manifest_rows(crema_shared: Path) -> list[dict[str, str]]:
    with open(crema_shared / "flac_manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture()
def flac_copy(crema_shared: Path, tmp_path: Path) -> tuple[Path, Path]:
    """tmp/crema/AudioFLAC with 12 real clips + demographics one level up, and a manifest of them
    plus one listed clip that is absent. Tests then break individual clips."""
    root = tmp_path / "crema" / "AudioFLAC"
    root.mkdir(parents=True)
    shutil.copy(crema_shared / "VideoDemographics.csv", root.parent)
    names = [f"{a}_{SENTENCE}_{c}_XX.flac" for a in ACTORS for c in CODES]
    for name in names:
        shutil.copy(crema_shared / "AudioFLAC" / name, root / name)
    rows = [r for r in _manifest_rows(crema_shared) if r["file"] in names]
    absent = next(r for r in _manifest_rows(crema_shared) if r["actor"] == "1006")
    manifest = tmp_path / "flac_manifest.csv"
    _write_manifest(manifest, rows + [absent])
    return root, manifest


def test_real_flac_clips_pass_and_decode_once(flac_copy):
    root, manifest = flac_copy
    result = load(root, LoadOptions(manifest=manifest, progress=False))
    assert result.skipped == []
    assert len(result.missing) == 1 and result.missing[0].startswith("1006_")
    assert len(result.clips) == 12
    assert result.class_counts() == {e: 2 for e in ("anger", "disgust", "fear", "happy", "neutral", "sad")}
    for clip in result.clips:  # the samples kept from the check are the file's 16 kHz samples
        assert np.array_equal(result.waves[clip.path], read_mono_16k(clip.path))
        assert AudioCache(result.waves).load(clip.path) is result.waves[clip.path]


def test_sex_comes_from_video_demographics(flac_copy, crema_shared):
    root, manifest = flac_copy
    sex = read_demographics([crema_shared])
    result = load(root, LoadOptions(manifest=manifest, progress=False))
    assert {c.speaker: c.sex for c in result.clips} == {a: sex[a] for a in ACTORS}
    assert set(sex.values()) == {"male", "female"} and len(sex) == 91


def test_mismatched_clip_is_skipped_with_its_line(flac_copy):
    root, manifest = flac_copy
    # a valid FLAC whose samples are another clip's: decodes fine, hash does not match its row
    shutil.copy(root / "1003_DFA_SAD_XX.flac", root / "1003_DFA_ANG_XX.flac")
    data = (root / "1005_DFA_HAP_XX.flac").read_bytes()
    (root / "1005_DFA_HAP_XX.flac").write_bytes(data[: len(data) // 2])  # truncated stream
    (root / "1005_DFA_NEU_XX.flac").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    result = load(root, LoadOptions(manifest=manifest, progress=False))
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(reasons) == {"1003_DFA_ANG_XX.flac", "1005_DFA_HAP_XX.flac", "1005_DFA_NEU_XX.flac"}
    assert "frames" in reasons["1003_DFA_ANG_XX.flac"] or "pcm_sha256" in reasons["1003_DFA_ANG_XX.flac"]
    assert "Git LFS" in reasons["1005_DFA_NEU_XX.flac"]
    assert len(result.clips) == 9
    assert all(c.path.name not in reasons for c in result.clips)
    report = result.skip_report().splitlines()
    for name in reasons:  # one line per skipped clip, naming it and why
        assert sum(name in line for line in report) == 1


def test_same_length_sample_change_is_caught_by_the_hash(flac_copy):
    root, manifest = flac_copy
    path = root / "1005_DFA_FEA_XX.flac"
    samples, rate = sf.read(str(path), dtype="int16")
    samples[len(samples) // 2] ^= 1  # one least-significant bit, same frame count
    sf.write(str(path), samples, rate, format="FLAC", subtype="PCM_16")
    rows = {r["file"]: r for r in csv.DictReader(open(manifest))}
    wave, problem = decode_checked(path, rows[path.name])
    assert wave is None and "pcm_sha256" in problem
    assert pcm_sha256(samples) != rows[path.name]["pcm_sha256"]


def test_flac_manifest_verifies_an_official_wav_folder(flac_copy, tmp_path):
    """The decoded-sample hash is the same for the WAV a FLAC came from: AudioWAV + flac_manifest works."""
    root, manifest = flac_copy
    wav_root = tmp_path / "AudioWAV"
    wav_root.mkdir()
    for flac in sorted(root.glob("*.flac")):
        samples, rate = sf.read(str(flac), dtype="int16")
        sf.write(str(wav_root / flac.with_suffix(".wav").name), samples, rate, subtype="PCM_16")
    result = load(wav_root, LoadOptions(manifest=manifest, progress=False))
    assert len(result.clips) == 12 and result.skipped == []
    assert all(c.path.suffix == ".wav" for c in result.clips)


def test_wrong_manifest_for_the_folder_is_one_clear_error(flac_copy, crema_shared):
    root, _ = flac_copy
    with pytest.raises(DataError, match="none of the 12 files"):
        load(root, LoadOptions(manifest=crema_shared / "audio_manifest.csv", progress=False))


def test_load_datasets_keeps_the_decoded_waves(flac_copy):
    root, manifest = flac_copy
    result = load_datasets(["crema-d"], [root], manifest)
    assert set(result.waves) == {c.path for c in result.clips}


def test_real_manifest_lists_every_shared_clip(crema_shared):
    rows = _manifest_rows(crema_shared)
    present = {p.name for p in (crema_shared / "AudioFLAC").glob("*.flac")}
    assert len(rows) == len(present) == 4738
    assert {r["file"] for r in rows} == present
    assert len({r["actor"] for r in rows}) == 58
