"""`synthgen evaluate`: the model card of a package, the AE / VAE / AAE comparison, and held-out data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("scipy")
pytest.importorskip("python_avatars")

from aae.evaluate import EvalSizes, held_out_images
from service.engine.registry import ModelRegistry
from synthgen.cli import main
from synthgen.core.package import load_package

TINY = ["--samples", "32", "--duplicates", "100", "--prior-codes", "40", "--permutations", "20", "--pairs", "16"]
TINY += ["--train-neighbours", "50", "--patches", "16"]
GRIDS = ("truncation_sweep.png", "interpolation.png", "reconstructions.png")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One avatar cache for the module: the tiny model's 64 training faces and its held-out faces render once."""
    return tmp_path_factory.mktemp("cache")


def _package_copy(tiny_models_dir: Path, tmp_path: Path) -> Path:
    package = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_models_dir / "tiny", package)  # the fixture is session-wide: never write into it
    return package


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _without_timing(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in ("timing", "created_at")}


def test_evaluate_writes_a_model_card_into_a_package_that_still_verifies(
    tiny_models_dir: Path, tmp_path: Path, cache: Path
) -> None:
    package = _package_copy(tiny_models_dir, tmp_path)
    listed = set(load_package(package).manifest["files"])
    assert main(["evaluate", str(package), "--cache-dir", str(cache), *TINY]) == 0

    for name in ("card.md", "metrics.json", "samples.png", *GRIDS):
        assert (package / name).is_file(), name
    metrics = json.loads((package / "metrics.json").read_text())
    assert metrics["format"] == "synthgen.evaluation/1" and metrics["model"]["name"] == "tiny"
    assert metrics["data"]["held_out"]["source"].startswith("avatars 64..127 of seed 0")  # after the 64 training faces
    swd = metrics["swd"]
    assert len(swd["samples"]["per_level_x1e3"]) == 2 and swd["images"] == 32  # 32px: levels 32 and 16
    assert swd["samples"]["average_x1e3"] > swd["floor"]["average_x1e3"] > 0  # 4 training steps: far from real
    assert metrics["prior_fit"]["available"] and 0 < metrics["prior_fit"]["p_value"] <= 1
    assert metrics["prior_fit"]["codes"] == 40 and metrics["prior_fit"]["permutations"] == 20
    assert metrics["reconstruction"]["available"] and metrics["reconstruction"]["mse"] > 0
    assert {"z", "generated_median", "held_out_median"} <= set(metrics["memorization"])
    assert metrics["diversity"]["threshold"] == load_package(package).uniqueness_threshold
    assert 0 <= metrics["diversity"]["rate"] <= 1 and metrics["diversity"]["samples"] == 100
    assert {"slerp", "lerp"} <= set(metrics["interpolation"]) and metrics["interpolation"]["slerp"]["pairs"] == 16
    numbers = _numbers({k: v for k, v in metrics.items() if k != "training"})
    assert len(numbers) > 40 and all(math.isfinite(n) for n in numbers)

    card = (package / "card.md").read_text()
    assert card.startswith("# Model card: tiny@1") and "real vs real" in card
    assert all(f"]({name})" in card for name in ("samples.png", *GRIDS))
    assert "Not included: run `synthgen evaluate --compare`" in card
    assert _size(package / "truncation_sweep.png") == (8 * 34 + 2, 5 * 34 + 2)  # 5 truncations x 8 faces of 32px, 2px gaps
    assert sum((package / name).stat().st_size for name in GRIDS) < 300_000

    # the card's files are not listed in the manifest: the package still loads, verifies and serves
    assert set(load_package(package).manifest["files"]) == listed
    from export.package import verify_package

    assert verify_package(package)[0].endswith("files match their sha256")
    assert ModelRegistry.from_directory(package.parent, "tiny").get("tiny").package.ref == "tiny@1"

    first = _without_timing(metrics)
    assert main(["evaluate", str(package), "--cache-dir", str(cache), *TINY]) == 0  # seeded: the same numbers again
    assert _without_timing(json.loads((package / "metrics.json").read_text())) == first


def test_an_encoderless_package_reports_encoder_metrics_as_unavailable(
    tiny_checkpoint: Path, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from export.package import export_package

    package = tmp_path / "bare"
    export_package(tiny_checkpoint, package, name="bare", with_encoder=False)
    assert main(["evaluate", str(package), "--cache-dir", str(cache), *TINY]) == 0
    metrics = json.loads((package / "metrics.json").read_text())
    for key in ("prior_fit", "reconstruction"):
        assert metrics[key]["available"] is False and "--checkpoint" in metrics[key]["reason"]
    assert not (package / "reconstructions.png").exists()
    assert "| prior fit, reconstruction | unavailable |" in (package / "card.md").read_text()
    assert all(math.isfinite(n) for n in _numbers(metrics))

    # with the checkpoint it was exported from, its torch encoder stands in for encoder.onnx
    assert main(["evaluate", str(package), "--checkpoint", str(tiny_checkpoint), "--cache-dir", str(cache), *TINY]) == 0
    metrics = json.loads((package / "metrics.json").read_text())
    assert metrics["prior_fit"]["available"] and metrics["encoder"].startswith("torch checkpoint")
    assert (package / "reconstructions.png").is_file()

    import torch

    other = tmp_path / "other.pt"
    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    checkpoint["summary"]["note"] = "a different file"
    torch.save(checkpoint, other)
    capsys.readouterr()
    assert main(["evaluate", str(package), "--checkpoint", str(other), "--cache-dir", str(cache), *TINY]) == 2
    assert "not the checkpoint bare@1 was exported from" in capsys.readouterr().err


def test_compare_with_a_tiny_budget_makes_a_table_of_every_kind(tiny_models_dir: Path, tmp_path: Path, cache: Path) -> None:
    out, runs = tmp_path / "compare", tmp_path / "runs"
    budget = ["--image-size", "32", "--count", "64", "--max-steps", "3", "--batch-size", "16", "--latent-dim", "8"]
    budget += ["--base-width", "8", "--out", str(out), "--runs-dir", str(runs), "--cache-dir", str(cache)]
    assert main(["evaluate", "--compare", *budget, *TINY]) == 0

    result = json.loads((out / "compare.json").read_text())
    assert [row["kind"] for row in result["table"]] == ["ae", "ae", "vae", "aae"]
    assert {row["training_steps"] for row in result["table"]} == {3}  # the same budget for every kind
    assert len({row["floor_swd"] for row in result["table"]}) == 1  # the same held-out faces
    for name, kind in (("ae-raw", "ae"), ("ae", "ae"), ("vae", "vae"), ("aae", "aae")):
        assert result["runs"][name]["model"]["kind"] == kind
        assert (runs / name / "card.md").is_file() and (runs / name / "checkpoint.pt").is_file()
    assert result["runs"]["ae-raw"]["model"]["config"]["normalize_codes"] is False
    assert result["runs"]["ae"]["model"]["config"]["normalize_codes"] is True
    assert result["runs"]["vae"]["prior_fit"]["codes_are"] == "posterior samples z ~ q(z|x)"
    table = [line for line in (out / "compare.md").read_text().splitlines() if line.startswith("| ")]
    labels = ["| AE (plain linear codes)", "| AE (normalized codes)", "| VAE", "| AAE"]
    assert [line.split(" | ")[0] for line in table[1:]] == labels
    assert _size(out / "compare_samples.png") == (8 * 34 + 2, 4 * 34 + 2)  # a row per kind

    # --reuse keeps runs of the same budget instead of training them again
    trained = (runs / "aae" / "checkpoint.pt").stat().st_mtime_ns
    assert main(["evaluate", "--compare", "--reuse", *budget, *TINY]) == 0
    assert (runs / "aae" / "checkpoint.pt").stat().st_mtime_ns == trained
    assert json.loads((out / "compare.json").read_text())["table"] == result["table"]

    # the comparison on a package's card, next to the model's own row
    package = _package_copy(tiny_models_dir, tmp_path)
    args = ["evaluate", str(package), "--baselines", str(out / "compare.json"), "--cache-dir", str(cache), *TINY]
    assert main(args) == 0
    card = (package / "card.md").read_text()
    assert "## Comparison with the AE and VAE baselines" in card and "64 `avatars` images at 32px" in card
    rows = [line.split(" | ")[0] for line in card.splitlines() if line.startswith("| ") and "SWD" not in line]
    assert rows[-5:] == ["| **this model** (tiny)", *labels]


def test_evaluate_errors_are_one_clear_line(tiny_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "not-compare.json").write_text("{}")
    cases = [
        (["evaluate"], "expected: synthgen evaluate MODEL"),
        (["evaluate", str(tmp_path / "nowhere")], "neither a model package folder"),
        (["evaluate", "--compare", str(tiny_models_dir / "tiny")], "--compare trains its own models"),
        (["evaluate", str(tiny_models_dir / "tiny"), "--baselines", str(tmp_path / "not-compare.json")], "not a comparison"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tiny_models_dir / "tiny" / "metrics.json").exists()  # nothing was written into the shared fixture


def test_held_out_images_of_folders_and_lfw(tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((20, 20, 3), i * 20, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    after, where = held_out_images({"data": str(folder), "images": 6}, 16, 100, tmp_path / "cache")
    assert len(after) == 4 and after[0, 0, 0, 0] == 120 and "after the training set" in where  # images 6..9
    given, where = held_out_images({"data": "lfw", "images": 100}, 16, 3, tmp_path / "cache", folder)
    assert len(given) == 3 and "--held-out" in where
    with pytest.raises(ValueError, match="pass --held-out"):
        held_out_images({"data": "lfw", "images": 100}, 16, 3, tmp_path / "cache")
    with pytest.raises(ValueError, match="no images after the 10"):
        held_out_images({"data": str(folder), "images": 10}, 16, 3, tmp_path / "cache")
    with pytest.raises(ValueError, match="lacks 'images'"):
        held_out_images({"data": "avatars"}, 16, 3, tmp_path / "cache")


def test_eval_sizes_shrink_to_the_held_out_images() -> None:
    sizes = EvalSizes().fitted(100)
    assert (sizes.swd, sizes.pairs, sizes.prior_codes, sizes.duplicates) == (50, 50, 100, 10000)
    with pytest.raises(ValueError, match="at least 16"):
        EvalSizes().fitted(15)
