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
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """The teacher classifier, its optimizer and its augmentation stream; ``active`` once the decoder is taught."""

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
        self.classifier = AttributeClassifier(ClassifierConfig(image_size, channels, options.width, attributes)).to(device)
        self.space = self.classifier.config.space
        self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=options.lr, betas=betas)
        self.generator = torch.Generator().manual_seed(seed)  # the augmentation's shifts and blurs

    def active(self, step: int) -> bool:
        return step >= self.options.start

    def decoder_loss(
        self, decoded: torch.Tensor, one_hot: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, TeacherStats]:
        """The teacher's cross-entropy on decoded images given ``one_hot`` labels; the teacher gets no gradient.

        The teacher runs in inference mode here: its BatchNorm statistics are those of real images.
        """
        codes = value_codes(one_hot, self.space)
        self.classifier.requires_grad_(False)
        self.classifier.eval()
        logits = self.classifier(augment(decoded, self.generator)).float()
        self.classifier.train()
        self.classifier.requires_grad_(True)
        loss = attribute_losses(logits, codes, visible, self.space).mean()
        stats = TeacherStats(control=loss.item(), control_accuracy=label_accuracy(logits.detach(), codes, visible, self.space))
        return loss, stats

    def teacher_step(self, real: torch.Tensor, one_hot: torch.Tensor, visible: torch.Tensor) -> TeacherStats:
        """One update of the teacher on real images and their labels."""
        codes = value_codes(one_hot, self.space)
        logits = self.classifier(augment(real.detach(), self.generator)).float()
        loss = attribute_losses(logits, codes, visible, self.space).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return TeacherStats(teacher=loss.item(), teacher_accuracy=label_accuracy(logits.detach(), codes, visible, self.space))

    def state_dict(self) -> dict[str, Any]:
        return {
            "classifier": self.classifier.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
