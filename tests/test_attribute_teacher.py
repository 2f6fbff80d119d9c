"""The attribute teacher (aae/attribute_teacher.py): an added phase of a conditional model's training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aae.attribute_teacher import AttributeTeacher, TeacherOptions, value_codes  # noqa: E402
from aae.model import AAEConfig, load_checkpoint  # noqa: E402
from aae.recipes import recipe  # noqa: E402
from aae.train import TrainOptions, read_checkpoint, train  # noqa: E402
from synthgen.core.attributes import AttributeSpace  # noqa: E402

SPACE = AttributeSpace(
    {"hair_color": ("black", "red", "blonde"), "accessory": ("none", "round")},
    ("hair_color",),
    {"hair_color": (0.5, 0.25, 0.25), "accessory": (0.5, 0.5)},
)


def _options(tmp_path: Path, out: str) -> TrainOptions:
    config = AAEConfig(image_size=32, latent_dim=8, base_width=8, disc_hidden=16, upsample="nearest", decoder_norm="group")
    return TrainOptions(
        count=48, epochs=2, batch_size=8, out_dir=str(tmp_path / out), cache_dir=str(tmp_path / "cache"), log_every=2,
        conditional=True, teacher=TeacherOptions(start=2, width=8), ema_kimg=0.1, config=config,
    )  # fmt: skip


def _teacher_tensors(path: Path) -> dict[str, torch.Tensor]:
    state = read_checkpoint(path)["training_state"]["trainer"]
    teacher = state["teacher"]
    flat = {f"classifier/{k}": v for k, v in teacher["classifier"].items()}
    flat.update({f"model/{k}": v for k, v in state["model"].items()})
    for i, moments in teacher["optimizer"]["state"].items():
        flat.update({f"optimizer/{i}/{k}": v for k, v in moments.items() if isinstance(v, torch.Tensor)})
    flat["generator"] = teacher["generator"]
    return flat


def test_a_conditional_run_with_the_teacher_logs_it_and_resumes_step_for_step(tmp_path: Path) -> None:
    straight = train(_options(tmp_path, "straight"))
    interrupted = _options(tmp_path, "resumed")
    train(replace(interrupted, max_steps=5))  # mid-epoch 1, after the teacher's start
    resumed = train(interrupted, resume=interrupted.out_dir)
    a, b = _teacher_tensors(straight), _teacher_tensors(resumed)
    assert a.keys() == b.keys() and any(k.startswith("optimizer/") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different
    records = [json.loads(line) for line in (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()]
    taught = [r for r in records if r["step"] > 2]
    assert taught and all(r["control_weight"] > 0 and 0 <= r["control_accuracy"] <= 1 for r in taught)
    assert all("teacher" in r and "teacher_accuracy" in r for r in records)
    assert "control" not in records[0]  # the decoder is taught only after ``start`` steps
    _, checkpoint = load_checkpoint(str(resumed))
    assert checkpoint["options"]["teacher"]["start"] == 2


def test_the_teacher_needs_a_conditional_model_and_the_v4_recipe_adds_it_only_there() -> None:
    with pytest.raises(ValueError, match="conditional"):
        TrainOptions(teacher=TeacherOptions())
    v4 = recipe("v4")
    assert v4.apply(TrainOptions(conditional=True)).teacher == TeacherOptions()
    assert v4.apply(TrainOptions()).teacher is None


def test_value_codes_read_the_one_hot_layout_back() -> None:
    codes = SPACE.draw(3, np.arange(40))
    one_hot = torch.from_numpy(SPACE.one_hot(codes))
    assert torch.equal(value_codes(one_hot, SPACE), torch.from_numpy(codes.astype(np.int64)))


def _teacher() -> AttributeTeacher:
    torch.manual_seed(0)
    return AttributeTeacher(TeacherOptions(width=8), 32, 3, SPACE.to_manifest(), torch.device("cpu"), (0.5, 0.999), 0)


def _labeled_batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images whose red channel says the hair colour and whose green channel says the accessory."""
    codes = SPACE.draw(5, np.arange(n))
    x = torch.full((n, 3, 32, 32), 0.1)
    x[:, 0] = torch.from_numpy(codes[:, 0] / 2.0).float()[:, None, None]
    x[:, 1] = torch.from_numpy(codes[:, 1] * 1.0).float()[:, None, None]
    return x, torch.from_numpy(SPACE.one_hot(codes)), torch.ones(n, 2, dtype=torch.bool)


def test_the_teacher_learns_from_real_images_only_and_its_term_trains_the_images_not_itself() -> None:
    teacher = _teacher()
    x, one_hot, visible = _labeled_batch()
    first = teacher.teacher_step(x, one_hot, visible)
    for _ in range(60):
        last = teacher.teacher_step(x, one_hot, visible)
    assert first.teacher is not None and last.teacher is not None and last.teacher < 0.5 * first.teacher
    assert last.teacher_accuracy is not None and last.teacher_accuracy > 0.9
    before = {k: v.clone() for k, v in teacher.classifier.state_dict().items()}
    teacher.optimizer.zero_grad(set_to_none=True)
    decoded = torch.full_like(x, 0.5).requires_grad_(True)
    loss, stats = teacher.decoder_loss(decoded, one_hot, visible)
    loss.backward()
    assert decoded.grad is not None and decoded.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.classifier.parameters())
    after = teacher.classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BatchNorm statistics of decoded images either
    assert stats.control is not None and stats.control_accuracy is not None and stats.control_accuracy < 1.0
    assert teacher.classifier.training


def test_hidden_labels_are_not_taught() -> None:
    teacher = _teacher()
    x, one_hot, _ = _labeled_batch(8)
    hidden = torch.zeros(8, 2, dtype=torch.bool)
    loss, stats = teacher.decoder_loss(x.requires_grad_(True), one_hot, hidden)
    assert float(loss.detach()) == 0.0 and stats.control_accuracy == 1.0


def test_the_cli_takes_the_teacher_from_the_recipe_for_a_conditional_run_and_flags_win() -> None:
    from synthgen.cli import _train_options, build_parser

    parser = build_parser()
    assert _train_options(parser.parse_args(["train", "--recipe", "v4"])).teacher is None  # no labels to teach
    taught = _train_options(parser.parse_args(["train", "--recipe", "v4", "--conditional", "--teacher-weight", "0.3"]))
    assert taught.teacher == TeacherOptions(weight=0.3)
    with pytest.raises(ValueError, match="conditional"):
        _train_options(parser.parse_args(["train", "--attribute-teacher"]))


def test_the_image_adversary_and_the_teacher_share_one_decode_of_prior_samples_per_step() -> None:
    from aae.image_adversary import AdversaryOptions
    from aae.train import build_trainer

    config = AAEConfig(
        image_size=32, latent_dim=8, base_width=8, disc_hidden=16, upsample="nearest", decoder_norm="group",
        attributes=SPACE.to_manifest(),
    )  # fmt: skip
    options = TrainOptions(
        batch_size=8, conditional=True, teacher=TeacherOptions(start=0, width=8),
        adversary=AdversaryOptions(start=0, fakes="both", width=8), config=config,
    )  # fmt: skip
    trainer = build_trainer(config, options, torch.device("cpu"))
    decodes: list[int] = []
    trainer.model.decoder.register_forward_hook(lambda module, args, out: decodes.append(out.shape[0]))
    x, one_hot, visible = _labeled_batch(8)
    losses = trainer.step(x, one_hot, visible)
    assert decodes == [8, 4]  # the reconstructions, then 4 prior samples for both added terms
    assert losses.image_weight is not None and losses.control_weight is not None and losses.teacher is not None
