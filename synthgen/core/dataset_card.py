"""The dataset card of a job: markdown with the YAML front matter of a Hugging Face dataset card.

It says what a job's data set is and how it was made: the model and its sha256, the request, the counts,
and per attribute the requested histogram (the values the images were conditioned on, ``requested_counts``:
a pure function of the request, so it is computed, not stored) next to the predicted one (the package's
classifier on every image, counted by the workers once per chunk).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthgen.core.attributes import AttributeSpace
from synthgen.core.crowd import Crowd
from synthgen.core.images import EXTENSIONS

BLOCK = 1 << 16  # images per block when the requested histogram is counted: bounded memory for any count
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
Histogram = dict[str, dict[str, int]]  # {name: {value: images}}


def requested_counts(crowd: Crowd, space: AttributeSpace, seed: int, count: int) -> Histogram:
    """Per attribute, how many of the job's ``count`` images are conditioned on each value."""
    out: Histogram = {name: dict.fromkeys(values, 0) for name, values in space.values.items()}
    if not space:
        return out
    for start in range(0, count, BLOCK):
        codes = crowd.codes(space, seed, count, np.arange(start, min(count, start + BLOCK), dtype=np.int64))
        for column, (name, values) in enumerate(space.values.items()):
            for value, n in zip(values, np.bincount(codes[:, column], minlength=len(values)), strict=True):
                out[name][value] += int(n)
    return out


def size_category(count: int) -> str:
    return next((label for bound, label in SIZE_CATEGORIES if count < bound), "1M<n<10M")


@dataclass(frozen=True)
class CardFacts:
    """Everything a job's card states."""

    job_id: str
    model: str  # name@version
    sha256: str
    request: dict[str, Any]  # the body that makes the job again
    count: int
    fmt: str
    crowd: Crowd
    space: AttributeSpace
    requested: Histogram
    predicted: Histogram | None  # None: the package has no classifier, or the job asked for no labels
    agreement: dict[str, int] = field(default_factory=dict)  # per attribute: images predicted as conditioned
    classifier_accuracy: Mapping[str, float] = field(default_factory=dict)
    finished_at: str = ""  # ISO 8601, UTC


def _front_matter(facts: CardFacts) -> list[str]:
    return [
        "---",
        f"pretty_name: synthgen job {facts.job_id}",
        "annotations_creators:",
        "- machine-generated",
        "source_datasets:",
        "- original",
        "size_categories:",
        f"- {size_category(facts.count)}",
        "tags:",
        "- synthetic",
        "- faces",
        "- synthgen",
        "- webdataset",
        "---",
    ]


def _counts(facts: CardFacts) -> list[str]:
    rows = [("images", str(facts.count)), ("format", facts.fmt)]
    if facts.crowd.identities:
        rows.append(("identities", f"{facts.crowd.identities} x {facts.crowd.per_identity} images"))
    if facts.finished_at:
        rows.append(("finished", facts.finished_at))
    return ["## Counts", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f}%)" if total else str(n)


def _attribute_tables(facts: CardFacts) -> list[str]:
    if not facts.space:
        return ["## Attributes", "", "The model is unconditional: its images carry no attribute labels."]
    lines = ["## Attributes", ""]
    lines.append(
        "*requested*: the values the images were conditioned on (named in the request, or drawn from the training "
        "labels' distribution). *predicted*: the package's attribute classifier on each image."
        if facts.predicted is not None
        else "*requested*: the values the images were conditioned on (named in the request, or drawn from the "
        "training labels' distribution). "
        + (
            "The job asked for no labels (`labels: false`), so nothing is predicted."
            if facts.request.get("labels") is False
            else "The package has no attribute classifier, so nothing is predicted."
        )
    )
    for name, values in facts.space.values.items():
        how = "fixed" if name in facts.crowd.attributes else "quota" if name in facts.crowd.distribution else "drawn"
        identity = ", identity attribute" if name in facts.space.identity else ""
        lines += ["", f"### {name} ({how}{identity})", ""]
        if facts.predicted is None:
            lines += ["| value | requested |", "|---|---:|"]
            lines += [f"| {v} | {_share(facts.requested[name][v], facts.count)} |" for v in values]
            continue
        lines += ["| value | requested | predicted |", "|---|---:|---:|"]
        predicted = facts.predicted.get(name, {})
        lines += [
            f"| {v} | {_share(facts.requested[name][v], facts.count)} | {_share(predicted.get(v, 0), facts.count)} |"
            for v in values
        ]
        if name in facts.agreement:
            lines += ["", f"Predicted as conditioned: {_share(facts.agreement[name], facts.count)} of the images."]
    return lines


def _how_it_was_made(facts: CardFacts) -> list[str]:
    lines = [
        "## How it was made",
        "",
        f"Generated by synthgen from the model package `{facts.model}` (decoder sha256 `{facts.sha256}`): an "
        "adversarial autoencoder's decoder, exported to ONNX. Image i is a pure function of the model, the seed, "
        "i and the request, so the same request gives the same bytes.",
        "",
        "Each image's `{key}.json` holds its index, seed and latent"
        + (", the attribute values it was conditioned on (`attributes`)" if facts.space else "")
        + (", the classifier's labels (`predicted`: value and confidence)" if facts.predicted is not None else "")
        + (", and its identity (`identity` = index // per_identity)" if facts.crowd.identities else "")
        + ".",
        "",
        "Annotations are machine-generated: the conditioning is chosen by the request and the model's training "
        "label distribution, and the predicted labels come from a classifier, not from people.",
    ]
    if facts.classifier_accuracy:
        accuracy = ", ".join(f"{n} {100 * a:.1f}%" for n, a in facts.classifier_accuracy.items())
        lines += ["", f"The classifier's accuracy on held-out real renders: {accuracy}."]
    lines += ["", "To make it again, `POST /v1/jobs` with the request above."]
    return lines


def dataset_card(facts: CardFacts) -> str:
    """The card as markdown text."""
    lines = [
        *_front_matter(facts),
        "",
        f"# synthgen job {facts.job_id}",
        "",
        f"{facts.count} synthetic faces from `{facts.model}`, in the WebDataset layout: `{{key}}.{EXTENSIONS[facts.fmt]}` "
        "and `{key}.json` per image, `key` the zero-padded index.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{facts.model}` |",
        f"| sha256 | `{facts.sha256}` |",
        "",
        "## Request",
        "",
        "```json",
        json.dumps(facts.request, indent=2),
        "```",
        "",
        *_counts(facts),
        "",
        *_attribute_tables(facts),
        "",
        *_how_it_was_made(facts),
    ]
    return "\n".join(lines) + "\n"
