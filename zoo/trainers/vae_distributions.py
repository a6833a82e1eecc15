"""The VAE's distributions on ``tfp.distributions``: the decoder likelihood p(x|z) by name,
the diagonal Gaussian posterior q(z|x), the standard normal prior p(z), their analytic KL
per latent dimension (Kingma & Welling, 2014, appendix B) and a stable log-mean-exp for
the IWAE bound (Burda et al., 2015).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

tfd = tfp.distributions

__all__ = [
    "LIKELIHOODS",
    "check_choice",
    "check_likelihood",
    "gaussian_kl_per_dim",
    "likelihood",
    "log_mean_exp",
    "posterior",
    "standard_normal_prior",
]


LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned")


def check_choice(key: str, value: str, choices: tuple[str, ...], hint: str = "") -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming ``key`` and them."""
    if value not in choices:
        raise ValueError(
            f"unknown {key} {value!r}; choose one of {', '.join(choices)}"
            + (f" ({hint})" if hint else "")
        )
    return value


def check_likelihood(name: str) -> str:
    return check_choice("likelihood", name, LIKELIHOODS)


def likelihood(
    name: str,
    logits: tf.Tensor,
    gaussian_scale: float = 0.1,
    *,
    scale: tf.Tensor | None = None,
    event_ndims: int | None = None,
) -> tfd.Distribution:
    """p(x|z) as an image-shaped event (the last ``event_ndims`` axes of the logits; by
    default all but the first).

    ``bernoulli`` / ``continuous_bernoulli`` take the decoder's logits; the Gaussians have
    mean sigmoid(logits) and either the fixed ``gaussian_scale`` or, for
    ``gaussian_learned``, ``scale`` (a tensor broadcastable to the image, e.g. per pixel).
    """
    check_likelihood(name)
    if name == "bernoulli":
        base = tfd.Bernoulli(logits=logits, dtype=logits.dtype)
    elif name == "continuous_bernoulli":
        base = tfd.ContinuousBernoulli(logits=logits)
    elif name == "gaussian":
        base = tfd.Normal(loc=ops.sigmoid(logits), scale=gaussian_scale)
    else:
        if scale is None:
            raise ValueError("likelihood 'gaussian_learned' needs the learned scale tensor")
        base = tfd.Normal(loc=ops.sigmoid(logits), scale=scale)
    if event_ndims is None:
        event_ndims = len(logits.shape) - 1
    return tfd.Independent(base, reinterpreted_batch_ndims=event_ndims)


def posterior(mean: tf.Tensor, log_variance: tf.Tensor) -> tfd.Distribution:
    """q(z|x): a diagonal Gaussian."""
    return tfd.MultivariateNormalDiag(loc=mean, scale_diag=ops.exp(0.5 * log_variance))


def standard_normal_prior(latent_dim: int, dtype: Any = tf.float32) -> tfd.Distribution:
    """p(z) = N(0, I)."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim], dtype))


def gaussian_kl_per_dim(mean: tf.Tensor, log_variance: tf.Tensor) -> tf.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, 1)) per latent dimension (K&W 2014, App. B)."""
    return 0.5 * (ops.square(mean) + ops.exp(log_variance) - 1.0 - log_variance)


def log_mean_exp(values: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """log((1/k) sum_i exp(values_i)) along ``axis``, computed stably."""
    k = ops.cast(ops.shape(values)[axis], values.dtype)
    return ops.logsumexp(values, axis=axis) - ops.log(k)
