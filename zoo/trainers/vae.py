"""ELBO trainer: a variational autoencoder with TensorFlow Probability distributions.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes"; beta weight after
Higgins et al. (2017). Loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z)),
summed over pixels and latent dimensions, averaged over the batch, in nats.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from zoo import losses
from zoo.trainers.base import Trainer

tfd = tfp.distributions

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")


def check_likelihood(name: str) -> str:
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
    return name


def likelihood(name: str, logits: tf.Tensor, gaussian_scale: float = 0.1) -> tfd.Distribution:
    """p(x|z) as an image-shaped event: Bernoulli, continuous Bernoulli (Loaiza-Ganem &
    Cunningham, 2019) or a Gaussian with fixed scale and mean sigmoid(logits)."""
    if name == "bernoulli":
        base = tfd.Bernoulli(logits=logits, dtype=logits.dtype)
    elif name == "continuous_bernoulli":
        base = tfd.ContinuousBernoulli(logits=logits)
    else:
        base = tfd.Normal(loc=ops.sigmoid(logits), scale=gaussian_scale)
    return tfd.Independent(base, reinterpreted_batch_ndims=3)


def posterior(mean: tf.Tensor, log_variance: tf.Tensor) -> tfd.Distribution:
    """q(z|x): a diagonal Gaussian."""
    return tfd.MultivariateNormalDiag(loc=mean, scale_diag=ops.exp(0.5 * log_variance))


def standard_normal_prior(latent_dim: int, dtype: Any = tf.float32) -> tfd.Distribution:
    """p(z) = N(0, I)."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim], dtype))


@keras.saving.register_keras_serializable(package="zoo")
class VAE(Trainer):
    """Variational autoencoder; the encoder outputs [mean, log-variance] (2 x latent_dim)."""

    NETWORKS = ("encoder", "decoder")
    TRACKERS = ("loss", "elbo", "reconstruction", "kl")

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        binarize: bool = False,
        gaussian_scale: float = 0.1,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(seed=seed, **kwargs)
        self.encoder, self.decoder = encoder, decoder
        self.likelihood = check_likelihood(likelihood)
        self.beta = float(beta)
        self.binarize = bool(binarize)
        self.gaussian_scale = float(gaussian_scale)
        if int(encoder.output_shape[-1]) != 2 * self.latent_dim:
            raise ValueError(
                f"the encoder must output 2 x latent_dim = {2 * self.latent_dim} values "
                f"(mean and log-variance); it outputs {encoder.output_shape[-1]}"
            )

    @property
    def latent_dim(self) -> int:
        return int(self.decoder.input_shape[-1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.encoder.input_shape[1:])

    # -- the model's distributions -------------------------------------------------
    def encode(self, images: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Posterior parameters (mean, log-variance)."""
        stats = self.encoder(images, training=training)
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def decoder_distribution(self, z: tf.Tensor, training: bool = False) -> tfd.Distribution:
        return likelihood(self.likelihood, self.decoder(z, training=training), self.gaussian_scale)

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """The likelihood's mean for latent points z: images in [0, 1]."""
        return self.decoder_distribution(z).mean()

    def reparameterize(self, mean: tf.Tensor, log_variance: tf.Tensor) -> tf.Tensor:
        """z = mean + sigma * epsilon, epsilon ~ N(0, I) from the trainer's seed."""
        return mean + ops.exp(0.5 * log_variance) * self.normal(ops.shape(mean))

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Deterministic reconstruction: decode the posterior mean."""
        mean, _ = self.encode(images, training=training)
        return self.decoder_distribution(mean, training=training).mean()

    reconstruct = call

    def sample(self, n: int) -> tf.Tensor:
        """n images decoded from prior draws."""
        return self.decode(self.normal((n, self.latent_dim)))

    # -- the bound -------------------------------------------------------------------
    def prepare(self, images: tf.Tensor) -> tf.Tensor:
        """Dynamic binarisation (each pass draws x ~ Bernoulli(pixel)) when enabled."""
        if not self.binarize:
            return images
        noise = keras.random.uniform(ops.shape(images), seed=self.seed_generator)
        return ops.cast(noise < images, images.dtype)

    def negative_elbo_terms(
        self, images: tf.Tensor, training: bool = False, *, sample: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example (reconstruction nats, KL nats) of a one-sample ELBO estimate.

        ``sample=False`` decodes the posterior mean instead of a draw (deterministic;
        used for scoring).
        """
        mean, log_variance = self.encode(images, training=training)
        q = posterior(mean, log_variance)
        z = self.reparameterize(mean, log_variance) if sample else mean
        reconstruction = -self.decoder_distribution(z, training=training).log_prob(images)
        kl = tfd.kl_divergence(q, standard_normal_prior(self.latent_dim, mean.dtype))
        return reconstruction, kl

    def step_losses(self, images: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        reconstruction, kl = self.negative_elbo_terms(self.prepare(images), training)
        rec, kl_mean = losses.average(reconstruction), losses.average(kl)
        return {
            "loss": rec + self.beta * kl_mean,
            "elbo": -(rec + kl_mean),
            "reconstruction": rec,
            "kl": kl_mean,
        }

    def anomaly_score(self, images: tf.Tensor) -> tf.Tensor:
        """Per-example negative ELBO (nats) with z at the posterior mean: deterministic."""
        reconstruction, kl = self.negative_elbo_terms(images, sample=False)
        return reconstruction + kl

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "likelihood": self.likelihood,
            "beta": self.beta,
            "binarize": self.binarize,
            "gaussian_scale": self.gaussian_scale,
        }
