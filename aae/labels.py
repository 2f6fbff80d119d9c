"""Labels of training images: what a conditional model is conditioned on, and what its classifier learns.

A label table is a ``LabelTable``: the attribute vocabulary (``{name: [values]}``, in order) and one row
of value indices per image. Sources:

- the avatars, labeled by construction with python_avatars' own field names and lower-case enum value
  names (``AVATAR_ATTRIBUTES``; ``avatar_labels``);
- a folder of images with a label file beside the images: ``labels.csv`` (a ``file`` column, then one
  column per attribute), ``labels.jsonl`` or ``metadata.jsonl`` (one object per image with ``file`` or
  ``file_name``), or CelebA's ``list_attr_celeba.txt`` read as it is (40 binary attributes, ``-1``/``1``
  mapped to ``false``/``true``).

Grouped attributes (``GROUPS``) are coarser views of the avatar fields, the same table for every tool:
``glasses`` (from ``accessory``) and ``expression`` (from ``mouth``). Some values hide others (``hidden``), by
construction: python_avatars paints the hair colour, the facial hair and the accessory only into elements of
the top's own SVG (``Hair-Color``, ``Facial-Hair``, ``Accessory``), so a top without one, or whose hair keeps
a fixed colour, never shows that attribute, whatever its label says: no hair colour under a hat or with
``shaved_sides`` or ``straight_2``, no beard with ``hijab``, ``curly_2``, ``long_hair_curly`` or
``loose_hair``, no glasses with ``long_hair_curly`` (``hidden_by_top`` finds them by rendering). The
classifier is neither trained nor judged on what cannot be seen, and control does not count it.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aae.data import _avatar_parts, avatar_parts, list_images, parts_svg, render_svg
from synthgen.core.attributes import AttributeSpace, label_marginals

# The conditioning fields of the avatars, in the decoder's order. Identity attributes stay fixed across the
# images of one identity; the others are what varies (expression, clothes).
AVATAR_FIELDS = (
    "skin_color",
    "hair_color",
    "top",
    "facial_hair",
    "accessory",
    "eyes",
    "eyebrows",
    "mouth",
    "clothing",
    "clothing_color",
)
AVATAR_IDENTITY = ("skin_color", "hair_color", "top", "facial_hair", "accessory")
# The attributes a top can hide, each with two of its values that look different wherever it shows.
# python_avatars paints them only into elements of the top's own SVG (Hair-Color, Facial-Hair, Accessory),
# and some tops lack the element or override its colour.
TOP_PROBES = (
    ("hair_color", ("black", "pastel_pink")),
    ("facial_hair", ("none", "beard_magestic")),
    ("accessory", ("none", "kurt")),
)

# Grouped attributes: name -> {group value: [field values]}, over one avatar field.
GROUPS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "glasses": (
        "accessory",
        {
            "none": ("none", "eyepatch"),
            "prescription": ("kurt", "prescription_1", "prescription_2", "round", "wayfarers", "wayfarers_2"),
            "sunglasses": ("sunglasses", "sunglasses_2"),
        },
    ),
    "expression": (
        "mouth",
        {
            "happy": ("smile", "big_smile", "twinkle", "tongue"),
            "neutral": ("default", "serious", "eating"),
            "sad": ("sad", "concerned", "grimace"),
            "surprised": ("disbelief", "scream_open"),
        },
    ),
}


def value_name(member: Any) -> str:
    """python_avatars enum member -> its lower-case name, the vocabulary's value."""
    return str(member.name).lower()


def avatar_vocabulary() -> dict[str, tuple[str, ...]]:
    """{field: values} of the avatars, in AVATAR_FIELDS order (the values a rendered avatar can have)."""
    choices = _avatar_parts()
    return {name: tuple(dict.fromkeys(value_name(m) for m in choices[name])) for name in AVATAR_FIELDS}


def groups_of(labels: Mapping[str, str]) -> dict[str, str]:
    """The grouped attributes of one image's field labels (those whose field it has)."""
    out = {}
    for group, (field, table) in GROUPS.items():
        if field in labels:
            out[group] = next((g for g, members in table.items() if labels[field] in members), "other")
    return out


@functools.cache
def hidden_by_top() -> dict[str, frozenset[str]]:
    """{top value: the attributes it hides}, found by rendering: a top hides an attribute when two of its values
    (``TOP_PROBES``) give the same pixels on the same avatar."""
    out = {}
    for top in avatar_vocabulary()["top"]:
        same = [name for name, values in TOP_PROBES if _renders_alike(top, name, values)]
        out[top] = frozenset(same)
    return out


def _renders_alike(top: str, name: str, values: tuple[str, str]) -> bool:
    a, b = (render_labeled({"top": top, name: value}, 0, 1, 64) for value in values)
    return bool(np.array_equal(a, b))


def hidden(labels: Mapping[str, str]) -> set[str]:
    """The attributes of an image that its other values hide (nothing to see, nothing to classify)."""
    top = labels.get("top")
    return set(hidden_by_top().get(top, ())) if top is not None else set()


@dataclass(frozen=True)
class LabelTable:
    values: dict[str, tuple[str, ...]]
    codes: np.ndarray  # int64 [N, len(values)]
    identity: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def rows(self) -> list[dict[str, str]]:
        names = list(self.values)
        return [{n: self.values[n][int(c)] for n, c in zip(names, row, strict=True)} for row in self.codes]

    def space(self) -> AttributeSpace:
        """The attribute space of these labels, in their order, with their marginals (a model's training labels)."""
        return AttributeSpace(self.values, self.identity, label_marginals(self.values, self.codes))

    def visible(self) -> np.ndarray:
        """bool [N, len(values)]: whether each label can be seen in its image."""
        names = list(self.values)
        out = np.ones(self.codes.shape, dtype=bool)
        for i, row in enumerate(self.rows()):
            for name in hidden(row):
                out[i, names.index(name)] = False
        return out


def avatar_labels(count: int, seed: int = 0, start: int = 0) -> LabelTable:
    """The labels of avatars ``start`` .. ``start + count - 1`` of dataset ``seed`` (no rendering needed)."""
    values = avatar_vocabulary()
    lookup = {name: {v: i for i, v in enumerate(vals)} for name, vals in values.items()}
    codes = np.empty((count, len(values)), dtype=np.int64)
    for i in range(count):
        parts = avatar_parts(seed, start + i)
        codes[i] = [lookup[name][value_name(parts[name])] for name in AVATAR_FIELDS]
    return LabelTable(values, codes, AVATAR_IDENTITY)


def render_labeled(labels: Mapping[str, str], seed: int, index: int, size: int = 64) -> np.ndarray:
    """Avatar ``index`` of dataset ``seed`` with its labeled fields set to ``labels``: an image that shows
    exactly the values asked for (the renderer as a perfectly controlled generator). uint8 [size, size, 3]."""
    choices = _avatar_parts()
    parts = avatar_parts(seed, index)
    for name, value in labels.items():
        parts[name] = next(m for m in choices[name] if value_name(m) == value)
    return render_svg(parts_svg(parts), size)


LABEL_FILES = ("labels.csv", "labels.jsonl", "metadata.jsonl", "list_attr_celeba.txt")


def _celeba(path: Path) -> dict[str, dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    names = lines[1].split()
    out = {}
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}: a line has {len(parts) - 1} values for {len(names)} attributes: {line[:60]!r}")
        out[parts[0]] = {n: ("true" if v == "1" else "false") for n, v in zip(names, parts[1:], strict=True)}
    return out


def _rows_of(path: Path) -> dict[str, dict[str, str]]:
    """file name -> {attribute: value} from one label file."""
    if path.name == "list_attr_celeba.txt":
        return _celeba(path)
    rows: list[dict[str, object]]
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = {}
    for number, row in enumerate(rows, start=1):
        key = row.pop("file", None) or row.pop("file_name", None)
        if not key:
            raise ValueError(f"{path}: row {number} has no 'file' (or 'file_name') naming its image")
        out[str(key)] = {k: str(v) for k, v in row.items() if isinstance(v, str | int | bool)}
    return out


def find_label_file(folder: str | Path) -> Path | None:
    root = Path(folder)
    return next((root / name for name in LABEL_FILES if (root / name).is_file()), None)


def folder_labels(folder: str | Path, paths: Sequence[Path] | None = None, label_file: str | Path | None = None) -> LabelTable:
    """Labels of a folder's images (``list_images`` order), from its label file; every image needs a row."""
    root = Path(folder)
    source = Path(label_file) if label_file else find_label_file(root)
    if source is None:
        raise FileNotFoundError(f"{root}: no label file ({', '.join(LABEL_FILES)})")
    table = _rows_of(source)
    paths = list_images(root) if paths is None else list(paths)
    rows = []
    for path in paths:
        row = table.get(path.relative_to(root).as_posix()) or table.get(path.name)
        if row is None:
            raise ValueError(f"{source}: no labels for image {path.relative_to(root)}")
        rows.append(row)
    names = list(rows[0]) if rows else []
    values = {n: tuple(sorted({r[n] for r in rows if n in r})) for n in names}
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        if missing:
            raise ValueError(f"{source}: image {paths[i].name} lacks {missing}")
    codes = np.array([[values[n].index(r[n]) for n in names] for r in rows], dtype=np.int64).reshape(len(rows), len(names))
    return LabelTable(values, codes)


def load_labels(source: str, count: int, seed: int = 0, start: int = 0) -> LabelTable | None:
    """The labels of ``load_dataset(source, count, seed=seed, start=start)``'s images; None without labels."""
    if source == "avatars":
        return avatar_labels(count, seed, start)
    if source == "lfw" or find_label_file(source) is None:
        return None
    paths = list_images(source)[start : start + count]
    return folder_labels(source, paths)
