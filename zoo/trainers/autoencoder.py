"""Reconstruction trainer: an encoder, a decoder, a reconstruction loss, and the
regularisers that make autoencoders learn something other than the identity:
input corruption (denoising), sparsity and contraction penalties."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.data.timeseries import check_top_fraction
from zoo.trainers.autoencoder_tasks import AutoencoderTasks, SequenceAutoencoderTasks
from zoo.trainers.base import Trainer

CORRUPTIONS = ("gaussian", "masking", "salt_and_pepper")
PENALTIES = ("l1", "kl", "contractive")
SCORES = ("l2", "l1")


def corrupt(
    images: tf.Tensor,
    kind: str,
    level: float,
    seed: keras.random.SeedGenerator | None = None,
    *,
    draw: Callable[..., tf.Tensor] | None = None,
) -> tf.Tensor:
    """Corrupt inputs for a denoising autoencoder (Vincent et al., 2008 and 2010).

    ``gaussian``: x + N(0, level^2), clipped to [0, 1]; ``masking``: each value set to 0
    with probability ``level``; ``salt_and_pepper``: each value set to 0 or 1 (even odds)
    with probability ``level``. The noise comes from ``keras.random`` with ``seed``, or
    from ``draw(sampler, shape)`` (a trainer's replica-aware
    :meth:`zoo.trainers.base.Trainer.draw`).
    """

    def sample(sampler: Callable[..., tf.Tensor]) -> tf.Tensor:
        shape = ops.shape(images)
        return draw(sampler, shape) if draw is not None else sampler(shape, seed=seed)

    if kind == "gaussian":
        return ops.clip(images + level * sample(keras.random.normal), 0.0, 1.0)
    hit = sample(keras.random.uniform) < level
    if kind == "masking":
        return ops.where(hit, ops.zeros_like(images), images)
    salt = ops.cast(sample(keras.random.uniform) < 0.5, images.dtype)
    return ops.where(hit, salt, images)


def kl_sparsity(codes: tf.Tensor, target: float) -> tf.Tensor:
    """sum_j KL(rho || rho_hat_j), rho_hat_j = mean activation of unit j over the batch
    (Ng, "Sparse autoencoder", CS294A notes, 2011). Codes must lie in (0, 1). Under
    ``tf.distribute`` rho_hat is the GLOBAL batch's mean (:func:`zoo.losses.global_mean`),
    so the term is the one a single device computes."""
    eps = 1e-6
    rho_hat = ops.clip(losses.global_mean(codes, axis=0), eps, 1.0 - eps)
    rho = target
    return ops.sum(
        rho * ops.log(rho / rho_hat) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - rho_hat))
    )


def sigmoid_dense_of(encoder: keras.Model) -> keras.layers.Dense | None:
    """The Dense layer if ``encoder`` is Flatten? -> Dense(sigmoid), the case with an
    analytic Jacobian; otherwise None."""
    weighted = [layer for layer in encoder.layers if layer.weights]
    if len(weighted) == 1 and isinstance(weighted[0], keras.layers.Dense):
        activation = keras.activations.serialize(weighted[0].activation)
        name = activation if isinstance(activation, str) else activation.get("config", "")
        if name == "sigmoid":
            return weighted[0]
    return None


def contractive_penalty(encoder: keras.Model, images: tf.Tensor, training: bool) -> tf.Tensor:
    """Per-example squared Frobenius norm of the encoder's Jacobian dh/dx (Rifai et al., 2011).

    For h = sigmoid(W x + b): ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ij^2, exactly.
    Any other encoder: the Jacobian through the tape (exact, slower).
    """
    dense = sigmoid_dense_of(encoder)
    if dense is not None:
        h = encoder(images, training=training)
        column_norms = ops.sum(ops.square(dense.kernel), axis=0)  # [latent]
        return ops.sum(ops.square(h * (1.0 - h)) * column_norms, axis=1)
    with tf.GradientTape() as tape:
        tape.watch(images)
        h = encoder(images, training=training)
    jacobian = tape.batch_jacobian(h, images)  # [batch, latent, *image]
    return ops.sum(ops.reshape(ops.square(jacobian), (ops.shape(images)[0], -1)), axis=1)


@keras.saving.register_keras_serializable(package="zoo")
class Autoencoder(Trainer):
    """x -> encoder -> code -> decoder -> x_hat, trained to minimise a reconstruction loss.

    The loss is summed over pixels and averaged over the batch (Hinton & Salakhutdinov,
    2006). Options:

    - ``corruption`` (``gaussian`` | ``masking`` | ``salt_and_pepper``) with
      ``noise_level``: the encoder sees corrupted inputs *in training only*; the target
      is the clean input (denoising autoencoder).
    - ``penalty`` with ``penalty_weight``: ``l1`` on the code (sparse), ``kl`` to a
      target mean activation ``sparsity_target`` (sparse; sigmoid codes), or
      ``contractive``. It is tracked as its own metric, ``penalty``.
    - ``score``: the anomaly score, ``l2`` (mean squared error per value, default) or
      ``l1`` (mean absolute error per value); ``score_blur`` = sigma > 0 (image models)
      scores the residual x - x_hat after a Gaussian blur of sigma pixels, so that a
      stroke reconstructed a pixel off costs less than a stroke missing or added;
      ``score_top_fraction`` = f < 1 averages only the largest round(f x values)
      errors, so a localised defect (a missing stroke) is not diluted by the many values
      every normal input also gets slightly wrong.
    """

    declaration = AutoencoderTasks
    NETWORKS = ("encoder", "decoder")

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        reconstruction_loss: str = "mse",
        corruption: str | None = None,
        noise_level: float = 0.0,
        penalty: str | None = None,
        penalty_weight: float = 0.0,
        sparsity_target: float = 0.05,
        score: str = "l2",
        score_blur: float = 0.0,
        score_top_fraction: float = 1.0,
        seed: int | None = None,
        **kwargs: Any,
    ):
        trackers = ("loss", "reconstruction") + (("penalty",) if penalty else ())
        super().__init__(seed=seed, trackers=trackers, **kwargs)
        self.encoder, self.decoder = encoder, decoder
        self.reconstruction_loss = _check("reconstruction_loss", reconstruction_loss,
                                          losses.RECONSTRUCTION_LOSSES)  # fmt: skip
        self.corruption = _check("corruption", corruption, CORRUPTIONS, optional=True)
        self.noise_level = float(noise_level)
        if self.corruption and not 0.0 < self.noise_level <= (
            1.0 if corruption != "gaussian" else 10.0
        ):
            raise ValueError(
                f"corruption {corruption!r} needs noise_level > 0 (a probability for masking and "
                f"salt_and_pepper, a standard deviation for gaussian); got {noise_level}"
            )
        self.penalty = _check("penalty", penalty, PENALTIES, optional=True)
        self.penalty_weight = float(penalty_weight)
        self.sparsity_target = float(sparsity_target)
        if self.penalty and self.penalty_weight <= 0:
            raise ValueError(f"penalty {penalty!r} needs penalty_weight > 0; got {penalty_weight}")
        if self.penalty == "kl" and not 0.0 < self.sparsity_target < 1.0:
            raise ValueError(f"sparsity_target must be in (0, 1); got {sparsity_target}")
        self.score = _check("score", score, SCORES)
        self.score_blur = float(score_blur)
        if not (self.score_blur >= 0.0 and math.isfinite(self.score_blur)):
            raise ValueError(f"score_blur must be a sigma in pixels >= 0; got {score_blur}")
        if self.score_blur and len(self.image_shape) != 3:
            raise ValueError(
                "score_blur blurs image residuals; this model's inputs have shape "
                f"{self.image_shape}, not (height, width, channels)"
            )
        self.score_top_fraction = check_top_fraction(score_top_fraction)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The input's shape without the batch axis (an image, or a sequence [T, F])."""
        return tuple(self.encoder.input_shape[1:])

    @property
    def latent_dim(self) -> int:
        return int(self.decoder.input_shape[-1])

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.decoder(self.encoder(images, training=training), training=training)

    def encode(self, images: tf.Tensor) -> tf.Tensor:
        return self.encoder(images, training=False)

    def decode(self, codes: tf.Tensor) -> tf.Tensor:
        return self.decoder(codes, training=False)

    def reconstruct(self, images: tf.Tensor) -> tf.Tensor:
        return self(images, training=False)

    def denoise(self, images: tf.Tensor) -> tf.Tensor:
        """Clean estimates of (noisy) inputs: the reconstruction."""
        return self.reconstruct(images)

    @property
    def score_top_count(self) -> int:
        """How many of the largest per-value errors the score averages."""
        size = math.prod(self.image_shape)
        return (
            size
            if self.score_top_fraction >= 1.0
            else max(1, round(self.score_top_fraction * size))
        )

    def anomaly_score(self, images: tf.Tensor) -> tf.Tensor:
        """Per-example mean reconstruction error per value (``score``: l2 or l1), of the
        residual blurred by ``score_blur`` pixels when that is set, over the largest
        ``score_top_fraction`` of the values."""
        images = ops.convert_to_tensor(images, "float32")
        residual = images - self.reconstruct(images)
        if self.score_blur:
            residual = losses.gaussian_blur(residual, self.score_blur)
        flat = ops.reshape(residual, (ops.shape(residual)[0], -1))
        errors = ops.square(flat) if self.score == "l2" else ops.abs(flat)
        if self.score_top_count < math.prod(self.image_shape):
            errors = ops.top_k(errors, self.score_top_count, sorted=False)[0]
        return ops.mean(errors, axis=1)

    def regularizer_losses(self) -> tf.Tensor | float:
        """The sum of ``self.losses``: the penalties the networks' own layers added in the
        last call (activity regularisers) and their weight regularisers; 0 if none."""
        return sum(self.losses) if self.losses else 0.0

    def regularization(self, images: tf.Tensor, codes: tf.Tensor, training: bool) -> tf.Tensor:
        """The penalty's batch value (before its weight)."""
        if self.penalty == "l1":
            return losses.average(
                ops.sum(ops.abs(ops.reshape(codes, (ops.shape(codes)[0], -1))), 1)
            )
        if self.penalty == "kl":
            return kl_sparsity(codes, self.sparsity_target)
        return losses.average(contractive_penalty(self.encoder, images, training))

    def step_losses(self, images: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        inputs = images
        if training and self.corruption:
            inputs = corrupt(images, self.corruption, self.noise_level, draw=self.draw)
        codes = self.encoder(inputs, training=training)
        error = losses.reconstruction_error(
            images, self.decoder(codes, training=training), self.reconstruction_loss
        )
        reconstruction = losses.average(error)
        values = {"reconstruction": reconstruction}
        total = reconstruction + self.regularizer_losses()
        if self.penalty:
            values["penalty"] = self.regularization(inputs, codes, training)
            total = total + self.penalty_weight * values["penalty"]
        return {"loss": total, **values}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "reconstruction_loss": self.reconstruction_loss,
            "corruption": self.corruption,
            "noise_level": self.noise_level,
            "penalty": self.penalty,
            "penalty_weight": self.penalty_weight,
            "sparsity_target": self.sparsity_target,
            "score": self.score,
            "score_blur": self.score_blur,
            "score_top_fraction": self.score_top_fraction,
        }


def _check(what: str, value: str | None, choices: tuple[str, ...], optional: bool = False):
    if value is None and optional:
        return None
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


@keras.saving.register_keras_serializable(package="zoo")
class SequenceAutoencoder(Autoencoder):
    """An autoencoder over sequences [T, F] with padding: steps whose features all equal
    ``mask_value`` are padding, excluded from the loss and the scores.

    ``step_scores`` gives per-timestep errors [N, T] (mean over features, 0 at padding);
    ``anomaly_score`` is their mean over each sequence's valid steps (Malhotra et al.,
    2016, "LSTM-based encoder-decoder for multi-sensor anomaly detection"), or with
    ``score_top_fraction`` = f < 1 the mean of its largest
    :func:`zoo.data.top_step_count` steps, so that a spike a few steps long is not
    averaged away by the rest of the sequence.
    """

    declaration = SequenceAutoencoderTasks

    def __init__(self, encoder: keras.Model, decoder: keras.Model, *, mask_value: float = 0.0,
                 **kwargs: Any):  # fmt: skip
        kwargs.setdefault("reconstruction_loss", "mse")
        super().__init__(encoder, decoder, **kwargs)
        if self.reconstruction_loss == "bce":
            raise ValueError("sequences are real-valued: use reconstruction_loss 'mse' or 'mae'")
        if self.corruption not in (None, "gaussian"):
            raise ValueError("sequence autoencoders support corruption 'gaussian' only")
        self.mask_value = float(mask_value)

    @property
    def sequence_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def valid_steps(self, sequences: tf.Tensor) -> tf.Tensor:
        """[N, T] float mask: 1 for real steps, 0 for padding."""
        return ops.cast(ops.any(ops.not_equal(sequences, self.mask_value), axis=-1), "float32")

    def step_errors(self, sequences: tf.Tensor, reconstruction: tf.Tensor) -> tf.Tensor:
        diff = sequences - reconstruction
        error = ops.square(diff) if self.score == "l2" else ops.abs(diff)
        return ops.mean(error, axis=-1) * self.valid_steps(sequences)

    def step_scores(self, sequences: tf.Tensor) -> tf.Tensor:
        return self.step_errors(sequences, self.reconstruct(sequences))

    def anomaly_score(self, sequences: tf.Tensor) -> tf.Tensor:
        sequences = ops.convert_to_tensor(sequences, "float32")
        return self.sequence_scores(self.step_scores(sequences), sequences)

    def sequence_scores(self, step_scores: tf.Tensor, sequences: tf.Tensor) -> tf.Tensor:
        """Per-sequence scores [N] from ``step_scores`` [N, T] of ``sequences``: the mean
        over the valid steps, or over the largest ``score_top_fraction`` of them."""
        valid = ops.sum(self.valid_steps(sequences), axis=1)
        if self.score_top_fraction >= 1.0:
            return ops.sum(step_scores, axis=1) / ops.maximum(valid, 1.0)
        # errors are >= 0 and padding scores 0, so sorting puts the valid steps' largest first
        largest_first = ops.top_k(step_scores, self.sequence_shape[0], sorted=True)[0]
        count = ops.maximum(1.0, ops.floor(self.score_top_fraction * valid + 0.5))
        taken = ops.cast(
            ops.arange(self.sequence_shape[0], dtype="float32")[None, :] < count[:, None],
            "float32",
        )
        return ops.sum(largest_first * taken, axis=1) / count

    def step_losses(self, sequences: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        inputs = sequences
        if training and self.corruption == "gaussian":
            inputs = sequences + self.noise_level * self.normal(ops.shape(sequences))
        codes = self.encoder(inputs, training=training)
        reconstruction = self.decoder(codes, training=training)
        diff = sequences - reconstruction
        error = ops.square(diff) if self.reconstruction_loss == "mse" else ops.abs(diff)
        mask = self.valid_steps(sequences)
        per_sequence = ops.sum(ops.sum(error, axis=-1) * mask, axis=1)  # summed, like images
        loss = losses.average(per_sequence)
        values = {"reconstruction": loss}
        total = loss + self.regularizer_losses()
        if self.penalty:
            values["penalty"] = self.regularization(inputs, codes, training)
            total = total + self.penalty_weight * values["penalty"]
        return {"loss": total, **values}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mask_value": self.mask_value}
