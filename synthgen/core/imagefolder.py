"""The Hugging Face ImageFolder layout of a generated dataset, as ``datasets.load_dataset("imagefolder")`` reads it.

    OUT/README.md                  the dataset card
    OUT/train/{key}.{ext}          the images
    OUT/train/metadata.jsonl       one line per image: its file_name and its own fields

A line holds what differs between images (``RECORD_FIELDS``: index, seed, identity, attributes, predicted,
source_index); what all of them share (model, sha256, the request) is in the card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LAYOUTS = ("files", "imagefolder")  # what synthgen generate writes; files ({key}.{ext}, manifest.jsonl) by default
SPLIT = "train"
METADATA = "metadata.jsonl"
CARD = "README.md"
RECORD_FIELDS = ("index", "seed", "source_index", "identity", "attributes", "predicted")
UNSUPPORTED_FORMATS = ("npy",)  # not an image file the loader can open


def metadata_record(file_name: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """One line of ``metadata.jsonl`` for an image and its sample JSON; fields a sample lacks are left out."""
    return {"file_name": file_name, **{name: meta[name] for name in RECORD_FIELDS if name in meta}}
