"""models/hub.py: a backbone is a local folder or a hub id resolved through the Hugging Face cache.

No test touches the network: the cached-copy case builds the standard cache layout
(models--owner--name/refs/main + snapshots/<commit>/) around a tiny random WavLM saved with
save_pretrained and lets the real huggingface_hub find it with sockets refused; the download
case replaces huggingface_hub.snapshot_download.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError

from models.backbone import BackboneError, load_backbone, make_tiny_backbone
from models.hub import HUB_FILES, is_hub_id, resolve_backbone
from train.cli import build_parser, main, parse_model_args

REPO_ID = "microsoft/wavlm-base-plus"
COMMIT = "4c9d0b3a1f2e5d6c7b8a9f0e1d2c3b4a5f6e7d8c"


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory) -> Path:
    return make_tiny_backbone(tmp_path_factory.mktemp("hub") / "wavlm", "wavlm")


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache that huggingface_hub uses for this test."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture()
def online(monkeypatch):
    """Pretend HF_HUB_OFFLINE is unset (conftest sets it for the whole suite)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _cache_snapshot(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay `source`'s files out as huggingface_hub caches a download of `repo_id`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        blob = repo / "blobs" / f"blob-{f.name}"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_hub_ids_and_paths_are_told_apart():
    assert is_hub_id("microsoft/wavlm-base-plus") and is_hub_id("facebook/wav2vec2-base")
    for path in ("./wavlm", "/models/wavlm", "a/b/c", "../wavlm", "wavlm", "~/wavlm", "owner/../x"):
        assert not is_hub_id(path), path


def test_local_folder_is_used_as_is(tiny_wavlm, monkeypatch, no_network):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: pytest.fail("a local folder must not go to the hub"))
    assert resolve_backbone(str(tiny_wavlm)) == tiny_wavlm
    assert parse_model_args([], str(tiny_wavlm)) == {"backbone_dir": str(tiny_wavlm)}


def test_hub_id_resolves_from_the_cache_offline(tiny_wavlm, hub_cache, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _cache_snapshot(hub_cache, REPO_ID, tiny_wavlm)
    folder = resolve_backbone(REPO_ID)
    assert folder == snapshot
    model, info = load_backbone(folder)
    assert info.kind == "wavlm" and sum(p.numel() for p in model.parameters()) > 0
    # the CLI records the resolved local folder as the model's backbone_dir
    assert parse_model_args([], REPO_ID) == {"backbone_dir": str(snapshot)}


def test_hub_id_downloads_once_then_reads_the_cache(tiny_wavlm, hub_cache, online, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, *, allow_patterns=None, local_files_only=False, **kwargs):
        calls.append((repo_id, local_files_only))
        assert set(allow_patterns) == set(HUB_FILES)
        repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
        if not repo.is_dir():
            if local_files_only:
                raise LocalEntryNotFoundError("not cached")
            _cache_snapshot(hub_cache, repo_id, tiny_wavlm)  # "the download"
        return str(repo / "snapshots" / COMMIT)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    first = resolve_backbone(REPO_ID)
    assert calls == [(REPO_ID, True), (REPO_ID, False)]  # cache first, then one download
    calls.clear()
    assert resolve_backbone(REPO_ID) == first
    assert calls == [(REPO_ID, True)]  # afterwards only the cache is read
    load_backbone(first)


def test_offline_without_a_cached_copy_is_one_line(hub_cache, no_network, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError) as err:
        resolve_backbone(REPO_ID)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert REPO_ID in message and "HF_HUB_OFFLINE" in message and "--backbone wavlm-base-plus" in message
    code = main(["fit", "--model", "wavlm-ultimate", "--backbone", REPO_ID, "--dataset", "csv",
                 "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    stderr = capsys.readouterr().err.strip()
    assert code == 2 and stderr.startswith("error: backbone microsoft/wavlm-base-plus is not in the Hugging Face")
    assert len(stderr.splitlines()) == 1


def test_failed_download_and_bad_paths_are_one_line(hub_cache, online, monkeypatch, tmp_path):
    import huggingface_hub

    def unreachable(repo_id, *, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise OSError("[Errno -3] Temporary failure in name resolution\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(BackboneError, match=r"downloading it failed \(OSError: \[Errno -3\]") as err:
        resolve_backbone("facebook/wav2vec2-base")
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(BackboneError, match="neither a folder nor a hub id"):
        resolve_backbone(str(tmp_path / "no" / "such" / "folder"))
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    with pytest.raises(BackboneError, match="is missing config.json"):
        resolve_backbone(str(incomplete))


def test_backbone_dir_is_an_alias_of_backbone():
    base = ["fit", "--model", "wavlm-ultimate", "--dataset", "csv", "--data", "x", "--out", "y"]
    assert build_parser().parse_args([*base, "--backbone-dir", "some/folder"]).backbone == "some/folder"
    assert build_parser().parse_args([*base, "--backbone", REPO_ID]).backbone == REPO_ID


def test_monitor_takes_a_hub_id_for_the_primary_backbone(tiny_wavlm, hub_cache, no_network, monkeypatch, capsys):
    import main as monitor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert monitor.main(["--headless", "--backbone", REPO_ID]) == 2  # not cached: one line, exit 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: backbone {REPO_ID} is not in the Hugging Face")
    snapshot = _cache_snapshot(hub_cache, REPO_ID, tiny_wavlm)
    seen = []
    monkeypatch.setattr(monitor, "run_headless", lambda args: seen.append(args.backbone_dir) or 0)
    assert monitor.main(["--headless", "--backbone-dir", REPO_ID]) == 0
    assert seen == [str(snapshot)]  # the engine gets the cached local folder
