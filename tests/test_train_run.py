"""End-to-end training on a tiny real EmoDB subset: bundles, round trip, CV outputs, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.audio_file import read_mono_16k as load_wave_16k
from models.labels import EMOTIONS
from train.cli import build_parser, main, spec_from_args
from train.corpora.emodb import load as load_emodb
from train.loop import STATE_FILE, ClipData, TrainingInterrupted, predict_proba, train_model
from train.runs import run_fit

TINY_ARGS = ["--model", "conformer-v1", "--model-arg", "d_model=32", "--model-arg", "n_blocks=1",
             "--model-arg", "n_heads=2", "--model-arg", "subsampling_channels=8", "--batch-size", "8",
             "--threads", "2"]


def make_subset_csv(emodb_dir: Path, out: Path, speakers: tuple[str, ...], per_class: int) -> Path:
    """labels.csv (file,label,speaker) with `per_class` clips of each class from each speaker, linked
    into out/audio/ (a CSV names files inside its own folder)."""
    rows, taken = [], {}
    (out / "audio").mkdir(parents=True, exist_ok=True)
    for clip in load_emodb(emodb_dir).clips:
        key = (clip.speaker, clip.label)
        if clip.speaker in speakers and taken.get(key, 0) < per_class:
            taken[key] = taken.get(key, 0) + 1
            link = out / "audio" / clip.path.name
            if not link.exists():
                link.symlink_to(clip.path.resolve())
            rows.append(f"{link.absolute()},{clip.label},{clip.speaker}")
    (out / "labels.csv").write_text("file,label,speaker\n" + "\n".join(rows) + "\n")
    return out / "labels.csv"


@pytest.fixture(scope="module")
def tiny_csv(emodb_dir, tmp_path_factory) -> Path:
    return make_subset_csv(emodb_dir, tmp_path_factory.mktemp("tiny"), ("13", "14", "16"), 2)


def test_fit_bundle_round_trip(tiny_csv, tmp_path):
    from models.loader import load_classifier

    out = tmp_path / "fit"
    argv = ["fit", "--dataset", "csv", "--data", str(tiny_csv), *TINY_ARGS, "--epochs", "2", "--out", str(out)]
    outcome = run_fit(spec_from_args(build_parser().parse_args(argv)))
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["model"]["name"] == "conformer-v1" and meta["model"]["args"]["d_model"] == 32
    assert meta["data"]["files"] == 36 and meta["data"]["dataset"] == "csv"
    assert meta["training"]["epochs"] == 2 and len(outcome.metrics["history"]) == 2
    assert not (out / STATE_FILE).exists()
    waves = [load_wave_16k(Path(line.split(",")[0]))
             for line in tiny_csv.read_text().splitlines()[1:7]]
    expected = predict_proba(outcome.model, ClipData(waves, np.zeros(len(waves), dtype=np.int64)))
    classifier = load_classifier(str(out), device="cpu")
    got = classifier.predict(waves)
    assert got.shape == (6, len(EMOTIONS))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cv_writes_fold_bundles_ensemble_and_reports(emodb_dir, tmp_path, capsys):
    csv_path = make_subset_csv(emodb_dir, tmp_path / "data", ("11", "13", "14", "16"), 2)
    out = tmp_path / "cv"
    code = main(["cv", "--dataset", "csv", "--data", str(csv_path), *TINY_ARGS, "--epochs", "1",
                 "--folds", "2", "--out", str(out)])
    assert code == 0
    ensemble = json.loads((out / "ensemble.json").read_text())
    assert ensemble["kind"] == "ensemble" and ensemble["members"] == ["fold0", "fold1"]
    assert ensemble["shared_backbone"] is False
    for member in ensemble["members"]:
        meta = json.loads((out / member / "bundle.json").read_text())
        assert meta["fold"] in (0, 1) and "test" in meta["metrics"]
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert cv["summary"]["folds"] == 2 and len(cv["summary"]["macro_f1"]["values"]) == 2
    assert (out / "confusion_oof.png").stat().st_size > 1000
    assert main(["report", str(out), "--out", str(tmp_path / "r.md")]) == 0
    assert "`conformer-v1`" in (tmp_path / "r.md").read_text()


def test_user_mistakes_give_one_line(tmp_path, capsys):
    assert main(["fit", "--dataset", "emodb", "--data", str(tmp_path / "nope"), "--model", "conformer-v1",
                 "--out", str(tmp_path / "o")]) == 2
    assert main(["fit", "--dataset", "emodb", "--data", str(tmp_path), "--model", "no-such-model",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "unknown model" in err and "Traceback" not in err


def test_resume_continues_from_saved_epoch(tiny_csv, tmp_path):
    from models.registry import build_model
    from train.recipes import build_train_config

    lines = tiny_csv.read_text().splitlines()[1:]
    waves = [load_wave_16k(Path(l.split(",")[0])) for l in lines]
    labels = np.array([EMOTIONS.index(l.split(",")[1]) for l in lines])
    speakers = np.array([l.split(",")[2] for l in lines])
    data = ClipData(waves, labels)
    fit = data.subset(list(np.flatnonzero(speakers != "16")))
    val = data.subset(list(np.flatnonzero(speakers == "16")))
    cfg = build_train_config("conformer-v3.1", {"epochs": 2, "batch_size": 8, "patience_epochs": 5})
    args = {"d_model": 32, "n_blocks": 1, "n_heads": 2, "subsampling_channels": 8}

    def fresh():
        torch.manual_seed(0)
        model = build_model("conformer-v3.1", **args)
        model.fit_normalisation(fit.waves, None)
        return model

    full = train_model(fresh(), fit, val, cfg, tmp_path / "full")

    def interrupt(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="--resume"):
        train_model(fresh(), fit, val, cfg, tmp_path / "resumed", epoch_callback=interrupt)
    state = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=False)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert state["train_s"] > 0
    resumed = train_model(fresh(), fit, val, cfg, tmp_path / "resumed", resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert resumed.earlier_train_s == pytest.approx(state["train_s"]) and full.earlier_train_s == 0.0
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_cv_folds_as_separate_jobs_then_collect(emodb_dir, tmp_path):
    csv_path = make_subset_csv(emodb_dir, tmp_path / "data", ("11", "13", "14", "16"), 1)
    out = tmp_path / "cv"
    base = ["cv", "--dataset", "csv", "--data", str(csv_path), *TINY_ARGS, "--epochs", "1", "--folds", "2",
            "--out", str(out)]
    assert main([*base, "--fold", "1"]) == 0
    assert (out / "fold1" / "bundle.json").is_file() and not (out / "fold0").exists()
    assert not (out / "cv_metrics.json").exists()
    assert main([*base, "--fold", "0"]) == 0
    first = json.loads((out / "fold0" / "metrics.json").read_text())
    assert main([*base, "--resume"]) == 0
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert cv["summary"]["macro_f1"]["values"][0] == pytest.approx(first["eval"]["macro_f1"])
    assert main([*base, "--fold", "5"]) == 2


@pytest.mark.parametrize("fraction, ok", [("0", True), ("0.34", True), ("-0.2", False), ("1", False), ("1.5", False)])
def test_cli_val_fraction_range(tiny_csv, tmp_path, fraction, ok):
    argv = ["fit", "--dataset", "csv", "--data", str(tiny_csv), *TINY_ARGS, "--val-fraction", fraction,
            "--out", str(tmp_path / "o")]
    ns = build_parser().parse_args(argv)
    if ok:
        assert spec_from_args(ns).val_fraction == float(fraction)
    else:
        with pytest.raises(ValueError, match="--val-fraction"):
            spec_from_args(ns)


def _tiny_train_setup(tiny_csv: Path, epochs: int):
    """(fresh-model factory, ClipData of all 36 tiny clips, TrainConfig) for the loop tests."""
    from models.registry import build_model
    from train.recipes import build_train_config

    lines = tiny_csv.read_text().splitlines()[1:]
    data = ClipData([load_wave_16k(Path(l.split(",")[0])) for l in lines],
                    np.array([EMOTIONS.index(l.split(",")[1]) for l in lines]))
    cfg = build_train_config("conformer-v3.1", {"epochs": epochs, "batch_size": 8, "patience_epochs": 1})

    def fresh():
        torch.manual_seed(0)
        model = build_model("conformer-v3.1", d_model=32, n_blocks=1, n_heads=2, subsampling_channels=8)
        model.fit_normalisation(data.waves, None)
        return model

    return fresh, data, cfg


def test_empty_validation_runs_every_epoch_and_keeps_final_weights(tiny_csv, tmp_path):
    fresh, data, cfg = _tiny_train_setup(tiny_csv, epochs=3)
    seen: dict[int, dict] = {}

    def snapshot(epoch: int, row: dict) -> None:
        seen[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model = fresh()
    result = train_model(model, data, data.subset([]), cfg, tmp_path / "run", epoch_callback=snapshot)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]  # patience 1 would have stopped a validated run
    assert all(h["val_loss"] is None and h["val_macro_f1"] is None for h in result.history)
    assert result.best_epoch == 2 and result.val_eval is None and result.best_val_macro_f1 is None
    assert result.history[-1]["lr"] < 0.02 * cfg.lr  # the cosine schedule ran to its end
    final = result.model.state_dict()
    for key, value in seen[2].items():
        torch.testing.assert_close(final[key], value)
    assert any(not torch.equal(seen[1][k], v) for k, v in seen[2].items() if v.is_floating_point())


def test_empty_validation_resume_matches_uninterrupted(tiny_csv, tmp_path):
    fresh, data, cfg = _tiny_train_setup(tiny_csv, epochs=2)
    empty = data.subset([])
    full = train_model(fresh(), data, empty, cfg, tmp_path / "full")

    def interrupt(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train_model(fresh(), data, empty, cfg, tmp_path / "resumed", epoch_callback=interrupt)
    resumed = train_model(fresh(), data, empty, cfg, tmp_path / "resumed", resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1] and resumed.best_epoch == 1
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_fit_and_cv_without_validation_split(emodb_dir, tiny_csv, tmp_path):
    out = tmp_path / "fit"
    argv = ["fit", "--dataset", "csv", "--data", str(tiny_csv), *TINY_ARGS, "--epochs", "2", "--val-fraction", "0",
            "--out", str(out)]
    outcome = run_fit(spec_from_args(build_parser().parse_args(argv)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"] is None and metrics["split"] == "none" and metrics["val_speakers"] == []
    assert metrics["val_fraction"] == 0 and metrics["best_epoch"] == 1 and "no validation split" in metrics["note"]
    assert len(outcome.metrics["history"]) == 2 and not (out / "confusion_val.png").exists()
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["training"]["best_epoch"] == 1 and meta["metrics"]["val"] is None
    assert meta["data"]["files"] == 36
    assert main(["report", str(out)]) == 2  # no held-out scores: nothing to put in a table

    csv_path = make_subset_csv(emodb_dir, tmp_path / "data", ("11", "13", "14", "16"), 1)
    cv_out = tmp_path / "cv"
    assert main(["cv", "--dataset", "csv", "--data", str(csv_path), *TINY_ARGS, "--epochs", "1", "--folds", "2",
                 "--val-fraction", "0", "--out", str(cv_out)]) == 0
    for k in (0, 1):
        fold = json.loads((cv_out / f"fold{k}" / "metrics.json").read_text())
        assert fold["val"] is None and fold["validation"]["val_speakers"] == [] and fold["best_epoch"] == 0
    assert json.loads((cv_out / "cv_metrics.json").read_text())["summary"]["folds"] == 2


def test_compare_functionals_train_end_to_end(emodb_dir, tiny_csv, tmp_path):
    """compare-logreg CV and a doublestream-v4 fit on ComParE functionals: the run reads the
    model's feature set (6373 values, cached per set) and the bundles predict the same after loading."""
    from models.functionals import functionals_batch
    from models.loader import load_classifier

    cache = tmp_path / "cache"
    csv_path = make_subset_csv(emodb_dir, tmp_path / "data", ("11", "13", "14", "16"), 2)
    cv_out = tmp_path / "lr_cv"
    assert main(["cv", "--dataset", "csv", "--data", str(csv_path), "--model", "compare-logreg", "--folds", "2",
                 "--val-fraction", "0", "--cache-dir", str(cache), "--out", str(cv_out)]) == 0
    fold = json.loads((cv_out / "fold0" / "bundle.json").read_text())
    assert fold["feature"] == {"type": "functionals", "feature_set": "ComParE_2016", "dim": 6373}
    assert len(list((cache / "egemaps").glob("*.npy"))) == 48  # 4 speakers x 6 classes x 2 clips, one set

    out = tmp_path / "ds_fit"
    argv = ["fit", "--dataset", "csv", "--data", str(tiny_csv), "--model", "doublestream-v4",
            "--model-arg", "d_model=32", "--model-arg", "n_blocks=1", "--model-arg", "subsampling_channels=8",
            "--model-arg", "functionals=ComParE_2016", "--batch-size", "8", "--threads", "2",
            "--epochs", "1", "--val-fraction", "0", "--cache-dir", str(cache), "--out", str(out)]
    outcome = run_fit(spec_from_args(build_parser().parse_args(argv)))
    assert outcome.model.functionals_branch[0].in_features == 6373
    waves = [load_wave_16k(Path(line.split(",")[0])) for line in tiny_csv.read_text().splitlines()[1:4]]
    feats = functionals_batch(waves, "ComParE_2016")
    expected = predict_proba(outcome.model, ClipData(waves, np.zeros(len(waves), dtype=np.int64), feats))
    np.testing.assert_allclose(load_classifier(str(out), device="cpu").predict(waves), expected, atol=1e-5)
