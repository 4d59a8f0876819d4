"""The corpus registry, and the TESS, SAVEE and IEMOCAP loaders on small folders in each corpus's real layout.

Every layout carries the usual trouble: a file whose name and folder disagree, a name outside
the convention, broken audio, a labelled turn without audio. Each is skipped with one line.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.labels import EMOTIONS
from train.corpora import CORPORA, DataError, corpus, corpus_names, load_datasets, parse_dataset_names
from train.corpora.iemocap import load as load_iemocap
from train.corpora.savee import load as load_savee
from train.corpora.tess import load as load_tess
from train.folds import make_folds

RATE = 16_000


def _wav(path: Path, seed: int = 0, seconds: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * (140 + 15 * seed) * t) + noise).astype(np.float32), RATE,
             subtype="PCM_16")
    return path


def _truncate(path: Path) -> None:
    """Cut the file in half: the header still declares the full data chunk."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _by_path(result) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in result.skipped}


# ------------------------------------------------------------------ registry
def test_unknown_corpus_is_refused_with_one_line_listing_the_choices(tmp_path):
    for attempt in (lambda: corpus("msp-podcast"), lambda: parse_dataset_names(["emodb+msp-podcast"]),
                    lambda: load_datasets(["msp-podcast"], [tmp_path])):
        with pytest.raises(DataError) as err:
            attempt()
        message = str(err.value)
        assert "\n" not in message and "'msp-podcast'" in message
        assert all(name in message for name in corpus_names())
    assert corpus_names() == ("crema-d", "emodb", "ravdess", "csv", "tess", "savee", "iemocap")


def test_every_registered_module_states_its_corpus():
    for name in corpus_names():
        module = corpus(name)
        assert module.__name__ == f"train.corpora.{CORPORA[name]}" and module.NAME == name
        assert module.LAYOUT and callable(module.load)
        assert set(module.LABELS.values()) <= set(EMOTIONS), name


def test_registry_imports_a_corpus_module_only_when_asked():
    code = ("import sys, train.corpora as c; before = [m for m in sys.modules if m.startswith('train.corpora.')]; "
            "c.corpus('iemocap'); print(sorted(before), 'train.corpora.iemocap' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["['train.corpora.base']", "True"]


# ------------------------------------------------------------------ TESS
@pytest.fixture()
def tess_root(tmp_path: Path) -> Path:
    root = tmp_path / "TESS Toronto emotional speech set data"
    _wav(root / "OAF_angry" / "OAF_back_angry.wav", 1)
    _wav(root / "OAF_Sad" / "OAF_bite_sad.wav", 2)
    _wav(root / "OAF_Pleasant_surprise" / "OAF_back_ps.wav", 3)
    _wav(root / "OAF_Fear" / "OAF_dog_fear.wav", 4)
    _wav(root / "YAF_happy" / "YAF_back_happy.wav", 5)
    _wav(root / "YAF_neutral" / "YAF_chair_neutral.wav", 6)
    _wav(root / "YAF_disgust" / "YAF_dog_disgust.wav", 7)
    _wav(root / "YAF_pleasant_surprised" / "YAF_dog_ps.wav", 8)
    _wav(root / "OAF_angry" / "OAF_chat_sad.wav", 9)          # name and folder disagree
    _wav(root / "YAF_happy" / "OAF_jar_happy.wav", 10)        # another speaker's file in YAF's folder
    _wav(root / "YAF_happy" / "YAF_jar_bored.wav", 11)        # no such TESS emotion
    _wav(root / "YAF_happy" / "take3.wav", 12)                # not a TESS name
    _wav(root / "YAF_sad" / "YAF_lot_sad.wav", 13)
    _truncate(root / "YAF_sad" / "YAF_lot_sad.wav")            # broken audio
    return root


def test_tess_layout(tess_root):
    result = load_tess(tess_root)
    got = {(c.path.name, c.label, c.speaker, c.dataset) for c in result.clips}
    assert got == {
        ("OAF_back_angry.wav", "anger", "tess-OAF", "tess"), ("OAF_bite_sad.wav", "sad", "tess-OAF", "tess"),
        ("OAF_dog_fear.wav", "fear", "tess-OAF", "tess"), ("YAF_back_happy.wav", "happy", "tess-YAF", "tess"),
        ("YAF_chair_neutral.wav", "neutral", "tess-YAF", "tess"),
        ("YAF_dog_disgust.wav", "disgust", "tess-YAF", "tess"),
    }
    skipped = _by_path(result)
    assert set(skipped) == {"OAF_chat_sad.wav", "OAF_jar_happy.wav", "YAF_jar_bored.wav", "take3.wav",
                            "YAF_lot_sad.wav"}
    assert "mislabelled" in skipped["OAF_chat_sad.wav"] and "OAF_angry" in skipped["OAF_chat_sad.wav"]
    assert "mislabelled" in skipped["OAF_jar_happy.wav"]
    assert "not a TESS" in skipped["YAF_jar_bored.wav"] and "not a TESS" in skipped["take3.wav"]
    assert "truncated" in skipped["YAF_lot_sad.wav"]
    # pleasant surprise is dropped by design: neither a clip nor a skipped file
    assert not any("_ps" in c.path.name for c in result.clips) and not any("_ps" in n for n in skipped)
    assert {c.sex for c in result.clips} == {"female"}


def test_tess_flat_folder_and_empty_folder(tmp_path):
    _wav(tmp_path / "flat" / "YAF_back_angry.wav")
    assert [c.label for c in load_tess(tmp_path / "flat").clips] == ["anger"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no TESS clips"):
        load_tess(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_tess(tmp_path / "nowhere")


# ------------------------------------------------------------------ SAVEE
@pytest.fixture()
def savee_root(tmp_path: Path) -> Path:
    root = tmp_path / "AudioData"
    for i, (speaker, name) in enumerate([("DC", "a01"), ("DC", "sa02"), ("DC", "su01"), ("JE", "h03"),
                                         ("JE", "n10"), ("JK", "f05"), ("JK", "d07"), ("KL", "d01")]):
        _wav(root / speaker / f"{name}.wav", i)
    _truncate(root / "KL" / "d01.wav")
    _wav(root / "JE" / "x01.wav", 20)      # no such emotion code
    _wav(root / "JE" / "happy01.wav", 21)  # not the SAVEE naming
    _wav(root / "KL_sa04.wav", 22)         # the flat variant, speaker in the name
    _wav(root / "a02.wav", 23)             # no speaker folder, no speaker prefix
    (root / "Info.txt").write_text("DC, JE, JK and KL are four male speakers")
    return root


def test_savee_layout(savee_root):
    result = load_savee(savee_root)
    got = {(c.path.name, c.label, c.speaker) for c in result.clips}
    assert got == {("a01.wav", "anger", "savee-DC"), ("sa02.wav", "sad", "savee-DC"),
                   ("h03.wav", "happy", "savee-JE"), ("n10.wav", "neutral", "savee-JE"),
                   ("f05.wav", "fear", "savee-JK"), ("d07.wav", "disgust", "savee-JK"),
                   ("KL_sa04.wav", "sad", "savee-KL")}
    skipped = _by_path(result)
    assert set(skipped) == {"d01.wav", "x01.wav", "happy01.wav", "a02.wav"}  # su01 (surprise) dropped silently
    assert "truncated" in skipped["d01.wav"]
    assert "not a SAVEE" in skipped["x01.wav"] and "not a SAVEE" in skipped["happy01.wav"]
    assert "no speaker" in skipped["a02.wav"]
    assert {c.sex for c in result.clips} == {"male"}


# ------------------------------------------------------------------ IEMOCAP
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _turn(start: float, turn: str, code: str) -> str:
    return (f"[{start:.4f} - {start + 2:.4f}]\t{turn}\t{code}\t[2.5000, 2.5000, 2.5000]\n"
            f"C-E1:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n")


@pytest.fixture()
def iemocap_root(tmp_path: Path) -> Path:
    root = tmp_path / "IEMOCAP_full_release"
    s1 = root / "Session1"
    labels = s1 / "dialog" / "EmoEvaluation"
    labels.mkdir(parents=True)
    (labels / "Ses01F_impro01.txt").write_text(
        HEADER + _turn(6.29, "Ses01F_impro01_F000", "neu") + _turn(10.0, "Ses01F_impro01_M001", "exc")
        + _turn(14.0, "Ses01F_impro01_F002", "fru") + _turn(18.0, "Ses01F_impro01_M003", "ang")
        + _turn(22.0, "Ses01F_impro01_F005", "angry") + _turn(26.0, "Ses01F_impro01_M006", "hap"))
    (labels / "Categorical").mkdir()  # per-evaluator files: not the consensus label, must be ignored
    (labels / "Categorical" / "Ses01F_impro01_e2_cat.txt").write_text("Ses01F_impro01_F000 :Anger; ()\n")
    wavs = s1 / "sentences" / "wav" / "Ses01F_impro01"
    for i, turn in enumerate(["F000", "M001", "F002", "F004", "F005", "M006"]):
        _wav(wavs / f"Ses01F_impro01_{turn}.wav", i)     # M003's audio is missing; F004 has no label
    (wavs / "._Ses01F_impro01_F000.wav").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    s2 = root / "Session2"
    (s2 / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (s2 / "dialog" / "EmoEvaluation" / "Ses02M_script01_1.txt").write_text(
        HEADER + _turn(1.0, "Ses02M_script01_1_F000", "sad") + _turn(4.0, "Ses02M_script01_1_M001", "sad"))
    _wav(s2 / "sentences" / "wav" / "Ses02M_script01_1" / "Ses02M_script01_1_F000.wav", 7)
    _wav(s2 / "sentences" / "wav" / "Ses02M_script01_1" / "Ses02M_script01_1_M001.wav", 8)
    (root / "Documentation").mkdir()
    return root


def test_iemocap_layout(iemocap_root):
    result = load_iemocap(iemocap_root)
    got = {(c.path.stem, c.label, c.speaker) for c in result.clips}
    assert got == {("Ses01F_impro01_F000", "neutral", "iemocap-Ses01F"),
                   ("Ses01F_impro01_M001", "happy", "iemocap-Ses01M"),   # excited merged into happy
                   ("Ses01F_impro01_M006", "happy", "iemocap-Ses01M"),
                   ("Ses02M_script01_1_F000", "sad", "iemocap-Ses02F"),  # speaker from the turn, not the dialog
                   ("Ses02M_script01_1_M001", "sad", "iemocap-Ses02M")}
    assert {(c.speaker, c.sex) for c in result.clips} == {
        ("iemocap-Ses01F", "female"), ("iemocap-Ses01M", "male"), ("iemocap-Ses02F", "female"),
        ("iemocap-Ses02M", "male")}
    assert [Path(m).name for m in result.missing] == ["Ses01F_impro01_M003.wav"]
    skipped = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(skipped) == {"Ses01F_impro01.txt:19", "Ses01F_impro01_F004.wav"}  # F002 (frustration) dropped
    assert "'angry'" in skipped["Ses01F_impro01.txt:19"]
    assert "no label" in skipped["Ses01F_impro01_F004.wav"]


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_iemocap_folds_keep_session_speakers_apart(iemocap_root):
    clips = load_iemocap(iemocap_root).clips
    for fold in make_folds(clips, 2, seed=0):
        train = {clips[i].speaker for i in fold.train_idx}
        test = {clips[i].speaker for i in fold.test_idx}
        assert train and test and not train & test


def test_iemocap_single_session_folder_and_errors(iemocap_root, tmp_path):
    assert {c.speaker for c in load_iemocap(iemocap_root / "Session2").clips} == {"iemocap-Ses02F",
                                                                                  "iemocap-Ses02M"}
    (tmp_path / "not_iemocap").mkdir()
    with pytest.raises(DataError, match="no IEMOCAP sessions"):
        load_iemocap(tmp_path / "not_iemocap")


def test_corpora_are_dataset_names(tess_root, savee_root):
    assert parse_dataset_names(["tess+savee", "iemocap"]) == ["tess", "savee", "iemocap"]
    both = load_datasets(["tess", "savee"], [tess_root, savee_root], require_all_classes=False)
    assert {c.dataset for c in both.clips} == {"tess", "savee"}
    assert len(both.skipped) == 9
    # TESS + SAVEE together cover all six classes
    load_datasets(["tess", "savee"], [tess_root, savee_root])

