"""The attribute classifier: it learns from labeled renders, its ONNX graph matches torch, the package's manifest
entry validates, and the control metrics it judges can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from aae.classifier import (  # noqa: E402
    AttributeClassifier,
    ClassifierConfig,
    ClassifierOptions,
    accuracy,
    attribute_losses,
    load_classifier,
    predict,
    train_classifier,
)
from aae.control import (  # noqa: E402
    ControlSizes,
    Decode,
    Generator,
    avatar_renderer,
    control_table,
    measure_control,
    package_control,
)
from aae.data import avatar_faces  # noqa: E402
from aae.labels import AVATAR_FIELDS, LabelTable, avatar_labels, avatar_vocabulary  # noqa: E402
from export.classifier import attach_classifier, export_classifier  # noqa: E402
from export.graphs import ExportError  # noqa: E402
from export.package import export_package, verify_package  # noqa: E402
from synthgen.cli import main  # noqa: E402
from synthgen.core.attributes import AttributeSpace  # noqa: E402
from synthgen.core.errors import ModelPackageError  # noqa: E402
from synthgen.core.package import load_package, manifest_schema  # noqa: E402
from synthgen.core.predictions import predicted_codes, predicted_labels  # noqa: E402
from tests.support.conditional_model import ConditionalModel  # noqa: E402

SIZE = 32
pytestmark = pytest.mark.timeout(600)  # the module's fixtures train a classifier and a conditional model


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short training of a small classifier on 32px avatars (dataset seed 0), judged on seed 7."""
    out = tmp_path_factory.mktemp("classifier")
    options = ClassifierOptions(
        count=1000, image_size=SIZE, width=16, batch_size=64, steps=250, held_out_count=300, threads=1,
        cache_dir=str(out / "cache"), out_dir=str(out), log_every=1000,
    )  # fmt: skip
    return train_classifier(options)


@pytest.fixture(scope="module")
def package_with_classifier(
    classifier_checkpoint: Path, tiny_conditional: ConditionalModel, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny conditional model exported with the classifier (``synthgen export --classifier``)."""
    package = tmp_path_factory.mktemp("with-classifier") / "tiny-cond"
    export_package(tiny_conditional.checkpoint, package, version="1", with_encoder=False, classifier=classifier_checkpoint)
    return package


def test_the_classifier_learns_far_above_chance(classifier_checkpoint: Path) -> None:
    _, checkpoint = load_classifier(classifier_checkpoint)
    measured = checkpoint["summary"]["accuracy"]
    assert checkpoint["summary"]["held_out"] == {"data": "avatars", "seed": 7, "start": 0, "count": 300}
    assert set(measured) == set(AVATAR_FIELDS)
    vocabulary = avatar_vocabulary()
    # large, flat areas of colour are learnt first: several times chance after 300 small steps
    for name in ("skin_color", "hair_color", "facial_hair"):
        assert measured[name] > 3.0 / len(vocabulary[name]), (name, measured[name])
    assert np.mean(list(measured.values())) > 2.0 * np.mean([1 / len(v) for v in vocabulary.values()]), measured


def test_an_untrained_classifier_is_near_chance(classifier_checkpoint: Path) -> None:
    """The same measurement on the same held-out images gives chance-level numbers without training."""
    _, checkpoint = load_classifier(classifier_checkpoint)
    config = ClassifierConfig(**checkpoint["config"])
    torch.manual_seed(1)
    untrained = AttributeClassifier(config).eval()
    table = avatar_labels(200, seed=7)
    probabilities = predict(untrained, avatar_faces(200, seed=7, size=SIZE, progress=False))
    measured = accuracy(config.space, predicted_codes(config.space, probabilities)[0], table)
    assert measured["skin_color"] < 0.4, measured


def test_hidden_labels_are_neither_trained_nor_judged() -> None:
    space = AttributeSpace({"top": ("short_flat", "winter_hat_1"), "hair_color": ("black", "red")})
    logits = torch.tensor([[0.0, 0.0, 3.0, -3.0]], requires_grad=True)
    visible = torch.tensor([[True, False]])  # a hat: no hair to see
    red, black = torch.tensor([[1, 1]]), torch.tensor([[1, 0]])
    assert torch.equal(attribute_losses(logits, red, visible, space), attribute_losses(logits, black, visible, space))
    assert attribute_losses(logits, red, visible, space)[1] == 0
    table = LabelTable(dict(space.values), np.array([[1, 1], [0, 1]]))  # a hat with red hair, then red hair
    predicted = np.array([[1, 0], [0, 1]])  # black under the hat (not counted), red where it shows
    assert accuracy(space, predicted, table) == {"top": 1.0, "hair_color": 1.0}
    assert accuracy(space, np.array([[1, 0], [0, 0]]), table) == {"top": 1.0, "hair_color": 0.0}


def test_predicted_labels_read_each_block() -> None:
    space = AttributeSpace({"a": ("x", "y"), "b": ("p", "q", "r")})
    probabilities = np.array([[0.2, 0.8, 0.1, 0.3, 0.6]], dtype=np.float32)
    assert predicted_labels(space, probabilities) == [
        {"a": {"value": "y", "confidence": 0.8}, "b": {"value": "r", "confidence": 0.6}}
    ]
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        predicted_codes(space, probabilities[:, :4])


def test_the_graph_matches_torch_and_the_manifest_entry_validates(
    classifier_checkpoint: Path, package_with_classifier: Path
) -> None:
    package = load_package(package_with_classifier)
    manifest = package.manifest
    jsonschema.validate(manifest, manifest_schema())
    entry = manifest["classifier"]
    assert package.classifier_path == package_with_classifier / "classifier.onnx" and "classifier.onnx" in manifest["files"]
    assert entry["held_out"] == {"data": "avatars", "seed": 7, "start": 0, "count": 300}
    assert entry["parity"]["max_error"] <= entry["parity"]["bound"] <= 1e-4
    model, checkpoint = load_classifier(classifier_checkpoint)
    assert entry["values"] == {n: list(v) for n, v in model.config.space.values.items()}
    for name, fraction in checkpoint["summary"]["accuracy"].items():  # torch and ORT judge the same images alike
        assert abs(entry["accuracy"][name] - fraction) <= 0.01, name

    graph = onnx.load(str(package.classifier_path))
    assert [i.name for i in graph.graph.input] == ["images"] and [o.name for o in graph.graph.output] == ["probabilities"]
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["synthgen.name"] == "tiny-cond" and meta["synthgen.file"] == "classifier.onnx"
    session = ort.InferenceSession(str(package.classifier_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    probabilities = session.run(None, {"images": images})[0]
    space = model.config.space
    assert probabilities.shape == (5, space.dim) and probabilities.dtype == np.float32
    for name, start in space.offsets().items():  # a softmax per attribute
        np.testing.assert_allclose(probabilities[:, start : start + len(space.values[name])].sum(axis=1), 1.0, atol=1e-5)
    assert any(line.startswith("3 graphs pass") for line in verify_package(package_with_classifier))  # decoder, fp16, classifier


def test_a_broken_classifier_entry_is_refused(package_with_classifier: Path, tmp_path: Path) -> None:
    for change, fragment in (({"accuracy": {"skin_color": 1.5}}, "classifier"), ({"file": "missing.onnx"}, "not listed")):
        package = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        shutil.copytree(package_with_classifier, package)
        manifest = json.loads((package / "manifest.json").read_text())
        manifest["classifier"].update(change)
        (package / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelPackageError, match=fragment):
            load_package(package)


def test_a_classifier_that_does_not_fit_the_model_is_refused(classifier_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="images"):
        export_classifier(classifier_checkpoint, tmp_path, (64, 64, 3), AttributeSpace({}))
    other = AttributeSpace({"skin_color": ("light", "dark")})
    with pytest.raises(ExportError, match="differ from the model's"):
        export_classifier(classifier_checkpoint, tmp_path, (SIZE, SIZE, 3), other)


def _renderer(space: AttributeSpace, wrong_labels: bool = False) -> Decode:
    """The renderer as a perfectly controlled conditional generator (it draws exactly the labels it is given);
    ``wrong_labels``: it draws the labels of other images of the batch instead, shuffled."""
    decode = avatar_renderer(space, SIZE, seed=3)
    if not wrong_labels:
        return decode

    def shuffled(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return decode(z, y[np.random.default_rng(len(y)).permutation(len(y))])

    return shuffled


def test_control_metrics_fail_a_decoder_fed_wrong_labels(package_with_classifier: Path) -> None:
    package = load_package(package_with_classifier)
    table = avatar_labels(1, 0)
    space = AttributeSpace(table.values, table.identity)
    session = ort.InferenceSession(str(package.classifier_path), providers=["CPUExecutionProvider"])

    def classify(images: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {"images": images})[0]
        return out

    sizes = ControlSizes(per_value=6, identities=12, per_identity=4)
    names = ("skin_color", "hair_color")
    results = {}
    for wrong in (False, True):
        model = Generator(_renderer(space, wrong), classify, space, {"kind": "gaussian", "std": 1.0}, 8)
        results[wrong] = measure_control(model, sizes, package.manifest["classifier"]["accuracy"], names)
    good, bad = results[False], results[True]
    accuracy_real = package.manifest["classifier"]["accuracy"]
    for name in names:
        chance = good["adherence"][name]["chance"]
        # a perfectly controlled generator is seen to obey about as well as the classifier sees real images
        assert good["adherence"][name]["rate"] >= min(accuracy_real[name] - 0.3, chance + 0.25), (name, good["adherence"][name])
        assert bad["adherence"][name]["rate"] <= chance + 0.15, (name, bad["adherence"][name])
        assert good["adherence"][name]["rate"] >= bad["adherence"][name]["rate"] + 0.2, name
    assert good["identity"]["by_attribute"]["skin_color"] > 0.9
    assert bad["identity"]["by_attribute"]["skin_color"] < good["identity"]["by_attribute"]["skin_color"] - 0.2
    table_text = control_table(good)
    assert "| skin_color | 7 |" in table_text and "identity" in table_text


def test_cli_trains_a_classifier_and_adds_it(tiny_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["classifier", "train", "--count", "128", "--image-size", "32", "--width", "8", "--steps", "3", "--threads", "1"]
    args += ["--held-out-count", "32", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert main(["--log-level", "WARNING", *args]) == 0
    assert (out / "classifier.pt").is_file() and "skin_color:" in capsys.readouterr().out
    package = tmp_path / "tiny"
    shutil.copytree(tiny_models_dir / "tiny", package)
    assert main(["--log-level", "WARNING", "classifier", "add", str(package), str(out / "classifier.pt")]) == 0
    assert load_package(package).manifest["classifier"]["held_out"]["count"] == 32
    assert main(["--log-level", "WARNING", "control", str(package)]) == 2  # unconditional: nothing to control
    assert "unconditional" in capsys.readouterr().err


def test_control_of_a_conditional_package(package_with_classifier: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """decoder.onnx (z, y) and classifier.onnx of one package, through the service's crowd code paths."""
    result = package_control(package_with_classifier, ControlSizes(per_value=2, identities=4, per_identity=3))
    space = load_package(package_with_classifier).attributes
    assert result["model"] == "tiny-cond@1" and list(result["adherence"]) == list(space.names)
    for name, entry in result["adherence"].items():
        assert 0 <= entry["rate"] <= 1 and entry["chance"] == round(1 / len(space.values[name]), 4)
        assert entry["images"] <= 2 * len(space.values[name])
    assert entry["images"] == 2 * len(space.values[name])  # nothing hides the last attribute
    assert set(result["identity"]["by_attribute"]) == set(space.identity)
    assert result["classifier_accuracy"] == load_package(package_with_classifier).manifest["classifier"]["accuracy"]
    renders = result["renders"]  # a model of the avatars: real renders asked for the same values, judged alike
    assert list(renders["adherence"]) == list(space.names) and set(renders["identity"]["by_attribute"]) == set(space.identity)
    assert renders["adherence"]["skin_color"]["rate"] > result["adherence"]["skin_color"]["chance"]
    args = ["--log-level", "WARNING", "control", str(package_with_classifier), "--per-value", "1", "--identities", "2"]
    assert main([*args, "--per-identity", "2"]) == 0
    out = capsys.readouterr().out
    assert "| skin_color | 7 |" in out and "real renders asked the same" in out and "; real renders:" in out


def test_a_package_takes_another_packages_classifier_and_measures_it_again(
    package_with_classifier: Path, tiny_conditional: ConditionalModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "models" / "tiny-cond"
    shutil.copytree(tiny_conditional.package, target)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["--log-level", "WARNING", "classifier", "add", str(target), str(package_with_classifier), *cache]) == 0
    assert "classifier.onnx added" in capsys.readouterr().out
    source, copied = load_package(package_with_classifier), load_package(target)
    entry = copied.manifest["classifier"]
    assert entry["copied_from"] == source.ref and entry["accuracy"] == source.manifest["classifier"]["accuracy"]
    assert copied.classifier_path is not None and "classifier.onnx" in copied.manifest["files"]
    assert any(line.startswith("3 graphs pass") for line in verify_package(target))

    stale = tmp_path / "stale"  # a record the graph no longer gives: the copy holds what the graph measures
    shutil.copytree(package_with_classifier, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    manifest["classifier"]["accuracy"]["skin_color"] = 0.01
    (stale / "manifest.json").write_text(json.dumps(manifest))
    remeasured = attach_classifier(target, stale, str(tmp_path / "cache"))
    assert remeasured["accuracy"] == source.manifest["classifier"]["accuracy"]
    with pytest.raises(ExportError, match=r"no classifier\.onnx"):
        attach_classifier(target, tiny_conditional.package, str(tmp_path / "cache"))
    assert load_package(target).manifest["classifier"]["copied_from"] == "tiny-cond@1"  # a refusal leaves it as it was
