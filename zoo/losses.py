"""Losses, one home for all of them. Every function returns per-example values
(shape ``[batch]``); trainers average them with :func:`average` (the local mean).
Under ``tf.distribute`` the objective is divided by the replica count once, by
:func:`scale_for_replicas`; batch statistics use :func:`global_mean`.

GAN losses take discriminator *logits* D(x) (before any sigmoid); s = sigmoid. A
discriminator may give several logits per example (a PatchGAN map [N, h, w, 1], Isola et
al., 2017): every equation below is applied to each logit and the per-example loss is its
mean over all of the example's logits (every non-batch axis); a [N, 1] output is the
classic single-logit case.

- ``minimax`` (Goodfellow et al., 2014): D: -log s(D(x)) - log(1 - s(D(G(z)))),
  G: log(1 - s(D(G(z)))).
- ``non_saturating`` (same paper): D as minimax, G: -log s(D(G(z))).
- ``least_squares`` (Mao et al., 2017): D: (D(x) - 1)^2 / 2 + D(G(z))^2 / 2,
  G: (D(G(z)) - 1)^2 / 2.
- ``wasserstein`` (Arjovsky et al., 2017): D: D(G(z)) - D(x), G: -D(G(z)).
- ``hinge`` (Lim & Ye, 2017): D: relu(1 - D(x)) + relu(1 + D(G(z))), G: -D(G(z)).

The WGAN-GP gradient penalty (Gulrajani et al., 2017) is :func:`gradient_penalty`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

GAN_LOSSES = ("minimax", "non_saturating", "least_squares", "wasserstein", "hinge")
RECONSTRUCTION_LOSSES = ("mse", "mae", "bce")


def average(per_example: tf.Tensor) -> tf.Tensor:
    """The mean over this replica's batch (the plain mean on one device).

    Every term of an objective is a local mean (or a global batch statistic, see
    :func:`global_mean`); :func:`scale_for_replicas`, applied once to the whole objective by
    :meth:`zoo.trainers.base.Trainer.minimize`, is the one home of the 1/replicas scaling.
    """
    return ops.mean(per_example)


# -- tf.distribute: one home for the replica scaling and for global batch statistics -------
def replicas_in_sync() -> int:
    """How many replicas compute this step together (1 outside a ``tf.distribute`` strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: the strategy's count
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync


def scale_for_replicas(loss: tf.Tensor) -> tf.Tensor:
    """``loss / N`` for N replicas in sync (``loss`` unchanged on one device).

    Keras's optimizers *sum* the replicas' gradients, so each replica must differentiate its
    local objective divided by N: the sum of N local means / N is the global mean (exactly
    when the replicas' batches are equal, as Keras's own ``train_step`` assumes,
    ``keras.src.losses.loss.scale_loss_for_distribution``). This applies to every kind of
    term alike (raw means, gradient penalties, KL terms, layers' ``add_loss``), which is
    why it is applied once, to the whole objective, and never inside the terms.
    """
    n = replicas_in_sync()
    if n == 1:
        return loss
    return loss / ops.cast(n, loss.dtype)


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """``value`` summed over the replicas in sync (``value`` itself on one device);
    differentiable (the gradient of an all-reduce sum is the all-reduce of the gradients)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_mean(x: tf.Tensor, axis: int | tuple[int, ...] = 0) -> tf.Tensor:
    """The mean of ``x`` over ``axis`` (which includes the batch axis 0) across the GLOBAL
    batch: the same value on every replica as on one device holding the whole batch. For
    statistics of the batch that are not per-example means (a sparse autoencoder's mean
    activation, a data-mean initialisation)."""
    x = ops.convert_to_tensor(x)
    axes = [axis] if isinstance(axis, int) else list(axis)
    count = ops.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
    total, count = global_sum((ops.sum(x, axis=axes), count))
    return total / count


def _flat(x: tf.Tensor) -> tf.Tensor:
    return ops.reshape(x, (ops.shape(x)[0], -1))


def per_example_mean(per_logit: tf.Tensor) -> tf.Tensor:
    """[batch]: the mean of a per-logit loss over every non-batch axis."""
    return ops.mean(_flat(per_logit), axis=1)


def check_gan_loss(kind: str) -> str:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}")
    return kind


def discriminator_loss(
    real_logits: tf.Tensor,
    fake_logits: tf.Tensor,
    kind: str = "non_saturating",
    *,
    real_label: float = 1.0,
) -> tf.Tensor:
    """Per-example discriminator (critic) loss: the real and the generated term, each
    averaged over the example's logits.

    ``real_label`` < 1 gives one-sided label smoothing (Salimans et al., 2016) for
    the cross-entropy losses.
    """
    real, fake = real_logits, fake_logits
    kind = check_gan_loss(kind)
    if kind in ("minimax", "non_saturating"):
        # -[y log s(r) + (1 - y) log(1 - s(r))] - log(1 - s(f)); log(1 - s(t)) = -softplus(t)
        real_term = real_label * ops.softplus(-real) + (1.0 - real_label) * ops.softplus(real)
        fake_term = ops.softplus(fake)
    elif kind == "least_squares":
        real_term, fake_term = 0.5 * ops.square(real - real_label), 0.5 * ops.square(fake)
    elif kind == "wasserstein":
        real_term, fake_term = -real, fake
    else:  # hinge
        real_term, fake_term = ops.relu(1.0 - real), ops.relu(1.0 + fake)
    return per_example_mean(real_term) + per_example_mean(fake_term)


def generator_loss(fake_logits: tf.Tensor, kind: str = "non_saturating") -> tf.Tensor:
    """Per-example generator loss for the discriminator's logits on generated images
    (averaged over the example's logits)."""
    fake = fake_logits
    kind = check_gan_loss(kind)
    if kind == "minimax":
        per_logit = -ops.softplus(fake)  # log(1 - sigma(f))
    elif kind == "non_saturating":
        per_logit = ops.softplus(-fake)  # -log sigma(f)
    elif kind == "least_squares":
        per_logit = 0.5 * ops.square(fake - 1.0)
    else:
        per_logit = -fake  # wasserstein and hinge
    return per_example_mean(per_logit)


def reconstruction_error(x: tf.Tensor, x_hat: tf.Tensor, kind: str = "mse") -> tf.Tensor:
    """Per-example reconstruction error, *summed* over pixels.

    ``mse`` = sum (x - x_hat)^2, ``mae`` = sum |x - x_hat|, ``bce`` = binary
    cross-entropy of x under Bernoulli(x_hat) (x_hat are probabilities).
    """
    x, x_hat = _flat(x), _flat(x_hat)
    if kind == "mse":
        return ops.sum(ops.square(x - x_hat), axis=1)
    if kind == "mae":
        return ops.sum(ops.abs(x - x_hat), axis=1)
    if kind == "bce":
        eps = 1e-7
        p = ops.clip(x_hat, eps, 1.0 - eps)
        return -ops.sum(x * ops.log(p) + (1.0 - x) * ops.log(1.0 - p), axis=1)
    raise ValueError(
        f"unknown reconstruction loss {kind!r}; choose one of {', '.join(RECONSTRUCTION_LOSSES)}"
    )


def gaussian_taps(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian kernel of standard deviation ``sigma`` pixels, radius
    max(1, round(2 sigma)) taps on each side."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    radius = max(1, round(2 * sigma))
    taps = np.exp(-(np.arange(-radius, radius + 1, dtype=np.float64) ** 2) / (2 * sigma**2))
    return taps / taps.sum()


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """Gaussian blur of ``images`` [N, H, W, C], each channel on its own, zero padding at
    the border ("same" size): a depthwise convolution with a fixed kernel, so it exports
    to SavedModel and ONNX as one op."""
    taps = gaussian_taps(sigma)
    channels = int(images.shape[-1])
    kernel = np.outer(taps, taps)[:, :, None, None] * np.ones((1, 1, channels, 1))
    kernel = ops.convert_to_tensor(kernel.astype("float32"))
    return ops.depthwise_conv(ops.cast(images, "float32"), kernel, strides=1, padding="same")


# -- WGAN-GP (Gulrajani et al., 2017) ---------------------------------------------------
def interpolation_weights(
    real: tf.Tensor, seed: Any = None, *, draw: Callable[..., tf.Tensor] | None = None
) -> tf.Tensor:
    """alpha ~ Uniform[0, 1], one per example, shaped ``[batch, 1, ..., 1]`` to broadcast
    over ``real`` (Gulrajani et al., Algorithm 1; keras.io's example draws it from a normal
    distribution, which leaves the segment between the real and the generated image).

    ``draw(shape, dtype=...)`` replaces ``keras.random.uniform`` with ``seed`` (a trainer
    passes :meth:`zoo.trainers.base.Trainer.uniform`, replica-aware)."""
    shape = (ops.shape(real)[0],) + (1,) * (len(real.shape) - 1)
    if draw is not None:
        return draw(shape, dtype=real.dtype)
    return keras.random.uniform(shape, 0.0, 1.0, dtype=real.dtype, seed=seed)


def interpolate(real: tf.Tensor, fake: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """x_hat = alpha * x + (1 - alpha) * G(z)."""
    return alpha * real + (1.0 - alpha) * fake


def gradient_penalty(
    critic: Callable[[tf.Tensor], tf.Tensor],
    real: tf.Tensor,
    fake: tf.Tensor,
    alpha: tf.Tensor,
    target: float = 1.0,
) -> tf.Tensor:
    """Per-example ``(||grad_x_hat D(x_hat)||_2 - target)^2`` at ``x_hat`` =
    :func:`interpolate` ``(real, fake, alpha)``; the critic loss adds ``lambda`` times its
    mean (lambda = 10 in the paper). The norm is over every non-batch axis.

    ``critic`` maps a batch to logits ``[batch, 1]`` or a logit map (close over labels for a
    conditional critic); D(x) is the mean of an example's logits, as in the losses.
    Differentiable in the critic's weights (a nested tape), so it trains the critic.
    """
    x_hat = ops.convert_to_tensor(interpolate(real, fake, alpha))
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        scores = per_example_mean(critic(x_hat))
    # The gradient of the summed scores: example i's share is grad D(x_hat[i]) as long as
    # its score depends on x_hat[i] only (no batch norm, no minibatch statistics).
    grads = tape.gradient(scores, x_hat)
    norms = ops.sqrt(ops.sum(ops.square(_flat(grads)), axis=1) + 1e-12)
    return ops.square(norms - target)
