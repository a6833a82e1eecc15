"""Task declaration of the diffusion models: ``generate`` (DDIM from z = x_T, K steps fixed at
export), ``sample`` (seeds; SavedModel only), ``denoise`` (one network evaluation) and, given a
calibrated threshold, ``score`` / ``score_with_threshold`` (the AnoDDPM anomaly score,
:mod:`zoo.diffusion.anomaly`); ``serving_default`` = ``generate``. Conditional models take
``labels`` everywhere, with the classifier-free guidance scale fixed at export and recorded in
the metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from zoo.tasks import (
    AnomalyScorer,
    BoundModel,
    Generator,
    Images,
    Sampler,
    SignatureBuilder,
    SignatureSet,
    TaskDeclaration,
)
from zoo.tasks.signatures import Tolerance

__all__ = ["DiffusionTasks"]

#: ``generate`` runs K network evaluations in a loop, so float32 round-off of the backends
#: (oneDNN vs Eigen convolutions, ONNX Runtime) could compound over the steps; the final clip
#: to [0, 1] bounds it. Measured max |diff| of the exported generate vs Keras (SavedModel / TF1
#: session / onnxruntime, batch 4): ddpm recipe (28x28 U-Net 32/64/64, T = 1000, K = 50,
#: 62 training steps) 6.0e-7 / 6.0e-7 / 9.8e-7; ddpm_tiny (K = 5, perturbed weights)
#: 2.4e-7 / 2.4e-7 / 3.6e-7; cddpm_tiny (K = 50, guidance 2) 4.2e-7 / 4.2e-7 / 4.5e-7.
#: 1e-4 leaves a 100x margin and still catches a wrong step or guidance (>= 1e-2).
GENERATE_TOLERANCE = Tolerance(atol=1e-4, rtol=0.0)

#: ``denoise``'s ``denoised`` = clip((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)) / 2 + 1/2
#: multiplies eps's round-off by sqrt((1 - abar_t) / abar_t) / 2 (79 at t = T - 1 of the
#: linear 1000-step schedule). Measured on the ddpm recipe: eps 2.9e-6, denoised 8.4e-5
#: (onnxruntime); 1e-3 is a 12x margin. Parity steps stay where that gain is <= 100
#: (:data:`MAX_DENOISED_GAIN`; the cosine schedule's last steps reach 1e4).
DENOISE_TOLERANCE = Tolerance(atol=1e-3, rtol=0.0)
MAX_DENOISED_GAIN = 100.0


class DiffusionTasks(TaskDeclaration):
    """A denoising diffusion model (Ho et al. 2020) sampled by DDIM (Song et al. 2021)."""

    family = "diffusion"
    tasks = (Sampler, Generator, AnomalyScorer, BoundModel)
    evaluations = ("samples", "likelihood", "anomaly")

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.model.image_shape)

    @property
    def examples(self) -> Images:
        """The images ``score`` takes (and calibration data)."""
        return Images(tuple(int(d) for d in self.model.image_shape))

    def signatures(
        self,
        threshold: float | None = None,
        normalization: tuple[float, float] | None = None,
    ) -> SignatureSet:
        model = self.model
        builder = SignatureBuilder(self.num_classes)
        steps, scale = model.sample_steps, float(model.guidance_scale)

        def generate(z: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
            # eta = 0 and no seed: the loop draws no noise, so the graph has no random op
            # (tf2onnx cannot convert stateless random ops)
            return model.ddim_sample(z, labels, scale, None, steps, 0.0)

        guidance = f", guidance scale {scale:g}" if self.num_classes else ""
        builder.add_generator(
            generate,
            self.latent_shape,
            tolerance=GENERATE_TOLERANCE,
            method=f" by DDIM (eta = 0) in {steps} steps{guidance}",
        )
        shape = [None, *self.latent_shape]
        x_spec = tf.TensorSpec(shape, tf.float32, name="x_t")
        t_spec = tf.TensorSpec([None], tf.int64, name="t")

        def denoise(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            # out-of-range steps clamp to [0, T) (the table gather would fail otherwise)
            t = tf.clip_by_value(i["t"], 0, model.schedule.num_steps - 1)
            out = model.denoise(i["x_t"], tf.cast(t, tf.int32), i.get("labels"))
            return {k: tf.cast(v, tf.float32) for k, v in out.items()}

        builder.add(
            "denoise",
            denoise,
            [x_spec, t_spec, *builder.label_specs],
            onnx=True,
            tolerance=DENOISE_TOLERANCE,
            description=(
                f"x_t [N, H, W, C] in [-1, 1], t [N] int64 in [0, {model.schedule.num_steps})"
                f"{builder.with_labels} -> eps (the network's noise estimate) and denoised "
                "(the x_0 it implies, images in [0, 1]); one network evaluation"
            ),
        )
        if threshold is not None:  # the exporter calibrates one (AnomalyScorer)
            images = tf.TensorSpec(shape, tf.float32, name="images")

            def scores(i: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict]:
                return model.anomaly_score(i["images"], i.get("labels")), {}

            builder.add_anomaly_score(images, scores, threshold, normalization)
        return builder.build("generate", [model.sampling_denoiser], normalization)

    def score_definition(self) -> str:
        model = self.model
        seeds = model.anomaly_seeds
        noise = (
            "one fixed standard-normal image (seed 0)"
            if seeds == 1
            else f"each of {seeds} fixed standard-normal images (seeds 0..{seeds - 1})"
        )
        given = " under each example's label (or the null label)" if self.num_classes else ""
        return (
            f"AnoDDPM reconstruction error (Wyatt et al. 2022): x_0 = 2 images - 1 noised to "
            f"step t* = {model.anomaly_t_star} of {model.schedule.num_steps} with {noise}, "
            f"DDIM (eta = 0) back to clean data in {model.anomaly_steps} steps{given}; "
            "anomaly_score = mean over the input values of (images - reconstruction)^2 in "
            "[0, 1] units" + (", averaged over the noise images" if seeds > 1 else "")
        )

    def example_value(
        self,
        name: str,
        n: int,
        rng: np.random.Generator,
        data: np.ndarray | None,
        labels: np.ndarray | None,
        values: dict[str, np.ndarray],
    ) -> np.ndarray:
        if name == "x_t":
            return rng.standard_normal((n, *self.latent_shape)).astype(np.float32)
        if name == "t":  # up to the last step whose denoised gain is <= MAX_DENOISED_GAIN
            alpha_bar = self.model.schedule.alpha_bars
            gain = np.sqrt((1.0 - alpha_bar) / alpha_bar) / 2.0
            last = int(np.flatnonzero(gain <= MAX_DENOISED_GAIN).max())
            return np.linspace(0, last, n).round().astype(np.int64)
        return super().example_value(name, n, rng, data, labels, values)

    def image_grids(self, images: np.ndarray, num_samples: int, seed: int) -> dict[str, np.ndarray]:
        """``samples`` from fixed noise, and ``denoising``: for n = min(8, sample_steps) of
        them, the x̂_0 the DDIM run predicts at n evenly spaced steps (a square grid: one row
        per sample, noise to image left to right)."""
        out = super().image_grids(images, num_samples, seed)
        if num_samples:
            n = min(int(num_samples), 8, self.model.sample_steps)
            z = np.random.default_rng(seed).standard_normal((n, *self.latent_shape))
            labels = np.arange(n) % self.num_classes if self.num_classes else None
            frames = self.model.trajectory(z.astype(np.float32), labels, frames=n)
            out["denoising"] = np.swapaxes(frames, 0, 1).reshape(-1, *frames.shape[2:])
        return out

    def summary(self) -> dict[str, Any]:
        model = self.model
        out = super().summary()
        out.pop("latent_dim", None)
        # serving_default is generate: its input is z (images are the score signatures' input)
        out["input"] = {"key": "z", "shape": [None, *self.latent_shape], "dtype": "float32"}
        out["diffusion"] = {
            "schedule": model.schedule.get_config(),
            "prediction": model.prediction,
            "sample_steps": model.sample_steps,
            "sampler": "DDIM, eta = 0",
            "clip_denoised": model.clip_denoised,
            "ema": model.ema_decay is not None,
        }
        if self.num_classes:
            out["diffusion"]["guidance_scale"] = float(model.guidance_scale)
        return out

    def use_notes(self) -> list[str]:
        model = self.model
        notes = [
            "- Generates images like the training data by denoising diffusion (Ho et al. 2020): "
            f"`generate` runs DDIM (Song et al. 2021, eta = 0) from z = x_T ~ N(0, I) in "
            f"{model.sample_steps} steps of a {model.schedule.num_steps}-step "
            f"{model.schedule.kind} schedule, in one compiled loop. The same z gives the same "
            "images.",
            "- `sample` (SavedModel only) draws z from a seed; ONNX users feed z to `generate`.",
            "- ONNX: `generate` converts (tf2onnx) to one ONNX `Loop` over the steps, with parity "
            "to Keras; `denoise` too.",
            "- `denoise` is one network evaluation (eps and the implied x_0) for users who run "
            "their own sampler.",
            f"- `score` is the AnoDDPM anomaly score at t* = {model.anomaly_t_star} "
            f"({model.anomaly_steps} DDIM steps back; each score costs that many network "
            "evaluations). Its noise is fixed, so an image always gets the same score, whatever "
            "it is batched with. t* is a setting: choose it on validation data "
            "(zoo.diffusion.anomaly.choose_t_star: highest AUROC of held-out normal images "
            "against other-class or synthetically corrupted ones).",
        ]
        if self.num_classes:
            notes.append(
                f"- Class-conditional with classifier-free guidance (Ho & Salimans 2022) at scale "
                f"{model.guidance_scale:g}, fixed at export: eps = eps_null + s (eps_y - eps_null)."
            )
        return notes
