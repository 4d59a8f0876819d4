"""`python -m train`: the torch device option is --torch-device; the old --device still works and warns."""
from __future__ import annotations

import pytest

from train.cli import build_parser, spec_from_args

FIT = ["fit", "--dataset", "emodb", "--data", "somewhere", "--model", "cnn", "--out", "runs/x"]


def test_torch_device_option_sets_the_training_device(capsys):
    ns = build_parser().parse_args([*FIT, "--torch-device", "cpu"])
    assert spec_from_args(ns).train.device == "cpu"
    assert "deprecated" not in capsys.readouterr().err
    assert spec_from_args(build_parser().parse_args(FIT)).train.device == "auto"


def test_old_device_spelling_still_works_and_warns(capsys):
    ns = build_parser().parse_args([*FIT, "--device", "cpu"])
    assert spec_from_args(ns).train.device == "cpu"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: --device is deprecated") and "--torch-device" in err


def test_help_names_only_the_new_spelling(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--torch-device" in out and "--device " not in out.replace("--torch-device", "")
