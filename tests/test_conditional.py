"""A conditional model end to end: its package (decoder inputs z and y, parity, manifest attributes, verify),
the engine's decode rows [z | y], in-process generation, and the service's jobs, single images and interpolations."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.engine.registry import LoadedModel, ModelRegistry
from service.engine.rendering import RenderSpec, interpolation_latents, render
from service.engine.sessions import IoBindingRunner
from service.settings import Settings
from synthgen.cli import main
from synthgen.core.attributes import AttributeSpace
from synthgen.core.crowd import Crowd
from synthgen.core.errors import ModelPackageError
from synthgen.core.package import load_package
from tests.support.conditional_model import ConditionalModel
from tests.support.live import in_api_decode_without_worker

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(tiny_conditional: ConditionalModel) -> LoadedModel:
    return ModelRegistry.from_directory(tiny_conditional.models_dir, tiny_conditional.name).default


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_the_package_has_decoders_of_z_and_y_and_the_attributes(tiny_conditional: ConditionalModel) -> None:
    import torch

    package = load_package(tiny_conditional.package)
    checkpoint = torch.load(tiny_conditional.checkpoint, map_location="cpu", weights_only=False)
    trained = AttributeSpace.from_manifest(checkpoint["config"]["attributes"])
    # in the decoder's column order, although the manifest file's keys are sorted
    assert list(package.attributes.values.items()) == list(trained.values.items())
    assert package.attributes.names == trained.names != tuple(sorted(trained.names))
    assert package.attributes.identity == trained.identity
    assert package.attributes.dim == package.condition_dim == trained.dim > 0
    assert package.classifier_path is None and package.encoder_path is None
    marginals = package.manifest["attributes"]["marginals"]
    assert all(abs(sum(shares) - 1) < 1e-4 for shares in marginals.values())
    for graph_file in ("decoder.onnx", "decoder.fp16.onnx"):
        graph = onnx.load(str(tiny_conditional.package / graph_file))
        inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
        assert list(inputs) == ["z", "y"] and inputs["z"][1] == 8 and inputs["y"][1] == package.condition_dim
        assert inputs["z"][0] == inputs["y"][0] and isinstance(inputs["y"][0], str)  # one shared dynamic batch axis
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta["synthgen.condition_dim"] == str(package.condition_dim)
    assert package.manifest["decoder"]["condition"] == "y"
    for which in ("decoder", "decoder_fp16"):
        report = package.manifest["parity"][which]
        assert report["latents"] >= 1024 and report["max_error"] <= report["bound"]


def test_verify_checks_a_conditional_package_against_its_checkpoint(
    tiny_conditional: ConditionalModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--verify", str(tiny_conditional.package), str(tiny_conditional.checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "decoder vs torch" in out and "fp16 vs fp32" in out and "['z', 'y']" in out


def test_verify_refuses_a_manifest_whose_attributes_do_not_fit_the_graph(
    tiny_conditional: ConditionalModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "tiny-cond"
    shutil.copytree(tiny_conditional.package, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["attributes"]  # now it claims to be unconditional
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["export", "--verify", str(copy)]) == 2
    assert "synthgen.condition_dim" in capsys.readouterr().err
    with pytest.raises(ModelPackageError, match=r"expected input z \[batch, 8\], got .*'y'"):
        ModelRegistry.from_directory(tmp_path, "tiny-cond")

    manifest["attributes"] = {"order": ["top"], "values": {"top": ["hat", "hat"]}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="manifest schema"):
        load_package(copy)


def test_decode_rows_are_z_then_y_and_equal_a_direct_run(model: LoadedModel) -> None:
    space = model.attributes
    assert space and model.row_dim == 8 + space.dim
    rows = model.inputs(11, np.arange(20))
    z, y = rows[:, :8], rows[:, 8:]
    assert np.array_equal(z, model.latents(11, np.arange(20)))
    assert np.array_equal(y, space.one_hot(space.draw(11, np.arange(20))))  # drawn from the marginals by (seed, index)
    session = ort.InferenceSession(str(model.package.decoder_path), providers=["CPUExecutionProvider"])
    direct = session.run(["images"], {"z": z, "y": y})[0]
    assert np.array_equal(model.decode(rows), direct)
    assert np.array_equal(IoBindingRunner(model, "cpu")(rows), direct)
    assert np.array_equal(model.generate(11, np.arange(20)), direct)
    # the attributes change the image: the same z with other labels decodes differently
    other = space.one_hot(space.draw(12, np.arange(20)))
    assert not np.array_equal(session.run(["images"], {"z": z, "y": other})[0], direct)


def test_a_crowd_fixes_attributes_and_identities(model: LoadedModel) -> None:
    space = model.attributes
    name, value = space.names[0], space.values[space.names[0]][1]
    crowd = Crowd(attributes={name: value}, identities=2, per_identity=3)
    spec = RenderSpec(seed=5, crowd=crowd, count=6)
    samples = render(model, spec, np.arange(6))
    assert [s.meta["attributes"][name] for s in samples] == [value] * 6  # type: ignore[index]
    assert [s.meta["identity"] for s in samples] == [0, 0, 0, 1, 1, 1]
    plain = render(model, RenderSpec(seed=5), np.arange(6))
    assert "identity" not in plain[0].meta
    assert plain[0].meta["attributes"] == space.labels(space.draw(5, np.arange(1)))[0]


def test_interpolation_walks_z_and_blends_y_between_the_two_images(model: LoadedModel) -> None:
    rows, t = interpolation_latents(model, ((3, 0), (4, 2)), 5, "slerp", None)
    assert rows.shape == (5, model.row_dim) and t[0] == 0 and t[-1] == 1
    assert np.array_equal(
        model.decode(rows[[0, -1]]), np.concatenate([model.generate(3, np.array([0])), model.generate(4, np.array([2]))])
    )
    a, b = model.inputs(3, np.array([0]))[0, 8:], model.inputs(4, np.array([2]))[0, 8:]
    assert np.allclose(rows[2, 8:], 0.5 * a + 0.5 * b)


def test_generate_in_process_on_the_conditional_package(
    tiny_conditional: ConditionalModel, model: LoadedModel, tmp_path: Path
) -> None:
    out = tmp_path / "faces"
    args = ["generate", "--count", "7", "--seed", "9", "--out", str(out), "--models-dir", str(tiny_conditional.models_dir)]
    assert main([*args, "--model", "tiny-cond", "--batch-size", "3"]) == 0
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(7)) and lines[0]["model"] == "tiny-cond@1"
    assert len(lines[0]["latent"]) == 8 and set(lines[0]["attributes"]) == set(model.attributes.names)
    assert [r["attributes"] for r in lines] == model.attributes.labels(model.attributes.draw(9, np.arange(7)))
    images = model.generate(9, np.arange(7))
    assert all(np.array_equal(np.asarray(Image.open(out / f"{i:08d}.png")), images[i]) for i in range(7))


@pytest.fixture
def conditional_app(redis_url: str, tiny_conditional: ConditionalModel) -> Iterator[Callable[..., TestClient]]:
    opened: list[TestClient] = []

    def make(with_worker: bool = True, **overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "redis_url": redis_url, "models_dir": tiny_conditional.models_dir, "default_model": tiny_conditional.name,
            **in_api_decode_without_worker(with_worker), **overrides,
        }  # fmt: skip
        client = TestClient(create_app(Settings(**values), with_worker=with_worker))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def test_a_job_on_the_conditional_model_records_each_images_attributes(
    conditional_app: Callable[..., TestClient], model: LoadedModel
) -> None:
    client = conditional_app()
    job = client.post("/v1/jobs", json={"count": 30, "seed": 2}).json()
    members = _members(client.get(f"/v1/jobs/{job['id']}/result").content)
    local = render(model, RenderSpec(seed=2), np.arange(30))
    for sample in local:
        assert members[f"{sample.index:08d}.png"] == sample.data
        meta = json.loads(members[f"{sample.index:08d}.json"])
        assert (
            meta == sample.meta
            and meta["attributes"] == model.attributes.labels(model.attributes.draw(2, np.array([sample.index])))[0]
        )


@pytest.mark.parametrize("decode_on", ["api", "workers"])
def test_single_images_and_interpolations_on_the_conditional_model(
    conditional_app: Callable[..., TestClient], model: LoadedModel, decode_on: str
) -> None:
    client = conditional_app(with_worker=True, interactive_decode=decode_on)
    response = client.get("/v1/images/77.npy", params={"index": 4})
    assert response.status_code == 200, response.text
    assert np.array_equal(_npy(response.content), model.generate(77, np.array([4]))[0])
    body = {"from_seed": 77, "from_index": 4, "to_seed": 78, "steps": 4, "method": "slerp"}
    tar = client.post("/v1/interpolate", json=body)
    assert tar.status_code == 200, tar.text
    members = _members(tar.content)
    first = json.loads(members["00000000.json"])
    assert len(first["latent"]) == 8 and first["attributes"] == model.labels(model.inputs(77, np.array([4])))[0]
    strip = client.post("/v1/interpolate?layout=strip", json={**body, "format": "npy"})
    rows, _ = interpolation_latents(model, ((77, 4), (78, 0)), 4, "slerp", None)
    assert np.array_equal(_npy(strip.content), model.decode(rows))


def test_the_evaluation_tools_sample_a_conditional_model_as_the_service_does(
    tiny_conditional: ConditionalModel, model: LoadedModel
) -> None:
    from aae.generators import CheckpointGenerator, PackageGenerator

    generator = PackageGenerator(tiny_conditional.package, tiny_conditional.checkpoint)
    rows = generator.sample_inputs(20, 6, truncation=1.5, start=10)
    assert np.array_equal(rows, model.inputs(6, np.arange(10, 30), 1.5))
    assert np.array_equal(generator.decode(rows), model.decode(rows))
    torch_images = CheckpointGenerator(tiny_conditional.checkpoint).decode(rows).astype(int)
    assert np.abs(torch_images - model.decode(rows)).max() <= 1  # the export's parity bound
    a, b = rows[:3], rows[3:6]
    halfway = generator.midpoints(a, b, "slerp")
    assert np.allclose(halfway[0], generator.interpolate(a[0], b[0], np.array([0.0, 0.5, 1.0]))[1], atol=1e-5)
    with pytest.raises(ValueError, match="decode inputs"):
        generator.decode(rows[:, :8])  # z alone is not enough for a conditional decoder


def test_evaluate_writes_the_card_of_a_conditional_package(
    tiny_conditional: ConditionalModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    package = tmp_path / "models" / "tiny-cond"
    shutil.copytree(tiny_conditional.package, package)
    sizes = ["--samples", "32", "--duplicates", "100", "--prior-codes", "40", "--permutations", "20", "--pairs", "16"]
    sizes += ["--train-neighbours", "50", "--patches", "16", "--cache-dir", str(tmp_path / "cache")]
    assert main(["evaluate", str(package), "--checkpoint", str(tiny_conditional.checkpoint), *sizes]) == 0
    metrics = json.loads((package / "metrics.json").read_text())
    assert metrics["model"]["attributes"]["condition_dim"] == load_package(package).condition_dim
    assert metrics["swd"]["samples"]["average_x1e3"] > 0 and metrics["prior_fit"]["available"]
    assert metrics["reconstruction"]["available"] and metrics["reconstruction"]["mse"] > 0  # with the faces' own labels
    assert {"slerp", "lerp"} <= set(metrics["interpolation"])
    card = (package / "card.md").read_text()
    assert "It is conditional" in card and "attributes from their training marginals" in card
    assert (package / "reconstructions.png").is_file() and (package / "interpolation.png").is_file()

    # without the checkpoint there is no encoder: the rest of the card still stands
    assert main(["evaluate", str(package), *sizes]) == 0
    metrics = json.loads((package / "metrics.json").read_text())
    assert metrics["reconstruction"]["available"] is False and metrics["swd"]["samples"]["average_x1e3"] > 0
    assert "control" not in metrics and "## Control" not in (package / "card.md").read_text()  # no classifier to judge it


def test_the_card_of_a_conditional_package_with_a_classifier_holds_its_control_table(
    tiny_conditional: ConditionalModel, tmp_path: Path
) -> None:
    from tests.support.labeled_package import add_classifier

    package = add_classifier(tiny_conditional.package, tmp_path / "models" / "tiny-cond")
    sizes = ["--samples", "32", "--duplicates", "100", "--prior-codes", "40", "--permutations", "20", "--pairs", "16"]
    sizes += ["--train-neighbours", "50", "--patches", "16", "--cache-dir", str(tmp_path / "cache"), "--control-per-value", "3"]
    assert main(["evaluate", str(package), *sizes]) == 0
    control = json.loads((package / "metrics.json").read_text())["control"]
    space = load_package(package).attributes
    assert set(control["adherence"]) == set(space.names) and control["sizes"]["per_value"] == 3
    assert all(0 <= entry["rate"] <= 1 for entry in control["adherence"].values() if entry["rate"] is not None)
    card = (package / "card.md").read_text()
    assert "## Control" in card and "synthgen control MODEL --per-value 3" in card and "*real renders*" in card
    assert all(f"| {name} |" in card for name in space.names)
    assert main(["evaluate", str(package), *sizes[:-1], "0"]) == 0  # --control-per-value 0: no table
    assert "## Control" not in (package / "card.md").read_text()
