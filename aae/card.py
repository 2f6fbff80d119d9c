"""The model card: picture grids and ``card.md``, written next to ``metrics.json``.

Grids are stored as 256-colour PNGs (adaptive palette), which keeps the four of them to a few hundred KB;
the metrics are always computed on the full images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aae.control import control_table
from aae.data import image_grid
from aae.evaluate import reconstruction_inputs
from aae.generators import Generator

TRUNCATIONS: tuple[float | None, ...] = (0.5, 1.0, 1.5, 2.0, None)
COLUMNS = 8


def save_grid(images: np.ndarray, path: Path, columns: int = COLUMNS) -> None:
    grid = image_grid(images, columns=columns)
    grid.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def truncation_sweep(generator: Generator, seed: int, columns: int = COLUMNS) -> np.ndarray:
    """Rows: the same latents (and attributes, conditional) at truncation 0.5, 1, 1.5, 2 and none."""
    return np.concatenate([generator.decode(generator.sample_inputs(columns, seed, t)) for t in TRUNCATIONS])


def interpolation_strips(generator: Generator, seed: int, pairs: int = 4, steps: int = COLUMNS) -> np.ndarray:
    """Rows: slerp from one random face to another, ``steps`` faces each (as ``synthgen interpolate``)."""
    z = generator.sample_inputs(2 * pairs, seed)
    t = np.linspace(0.0, 1.0, steps)
    return generator.decode(np.concatenate([generator.interpolate(z[i], z[pairs + i], t) for i in range(pairs)]))


def reconstruction_rows(
    generator: Generator,
    held_out: np.ndarray,
    condition: np.ndarray | None = None,
    columns: int = COLUMNS,
    groups: int = 2,
) -> np.ndarray:
    """Alternating rows: held-out real faces, then their reconstructions decode(encode(x)) (conditional: with
    x's own labels, ``condition``)."""
    real = held_out[: columns * groups]
    recon = generator.decode(reconstruction_inputs(generator, real, condition))
    rows = [
        part for g in range(groups) for part in (real[g * columns : (g + 1) * columns], recon[g * columns : (g + 1) * columns])
    ]
    return np.concatenate(rows)


def write_grids(
    generator: Generator, held_out: np.ndarray, out: Path, seed: int, held_out_condition: np.ndarray | None = None
) -> dict[str, str]:
    """The card's pictures in ``out``; an existing ``samples.png`` (a package's, listed in its manifest) is kept."""
    files: dict[str, str] = {}
    if not (out / "samples.png").exists():
        save_grid(generator.decode(generator.sample_inputs(64, seed)), out / "samples.png")
    files["samples"] = "samples.png"
    save_grid(truncation_sweep(generator, seed), out / "truncation_sweep.png")
    files["truncation_sweep"] = "truncation_sweep.png"
    save_grid(interpolation_strips(generator, seed + 2), out / "interpolation.png")
    files["interpolation"] = "interpolation.png"
    if generator.encoder is not None and (held_out_condition is not None or not generator.attributes):
        save_grid(reconstruction_rows(generator, held_out, held_out_condition), out / "reconstructions.png")
        files["reconstructions"] = "reconstructions.png"
    return files


# ---------------------------------------------------------------- tables


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _g(value: float) -> str:
    return f"{value:.3g}"


def summary_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """One model's headline numbers: a row of the comparison table."""
    fit, recon, interp = metrics["prior_fit"], metrics["reconstruction"], metrics["interpolation"]["slerp"]
    return {
        "kind": metrics["model"]["kind"],
        "name": metrics["model"]["name"],
        "sample_swd": metrics["swd"]["samples"]["average_x1e3"],
        "floor_swd": metrics["swd"]["floor"]["average_x1e3"],
        "mmd2": fit.get("mmd2"),
        "p_value": fit.get("p_value"),
        "ks_max": fit.get("ks_max"),
        "ks_critical": fit.get("ks_critical"),
        "midpoint_swd": interp["midpoints"]["average_x1e3"],
        "endpoint_swd": interp["endpoints"]["average_x1e3"],
        "reconstruction_mse": recon.get("mse"),
        "near_duplicates": metrics["diversity"]["rate"],
        "training_seconds": metrics["training"].get("seconds"),
        "training_steps": metrics["training"].get("steps"),
    }


def _cell(value: float | None, fmt: str = "g") -> str:
    if value is None:
        return "n/a"
    return _g(value) if fmt == "g" else _f(value, int(fmt))


COMPARE_HEADER = (
    "| model | sample SWD ×10³ | real-vs-real floor | prior fit MMD² (p) | KS max (5% crit.) | "
    "interpolation SWD: midpoints / endpoints | reconstruction MSE | near-duplicates | training |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


# runs of the comparison whose name says more than their kind (see aae/compare.py, VARIANTS)
ROW_LABELS = {"ae-raw": "AE (plain linear codes)", "ae": "AE (normalized codes)", "aae-gaussian": "AAE (gaussian posterior)"}


def compare_line(row: dict[str, Any], label: str | None = None) -> str:
    fit = "n/a" if row["mmd2"] is None else f"{_g(row['mmd2'])} (p = {_g(row['p_value'])})"
    ks = "n/a" if row["ks_max"] is None else f"{row['ks_max']:.3f} ({row['ks_critical']:.3f})"
    interp = f"{_f(row['midpoint_swd'])} / {_f(row['endpoint_swd'])} ({row['midpoint_swd'] / row['endpoint_swd']:.2f}×)"
    seconds = row.get("training_seconds")
    training = "n/a" if seconds is None else f"{_n(row.get('training_steps'))} steps, {duration(seconds)}"
    cells = [
        label or ROW_LABELS.get(row["name"], row["kind"].upper()),
        _f(row["sample_swd"]),
        _f(row["floor_swd"]),
        fit,
        ks,
        interp,
        _cell(row["reconstruction_mse"]),
        f"{100 * row['near_duplicates']:.1f}%",
        training,
    ]
    return "| " + " | ".join(cells) + " |"


def compare_table(rows: list[dict[str, Any]], extra: list[str] | None = None) -> str:
    return "\n".join([COMPARE_HEADER, *(extra or []), *(compare_line(r) for r in rows)])


# ---------------------------------------------------------------- card.md

KIND_NAMES = {
    "aae": "an adversarial autoencoder (AAE; Makhzani et al., 2015): a discriminator on z pushes the encoder's codes onto the prior",
    "ae": "a plain autoencoder (the AE baseline: nothing shapes the distribution of its codes)",
    "vae": "a variational autoencoder (the VAE baseline: a KL term to the prior)",
}


def _prior_text(prior: dict[str, Any]) -> str:
    if prior.get("kind") == "mixture":
        return f"a mixture of {prior.get('components')} Gaussians (std {prior.get('std')}, radius {prior.get('radius')})"
    return f"N(0, {prior.get('std', 1.0):g}² I)"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _training_text(training: dict[str, Any]) -> str:
    if not training:
        return "No training summary is recorded."
    parts = [f"{_n(training.get('images', '?'))} images of `{training.get('data', '?')}` (seed {training.get('data_seed', 0)})"]
    if "epochs" in training:
        parts.append(
            f"{training['epochs']} epochs, {_n(training.get('steps', '?'))} steps of batch {training.get('batch_size', '?')}"
        )
    if "seconds" in training:
        parts.append(f"{duration(training['seconds'])} on {training.get('device', 'cpu')}")
    loss = (training.get("final_losses") or {}).get("reconstruction")
    if loss is not None:
        parts.append(f"final reconstruction MSE {loss:.4f}")
    return "Trained on " + "; ".join(parts) + "."


def _level_names(image_size: int, levels: int) -> str:
    return ", ".join(f"{image_size >> i}px" for i in range(levels))


def _swd_rows(metrics: dict[str, Any], image_size: int) -> list[str]:
    swd = metrics["swd"]
    sample, floor = swd["samples"], swd["floor"]
    levels = _level_names(image_size, len(sample["per_level_x1e3"]))
    per_level = " / ".join(_f(v) for v in sample["per_level_x1e3"])
    floor_levels = " / ".join(_f(v) for v in floor["per_level_x1e3"])
    return [
        f"| sample SWD ×10³, average of levels | **{_f(sample['average_x1e3'])}** | real vs real: **{_f(floor['average_x1e3'])}** "
        f"({swd['ratio_to_floor']:.2f}× the floor) | {swd['images']:,} samples vs {swd['images']:,} held-out faces |",
        f"| sample SWD ×10³ per level ({levels}) | {per_level} | {floor_levels} | finest level first |",
    ]


def _encoder_rows(metrics: dict[str, Any]) -> list[str]:
    fit, recon = metrics["prior_fit"], metrics["reconstruction"]
    if not fit.get("available"):
        return [f"| prior fit, reconstruction | unavailable | | {fit['reason']} |"]
    return [
        f"| prior fit: MMD² (permutation p-value) | {_g(fit['mmd2'])} (p = {_g(fit['p_value'])}) | 0 (p uniform) for a perfect fit "
        f"| {fit['codes']:,} encoded held-out faces ({fit['codes_are']}) vs as many prior samples, {fit['permutations']} permutations |",
        f"| prior fit: KS statistic, max / mean over dimensions | {fit['ks_max']:.3f} / {fit['ks_mean']:.3f} "
        f"| {fit['ks_critical']:.3f} (5% critical value) | against the prior's exact marginals |",
        f"| reconstruction MSE (PSNR) | {_g(recon['mse'])} ({recon['psnr_db']:.1f} dB) | | {recon['images']:,} held-out faces, pixels in 0..1 |"
        if recon.get("available")
        else f"| reconstruction | unavailable | | {recon['reason']} |",
    ]


def _other_rows(metrics: dict[str, Any]) -> list[str]:
    mem, div, interp = metrics["memorization"], metrics["diversity"], metrics["interpolation"]
    real = div["real_training_images"]
    rows = [
        f"| memorization: data-copying z | {mem['z']:.2f} | below −3 suggests copying | median distance to the nearest of "
        f"{mem['train_neighbours']:,} training faces: generated {mem['generated_median']:.4f}, held-out {mem['held_out_median']:.4f} |",
        f"| near-duplicate rate | {100 * div['rate']:.2f}% | real training faces: {100 * real['rate']:.2f}% of {real['images']:,} "
        f"| {div['samples']:,} samples; nearest neighbour under the `unique` threshold {div['threshold']:.4f} ({div['metric']}) |",
    ]
    held = " sharing their attributes" if "attributes" in interp else ""
    labels = {"slerp": "slerp", "lerp": "lerp", "slerp_attributes_blended": "slerp with the attributes blended"}
    for method in [m for m in labels if m in interp]:
        r = interp[method]
        pairs = f"{interp['pairs']:,} random pairs{'' if method == 'slerp_attributes_blended' else held}"
        rows.append(
            f"| interpolation SWD ×10³, {labels[method]} midpoints / endpoints | {_f(r['midpoints']['average_x1e3'])} / "
            f"{_f(r['endpoints']['average_x1e3'])} ({r['ratio']:.2f}×) | 1× if midpoints look like endpoints | {pairs} |"
        )
    return rows


def duplicates_text(metrics: dict[str, Any]) -> str:
    """Why the samples' and the real faces' near-duplicate rates differ, in the card's words."""
    div = metrics["diversity"]
    sample, real = 100 * div["rate"], 100 * div["real_training_images"]["rate"]
    head = (
        f"**Near-duplicates.** {sample:.1f}% of samples and {real:.1f}% of real training faces have a neighbour closer than "
        "the `unique` threshold. "
    )
    if metrics["data"]["source"] != "avatars":
        return head + "A `unique` job removes such samples whatever the rate."
    if sample < real:
        why = (
            "Real avatars are assembled from a finite vocabulary of parts, so many of them share every visible part and "
            "differ only in details that vanish at this size; a sample's z and y are continuous, and the small "
            "departures of a decoded face from any exact combination of parts (softness, faint texture) keep samples "
            "apart more often. A lower rate here is no sign of more variety."
        )
    else:
        why = (
            "The samples repeat themselves at least as often as the real faces do: the decoder maps many latents to "
            "nearly the same face. A `unique` job removes the repeats."
        )
    return head + why


def metrics_table(metrics: dict[str, Any], image_size: int) -> str:
    header = ["| metric | this model | reference | on |", "|---|---|---|---|"]
    return "\n".join(header + _swd_rows(metrics, image_size) + _encoder_rows(metrics) + _other_rows(metrics))


def _comparison_section(
    metrics: dict[str, Any], baselines: dict[str, Any] | None, card_dir: Path, baselines_path: Path | None
) -> str:
    if baselines is None:
        return (
            "## Comparison with the AE and VAE baselines\n\n"
            "Not included: run `synthgen evaluate --compare`, then `synthgen evaluate MODEL --baselines bench/results/compare/compare.json`.\n"
        )
    budget = baselines.get("budget", {})
    this = compare_line(summary_row(metrics), f"**this model** ({metrics['model']['name']})")
    link = f"[{baselines_path.name}]({os.path.relpath(baselines_path, card_dir)})" if baselines_path else "compare.json"
    return (
        "## Comparison with the AE and VAE baselines\n\n"
        f"The same networks (only the regularization of z differs), the same data and the same number of steps: "
        f"{_n(budget.get('count', '?'))} `{budget.get('data', 'avatars')}` images at {budget.get('image_size', '?')}px, "
        f"{budget.get('epochs', '?')} epochs of batch {budget.get('batch_size', '?')} each (from {link}). "
        "This model's own row comes first; it was trained with its own, larger budget.\n\n"
        f"{compare_table(baselines['table'], [this])}\n"
    )


def _control_section(metrics: dict[str, Any]) -> str:
    control = metrics.get("control")
    if not control:
        return ""
    sizes = control["sizes"]
    identity = control.get("identity") or {}
    identities = (
        f" Identity agreement: in a job of {identity['identities']} identities × {identity['per_identity']} images, "
        "the fraction of an identity's images whose identity attribute is classified as the identity's majority value."
        if identity
        else ""
    )
    renders = (
        "The columns headed *real renders* are the same measurements on the renderer itself asked for the same "
        "values (a perfectly controlled generator): the most a model can be seen to reach through this classifier. "
        if control.get("renders")
        else ""
    )
    return (
        "## Control\n\n"
        "Judged by the package's attribute classifier (`classifier.onnx`), trained apart from the model on real renders; "
        "its own accuracy on held-out real renders is the last column, and a model can be seen to obey only as well as "
        f"the classifier sees. Per attribute: {sizes['per_value']} images for each of its values (exact quotas, the other "
        "attributes drawn from their training marginals, as a job with that `distribution` would make them), and how "
        f"often the classifier sees the value asked for; only labels that can be seen count.{identities} "
        f"{renders}`synthgen control MODEL --per-value {sizes['per_value']}` prints the same table.\n\n"
        f"{control_table(control)}\n"
    )


def _pictures(files: dict[str, str], conditional: bool = False) -> str:
    lines = ["## Pictures", ""]
    drawn = "z drawn from the prior, the attributes from their training marginals" if conditional else "z drawn from the prior"
    captions = {
        "samples": f"Random samples: {drawn}.",
        "truncation_sweep": "Truncation: the same 8 latents at ±0.5σ, ±1σ, ±1.5σ, ±2σ and untruncated (rows, top to bottom).",
        "interpolation": "Interpolation: slerp between two random faces, 4 pairs (rows).",
        "reconstructions": "Reconstructions of held-out faces: real (odd rows) and decode(encode(real)) (the row below each).",
    }
    for key, file in files.items():
        lines += [f"{captions[key]}", "", f"![{key}]({file})", ""]
    return "\n".join(lines)


def _posterior_text(model: dict[str, Any]) -> str:
    if (model.get("config") or {}).get("posterior") != "gaussian":
        return ""
    return (
        "Its encoder's q(z|x) is a Gaussian, z = μ(x) + σ(x)·ε (Makhzani et al.'s second choice of posterior), and the "
        "discriminator matches the aggregate of those draws to the prior: the prior fit below is measured on them. "
    )


def _prior_matching_text(model: dict[str, Any]) -> str:
    """What besides the latent discriminator brought the codes onto the prior: a sliced Wasserstein term in
    training, a latent calibration after it."""
    text = ""
    weight = model.get("prior_sliced_weight")
    if weight:
        text += (
            f"Besides the discriminator, a sliced Wasserstein term (weight {weight:g}) pulled the codes onto the prior "
            "in training: their projections on the axes, on their covariance's eigenvectors and on random directions, "
            "against the prior's quantiles. "
        )
    record = model.get("latent_calibration")
    if record:
        eigenvalues = record.get("eigenvalues_before") or [float("nan")]
        text += (
            f"After training, a latent calibration whitened the codes: an affine map fitted on {record['images']} "
            f"training images' {record['codes']} (their covariance's eigenvalues ran from {eigenvalues[0]:.2g} to "
            f"{eigenvalues[-1]:.2g}) ends the encoder, and its inverse starts the decoder. Reconstructions are "
            "unchanged; a prior sample decodes from the Gaussian that fits the training codes. "
        )
    return text


def _conditional_text(generator: Generator) -> str:
    space = generator.attributes
    if not space:
        return ""
    names = ", ".join(f"`{n}`" for n in space.names)
    return (
        f"It is conditional: the decoder also takes the one-hot codes of {len(space.names)} attributes ({names}; "
        f"{space.dim} columns), and every sample below has its attributes drawn from their training marginals, "
        "as a job that names none: these are the model's unconditional samples. "
    )


def _measured_on(model: dict[str, Any]) -> str:
    if "sha256" in model:
        return f"The numbers below were measured on the package's ONNX decoder (sha256 {model['sha256'][:12]}…), which the service runs."
    return f"The numbers below were measured on the torch checkpoint `{model.get('checkpoint', '?')}`."


def _data_limits(source: str) -> str:
    if source == "avatars":
        return (
            "The model has only seen procedural cartoon avatars: it makes cartoon faces, with their fixed background and "
            "their range of hair, skin and clothing, and nothing photographic."
        )
    return f"The model has only seen the faces of `{source}`: it can reproduce only their range of faces, poses and lighting."


def render_card(
    metrics: dict[str, Any],
    generator: Generator,
    files: dict[str, str],
    card_dir: Path,
    baselines: dict[str, Any] | None = None,
    baselines_path: Path | None = None,
) -> str:
    """The markdown of ``card.md``."""
    model, data, sizes = metrics["model"], metrics["data"], metrics["sizes"]
    size = generator.image_size
    return f"""# Model card: {model.get("ref", model["name"])}

*Written by `synthgen evaluate` on {metrics["created_at"]} ({metrics["created_by"]}); every number below is in `metrics.json`.*

## The model

{model["name"]} is {KIND_NAMES.get(model["kind"], model["kind"])}. Its decoder turns a latent z of {generator.latent_dim}
dimensions, drawn from the prior {_prior_text(generator.prior)}, into a {size}×{size} RGB face. {_posterior_text(model)}{_prior_matching_text(model)}{_conditional_text(generator)}{_measured_on(model)}

{_training_text(metrics["training"])}

**Intended use.** Synthetic faces in bulk where no real person's face may appear: crowds for simulations and games,
placeholder avatars, test data for image pipelines, and demos of the service.

**Limits.** {_data_limits(data["source"])} Faces are small ({size}×{size}) and softer than the training images. It is
not meant for identity, biometric or demographic purposes. The metrics use no pretrained network: the SWD compares the
statistics of small image patches at several scales, which tracks blur, colour and texture, not whether a face makes sense.

## Metrics

Held-out real faces: {data["held_out"]["source"]}, never seen in training. The floor is the same SWD between two
disjoint held-out sets of {sizes["swd"]:,} faces: a model cannot beat it on average. Seed {sizes["seed"]};
the evaluation took {duration(metrics["timing"]["total"])}. Encoder: {metrics["encoder"]}.

{metrics_table(metrics, size)}

{duplicates_text(metrics)}

{_control_section(metrics)}
{_comparison_section(metrics, baselines, card_dir, baselines_path)}
{_pictures(files, bool(generator.attributes))}"""
