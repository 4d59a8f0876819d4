"""Models are validated at load (bundle format 1 and 2): weights, architecture arguments, feature
settings, warm-up output; format-1 bundles predict exactly as before; models/ has no import circle."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models.arch.cnn import CNNConfig
from models.arch.conformer import ConformerConfig
from models.bundle import BundleError, save_bundle
from models.functionals import functionals_batch
from models.loader import load_bundle, load_bundle_classifier
from models.registry import build_model
from models.svm import FunctionalsClassifierConfig

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SMALL_CONFORMER = {"n_blocks": 1, "d_model": 32, "n_heads": 2, "subsampling_channels": 8}


def _waves(count: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    t = np.arange(16_000) / 16_000
    return [(0.3 * np.sin(2 * np.pi * (150 + 70 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
            for i in range(count)]


@pytest.fixture(scope="module")
def conformer_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("conformer-v1", **SMALL_CONFORMER)
    model.fit_normalisation(_waves(), None)
    return save_bundle(tmp_path_factory.mktemp("valid") / "conformer", model, "conformer-v1")


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _edit_json(folder: Path, change) -> None:
    doc = json.loads((folder / "bundle.json").read_text())
    change(doc)
    (folder / "bundle.json").write_text(json.dumps(doc))


def _edit_weights(folder: Path, change) -> None:
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"))


def _error(folder: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle_classifier(folder, device="cpu")
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_the_valid_bundle_loads(conformer_folder):
    probs = load_bundle_classifier(conformer_folder, device="cpu").predict(_waves())
    assert probs.shape == (2, 6) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(conformer_folder, tmp_path, bad):
    folder = _copy(conformer_folder, tmp_path)
    _edit_weights(folder, lambda s: s["head.0.weight"].view(-1).__setitem__(3, bad))
    message = _error(folder)
    assert "NaN or infinite" in message and "head.0.weight" in message


def test_integer_weights_are_refused(conformer_folder, tmp_path):
    folder = _copy(conformer_folder, tmp_path)
    _edit_weights(folder, lambda s: s.__setitem__("head.0.weight", s["head.0.weight"].to(torch.int32)))
    assert "must be floating point" in _error(folder)


@pytest.mark.parametrize("key,value,needle", [
    ("d_model", "32", "ConformerConfig.d_model must be int"),
    ("n_blocks", 1.5, "ConformerConfig.n_blocks must be int"),
    ("n_heads", True, "ConformerConfig.n_heads must be int"),
    ("dropout", "0.1", "ConformerConfig.dropout must be float"),
    ("spec_augment", 1, "ConformerConfig.spec_augment must be bool"),
    ("pos_enc", None, "ConformerConfig.pos_enc must be str"),
])
def test_wrong_typed_arguments_are_refused(conformer_folder, tmp_path, key, value, needle):
    folder = _copy(conformer_folder, tmp_path)
    _edit_json(folder, lambda d: d["model"]["args"].__setitem__(key, value))
    message = _error(folder)
    assert "do not fit 'conformer-v1'" in message and needle in message


@pytest.mark.parametrize("key,value", [("d_model", 10**9), ("n_blocks", 10**6), ("conv_kernel_size", 10**7 + 1),
                                       ("max_relative_frames", 10**12), ("n_mels", 100_000), ("d_model", -32)])
def test_absurd_arguments_are_refused_before_building(conformer_folder, tmp_path, key, value):
    folder = _copy(conformer_folder, tmp_path)
    _edit_json(folder, lambda d: d["model"]["args"].__setitem__(key, value))
    assert f"ConformerConfig.{key} must be in [" in _error(folder)


def test_nan_argument_is_refused(conformer_folder, tmp_path):
    folder = _copy(conformer_folder, tmp_path)
    text = (folder / "bundle.json").read_text().replace('"dropout": 0.1', '"dropout": NaN')
    (folder / "bundle.json").write_text(text)
    assert "NaN is not a number JSON allows" in _error(folder)   # refused when the JSON is parsed


def test_other_sample_rate_is_refused(conformer_folder, tmp_path):
    folder = _copy(conformer_folder, tmp_path)
    _edit_json(folder, lambda d: d.update(sample_rate_hz=22_050))
    assert "sample_rate_hz 22050" in _error(folder)


@pytest.mark.parametrize("key,value", [("hop_ms", 20.0), ("sample_rate_hz", 8000), ("n_mels", 80), ("type", "mfcc")])
def test_feature_settings_must_match_the_code(conformer_folder, tmp_path, key, value):
    folder = _copy(conformer_folder, tmp_path)
    _edit_json(folder, lambda d: d["feature"].__setitem__(key, value))
    message = _error(folder)
    assert "feature settings differ" in message and key in message


def test_functionals_set_must_match(tmp_path):
    model = build_model("doublestream-v4", functionals="eGeMAPSv02", **SMALL_CONFORMER)
    folder = save_bundle(tmp_path / "ds", model, "doublestream-v4")
    _edit_json(folder, lambda d: d["feature"]["functionals"].update(feature_set="ComParE_2016", dim=6373))
    assert "feature settings differ" in _error(folder)


def test_warm_up_must_give_probabilities(conformer_folder, tmp_path):
    """Finite weights can still compute NaN (a zero standard deviation divides by 0)."""
    folder = _copy(conformer_folder, tmp_path)
    _edit_weights(folder, lambda s: s["encoder.frontend.mel_std"].zero_())
    assert "warm-up prediction is not finite" in _error(folder)


def test_config_checks_in_every_config():
    with pytest.raises(ValueError, match=r"channels must be 1 to 8 ints"):
        CNNConfig(channels=(16, "32"))
    with pytest.raises(TypeError, match="FunctionalsClassifierConfig.C must be float"):
        FunctionalsClassifierConfig(C="1")
    with pytest.raises(ValueError, match=r"ConformerConfig.n_heads must be in \[1, 64\]"):
        ConformerConfig(n_heads=0)
    with pytest.raises(ValueError, match="unknown doublestream argument"):
        build_model("doublestream-v4", egemaps_hidden=8)


# ------------------------------------------------------------------ format 1
def _as_format_1(folder: Path) -> None:
    """Rewrite a format-2 doublestream bundle the way format 1 stored it (shipped until 2026-12-02)."""
    shipped_v1 = json.loads((DATA / "bundle_v1_doublestream.json").read_text())
    doc = json.loads((folder / "bundle.json").read_text())
    args = dict(doc["model"]["args"])
    conformer = args.pop("conformer")
    conformer.pop("level_dbfs")   # added after format 1 (input-level normalisation, off by default)
    args = {**conformer, **{k.replace("functionals_", "egemaps_") if k != "functionals" else k: v
                            for k, v in args.items()}}
    assert set(args) == set(shipped_v1["model"]["args"])  # the real format-1 argument names
    feature = dict(doc["feature"])
    feature.pop("level_dbfs")
    feature["type"] = shipped_v1["feature"]["type"]
    block = feature.pop("functionals")
    feature["egemaps"] = {"feature_set": block["feature_set"], "functionals": block["dim"]}
    assert set(feature) == set(shipped_v1["feature"])
    doc.update(format_version=1, feature=feature, model={"name": doc["model"]["name"], "args": args})
    (folder / "bundle.json").write_text(json.dumps(doc))
    state = load_file(str(folder / "model.safetensors"))
    state = {("egemaps_" + k[len("functionals_"):] if k.startswith("functionals_") else k): v for k, v in state.items()}
    assert {"egemaps_mean", "egemaps_std", "egemaps_branch.0.weight"} <= set(state)
    save_file(state, str(folder / "model.safetensors"))


def test_format_1_bundle_predicts_like_its_format_2_twin(tmp_path):
    torch.manual_seed(3)
    shipped_args = json.loads((DATA / "bundle_v1_doublestream.json").read_text())["model"]["args"]
    args = {k: v for k, v in shipped_args.items() if not k.startswith("egemaps_")}
    args.update(functionals_hidden=shipped_args["egemaps_hidden"], functionals_dropout=shipped_args["egemaps_dropout"],
                functionals="eGeMAPSv02")  # the fast set: format 1 differs in names, not in sets
    model = build_model("doublestream-v4", **args)
    waves = _waves(3)
    model.fit_normalisation(waves, functionals_batch(waves, "eGeMAPSv02") + np.arange(88, dtype=np.float32))
    v2 = save_bundle(tmp_path / "v2", model, "doublestream-v4")
    v1 = Path(shutil.copytree(v2, tmp_path / "v1"))
    _as_format_1(v1)
    loaded, meta = load_bundle(v1)
    assert meta["upgraded_from"] == 1 and meta["model"]["args"]["functionals_hidden"] == 64
    assert torch.equal(loaded.functionals_mean, model.functionals_mean)
    new = load_bundle_classifier(v2, device="cpu").predict(waves)
    old = load_bundle_classifier(v1, device="cpu").predict(waves)
    np.testing.assert_array_equal(old, new)


ARCHIVED_DEFAULTS = {
    # folder under models/archive: (format_version, reference file under tests/data)
    "doublestream-v4-emodb": (1, "default_v1_reference.json"),
    "conformer-v3.1-crema": (2, "conformer_v31_crema_reference.json"),
}


@pytest.mark.parametrize("archived", ARCHIVED_DEFAULTS)
def test_formerly_shipped_defaults_predict_as_they_did(shared_data, archived):
    """Every bundle once shipped as models/default keeps loading and gives the probabilities it gave
    when it shipped, on real CREMA-D clips. doublestream-v4-emodb (format 1, default until
    2026-12-02): the reference was computed by the code before the format-2 refactor.
    conformer-v3.1-crema (format 2, default until 2026-12-03): computed when it was archived. Both
    folders hold the same git blobs that shipped."""
    import soundfile as sf

    format_version, reference_file = ARCHIVED_DEFAULTS[archived]
    reference = json.loads((DATA / reference_file).read_text())
    folder = REPO / "models" / "archive" / archived
    assert json.loads((folder / "bundle.json").read_text())["format_version"] == format_version
    classifier = load_bundle_classifier(folder, device="cpu")
    assert classifier.checkpoint_hash == reference["checkpoint_hash"]
    clips = [sf.read(shared_data / "crema-d" / "AudioFLAC" / name, dtype="float32")[0] for name in reference["clips"]]
    np.testing.assert_allclose(classifier.predict(clips), np.array(reference["probs"]), rtol=0, atol=2e-6)


# ------------------------------------------------------------------ import graph
def _models_import_graph() -> dict[str, set[str]]:
    """module -> models.* modules it imports anywhere in its source (top level or inside functions)."""
    graph: dict[str, set[str]] = {}
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts): p for p in (REPO / "models").rglob("*.py")}
    modules = {name.removesuffix(".__init__"): path for name, path in modules.items()}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name and t != "models"}
    return graph


def test_models_have_no_import_cycle():
    graph = _models_import_graph()
    assert "models.loader" in graph and "models.bundle" in graph["models.loader"]
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_sklearn_bundle_pickled_under_the_old_class_names_still_loads(tmp_path):
    from models.svm import FunctionalsClassifier, FunctionalsClassifierConfig

    labels = np.repeat(np.arange(6), 3)
    model = build_model("egemaps-svm").fit(np.random.default_rng(0).standard_normal((18, 88)), labels)
    renamed = ((FunctionalsClassifier, "EgemapsSVM"), (FunctionalsClassifierConfig, "EgemapsSVMConfig"))
    try:  # pickle as the code before 2026-12-02 did
        for cls, old_name in renamed:
            cls.__qualname__ = old_name
        folder = save_bundle(tmp_path / "old", model, "egemaps-svm")
    finally:
        for cls, _ in renamed:
            cls.__qualname__ = cls.__name__
    assert b"EgemapsSVM" in (folder / "model.joblib").read_bytes()
    loaded, _ = load_bundle(folder)
    assert isinstance(loaded, FunctionalsClassifier)
    probs = load_bundle_classifier(folder).predict(_waves())
    assert probs.shape == (2, 6) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("key,value", [("lstm_hidden", 10**9), ("lstm_layers", 10**4), ("lstm_hidden", "many"),
                                       ("dropout", 1.5)])
def test_head_on_a_pretrained_encoder_refuses_absurd_arguments(tmp_path, key, value):
    from models.backbone import make_tiny_backbone

    backbone = make_tiny_backbone(tmp_path / "wavlm", "wavlm")
    model = build_model("wavlm-ultimate", backbone_dir=str(backbone), lstm_hidden=8, attention_hidden=8)
    folder = save_bundle(tmp_path / "head", model, "wavlm-ultimate")
    _edit_json(folder, lambda d: d["model"]["args"].__setitem__(key, value))
    assert "do not fit 'wavlm-ultimate'" in _error(folder)


def test_every_registry_model_meets_its_protocol(tmp_path):
    from models.backbone import make_tiny_backbone
    from models.contract import CacheableFrontEnd, FunctionalsModel, TrainableModel

    for name in ("cnn", "transformer", "conformer-v1", "doublestream-v4"):
        model = build_model(name)
        assert isinstance(model, TrainableModel) and not isinstance(model, CacheableFrontEnd), name
    head = build_model("wavlm-ultimate", backbone_dir=str(make_tiny_backbone(tmp_path / "w", "wavlm")))
    assert isinstance(head, TrainableModel) and isinstance(head, CacheableFrontEnd) and head.frontend_cacheable
    assert isinstance(build_model("compare-logreg"), FunctionalsModel)
    with pytest.raises(TypeError, match="cannot bundle it"):
        save_bundle(tmp_path / "x", torch.nn.Linear(2, 2), "cnn")
