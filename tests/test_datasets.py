"""Corpus loaders (train/corpora): name parsers, unusable-audio screening, manifests, user-facing errors."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.labels import EMOTIONS
from models.audio_file import read_mono_16k
from train.corpora import DataError, LoadOptions, load_datasets, parse_dataset_names, provenance
from train.corpora import crema_d, csv_table, emodb, ravdess
from train.corpora.crema_d import parse_crema_name
from train.corpora.emodb import parse_emodb_name
from train.corpora.ravdess import parse_ravdess_name

RATE = 16_000
CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def _speech_like(seed: int, seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * (150 + 20 * seed) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _write(path: Path, audio: np.ndarray) -> None:
    sf.write(str(path), audio, RATE, subtype="PCM_16")


def test_crema_parser():
    parsed = parse_crema_name("1076_MTI_SAD_XX.wav")
    assert (parsed.actor, parsed.sentence, parsed.emotion, parsed.level) == ("1076", "MTI", "sad", "XX")
    assert parse_crema_name("1001_DFA_ANG_HI.wav").emotion == "anger"
    assert parse_crema_name("1001_DFA_XXX_HI.wav") is None
    assert parse_crema_name("1001-DFA-ANG-HI.wav") is None


def test_emodb_parser():
    parsed = parse_emodb_name("03a01Wa.wav")
    assert (parsed.speaker, parsed.text, parsed.emotion, parsed.version) == ("03", "a01", "anger", "a")
    assert parse_emodb_name("16b10Tb.wav").emotion == "sad"
    assert parse_emodb_name("11a02Lc.wav").emotion is None  # boredom has no CREMA-D class
    assert parse_emodb_name("3a01Wa.wav") is None


def test_ravdess_parser():
    parsed = parse_ravdess_name("03-01-05-02-01-01-12.wav")
    assert (parsed.actor, parsed.emotion, parsed.intensity) == ("12", "anger", "02")
    assert parse_ravdess_name("03-01-02-01-01-01-01.wav").emotion is None  # calm
    assert parse_ravdess_name("03-01-08-01-01-01-01.wav").emotion is None  # surprised
    assert parse_ravdess_name("03-01-05.wav") is None


def test_dataset_name_lists():
    assert parse_dataset_names(["emodb+ravdess"]) == ["emodb", "ravdess"]
    assert parse_dataset_names(["emodb,ravdess", "csv"]) == ["emodb", "ravdess", "csv"]
    with pytest.raises(DataError, match="unknown dataset"):
        parse_dataset_names(["msp-podcast"])


@pytest.fixture()
def crema_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Two good clips per class for two actors, plus broken files and a manifest."""
    root = tmp_path / "AudioWAV"
    root.mkdir()
    for a, actor in enumerate(("1001", "1002")):
        for c, code in enumerate(CODES):
            _write(root / f"{actor}_DFA_{code}_XX.wav", _speech_like(a * 10 + c))
    (root / "1003_DFA_ANG_XX.wav").write_bytes(
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 72862\n")
    _write(root / "1076_MTI_SAD_XX.wav", np.zeros(RATE // 2, dtype=np.float32))
    _write(root / "1003_DFA_HAP_XX.wav", _speech_like(99, seconds=1.0))
    full = (root / "1003_DFA_HAP_XX.wav").read_bytes()
    (root / "1003_DFA_HAP_XX.wav").write_bytes(full[: len(full) // 2])
    (root / "1003_DFA_NEU_XX.wav").write_bytes(b"OggS" + bytes(200))
    _write(root / "1004_DFA_FEA_XX.wav", _speech_like(7))  # content will not match its manifest sha
    manifest = tmp_path / "audio_manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "actor", "sentence", "emotion", "level", "bytes", "sha256"])
        for path in sorted(root.glob("*.wav")):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if path.name == "1004_DFA_FEA_XX.wav":
                sha = "0" * 64
            w.writerow([path.name, path.name[:4], "DFA", path.name[9:12], "XX", len(data), sha])
        w.writerow(["1005_DFA_ANG_XX.wav", "1005", "DFA", "ANG", "XX", 1000, "1" * 64])
    return root, manifest


def test_crema_screening_without_manifest(crema_folder):
    root, _ = crema_folder
    result = crema_d.load(root)
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert "LFS" in reasons["1003_DFA_ANG_XX.wav"]
    assert reasons["1076_MTI_SAD_XX.wav"].startswith("silent")
    assert reasons["1003_DFA_HAP_XX.wav"].startswith("truncated")
    assert "RIFF" in reasons["1003_DFA_NEU_XX.wav"]
    assert len(result.clips) == 13  # 12 good clips + 1004 (its content is fine without a manifest)
    assert result.class_counts() == {"anger": 2, "disgust": 2, "fear": 3, "happy": 2, "neutral": 2, "sad": 2}
    assert {c.speaker for c in result.clips} == {"1001", "1002", "1004"}


def test_crema_manifest_checks(crema_folder):
    root, manifest = crema_folder
    result = crema_d.load(root, LoadOptions(manifest=manifest))
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert "sha256" in reasons["1004_DFA_FEA_XX.wav"]
    assert result.missing == ["1005_DFA_ANG_XX.wav"]
    assert len(result.clips) == 12
    report = result.skip_report()
    assert "1005_DFA_ANG_XX.wav" in report and "Git LFS" in report


def test_crema_size_mismatch_is_reported(crema_folder):
    root, manifest = crema_folder
    rows = list(csv.DictReader(open(manifest)))
    for row in rows:
        if row["file"] == "1001_DFA_ANG_XX.wav":
            row["bytes"] = str(int(row["bytes"]) + 2)
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    reasons = {Path(s.path).name: s.reason for s in crema_d.load(root, LoadOptions(manifest=manifest)).skipped}
    assert "differs from the manifest" in reasons["1001_DFA_ANG_XX.wav"]


def test_wrong_folder_errors(tmp_path):
    with pytest.raises(DataError, match="AudioWAV"):
        crema_d.load(tmp_path / "nope")
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match="ActorID_Sentence_Emotion_Level"):
        crema_d.load(tmp_path)
    with pytest.raises(DataError, match="EmoDB"):
        emodb.load(tmp_path)


def test_missing_class_is_an_error(tmp_path):
    root = tmp_path / "AudioWAV"
    root.mkdir()
    for c, code in enumerate(CODES[:-1]):
        _write(root / f"1001_DFA_{code}_XX.wav", _speech_like(c))
    with pytest.raises(DataError, match="sad"):
        load_datasets(["crema-d"], [root])


def test_csv_loader(tmp_path):
    for i, label in enumerate(("angry", "sadness", "calm")):
        _write(tmp_path / f"c{i}.wav", _speech_like(i))
    (tmp_path / "labels.csv").write_text("file,label,speaker\nc0.wav,angry,s1\nc1.wav,sadness,s2\nc2.wav,calm,s1\n")
    result = csv_table.load(tmp_path)
    assert [(c.label, c.speaker) for c in result.clips] == [("anger", "s1"), ("sad", "s2")]
    assert "calm" in result.skipped[0].reason


def test_real_emodb(emodb_dir):
    result = emodb.load(emodb_dir)
    counts = result.class_counts()
    assert sum(counts.values()) == 368 and counts["disgust"] == 33 and counts["anger"] == 101
    assert len({c.speaker for c in result.clips}) == 8
    wave = read_mono_16k(result.clips[0].path)
    assert wave.dtype == np.float32 and wave.shape == (32_000,)
    prov = provenance(result.clips, ["emodb"], [emodb_dir])
    assert prov["files"] == 368 and len(prov["sha256_file_list"]) == 64
    assert set(prov["class_counts"]) == set(EMOTIONS)


def test_real_ravdess(ravdess_dir):
    result = ravdess.load(ravdess_dir)
    assert len(result.clips) == 7  # 10 clips minus two calm and one surprised
    assert {c.speaker for c in result.clips} == {"ravdess-01"}


# ------------------------------------------------------------------ RAVDESS speech, the shared Opus copy
@pytest.fixture(scope="module")
def ravdess_speech(shared_data: Path) -> Path:
    """The shared RAVDESS speech copy (Actor_NN/*.opus + labels.csv); skips without it."""
    path = shared_data / "ravdess-speech"
    return path if (path / "labels.csv").is_file() else pytest.skip(f"RAVDESS speech copy not found at {path}")


def test_ravdess_speech_names_agree_with_its_labels_csv(ravdess_speech):
    """All 1,440 names parse; the emotion, actor and sex they give are the ones labels.csv states."""
    with open(ravdess_speech / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1440 and len(list(ravdess_speech.glob("Actor_*/*.opus"))) == 1440
    words = {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "anger", "fearful": "fear",
             "disgust": "disgust", "calm": None, "surprised": None}
    for row in rows:
        parsed = parse_ravdess_name(Path(row["file"]).name)
        assert parsed.emotion == words[row["label"]], row["file"]
        assert parsed.actor == row["speaker"] and ("male" if int(parsed.actor) % 2 else "female") == row["sex"]
    assert parse_ravdess_name("03-01-02-01-01-01-07.opus", calm_as_neutral=True).emotion == "neutral"


@pytest.fixture()
def ravdess_mixed(ravdess_speech: Path, tmp_path: Path) -> Path:
    """tmp RAVDESS folder: actor 01 as shipped (Opus, all 8 emotions) and actor 02 in the official
    layout (48 kHz WAV, neutral + calm), so one load reads both."""
    root = tmp_path / "ravdess"
    (root / "Actor_01").mkdir(parents=True)
    for emotion in range(1, 9):
        name = f"03-01-{emotion:02d}-01-01-01-01.opus"
        (root / "Actor_01" / name).symlink_to(ravdess_speech / "Actor_01" / name)
    (root / "Actor_02").mkdir()
    for emotion in (1, 2):
        stem = f"03-01-{emotion:02d}-01-01-01-02"
        wave = read_mono_16k(ravdess_speech / "Actor_02" / f"{stem}.opus")
        sf.write(str(root / "Actor_02" / f"{stem}.wav"), np.repeat(wave, 3), 48_000, subtype="PCM_16")
    return root


def test_ravdess_reads_opus_and_official_wav_layouts(ravdess_mixed):
    result = ravdess.load(ravdess_mixed)
    assert result.skipped == []
    got = sorted((c.path.suffix, c.speaker, c.sex, c.label) for c in result.clips)
    assert got == sorted([(".opus", "ravdess-01", "male", label) for label in
                          ("neutral", "happy", "sad", "anger", "fear", "disgust")]
                         + [(".wav", "ravdess-02", "female", "neutral")])  # calm and surprised dropped
    calm = ravdess.load(ravdess_mixed, LoadOptions(calm_as_neutral=True))
    assert [c.label for c in calm.clips].count("neutral") == 4
    for clip in result.clips:  # both layouts come out as 16 kHz mono float32
        wave = read_mono_16k(clip.path)
        assert wave.dtype == np.float32 and wave.ndim == 1 and 2.0 < len(wave) / RATE < 6.0
    pooled = load_datasets(["ravdess", "csv"], [ravdess_mixed, _fear_table(ravdess_mixed)], calm_as_neutral=True)
    assert {c.dataset for c in pooled.clips} == {"ravdess", "csv"} and len(pooled.clips) == 10


def _fear_table(ravdess_root: Path) -> Path:
    """A --dataset csv table naming one RAVDESS clip by path, with the speaker column."""
    table = ravdess_root.parent / "mine.csv"
    table.write_text("file,label,speaker\nravdess/Actor_01/03-01-06-01-01-01-01.opus,fearful,me\n")
    return table


def test_ravdess_without_clips_is_one_clear_error(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    with pytest.raises(DataError, match="no RAVDESS clips") as err:
        ravdess.load(tmp_path)
    assert "\n" not in str(err.value)
