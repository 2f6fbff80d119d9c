"""The attribute teacher (aae/attribute_teacher.py): an added phase of a conditional model's training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aae.attribute_teacher import AttributeTeacher, TeacherOptions, initial_teachers, value_codes  # noqa: E402
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
    flat = {f"model/{k}": v for k, v in state["model"].items()}
    for t, (weights, optimizer, generator) in enumerate(
        zip(teacher["classifiers"], teacher["optimizers"], teacher["generators"], strict=True)
    ):
        flat.update({f"classifier{t}/{k}": v for k, v in weights.items()})
        for i, moments in optimizer["state"].items():
            flat.update({f"optimizer{t}/{i}/{k}": v for k, v in moments.items() if isinstance(v, torch.Tensor)})
        flat[f"generator{t}"] = generator
    return flat


def test_a_conditional_run_with_the_teacher_logs_it_and_resumes_step_for_step(tmp_path: Path) -> None:
    straight = train(_options(tmp_path, "straight"))
    interrupted = _options(tmp_path, "resumed")
    train(replace(interrupted, max_steps=5))  # mid-epoch 1, after the teacher's start
    resumed = train(interrupted, resume=interrupted.out_dir)
    a, b = _teacher_tensors(straight), _teacher_tensors(resumed)
    assert a.keys() == b.keys() and any(k.startswith("optimizer0/") for k in a)
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


def _teacher(**options: Any) -> AttributeTeacher:
    torch.manual_seed(0)
    return AttributeTeacher(TeacherOptions(width=8, **options), 32, 3, SPACE.to_manifest(), torch.device("cpu"), (0.5, 0.999), 0)


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
    (classifier,) = teacher.classifiers
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    teacher.optimizers[0].zero_grad(set_to_none=True)
    decoded = torch.full_like(x, 0.5).requires_grad_(True)
    loss, stats = teacher.decoder_loss(decoded, one_hot, visible)
    loss.backward()
    assert decoded.grad is not None and decoded.grad.abs().sum() > 0
    assert all(p.grad is None for p in classifier.parameters())
    after = classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BatchNorm statistics of decoded images either
    assert stats.control is not None and stats.control_accuracy is not None and stats.control_accuracy < 1.0
    assert classifier.training


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


def test_an_ensemble_trains_each_teacher_apart_and_teaches_their_mean() -> None:
    one, two = _teacher(), _teacher(teachers=2)
    assert len(two.classifiers) == 2 and len(two.optimizers) == 2
    first, second = (dict(c.state_dict()) for c in two.classifiers)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # initialized apart
    x, one_hot, visible = _labeled_batch()
    for _ in range(5):
        two.teacher_step(x, one_hot, visible)
    losses = []
    for classifier in two.classifiers:
        alone = _teacher()
        alone.classifiers[0].load_state_dict(classifier.state_dict())
        losses.append(alone.decoder_loss(x, one_hot, visible)[0].item())
    two.generators = [torch.Generator().manual_seed(0) for _ in two.generators]  # the same augmentation as ``alone``
    mean, _ = two.decoder_loss(x, one_hot, visible)
    assert mean.item() == pytest.approx(sum(losses) / 2, rel=1e-5)
    assert one.state_dict().keys() == two.state_dict().keys()


def test_attribute_weights_weigh_the_decoders_term_and_unknown_names_are_refused() -> None:
    x, one_hot, visible = _labeled_batch()
    plain = _teacher()
    per_attribute = []
    for name in SPACE.names:
        only = _teacher(attribute_weights={n: float(n == name) for n in SPACE.names})
        per_attribute.append(only.decoder_loss(x, one_hot, visible)[0].item())
    heavy = _teacher(attribute_weights={"accessory": 3.0})
    assert plain.decoder_loss(x, one_hot, visible)[0].item() == pytest.approx(sum(per_attribute) / 2, rel=1e-5)
    assert heavy.decoder_loss(x, one_hot, visible)[0].item() == pytest.approx(
        (per_attribute[0] + 3 * per_attribute[1]) / 4, rel=1e-5
    )
    with pytest.raises(ValueError, match="beard"):
        _teacher(attribute_weights={"beard": 2.0})
    with pytest.raises(ValueError, match=">= 0"):
        TeacherOptions(attribute_weights={"accessory": -1.0})
    with pytest.raises(ValueError, match="above 0"):
        _teacher(attribute_weights={"accessory": 0.0, "hair_color": 0.0})


def test_a_checkpoint_from_before_ensembles_loads_as_an_ensemble_of_one() -> None:
    teacher = _teacher()
    state = teacher.state_dict()
    old = {"classifier": state["classifiers"][0], "optimizer": state["optimizers"][0], "generator": state["generators"][0]}
    again = _teacher()
    again.load_state_dict(old)
    assert all(torch.equal(v, again.classifiers[0].state_dict()[k]) for k, v in state["classifiers"][0].items())
    with pytest.raises(ValueError, match="2 teachers"):
        _teacher().load_state_dict({**state, "classifiers": state["classifiers"] * 2})


def test_a_fine_tune_starts_from_the_runs_weights_ema_and_teachers_and_teachers_from_a_classifier(tmp_path: Path) -> None:
    from aae.classifier import ClassifierOptions, train_classifier

    base = _options(tmp_path, "base")
    first = train(base)
    before = read_checkpoint(first)
    tuned = replace(base, out_dir=str(tmp_path / "tuned"), init=str(tmp_path / "base"), max_steps=1, epochs=1)
    from aae.train import build_trainer, start_from

    config = replace(base.config, attributes=before["config"]["attributes"])
    wider = replace(config, base_width=16)
    with pytest.raises(ValueError, match="differs in base_width"):
        start_from(build_trainer(wider, replace(tuned, config=wider), torch.device("cpu")), replace(tuned, config=wider))
    trainer = build_trainer(config, replace(tuned, config=config), torch.device("cpu"))
    start_from(trainer, replace(tuned, config=config))
    state = before["training_state"]["trainer"]
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in state["model"].items())
    assert trainer.ema is not None and all(torch.equal(v, trainer.ema.state_dict()[k]) for k, v in state["ema"].items())
    assert trainer.teacher is not None
    assert all(
        torch.equal(v, trainer.teacher.classifiers[0].state_dict()[k]) for k, v in state["teacher"]["classifiers"][0].items()
    )
    assert trainer.steps_done == 0 and trainer.images_before == state["steps_done"] * base.batch_size
    assert not trainer.opt_autoencoder.state  # the optimizers start afresh

    # the run itself: one step on, from the base run's weights; its checkpoint says where it started
    out = train(tuned)
    after = read_checkpoint(out)
    assert after["options"]["init"] == str(tmp_path / "base") and after["training_state"]["trainer"]["steps_done"] == 1

    # a teacher ensemble that starts from a classifier checkpoint and from the base run's teacher
    classifier = train_classifier(
        ClassifierOptions(count=48, image_size=32, width=8, steps=2, batch_size=8, held_out_count=16,
                          cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "classifier"))
    )  # fmt: skip
    space = AttributeSpace.from_manifest(before["config"]["attributes"])
    weights = initial_teachers([str(classifier), str(tmp_path / "base")], space)
    assert len(weights) == 2
    assert all(torch.equal(v, weights[1][k]) for k, v in state["teacher"]["classifiers"][0].items())
    with pytest.raises(ValueError, match="other attributes"):
        initial_teachers([str(classifier)], SPACE)
    with pytest.raises(ValueError, match="an ensemble of 1"):
        trainer.teacher.start_from(weights)


def test_the_cli_fine_tunes_with_the_checkpoints_architecture_and_takes_the_teacher_flags(tmp_path: Path) -> None:
    from synthgen.cli import _train_options, build_parser

    base = _options(tmp_path, "base")
    train(replace(base, max_steps=1, epochs=1))
    parser = build_parser()
    run = str(tmp_path / "base")
    args = ["train", "--recipe", "v4", "--conditional", "--init", run, "--teacher-start", "0"]
    options = _train_options(parser.parse_args([*args, "--teachers", "2", "--teacher-attribute-weight", "accessory=3"]))
    assert options.init == run and options.config.to_dict()["image_size"] == 32 and options.config.base_width == 8
    assert options.teacher is not None and options.teacher.teachers == 2 and options.teacher.start == 0
    assert options.teacher.attribute_weights == {"accessory": 3.0}
    with pytest.raises(ValueError, match="image_size 64"):
        _train_options(parser.parse_args([*args, "--image-size", "64"]))
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        _train_options(parser.parse_args([*args, "--teacher-attribute-weight", "accessory"]))
    with pytest.raises(ValueError, match="no checkpoint"):
        _train_options(parser.parse_args(["train", "--init", str(tmp_path / "nowhere")]))
    with pytest.raises(ValueError, match="no attribute teacher"):
        _train_options(parser.parse_args(["train", "--teachers", "2"]))
    inits = _train_options(parser.parse_args([*args, "--teacher-init", run, run])).teacher
    assert inits is not None and inits.init == (run, run) and inits.teachers == 2
