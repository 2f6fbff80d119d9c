"""The attribute classifier: what a generated image shows, in the model's own attribute vocabulary.

A small CNN (``AttributeClassifier``: stride-2 and stride-1 3x3 convolutions with BatchNorm, global average
pooling, one linear head) gives ``condition_dim`` logits, one block of columns per attribute in
``AttributeSpace`` order; a softmax within each block (``block_softmax``) gives each attribute's value
probabilities, the layout of the package's ``classifier.onnx``. It is trained with one cross-entropy per
attribute on labeled real images (``aae/labels.py``: avatars by construction, or a folder's label file),
leaving out the labels that an image's other values hide (``hidden``: no hair colour under a hat).

Its accuracy is measured on held-out real images that no training used (``held_out_data``): for avatars,
another dataset seed; for a folder, the images after the training ones. Any ``AttributeSpace`` works.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aae.data import load_dataset
from aae.labels import LabelTable, load_labels
from synthgen.core.attributes import AttributeSpace
from synthgen.core.files import atomic_file
from synthgen.core.predictions import predicted_codes

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "synthgen.classifier/1"
HELD_OUT_SEED = 7  # the avatars' held-out dataset seed: neither the models nor the classifier train on it
HELD_OUT_COUNT = 2000


@dataclass
class ClassifierConfig:
    image_size: int = 64  # square images, a power of two from 32 to 128 (the package's image size)
    channels: int = 3
    width: int = 32  # channels of the first stage; doubled at each down-sampling
    attributes: dict[str, Any] = field(default_factory=dict)  # AttributeSpace.to_manifest(): the output columns

    def __post_init__(self) -> None:
        if self.image_size not in (32, 64, 128):
            raise ValueError(f"image_size must be 32, 64 or 128, got {self.image_size}")
        if not self.space:
            raise ValueError("a classifier needs at least one attribute")

    @property
    def space(self) -> AttributeSpace:
        return AttributeSpace.from_manifest(self.attributes)

    @property
    def stages(self) -> int:
        """Stride-2 stages down to the 8x8 feature map that is pooled."""
        return (self.image_size // 8).bit_length() - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conv(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class AttributeClassifier(nn.Module):
    """Image [B, C, H, W] in [0, 1] -> logits [B, condition_dim], one block per attribute."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch = config.channels
        for i in range(config.stages):
            width = min(config.width * 2**i, 512)
            layers += _conv(in_ch, width, 2) + _conv(width, width, 1)
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, config.space.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x * 2 - 1).mean(dim=(2, 3))  # global average pooling
        out: torch.Tensor = self.head(h)
        return out


def block_softmax(logits: torch.Tensor, space: AttributeSpace) -> torch.Tensor:
    """Logits [B, dim] -> probabilities [B, dim]: a softmax within each attribute's block of columns."""
    blocks = [torch.softmax(logits[:, s : s + len(space.values[n])], dim=1) for n, s in space.offsets().items()]
    return torch.cat(blocks, dim=1)


def attribute_losses(logits: torch.Tensor, codes: torch.Tensor, visible: torch.Tensor, space: AttributeSpace) -> torch.Tensor:
    """One cross-entropy per attribute [len(names)], each over the images where that attribute can be seen."""
    losses = []
    for column, (name, start) in enumerate(space.offsets().items()):
        block = logits[:, start : start + len(space.values[name])]
        mask = visible[:, column].to(block.dtype)
        ce = F.cross_entropy(block, codes[:, column], reduction="none")
        losses.append((ce * mask).sum() / mask.sum().clamp(min=1.0))
    return torch.stack(losses)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light augmentation that changes no label: shifts of up to 1/32 of the side, and a random partial blur
    (the decoder's images are softer than the renders). No flips, no colour changes: those are labels."""
    n, _, h, w = x.shape
    s = max(1, h // 32)
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    dy, dx = torch.randint(0, 2 * s + 1, (2, n), generator=generator).tolist()
    x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    amount = torch.rand(n, 1, 1, 1, generator=generator) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.5)
    return x + amount.to(x.device) * (blurred - x)


def load_labeled(
    source: str, count: int, size: int, seed: int = 0, start: int = 0, cache_dir: str | None = None
) -> tuple[np.ndarray, LabelTable]:
    """Images uint8 [N, size, size, 3] and their labels, from ``source`` (avatars or a labeled folder)."""
    table = load_labels(source, count, seed, start)
    if table is None:
        raise ValueError(f"{source}: no labels to train or judge a classifier on (see aae/labels.py)")
    images = load_dataset(source, count, size, seed, cache_dir, start)
    if len(images) != len(table):
        raise ValueError(f"{source}: {len(table)} labels for {len(images)} images")
    return images, table


def codes_in(space: AttributeSpace, table: LabelTable) -> tuple[np.ndarray, np.ndarray]:
    """A label table's rows as value indices of ``space`` [N, len(names)], and which of them it knows.

    A folder's held-out slice has its own vocabulary (the values it happens to hold); a value the space
    lacks, or an attribute the table lacks, is unknown.
    """
    codes = np.zeros((len(table), len(space.names)), dtype=np.int64)
    known = np.zeros(codes.shape, dtype=bool)
    names = list(table.values)
    for column, name in enumerate(space.names):
        if name not in table.values:
            continue
        lookup = np.array([space.values[name].index(v) if v in space.values[name] else -1 for v in table.values[name]])
        mapped = lookup[table.codes[:, names.index(name)]]
        known[:, column] = mapped >= 0
        codes[:, column] = np.maximum(mapped, 0)
    return codes, known


def accuracy(space: AttributeSpace, predicted: np.ndarray, table: LabelTable) -> dict[str, float]:
    """Per attribute, the fraction of the visible labels that the prediction [N, len(names)] gets right."""
    truth, known = codes_in(space, table)
    visible, names = table.visible(), list(table.values)
    out = {}
    for column, name in enumerate(space.names):
        counted = known[:, column] & (visible[:, names.index(name)] if name in names else False)
        if counted.any():
            out[name] = round(float((predicted[counted, column] == truth[counted, column]).mean()), 4)
    return out


def predict(model: AttributeClassifier, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Probabilities [N, dim] of uint8 images [N, H, W, C] (torch; the package runs classifier.onnx)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).permute(0, 3, 1, 2).float() / 255.0
            out.append(block_softmax(model(x), model.config.space).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.space.dim), dtype=np.float32)


@dataclass
class ClassifierOptions:
    data: str = "avatars"  # "avatars" or a folder of images with a label file
    count: int = 20000  # training images
    seed: int = 0  # the avatars' dataset seed
    start: int = 0  # the first training image (a folder: list_images order)
    image_size: int = 64
    width: int = 32
    batch_size: int = 128
    steps: int = 3000
    max_minutes: float | None = None  # also stop after this much training time (the schedule follows whichever is first)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    train_seed: int = 0  # initialization, data order and augmentation
    threads: int | None = None
    bf16: bool = False  # bfloat16 autocast for the forward pass (the weights and the optimizer stay float32)
    held_out_seed: int = HELD_OUT_SEED
    held_out_count: int = HELD_OUT_COUNT
    cache_dir: str | None = "cache"
    out_dir: str = "runs/classifier"
    log_every: int = 100

    def __post_init__(self) -> None:
        if self.data == "avatars" and self.held_out_seed == self.seed:
            raise ValueError(f"the held-out avatars need a dataset seed of their own, not the training seed {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_out_data(options: ClassifierOptions) -> dict[str, Any]:
    """Where the held-out images come from: avatars of another seed, or a folder's images after the training ones."""
    if options.data == "avatars":
        return {"data": "avatars", "seed": options.held_out_seed, "start": 0, "count": options.held_out_count}
    return {"data": options.data, "seed": 0, "start": options.start + options.count, "count": options.held_out_count}


def held_out_set(held_out: dict[str, Any], size: int, cache_dir: str | None = None) -> tuple[np.ndarray, LabelTable]:
    return load_labeled(held_out["data"], held_out["count"], size, held_out["seed"], held_out["start"], cache_dir)


def _learning_rate(options: ClassifierOptions, progress: float) -> float:
    """Linear warm-up over the first 3%, then a cosine down to zero at the end of the run."""
    if progress < 0.03:
        return options.lr * max(progress / 0.03, 0.05)
    return options.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.03) / 0.97)))


class _Batches:
    """Mini-batches of a shuffled epoch after another, from uint8 tensors."""

    def __init__(self, images: np.ndarray, table: LabelTable, batch_size: int, generator: torch.Generator) -> None:
        self.x = torch.from_numpy(images).permute(0, 3, 1, 2)  # uint8 [N, C, H, W], a view
        self.codes = torch.from_numpy(table.codes)
        self.visible = torch.from_numpy(table.visible())
        self.batch_size = min(batch_size, len(images))
        self.generator = generator
        self.order = torch.randperm(len(images), generator=generator)
        self.position = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.position + self.batch_size > len(self.order):
            self.order, self.position = torch.randperm(len(self.order), generator=self.generator), 0
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        x = (self.x[idx].float() / 255.0).contiguous(memory_format=torch.channels_last)
        return x, self.codes[idx], self.visible[idx]


def _fit(model: AttributeClassifier, batches: _Batches, options: ClassifierOptions, generator: torch.Generator) -> dict[str, Any]:
    space = model.config.space
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    budget = options.max_minutes * 60 if options.max_minutes else math.inf
    started, step, window = time.perf_counter(), 0, []
    model.train()
    while step < options.steps:
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            break
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(options, max(step / options.steps, elapsed / budget))
        x, codes, visible = batches.next()
        if options.augment:
            x = augment(x, generator).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.bf16):
            logits = model(x)
        loss = attribute_losses(logits.float(), codes, visible, space).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        window.append(loss.item())
        if step % options.log_every == 0:
            log.info("classifier step %d: loss %.4f (%.0f images/s)", step, np.mean(window), step * batches.batch_size / elapsed)
            window = []
    seconds = time.perf_counter() - started
    return {"steps": step, "seconds": round(seconds, 1), "images_seen": step * batches.batch_size}


def train_classifier(options: ClassifierOptions) -> Path:
    """Train a classifier on ``options.data``'s labels, measure it on held-out images; return its checkpoint.

    ``options.threads`` holds for this call only: torch's thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    try:
        if options.threads:
            torch.set_num_threads(options.threads)
        return _train(options)
    finally:
        torch.set_num_threads(threads)


def _train(options: ClassifierOptions) -> Path:
    torch.manual_seed(options.train_seed)
    generator = torch.Generator().manual_seed(options.train_seed)
    images, table = load_labeled(options.data, options.count, options.image_size, options.seed, options.start, options.cache_dir)
    space = table.space()
    model = AttributeClassifier(ClassifierConfig(options.image_size, images.shape[3], options.width, space.to_manifest()))
    log.info("classifier: %d attributes (%d columns) on %d images of %s", len(space.names), space.dim, len(images), options.data)
    cast(Any, model).to(memory_format=torch.channels_last)  # NHWC convolutions: faster on CPU (torch's stubs lack the keyword)
    summary = _fit(model, _Batches(images, table, options.batch_size, generator), options, generator)
    cast(Any, model).to(memory_format=torch.contiguous_format)
    held_out = held_out_data(options)
    test_images, test_table = held_out_set(held_out, options.image_size, options.cache_dir)
    held_out["count"] = len(test_images)
    summary.update(
        held_out=held_out, accuracy=accuracy(space, predicted_codes(space, predict(model, test_images))[0], test_table)
    )
    log.info("classifier held-out accuracy: %s", json.dumps(summary["accuracy"]))
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        "options": options.to_dict(),
        "summary": summary,
    }
    path = out / "classifier.pt"
    with atomic_file(path) as f:
        torch.save(checkpoint, f)
    (out / "classifier.json").write_text(json.dumps({"options": options.to_dict(), **summary}, indent=2) + "\n", encoding="utf-8")
    return path


def load_classifier(path: str | Path) -> tuple[AttributeClassifier, dict[str, Any]]:
    """Rebuild a classifier from its checkpoint; returns (model in eval mode, checkpoint)."""
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a classifier checkpoint (format {checkpoint.get('format')!r})")
    model = AttributeClassifier(ClassifierConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint
