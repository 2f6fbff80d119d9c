"""An attribute teacher, added to a conditional model: the decoder learns to show the labels it is given.

A conditional decoder takes the labels y beside z, but nothing in the reconstruction phase makes it *use* y
when z says otherwise: the encoder sees the image, so its code can carry a beard's size or a hair colour,
and the decoder may read them from z. Prior samples then show what z happened to say, not what y asked
for. The teacher closes that gap with the auxiliary classifier of AC-GAN (Odena et al. 2017) and StarGAN's
domain-classification loss (Choi et al. 2018):

- the teacher, an ``AttributeClassifier`` trained beside the model on the *real* images and their labels only
  (never on decoded ones, so the decoder cannot teach it to agree), one cross-entropy per attribute, over
  the labels an image shows (``visible``);
- the decoder's term: the teacher's cross-entropy on decoded prior samples, each given another training
  image's labels (the labels' joint distribution), after the light augmentation of ``aae/classifier.py``
  so that the decoder cannot answer with a pixel pattern; weighted as VQGAN weights its adversary: the
  ratio of the reconstruction's and this term's gradient norms at the decoder's last layer, times
  ``weight``, clamped.

The teacher is not exported: the package's classifier (``synthgen classifier train``) is trained apart from
the model, so the control that it measures (``synthgen control``) is judged by a network that no decoder
was trained against.

A decoder learns to satisfy the one network it is trained against with details that another classifier does
not read the same way (avatars-64 v4: its teacher saw the asked-for facial hair in 98.5% of samples, the
package's judge in 90.7%). Two options make the teacher harder to satisfy that way:

- an **ensemble** (``teachers``): several classifiers, each with its own initialization, optimizer and
  augmentation, all trained on the real batch; the decoder's term is their mean cross-entropy;
- **initial weights** (``init``): a teacher may start from a classifier trained elsewhere (a checkpoint of
  ``synthgen classifier train``, e.g. on another dataset seed) or from another run's teachers (a training
  checkpoint), instead of from scratch; a fine-tune (``TrainOptions.init``) keeps its run's teachers unless
  told otherwise;

and ``attribute_weights`` weigh the attributes in the decoder's term (default: all alike), for the ones
that a model shows least reliably.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aae.classifier import AttributeClassifier, ClassifierConfig, attribute_losses, augment
from synthgen.core.attributes import AttributeSpace


@dataclass
class TeacherOptions:
    weight: float = 0.5  # multiplies the adaptive weight
    max_weight: float = 10.0  # the clamp on weight * adaptive ratio
    start: int = 250  # steps before the decoder is taught (the teacher itself trains from the first step)
    lr: float = 1e-3
    width: int = 32
    teachers: int = 1  # classifiers in the ensemble
    init: tuple[str, ...] = ()  # checkpoints whose weights the first teachers start from (see initial_teachers)
    attribute_weights: dict[str, float] = field(default_factory=dict)  # in the decoder's term; an attribute left out: 1

    def __post_init__(self) -> None:
        self.init = tuple(self.init)
        if self.teachers < 1:
            raise ValueError(f"teachers must be at least 1, got {self.teachers}")
        bad = {name: w for name, w in self.attribute_weights.items() if not w >= 0}
        if bad:
            raise ValueError(f"attribute weights must be >= 0, got {bad}")


@dataclass
class TeacherStats:
    control: float | None = None  # the teacher's cross-entropy on decoded prior samples, per attribute
    control_weight: float | None = None
    teacher: float | None = None  # its cross-entropy on the real batch, per attribute
    teacher_accuracy: float | None = None  # on the real batch, over the visible labels
    control_accuracy: float | None = None  # on the decoded prior samples: how often they show their labels


def value_codes(one_hot: torch.Tensor, space: AttributeSpace) -> torch.Tensor:
    """One-hot labels [B, dim] -> value indices [B, len(names)], in ``space`` order."""
    return torch.stack([one_hot[:, s : s + len(space.values[n])].argmax(dim=1) for n, s in space.offsets().items()], dim=1)


def label_accuracy(logits: torch.Tensor, codes: torch.Tensor, visible: torch.Tensor, space: AttributeSpace) -> float:
    """The fraction of visible labels that ``logits`` get right."""
    right = value_codes(logits, space) == codes
    return float(right[visible].float().mean()) if visible.any() else 1.0


class AttributeTeacher:
    """The teacher classifiers, their optimizers and augmentation streams; ``active`` once the decoder is taught."""

    def __init__(
        self,
        options: TeacherOptions,
        image_size: int,
        channels: int,
        attributes: dict[str, Any],
        device: torch.device,
        betas: tuple[float, float],
        seed: int,
    ) -> None:
        if not attributes:
            raise ValueError("the attribute teacher needs a conditional model (--conditional)")
        self.options = options
        config = ClassifierConfig(image_size, channels, options.width, attributes)
        self.space = config.space
        unknown = sorted(set(options.attribute_weights) - set(self.space.names))
        if unknown:
            raise ValueError(f"attribute weights for {unknown}: the model's attributes are {', '.join(self.space.names)}")
        self.classifiers = [AttributeClassifier(config).to(device) for _ in range(options.teachers)]
        self.optimizers = [torch.optim.Adam(c.parameters(), lr=options.lr, betas=betas) for c in self.classifiers]
        self.generators = [torch.Generator().manual_seed(seed + 1000 * i) for i in range(options.teachers)]  # shifts, blurs
        self.weights = torch.tensor([options.attribute_weights.get(n, 1.0) for n in self.space.names], device=device)
        if not float(self.weights.sum()) > 0:
            raise ValueError("attribute weights: at least one attribute must have a weight above 0")

    def active(self, step: int) -> bool:
        return step >= self.options.start

    def _weighted(self, losses: torch.Tensor) -> torch.Tensor:
        """Per-attribute losses [len(names)] -> their mean under ``attribute_weights``."""
        return (losses * self.weights).sum() / self.weights.sum()

    def decoder_loss(
        self, decoded: torch.Tensor, one_hot: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, TeacherStats]:
        """The teachers' mean cross-entropy on decoded images given ``one_hot`` labels; the teachers get no gradient.

        The teachers run in inference mode here: their BatchNorm statistics are those of real images.
        """
        codes = value_codes(one_hot, self.space)
        losses, accuracies = [], []
        for classifier, generator in zip(self.classifiers, self.generators, strict=True):
            classifier.requires_grad_(False)
            classifier.eval()
            logits = classifier(augment(decoded, generator)).float()
            classifier.train()
            classifier.requires_grad_(True)
            losses.append(self._weighted(attribute_losses(logits, codes, visible, self.space)))
            accuracies.append(label_accuracy(logits.detach(), codes, visible, self.space))
        loss = torch.stack(losses).mean()
        return loss, TeacherStats(control=loss.item(), control_accuracy=sum(accuracies) / len(accuracies))

    def teacher_step(self, real: torch.Tensor, one_hot: torch.Tensor, visible: torch.Tensor) -> TeacherStats:
        """One update of each teacher on real images and their labels."""
        codes = value_codes(one_hot, self.space)
        losses, accuracies = [], []
        for classifier, optimizer, generator in zip(self.classifiers, self.optimizers, self.generators, strict=True):
            logits = classifier(augment(real.detach(), generator)).float()
            loss = attribute_losses(logits, codes, visible, self.space).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            accuracies.append(label_accuracy(logits.detach(), codes, visible, self.space))
        return TeacherStats(teacher=sum(losses) / len(losses), teacher_accuracy=sum(accuracies) / len(accuracies))

    def start_from(self, sources: Sequence[dict[str, torch.Tensor]]) -> None:
        """The first ``len(sources)`` teachers take these classifier weights; their optimizers start afresh."""
        if len(sources) > len(self.classifiers):
            raise ValueError(f"{len(sources)} initial teachers for an ensemble of {len(self.classifiers)} (--teachers)")
        for classifier, weights in zip(self.classifiers, sources, strict=False):
            classifier.load_state_dict(weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "classifiers": [c.state_dict() for c in self.classifiers],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "generators": [g.get_state() for g in self.generators],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = _as_ensemble(state)
        if len(state["classifiers"]) != len(self.classifiers):
            raise ValueError(f"the checkpoint has {len(state['classifiers'])} teachers, this run {len(self.classifiers)}")
        for classifier, optimizer, generator, c, o, g in zip(
            self.classifiers, self.optimizers, self.generators, state["classifiers"], state["optimizers"], state["generators"],
            strict=True,
        ):  # fmt: skip
            classifier.load_state_dict(c)
            optimizer.load_state_dict(o)
            generator.set_state(g)


def _as_ensemble(state: dict[str, Any]) -> dict[str, Any]:
    """A teacher's state in the ensemble layout; checkpoints from before ensembles held one classifier."""
    if "classifiers" in state:
        return state
    return {"classifiers": [state["classifier"]], "optimizers": [state["optimizer"]], "generators": [state["generator"]]}


def saved_teachers(checkpoint: dict[str, Any]) -> list[dict[str, torch.Tensor]] | None:
    """The teacher weights a checkpoint holds: a ``synthgen classifier train`` checkpoint's classifier, a training
    checkpoint's teachers; None when it holds neither."""
    from aae.classifier import CHECKPOINT_FORMAT

    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        return [checkpoint["model"]]
    teacher = (checkpoint.get("training_state") or {}).get("trainer", {}).get("teacher")
    return None if teacher is None else list(_as_ensemble(teacher)["classifiers"])


def teachers_in(checkpoint: dict[str, Any], source: str | Path, space: AttributeSpace) -> list[dict[str, torch.Tensor]]:
    """``saved_teachers`` of a loaded checkpoint (read from ``source``), which must read ``space``'s values."""
    weights = saved_teachers(checkpoint)
    if weights is None:
        raise ValueError(f"{source}: neither a classifier checkpoint nor a training checkpoint with a teacher")
    if not AttributeSpace.from_manifest(checkpoint["config"]["attributes"]).same_values(space):
        raise ValueError(f"{source}: a teacher of other attributes or values than this model's")
    return weights


def initial_teachers(paths: Sequence[str | Path], space: AttributeSpace) -> list[dict[str, torch.Tensor]]:
    """Classifier weights to start teachers from, in order: each checkpoint's (or run folder's) ``teachers_in``."""
    from aae.train import read_checkpoint, resume_path

    return [weights for path in paths for weights in teachers_in(read_checkpoint(resume_path(path)), path, space)]
