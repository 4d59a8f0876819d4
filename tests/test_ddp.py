"""`torchrun --nproc_per_node 2 -m train fit` (gloo on CPU) completes and rank 0 alone writes one bundle."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_run import make_subset_csv

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_torchrun_two_processes_writes_one_bundle(emodb_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    csv_path = make_subset_csv(emodb_dir, tmp_path / "data", ("13", "14", "16"), 1)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "VED_DIST_BACKEND": "gloo"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "train", "fit",
           "--dataset", "csv", "--data", str(csv_path), "--model", "conformer-v1",
           "--model-arg", "d_model=32", "--model-arg", "n_blocks=1", "--model-arg", "n_heads=2",
           "--model-arg", "subsampling_channels=8", "--epochs", "2", "--batch-size", "4",
           "--threads", "1", "--torch-device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["model"]["name"] == "conformer-v1"
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".json", ".safetensors")) == [
        "bundle.json", "metrics.json", "model.safetensors"]
    assert proc.stdout.count("bundle written to") == 1
