"""A diffusion anomaly score after AnoDDPM (Wyatt et al. 2022, "AnoDDPM: Anomaly Detection with
Denoising Diffusion Probabilistic Models using Simplex Noise", §3): noise the input part of the
way, to step t*, let the model denoise it back to data, and score how far the reconstruction
lies from the input. A model of normal data restores normal structure, so what it cannot
reproduce (strokes no normal digit has, corruptions) is the anomaly.

Here:

1. x_0 = 2 · images - 1 (the diffusion range [-1, 1]) is noised to step t* with q(x_t* | x_0)
   (Ho et al. 2020, eq. 4), x_t* = √ᾱ_t* x_0 + √(1 - ᾱ_t*) ε;
2. DDIM with η = 0 (Song et al. 2021, eq. 12) runs from t* back to clean data in ``steps``
   evenly spaced steps (:func:`anomaly_timesteps`, the sub-sequence t* .. 0, then -1), inside
   one :func:`zoo.diffusion.samplers.ddim_loop`;
3. the score is the mean squared error per value between the input images and the
   reconstruction clip((x̂_0 + 1) / 2, 0, 1), both in [0, 1] units; with several noise seeds,
   the mean of the per-seed scores.

Determinism: ε is not drawn per call. It is a fixed standard-normal image of the example shape
per seed (:func:`fixed_noise`: numpy's PCG64 stream of that seed), the same for every example
and embedded in the graph as a constant. The score is therefore a deterministic function of
the input image alone: the same in eager, ``tf.function`` and export, and independent of the
batch the example arrives in (TF Serving's batching merges requests); with no random op, the
graph can also convert to ONNX. AnoDDPM draws fresh (simplex) noise per call; a fixed draw
trades that for a reproducible score, and averaging a few seeds reduces its variance.

t* is chosen on validation data by :func:`choose_t_star` (see its docstring for the rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from keras import ops

from zoo.diffusion.samplers import ddim_loop
from zoo.diffusion.schedules import NoiseSchedule, ddim_timesteps

__all__ = [
    "DEFAULT_STEPS",
    "DEFAULT_T_STAR_FRACTION",
    "T_STAR_FRACTIONS",
    "TStarChoice",
    "anomaly_timesteps",
    "choose_t_star",
    "default_t_star",
    "diffusion_anomaly_score",
    "fixed_noise",
    "reconstruct_from_t_star",
    "t_star_candidates",
]

#: Default t* as a share of the schedule's T (AnoDDPM noises to a fraction of the chain). 0.5:
#: chosen on the one-class validation protocol (bench/reports/one_class_mnist_notes.md,
#: digits 0 and 8): mean AUROC 74.0 at 0.5 T against 49.3 at 0.25 T and 60.5 at 0.65 T.
DEFAULT_T_STAR_FRACTION = 0.5
#: Default number of DDIM steps from t* back to clean data.
DEFAULT_STEPS = 10
#: The shares of T that :func:`t_star_candidates` offers to :func:`choose_t_star`.
T_STAR_FRACTIONS = (0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.65, 0.8)


def default_t_star(num_steps: int) -> int:
    """t* = round(0.5 · T) - 1 as a 0-based step index (500th step of 1,000 = index 499)."""
    return max(0, round(DEFAULT_T_STAR_FRACTION * int(num_steps)) - 1)


def t_star_candidates(num_steps: int, fractions: Sequence[float] = T_STAR_FRACTIONS) -> list[int]:
    """The candidate t* indices ``round(f · T) - 1`` for each share ``f`` (deduplicated, >= 0)."""
    return sorted({max(0, round(f * int(num_steps)) - 1) for f in fractions})


def anomaly_timesteps(num_steps: int, t_star: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, targets) of the reconstruction: ``steps`` DDIM steps from index ``t_star``
    down to clean data (-1), evenly spaced over t* .. 0. This is
    :func:`~zoo.diffusion.schedules.ddim_timesteps` of a chain of t* + 1 steps, whose first
    index is t*: the tables of the full schedule restricted to its first t* + 1 steps."""
    t_star, steps, num_steps = int(t_star), int(steps), int(num_steps)
    if not 0 <= t_star < num_steps:
        raise ValueError(
            f"anomaly t* = {t_star} must be a step index in 0..{num_steps - 1} (the schedule "
            f"has T = {num_steps} steps); e.g. t* = {default_t_star(num_steps)} (0.25 T)"
        )
    if not 1 <= steps <= t_star + 1:
        raise ValueError(
            f"{steps} DDIM steps cannot run from t* = {t_star} to clean data: use 1..{t_star + 1} "
            "steps (at most one per schedule step) or a larger t*"
        )
    return ddim_timesteps(t_star + 1, steps)


def fixed_noise(example_shape: Sequence[int], seeds: Sequence[int] = (0,)) -> np.ndarray:
    """[S, *example_shape] float32 standard-normal images, one per seed: numpy's
    ``default_rng(seed)`` (PCG64) stream, a pure function of (shape, seed) with no state."""
    shape = tuple(int(d) for d in example_shape)
    return np.stack(
        [np.random.default_rng(int(s)).standard_normal(shape).astype(np.float32) for s in seeds]
    )


def reconstruct_from_t_star(
    schedule: NoiseSchedule, eps_fn: Callable, x0, noise, t_star: int, steps: int
):
    """x̂_0 in [-1, 1]: ``x0`` [N, ...] noised to ``t_star`` with ``noise`` (broadcast against
    ``x0``), then ``steps`` DDIM steps (η = 0) back to clean data (Song et al. 2021, eq. 12).
    ``eps_fn(x_t, t)`` is the denoiser, as for :func:`~zoo.diffusion.samplers.ddim_loop`."""
    timesteps, targets = anomaly_timesteps(schedule.num_steps, t_star, steps)
    x0 = ops.convert_to_tensor(x0)
    noise = ops.cast(noise, x0.dtype) + ops.zeros_like(x0)
    t = ops.full((ops.shape(x0)[0],), int(t_star), dtype="int32")
    x_t = schedule.add_noise(x0, noise, t)
    return ddim_loop(schedule, eps_fn, x_t, timesteps, targets, eta=0.0)


def diffusion_anomaly_score(
    schedule: NoiseSchedule,
    eps_fn: Callable,
    images,
    t_star: int,
    steps: int = DEFAULT_STEPS,
    seeds: Sequence[int] = (0,),
    labels=None,
):
    """AnoDDPM's score (module docstring): ``images`` [N, H, W, C] in [0, 1] -> float32 [N],
    the mean squared error per value, in [0, 1] units, between the images and their
    reconstruction from t*, averaged over the fixed noise of each seed in ``seeds``.

    Traceable (``keras.ops`` and one ``ddim_loop``; the seeds' noise is a constant), so it runs
    inside one ``tf.function`` or export signature. All seeds share one loop: the batch is
    tiled S times. ``eps_fn`` must treat examples independently (a U-Net with GroupNorm does).
    With ``labels`` [N] (a conditional denoiser) it is called ``eps_fn(x_t, t, labels)`` with
    the labels tiled alike."""
    if not seeds:
        raise ValueError("diffusion_anomaly_score needs at least one noise seed, e.g. seeds=(0,)")
    images = ops.cast(ops.convert_to_tensor(images), "float32")
    count, example_shape = len(seeds), tuple(images.shape[1:])
    if any(d is None for d in example_shape):
        raise ValueError(f"images need a static example shape, got {example_shape}")
    noise = ops.convert_to_tensor(fixed_noise(example_shape, seeds))  # [S, *shape] constant
    batch = ops.shape(images)[0]
    x0 = 2.0 * images - 1.0
    tiled = ops.tile(x0, (count,) + (1,) * len(example_shape))  # [S·N, ...], seed-major
    noise = ops.reshape(
        ops.broadcast_to(ops.expand_dims(noise, 1), (count, batch, *example_shape)),
        (-1, *example_shape),
    )
    if labels is not None:
        tiled_labels = ops.tile(ops.reshape(ops.cast(labels, "int32"), (-1,)), (count,))
        conditioned = eps_fn

        def eps_fn(x_t, t):
            return conditioned(x_t, t, tiled_labels)

    rebuilt = reconstruct_from_t_star(schedule, eps_fn, tiled, noise, t_star, steps)
    rebuilt = ops.clip((ops.cast(rebuilt, "float32") + 1.0) / 2.0, 0.0, 1.0)
    error = ops.square(ops.tile(images, (count,) + (1,) * len(example_shape)) - rebuilt)
    per_example = ops.mean(ops.reshape(error, (count, batch, -1)), axis=-1)  # [S, N]
    return ops.mean(per_example, axis=0)


@dataclass(frozen=True)
class TStarChoice:
    """The chosen t*, each candidate's validation AUROC, and how the anomalies were made."""

    t_star: int
    aurocs: dict[int, float]
    anomalies: str
    rule: str = field(
        default="the candidate t* with the highest AUROC of held-out normal images against the "
        "validation anomalies; ties go to the smaller t* (the reconstruction keeps more of the "
        "input)"
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_star": self.t_star,
            "aurocs": {str(t): a for t, a in self.aurocs.items()},
            "anomalies": self.anomalies,
            "rule": self.rule,
        }


def choose_t_star(
    score_at: Callable[[np.ndarray, int], Any],
    normal: np.ndarray,
    *,
    candidates: Sequence[int],
    anomalous: np.ndarray | None = None,
    seed: int = 0,
) -> TStarChoice:
    """Choose t* on validation data: the candidate whose scores best separate held-out
    ``normal`` images from anomalies, by AUROC (:func:`zoo.metrics.anomaly.auroc`); ties go to
    the smaller t*.

    Normal-only validation data cannot measure detection, so the anomalies are, as elsewhere in
    the zoo's one-class evaluation: ``anomalous`` when given (e.g. held-out digits of other
    classes from the *training* split, as ``bench.one_class_mnist --protocol validation``
    holds out), else the zoo's synthetic corruptions of the normal images
    (:func:`zoo.anomaly.corrupt_images`: an inverted central 12x12 patch plus N(0, 0.25)
    noise, seeded by ``seed``), the anomalies ``zoo evaluate`` tests a model without normal
    classes on. Never pass test data here.

    ``score_at(images, t_star)`` -> [N] scores. For a ``DiffusionModel`` (which reads its
    ``anomaly_t_star`` at every call), e.g.::

        def score_at(x, t):
            model.anomaly_t_star = t
            return zoo.calibration.anomaly_scores(model, x)

        model.anomaly_t_star = choose_t_star(score_at, normal, candidates=...).t_star"""
    from zoo.metrics.anomaly import auroc

    candidates = sorted({int(t) for t in candidates})
    if not candidates:
        raise ValueError("choose_t_star needs candidate t* values, e.g. t_star_candidates(T)")
    normal = np.asarray(normal, np.float32)
    if anomalous is None:
        from zoo.anomaly import corrupt_images

        anomalous, made = corrupt_images(normal, seed), f"corrupt_images(normal, seed={seed})"
    else:
        made = f"{len(anomalous)} given anomalous images"
    anomalous = np.asarray(anomalous, np.float32)
    if len(normal) < 2 or len(anomalous) < 2:
        raise ValueError(
            f"choose_t_star needs at least 2 normal and 2 anomalous validation images; got "
            f"{len(normal)} and {len(anomalous)}"
        )
    labels = np.concatenate([np.zeros(len(normal), int), np.ones(len(anomalous), int)])
    aurocs = {}
    for t in candidates:
        scores = np.concatenate(
            [np.asarray(score_at(x, t), np.float64).reshape(-1) for x in (normal, anomalous)]
        )
        aurocs[t] = float(auroc(scores, labels))
    best = max(candidates, key=lambda t: (aurocs[t], -t))
    return TStarChoice(best, aurocs, f"{len(normal)} normal vs {made}")
