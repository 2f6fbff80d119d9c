"""Control over the crowd through the service: attributes, exact quotas, identities, labels and the card.

On the tiny conditional package (tests/support/conditional_model.py), with a classifier shipped in a copy
of it (tests/support/labeled_package.py), a real app and worker on a real redis-server; the worker-kill
test runs real api and worker processes.
"""

from __future__ import annotations

import io
import json
import math
import random
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.support.conditional_model import ConditionalModel
from tests.support.jobs import download_digest, expected_names, finished, wait_job
from tests.support.labeled_package import CLASSIFIER_FILE, add_classifier
from tests.support.live import LiveService, busiest_worker

SEED = 4242
pytestmark = pytest.mark.timeout(900)  # the first test also trains the tiny conditional model


@pytest.fixture(scope="session")
def labeled_models(tiny_conditional: ConditionalModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny conditional package with a classifier in it."""
    models = tmp_path_factory.mktemp("labeled-models")
    add_classifier(tiny_conditional.package, models / tiny_conditional.name)
    return models


@pytest.fixture
def client(app_factory: Callable[..., TestClient], labeled_models: Path) -> TestClient:
    return app_factory(models_dir=labeled_models, default_model="tiny-cond", chunk_size=16, batch_size=16)


@pytest.fixture
def space(client: TestClient) -> dict[str, Any]:
    """The model's attributes and identity attributes, as /v1/models lists them."""
    model: dict[str, Any] = client.get("/v1/models").json()["models"][0]
    return model


def _finish(client: TestClient, job_id: str) -> dict[str, Any]:
    return wait_job(client, job_id, finished, timeout_s=300)  # type: ignore[arg-type]


def _samples(client: TestClient, job_id: str) -> tuple[bytes, list[np.ndarray], list[dict[str, Any]]]:
    """The job's result tar, its images and its JSON, in index order."""
    data = client.get(f"/v1/jobs/{job_id}/result").content
    images, metas = [], []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            blob = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(".json"):
                metas.append(json.loads(blob))
            else:
                images.append(np.asarray(Image.open(io.BytesIO(blob))))
    return data, images, metas


def _job(client: TestClient, body: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray], list[dict[str, Any]]]:
    response = client.post("/v1/jobs", json={"seed": SEED, **body})
    assert response.status_code == 202, response.text
    job = response.json()
    assert _finish(client, job["id"])["status"] == "succeeded"
    _, images, metas = _samples(client, job["id"])
    return job, images, metas


def largest_remainder(shares: dict[str, float], n: int) -> dict[str, int]:
    """Written here, apart from synthgen/core/crowd.py: floors, then one more each for the largest
    remainders, ties to the value listed first."""
    floors = {v: math.floor(s * n) for v, s in shares.items()}
    order = sorted(shares, key=lambda v: (floors[v] - shares[v] * n, list(shares).index(v)))
    for v in order[: n - sum(floors.values())]:
        floors[v] += 1
    return floors


def test_models_list_their_attributes_and_identity_attributes(client: TestClient, labeled_models: Path) -> None:
    manifest = json.loads((labeled_models / "tiny-cond" / "manifest.json").read_text())
    model = client.get("/v1/models").json()["models"][0]
    assert model["attributes"] == manifest["attributes"]["values"] and model["attributes"]
    assert model["identity_attributes"] == manifest["attributes"]["identity"]
    assert model["classifier"] == {"accuracy": manifest["classifier"]["accuracy"]}


def test_an_unconditional_model_lists_none_and_refuses_attributes(app_factory: Callable[..., TestClient]) -> None:
    plain = app_factory()
    model = plain.get("/v1/models").json()["models"][0]
    assert (model["attributes"], model["identity_attributes"], model["classifier"]) == ({}, [], None)
    for field in ("attributes", "distribution"):
        body = {"attributes": {"skin_color": "light"}} if field == "attributes" else {"distribution": {"a": {"b": 1}}}
        response = plain.post("/v1/jobs", json={"count": 4, **body})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and error["details"] == {"field": field, "allowed": {}}
    # identities need no attributes: an identity job on an unconditional model shares the identity's code
    job = plain.post("/v1/jobs", json={"identities": 2, "per_identity": 3, "seed": 1}).json()
    assert job["count"] == 6 and (job["identities"], job["per_identity"]) == (2, 3)
    assert _finish(plain, job["id"])["status"] == "succeeded"
    _, _, metas = _samples(plain, job["id"])
    assert [m["identity"] for m in metas] == [0, 0, 0, 1, 1, 1]
    assert all("attributes" not in m and "predicted" not in m for m in metas)


def _bad_bodies(space: dict[str, Any]) -> list[tuple[dict[str, Any], str, Any]]:
    """(body, details.field, details.allowed or None when there is no list) for each kind of bad crowd."""
    names = list(space["attributes"])
    first = names[0]
    values = space["attributes"][first]
    return [
        ({"count": 8, "attributes": {"no_such": "x"}}, "attributes.no_such", sorted(names)),
        ({"count": 8, "attributes": {first: "no_such"}}, f"attributes.{first}", values),
        ({"count": 8, "distribution": {"no_such": {"x": 1.0}}}, "distribution.no_such", sorted(names)),
        ({"count": 8, "distribution": {first: {"no_such": 1.0}}}, f"distribution.{first}.no_such", values),
        ({"count": 8, "distribution": {first: {values[0]: 0.5, values[1]: 0.4}}}, f"distribution.{first}", None),
        ({"count": 8, "distribution": {first: {values[0]: 1.5, values[1]: -0.5}}}, f"distribution.{first}.{values[0]}", None),
        ({"count": 8, "distribution": {first: {}}}, f"distribution.{first}", values),
        (
            {"count": 8, "attributes": {first: values[0]}, "distribution": {first: {values[0]: 1.0}}},
            f"distribution.{first}",
            None,
        ),
        ({"count": 7, "identities": 2, "per_identity": 3}, "count", None),
        ({"identities": 2}, "per_identity", None),
        ({"per_identity": 2}, "identities", None),
    ]


def test_every_bad_crowd_is_a_400_naming_the_field_and_listing_what_is_allowed(client: TestClient, space: dict[str, Any]) -> None:
    for body, field, allowed in _bad_bodies(space):
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and error["details"]["field"] == field, (body, error)
        assert error["message"].startswith(f"{field}: "), error
        if allowed is not None:
            assert error["details"]["allowed"] == allowed, (body, error)
    missing = client.post("/v1/jobs", json={"seed": 1})  # no count and no identities: the schema's own error
    assert missing.status_code == 422 and "count: Field required" in missing.json()["error"]["message"]


@pytest.mark.parametrize("count", [1, 7, 50, 97])
def test_distribution_counts_are_exact_in_the_tar_and_fixed_attributes_are_on_every_image(
    client: TestClient, space: dict[str, Any], count: int
) -> None:
    names = list(space["attributes"])
    fixed, quota = names[0], names[1]
    fixed_value = space["attributes"][fixed][-1]
    values = space["attributes"][quota]
    shares = {values[0]: 0.5, values[1]: 0.3, values[-1]: 0.2} if len(values) > 2 else {values[0]: 0.7, values[1]: 0.3}
    third = {v: 1 / 3 for v in space["attributes"][names[2]][:3]}
    body = {"count": count, "attributes": {fixed: fixed_value}, "distribution": {quota: shares, names[2]: third}}
    _, _, metas = _job(client, body)
    assert [m["index"] for m in metas] == list(range(count))
    assert all(m["attributes"][fixed] == fixed_value for m in metas)
    for name, wanted in ((quota, shares), (names[2], third)):
        got = Counter(m["attributes"][name] for m in metas)
        expected = {v: n for v, n in largest_remainder(wanted, count).items() if n}
        assert dict(got) == expected, (name, count)


def test_the_same_request_gives_the_same_bytes(client: TestClient, space: dict[str, Any]) -> None:
    names = list(space["attributes"])
    values = space["attributes"][names[0]]
    body = {"count": 40, "seed": 9, "distribution": {names[0]: {values[0]: 0.25, values[1]: 0.75}}}
    first, second = (client.post("/v1/jobs", json=body).json() for _ in range(2))
    for job in (first, second):
        assert _finish(client, job["id"])["status"] == "succeeded"
    a, b = (_samples(client, job["id"])[0] for job in (first, second))
    assert a == b
    other = client.post("/v1/jobs", json={**body, "seed": 10}).json()
    _finish(client, other["id"])
    assert _samples(client, other["id"])[0] != a


def test_identities_share_their_identity_attributes_and_vary_the_rest(client: TestClient, space: dict[str, Any]) -> None:
    identity_names = space["identity_attributes"]
    assert identity_names, "the tiny conditional model has identity attributes"
    varying = [n for n in space["attributes"] if n not in identity_names]
    job, _, metas = _job(client, {"identities": 6, "per_identity": 5})
    assert job["count"] == 30 and len(metas) == 30
    by_identity: dict[int, list[dict[str, Any]]] = {}
    for meta in metas:
        assert meta["identity"] == meta["index"] // 5
        by_identity.setdefault(meta["identity"], []).append(meta)
    for members in by_identity.values():
        for name in identity_names:
            assert len({m["attributes"][name] for m in members}) == 1, name
    if varying:  # the rest is drawn per image: across 30 images some non-identity attribute changes within one
        assert any(len({m["attributes"][n] for m in members}) > 1 for members in by_identity.values() for n in varying)
    latents = np.array([m["latent"] for m in metas])
    within = np.linalg.norm(latents[1:5] - latents[0], axis=1).mean()
    across = np.linalg.norm(latents[5::5] - latents[0], axis=1).mean()
    assert within < across  # an identity's images stay near its code


def test_an_identity_attribute_quota_counts_identities(client: TestClient, space: dict[str, Any]) -> None:
    name = space["identity_attributes"][0]
    values = space["attributes"][name]
    _, _, metas = _job(client, {"identities": 5, "per_identity": 3, "distribution": {name: {values[0]: 0.6, values[1]: 0.4}}})
    per_identity = {m["identity"]: m["attributes"][name] for m in metas}
    assert Counter(per_identity.values()) == {values[0]: 3, values[1]: 2}


def test_every_image_is_labeled_by_the_classifier_and_the_card_counts_them(
    client: TestClient, space: dict[str, Any], labeled_models: Path
) -> None:
    names = list(space["attributes"])
    values = space["attributes"][names[1]]
    body = {
        "count": 45,
        "attributes": {names[0]: space["attributes"][names[0]][0]},
        "distribution": {names[1]: {values[0]: 0.6, values[1]: 0.4}},
    }
    job, images, metas = _job(client, body)
    classifier = ort.InferenceSession(str(labeled_models / "tiny-cond" / CLASSIFIER_FILE))
    probabilities = classifier.run(["probabilities"], {"images": np.stack(images)})[0]
    start = 0
    for name, vals in space["attributes"].items():
        block = probabilities[:, start : start + len(vals)]
        start += len(vals)
        for meta, row in zip(metas, block, strict=True):
            assert meta["predicted"][name]["value"] == vals[int(row.argmax())]
            assert meta["predicted"][name]["confidence"] == pytest.approx(float(row.max()), abs=1e-4)

    card = client.get(f"/v1/jobs/{job['id']}/card")
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/markdown")
    text = card.text
    front = text.split("---\n")[1]
    assert "annotations_creators:\n- machine-generated" in front and "size_categories:\n- n<1K" in front
    assert job["model"] in text and client.get("/v1/models").json()["models"][0]["sha256"] in text
    request = json.loads(text.split("```json\n")[1].split("```")[0])
    assert request["count"] == 45 and request["seed"] == SEED and request["distribution"] == body["distribution"]
    for name, vals in space["attributes"].items():
        requested = Counter(m["attributes"][name] for m in metas)
        predicted = Counter(m["predicted"][name]["value"] for m in metas)
        section = text.split(f"### {name} (")[1].split("###")[0]
        for value in vals:
            row = next(line for line in section.splitlines() if line.startswith(f"| {value} |"))
            cells = [c.strip().split(" ")[0] for c in row.strip("|").split("|")]
            assert cells == [value, str(requested[value]), str(predicted[value])], (name, row)
    # the same request gives the same card, but for its id and finish time
    again = client.post("/v1/jobs", json={"seed": SEED, **body}).json()
    _finish(client, again["id"])
    second = client.get(f"/v1/jobs/{again['id']}/card").text

    def _tables(card_text: str) -> str:
        return card_text.split("## Attributes")[1]

    assert _tables(second) == _tables(text)


def test_a_job_without_labels_has_the_same_images_and_json_but_predicted_and_its_card_says_so(
    client: TestClient, space: dict[str, Any]
) -> None:
    names = list(space["attributes"])
    values = space["attributes"][names[1]]
    body = {"count": 21, "distribution": {names[1]: {values[0]: 0.5, values[1]: 0.5}}, "format": "npy"}
    labeled = client.post("/v1/jobs", json={"seed": SEED, **body}).json()
    bare = client.post("/v1/jobs", json={"seed": SEED, **body, "labels": False}).json()
    assert labeled["labels"] is True and bare["labels"] is False
    for job in (labeled, bare):
        assert _finish(client, job["id"])["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{bare['id']}").json()["labels"] is False
    files: dict[str, dict[str, bytes]] = {}
    for job in (labeled, bare):
        with tarfile.open(fileobj=io.BytesIO(client.get(f"/v1/jobs/{job['id']}/result").content)) as tar:
            files[job["id"]] = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    with_labels, without = files[labeled["id"]], files[bare["id"]]
    assert with_labels.keys() == without.keys()
    for name in with_labels:
        if name.endswith(".json"):
            meta = json.loads(with_labels[name])
            assert "predicted" in meta and "predicted" not in json.loads(without[name])
            del meta["predicted"]
            assert json.loads(without[name]) == meta
        else:
            assert with_labels[name] == without[name]  # the same images, byte for byte
    card = client.get(f"/v1/jobs/{bare['id']}/card").text
    assert "`labels: false`" in card and "| value | requested |\n" in card and "predicted |" not in card
    request = json.loads(card.split("```json\n")[1].split("```")[0])
    assert request["labels"] is False
    again = client.post("/v1/jobs", json=request).json()  # the card's request makes the job again, unlabeled
    assert again["labels"] is False and again["seed"] == SEED
    bad = client.post("/v1/jobs", json={"count": 2, "labels": "sometimes"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"  # a schema error, as API.md says
    assert "labels" in bad.text


def test_the_card_follows_the_rules_of_the_other_sub_resources(
    app_factory: Callable[..., TestClient], labeled_models: Path
) -> None:
    idle = app_factory(with_worker=False, models_dir=labeled_models, default_model="tiny-cond")
    job = idle.post("/v1/jobs", json={"count": 5}).json()
    waiting = idle.get(f"/v1/jobs/{job['id']}/card")
    assert waiting.status_code == 409 and waiting.headers["retry-after"] == "1"
    assert waiting.json()["error"]["details"] == {"status": "queued", "done": 0, "count": 5}
    idle.delete(f"/v1/jobs/{job['id']}")
    cancelled = idle.get(f"/v1/jobs/{job['id']}/card")
    assert cancelled.status_code == 409 and cancelled.json()["error"]["details"] == {"status": "cancelled"}
    assert idle.get("/v1/jobs/no-such-job-0000/card").status_code == 404


def test_an_unconditional_job_has_no_labels_and_its_card_says_so(app_factory: Callable[..., TestClient]) -> None:
    plain = app_factory()
    job = plain.post("/v1/jobs", json={"count": 3, "seed": 5}).json()
    _finish(plain, job["id"])
    _, _, metas = _samples(plain, job["id"])
    assert [sorted(m) for m in metas] == [["index", "latent", "model", "seed", "sha256", "truncation"]] * 3
    card = plain.get(f"/v1/jobs/{job['id']}/card").text
    assert "The model is unconditional" in card and "annotations_creators:\n- machine-generated" in card


def test_a_unique_crowd_keeps_its_exact_quotas(client: TestClient, space: dict[str, Any]) -> None:
    names = list(space["attributes"])
    values = space["attributes"][names[1]]
    shares = {values[0]: 0.5, values[1]: 0.5}
    body = {
        "count": 33,
        "unique": True,
        "attributes": {names[0]: space["attributes"][names[0]][0]},
        "distribution": {names[1]: shares},
    }
    _, _, metas = _job(client, body)
    assert Counter(m["attributes"][names[1]] for m in metas) == largest_remainder(shares, 33)
    assert all(m["attributes"][names[0]] == space["attributes"][names[0]][0] for m in metas)
    assert all(m["unique"] for m in metas)
    _, _, plain_metas = _job(client, {k: v for k, v in body.items() if k != "unique"})
    # image i is conditioned on the same values either way: only a replaced candidate's latent differs
    assert [m["attributes"] for m in metas] == [m["attributes"] for m in plain_metas]


def test_sigkill_a_worker_mid_distribution_job_gives_the_same_bytes(
    live_service: Callable[..., LiveService], labeled_models: Path
) -> None:
    """A worker holding work is SIGKILLed mid-job; the job completes with the bytes (and the card) of a
    clean run of the same request: the crowd is in the job record, and each chunk's labels count once."""
    count = 1000
    service = live_service(
        workers=2, SYNTHGEN_MODELS_DIR=str(labeled_models), SYNTHGEN_DEFAULT_MODEL="tiny-cond", SYNTHGEN_CHUNK_SIZE="20"
    )
    service.wait_workers()
    client = service.redis()
    with httpx.Client(base_url=service.base_url, timeout=60) as http:
        model = http.get("/v1/models").json()["models"][0]
        name = list(model["attributes"])[1]
        values = model["attributes"][name]
        body = {"count": count, "seed": SEED, "distribution": {name: {values[0]: 0.45, values[1]: 0.55}}}
        killed = http.post("/v1/jobs", json=body).json()
        wait_job(http, killed["id"], lambda j: j["done"] >= count // 10)
        rng = random.Random(1)
        victim, held = busiest_worker(service, client, rng)
        for _ in range(100):  # between two reads a worker may hold nothing: kill one that holds work
            if held:
                break
            time.sleep(0.01)
            victim, held = busiest_worker(service, client, rng)
        service.kill_worker(victim)
        assert http.get(f"/v1/jobs/{killed['id']}").json()["done"] < count, "the job finished before the kill"
        service.add_worker()
        assert wait_job(http, killed["id"], finished, timeout_s=600)["status"] == "succeeded"
        assert client.scard(service.keys.job_done(killed["id"])) == count // 20  # each chunk counted once
        clean = http.post("/v1/jobs", json=body).json()
        assert wait_job(http, clean["id"], finished, timeout_s=600)["status"] == "succeeded"
        digest, names = download_digest(http, killed["id"])
        assert names == expected_names(count)
        assert digest == download_digest(http, clean["id"])[0], "the killed job's bytes differ from a clean run's"
        card = http.get(f"/v1/jobs/{killed['id']}/card").text
        clean_card = http.get(f"/v1/jobs/{clean['id']}/card").text
        assert card.split("## Attributes")[1] == clean_card.split("## Attributes")[1]
