"""Who is in the crowd, from pipelines: the Python client, ``synthgen generate`` (with --server and
in-process) and its Hugging Face ImageFolder layout, loaded with the real ``datasets`` library.

Against a real server (uvicorn on 127.0.0.1, a worker, a real redis-server) on the tiny conditional
package (tests/support/conditional_model.py).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.api.app import create_app
from service.settings import Settings
from synthgen.cli import main
from synthgen.client import AsyncSynthgenClient, InvalidRequestError, ModelInfo, SynthgenClient
from synthgen.core import imagefolder
from synthgen.crowd_options import parse_distribution
from synthgen.remote import STATE_FILE
from tests.support.conditional_model import ConditionalModel

ASGIApp = Callable[..., Any]


@dataclass(frozen=True)
class Choice:
    """What the tests ask for: a fixed value of one attribute, two values with shares of another."""

    fixed: str  # an identity attribute
    value: str
    shared: str  # not an identity attribute: its quota counts images
    values: tuple[str, str]


def choose(model: ModelInfo) -> Choice:
    identity = [n for n in model.identity_attributes if len(model.attributes[n]) >= 2]
    varying = [n for n, v in model.attributes.items() if n not in model.identity_attributes and len(v) >= 2]
    assert identity and varying, model.attributes
    fixed, shared = identity[0], varying[0]
    return Choice(fixed, model.attributes[fixed][-1], shared, (model.attributes[shared][0], model.attributes[shared][1]))


@pytest.fixture
def conditional_server(redis_url: str, tiny_conditional: ConditionalModel, uvicorn_thread: Callable[[ASGIApp], str]) -> str:
    """The real app with a worker, on the tiny conditional package, served by uvicorn on 127.0.0.1."""
    settings = Settings(
        redis_url=redis_url, models_dir=tiny_conditional.models_dir, default_model=tiny_conditional.name, chunk_size=8
    )
    return uvicorn_thread(create_app(settings, with_worker=True))


def test_the_client_asks_for_a_crowd_and_reads_its_labels(conditional_server: str, tiny_conditional: ConditionalModel) -> None:
    manifest = json.loads((tiny_conditional.package / "manifest.json").read_text())
    with SynthgenClient(conditional_server) as client:
        [model] = client.models()
        assert model.conditional and model.ref == tiny_conditional.ref
        assert model.attributes == manifest["attributes"]["values"]
        assert model.identity_attributes == manifest["attributes"]["identity"]
        pick = choose(model)

        # a fixed value, and exact shares of another attribute's values: 3 and 7 of 10 images
        shares = {pick.values[0]: 0.3, pick.values[1]: 0.7}
        job = client.create_job(10, seed=5, attributes={pick.fixed: pick.value}, distribution={pick.shared: shares})
        assert job.count == 10 and job.attributes == {pick.fixed: pick.value}
        assert job.distribution == {pick.shared: shares} and job.identities is None
        samples = list(client.iter_samples(job.id))
        assert [s.index for s in samples] == list(range(10))
        assert all(s.attributes[pick.fixed] == pick.value for s in samples)
        assert Counter(s.attributes[pick.shared] for s in samples) == {pick.values[0]: 3, pick.values[1]: 7}
        assert all(s.identity is None for s in samples)
        assert set(samples[0].attributes) == set(model.attributes)

        # the card counts every image of the finished job
        assert client.wait(job.id, poll_interval=0.05, timeout=60).status == "succeeded"
        card = client.card(job.id)
        assert card.startswith("---\n") and "machine-generated" in card and pick.shared in card

        # an unknown value: 400 invalid_request, naming the field and listing what is allowed
        with pytest.raises(InvalidRequestError) as refused:
            client.create_job(4, attributes={pick.fixed: "no-such-value"})
        assert refused.value.details["field"] == f"attributes.{pick.fixed}"
        assert refused.value.details["allowed"] == model.attributes[pick.fixed]

    # identities with the async client: count omitted, image i belongs to identity i // per_identity
    async def identities() -> tuple[int, list[tuple[int, int | None, str]]]:
        async with AsyncSynthgenClient(conditional_server) as client:
            job = await client.create_job(seed=8, identities=3, per_identity=4, variation=0.2)
            assert (job.identities, job.per_identity, job.variation) == (3, 4, 0.2)
            rows = [(s.index, s.identity, s.attributes[pick.fixed]) async for s in client.iter_samples(job.id)]
            return job.count, rows

    count, rows = asyncio.run(identities())
    assert count == 12 and [(i, who) for i, who, _ in rows] == [(i, i // 4) for i in range(12)]
    for identity in range(3):  # an identity attribute stays fixed within an identity
        assert len({value for _, who, value in rows if who == identity}) == 1


def _load_imagefolder(folder: Path, cache: Path) -> Any:
    try:
        import datasets
    except ImportError as exc:  # the test extra installs it; without it this check cannot run at all
        pytest.skip(f"the datasets library is not installed ({exc}): pip install -e '.[test]'")
    return datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(cache))


def test_generate_writes_an_imagefolder_that_datasets_loads(
    conditional_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SynthgenClient(conditional_server) as client:
        pick = choose(client.models()[0])
    out = tmp_path / "faces"
    args = [
        "generate", "--server", conditional_server, "--seed", "3", "--identities", "3", "--per-identity", "2",
        "--attribute", f"{pick.fixed}={pick.value}", "--distribution", f"{pick.shared}={pick.values[0]}:50%,{pick.values[1]}:50%",
        "--layout", "imagefolder", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    assert "a Hugging Face ImageFolder" in capsys.readouterr().out
    names = [f"{i:08d}.png" for i in range(6)]
    assert sorted(p.name for p in (out / imagefolder.SPLIT).iterdir()) == [*names, imagefolder.METADATA]
    assert sorted(p.name for p in out.iterdir()) == [STATE_FILE, imagefolder.CARD, imagefolder.SPLIT]

    # README.md is the job's card; metadata.jsonl has one line per image with its own fields
    job_id = json.loads((out / STATE_FILE).read_text())["job_id"]
    with SynthgenClient(conditional_server) as client:
        assert (out / imagefolder.CARD).read_text(encoding="utf-8") == client.card(job_id)
        samples = list(client.iter_samples(job_id))
    lines = [json.loads(line) for line in (out / imagefolder.SPLIT / imagefolder.METADATA).read_text().splitlines()]
    assert [line["file_name"] for line in lines] == names
    assert [line["identity"] for line in lines] == [0, 0, 1, 1, 2, 2]
    assert all(line["seed"] == 3 and "latent" not in line and "model" not in line for line in lines)
    assert [line["attributes"] for line in lines] == [s.attributes for s in samples]
    assert all((out / imagefolder.SPLIT / n).read_bytes() == s.files[n] for n, s in zip(names, samples, strict=True))

    # the real datasets library reads it: the images, and the per-image fields as columns
    dataset = _load_imagefolder(out, tmp_path / "hf-cache")
    assert len(dataset) == 6
    assert {"image", "index", "seed", "identity", "attributes"} <= set(dataset.column_names)
    assert dataset["index"] == list(range(6)) and dataset["identity"] == [0, 0, 1, 1, 2, 2]
    assert all(row[pick.fixed] == pick.value for row in dataset["attributes"])
    assert Counter(row[pick.shared] for row in dataset["attributes"]) == {pick.values[0]: 3, pick.values[1]: 3}
    with Image.open(io.BytesIO(samples[4].files[names[4]])) as expected:
        assert dataset[4]["image"].size == (32, 32) and np.array_equal(np.asarray(dataset[4]["image"]), np.asarray(expected))

    # the same command again: everything is there, nothing is asked for
    assert main(args) == 0 and "already" in capsys.readouterr().out
    # the same folder with another crowd: refused, the folder holds another job
    assert main([*args[:-2], "--variation", "0.9", "--out", str(out)]) == 2
    assert "variation" in capsys.readouterr().err


def test_generate_in_process_takes_the_same_crowd(
    conditional_server: str, tiny_conditional: ConditionalModel, tmp_path: Path
) -> None:
    with SynthgenClient(conditional_server) as client:
        pick = choose(client.models()[0])
    crowd = [
        "--seed", "11", "--identities", "2", "--per-identity", "3", "--variation", "0.5",
        "--attribute", f"{pick.fixed}={pick.value}", "--distribution", f"{pick.shared}={pick.values[0]}:0.25,{pick.values[1]}:0.75",
    ]  # fmt: skip
    local = ["generate", *crowd, "--models-dir", str(tiny_conditional.models_dir), "--model", tiny_conditional.name]
    assert main([*local, "--out", str(tmp_path / "local")]) == 0
    assert main(["generate", *crowd, "--server", conditional_server, "--out", str(tmp_path / "remote")]) == 0
    files = {p.name: p.read_bytes() for p in sorted((tmp_path / "local").iterdir())}
    assert sorted(files) == [f"{i:08d}.png" for i in range(6)] + ["manifest.jsonl"]
    remote = {p.name: p.read_bytes() for p in sorted((tmp_path / "remote").iterdir()) if not p.name.startswith(".")}
    assert files == remote, "in-process and server images (and manifests) differ"
    lines = [json.loads(line) for line in files["manifest.jsonl"].splitlines()]
    assert [line["identity"] for line in lines] == [0, 0, 0, 1, 1, 1]
    assert Counter(line["attributes"][pick.shared] for line in lines) == {pick.values[0]: 2, pick.values[1]: 4}


def test_generate_refuses_a_crowd_the_model_cannot_make_in_one_line(
    tiny_conditional: ConditionalModel, tiny_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cond = ["--models-dir", str(tiny_conditional.models_dir), "--model", tiny_conditional.name, "--out", str(tmp_path / "x")]
    assert main(["generate", "--count", "4", "--attribute", "no_such_attribute=x", *cond]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synthgen generate: error: attributes.no_such_attribute") and "\n" not in err
    assert main(["generate", "--count", "5", "--identities", "2", "--per-identity", "3", *cond]) == 2
    assert "disagrees with identities x per_identity" in capsys.readouterr().err
    plain = ["--models-dir", str(tiny_models_dir), "--model", "tiny", "--out", str(tmp_path / "y")]
    assert main(["generate", "--count", "4", "--attribute", "glasses=none", *plain]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert main(["generate", *plain]) == 2
    assert "count: required" in capsys.readouterr().err
    assert main(["generate", "--count", "2", "--layout", "imagefolder", "--format", "npy", *plain]) == 2
    assert "image format" in capsys.readouterr().err


def test_distribution_option_parses_fractions_and_percentages() -> None:
    assert parse_distribution("skin_color=light:0.25, black:75%") == ("skin_color", {"light": 0.25, "black": 0.75})
    for bad in ("skin_color", "skin_color=light", "skin_color=light:lots", "=light:1"):
        with pytest.raises(Exception, match="--distribution"):
            parse_distribution(bad)
