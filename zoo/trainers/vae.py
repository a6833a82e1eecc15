"""ELBO / IWAE trainer: variational autoencoders with TensorFlow Probability distributions.

- Kingma & Welling (2014), "Auto-Encoding Variational Bayes": loss = -E_q[log p(x|z)]
  + beta * KL(q(z|x) || p(z)), summed over pixels and latent dimensions, averaged over
  the batch, in nats (analytic KL for the diagonal Gaussian posterior).
- Higgins et al. (2017), beta-VAE: ``beta`` weights the KL term. KL warm-up (Bowman et
  al., 2016; Sønderby et al., 2016): beta_t = beta * min(1, t / warmup_steps), where t is
  the optimizer's iteration count; ``beta`` (the value used) is tracked as a metric.
- ``ema_decay``: an exponential moving average of the decoder's weights
  (:class:`zoo.ema.WeightAverage`; Karras et al., 2018; Yazici et al., 2019) decodes at
  inference (``decode``, ``generate``, ``sample`` and their exported signatures); the
  loss, ``reconstruct`` and the scores use the trained decoder.
- Burda et al. (2015), "Importance Weighted Autoencoders": ``objective="iwae"`` maximises
  log (1/k) sum_i w_i with w_i = p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); ``k`` samples.
- Sohn et al. (2015), conditional VAE: :class:`CVAE` conditions encoder and decoder on a
  one-hot label (concatenated to their inputs).

Decoder likelihoods p(x|z) (``likelihood=``): ``bernoulli``, ``continuous_bernoulli``
(Loaiza-Ganem & Cunningham, 2019), ``gaussian`` (fixed scale ``gaussian_scale``) and
``gaussian_learned`` (a learned per-pixel scale: ``scale = min_scale + exp(log_scale)``
with ``log_scale`` a trainer variable of the image's shape, initialised so the scale
starts at ``gaussian_scale``). Every trainer implements the protocol of
:mod:`zoo.likelihood` (``encode``, ``log_likelihood``, ``prior``), so the
importance-sampled marginal likelihood can be estimated for any of them.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from zoo import losses, networks
from zoo.data.batches import unpack_batch
from zoo.ema import WeightAverage, check_decay
from zoo.trainers.base import Trainer
from zoo.trainers.vae_distributions import (
    check_choice,
    check_likelihood,
    gaussian_kl_per_dim,
    likelihood,
    log_mean_exp,
    standard_normal_prior,
)
from zoo.trainers.vae_tasks import VAETasks

tfd = tfp.distributions

OBJECTIVES = ("elbo", "iwae")
#: ``output_bias``: "zeros" (Keras' initialiser) or "data_mean" (Burda et al., 2015: the
#: decoder's output bias starts at the logit of the mean training pixel).
OUTPUT_BIASES = ("zeros", "data_mean")


def check_objective(name: str) -> str:
    return check_choice(
        "objective", name, OBJECTIVES, "iwae: Burda et al., 2015, with k importance samples"
    )


def check_output_bias(name: str) -> str:
    return check_choice(
        "output_bias",
        name,
        OUTPUT_BIASES,
        "data_mean: the decoder's output starts at the mean training pixel",
    )


def mean_pixel_logits(images: Any, bias_shape: tuple[int, ...]) -> tf.Tensor:
    """logit of the mean pixel of ``images`` [N, ...], shaped like the decoder's output
    bias: per pixel for a dense decoder (bias of H*W*C values), per channel for a
    convolutional one (bias of C values). Means are clipped to [1e-3, 1 - 1e-3]. Under
    ``tf.distribute`` the means are over the global batch (:func:`zoo.losses.global_mean`)."""
    images = ops.cast(ops.convert_to_tensor(images), "float32")
    size = int(np.prod(bias_shape))
    if size == int(np.prod(images.shape[1:])):
        mean = ops.reshape(losses.global_mean(images, axis=0), bias_shape)
    elif size == int(images.shape[-1]):
        axes = tuple(range(len(images.shape) - 1))
        mean = ops.reshape(losses.global_mean(images, axis=axes), bias_shape)
    else:
        raise ValueError(
            f"the decoder's output bias has shape {tuple(bias_shape)}: neither one value per "
            f"pixel nor one per channel of images shaped {tuple(images.shape[1:])}"
        )
    mean = ops.clip(mean, 1e-3, 1.0 - 1e-3)
    return ops.log(mean) - ops.log1p(-mean)


@keras.saving.register_keras_serializable(package="zoo")
class VAE(Trainer):
    """Variational autoencoder; the encoder outputs [mean, log-variance] (2 x latent_dim).

    ``objective="elbo"`` with ``k > 1`` averages the reconstruction term over k posterior
    samples (the "VAE, k samples" of Burda et al.); ``objective="iwae"`` optimises the
    k-sample importance-weighted bound. ``warmup_steps > 0`` anneals the KL weight
    linearly from 0 to ``beta`` over that many optimizer steps.

    ``output_bias="data_mean"`` starts the decoder's output bias at the logit of the
    mean training pixel (Burda et al., 2015), so p(x|z) starts at the data mean instead of
    0.5 everywhere: :meth:`init_output_bias` does it, and the first training batch calls
    it once unless it already ran (a saved flag, so resumed and loaded models keep the
    trained bias).

    ``ema_decay`` in (0, 1) keeps ``ema_decoder``, a moving average of the decoder's
    weights updated after every optimizer step; :meth:`decode`, :meth:`generate` and
    :meth:`sample` decode with it (``sampling_decoder``), training uses the live decoder.
    """

    declaration = VAETasks
    NETWORKS = ("encoder", "decoder")
    TRACKERS = ("loss", "elbo", "reconstruction", "kl", "beta")
    #: Whether the networks take a one-hot label as a second input (see :class:`CVAE`).
    conditional = False

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        binarize: bool = False,
        gaussian_scale: float = 0.1,
        min_scale: float = 1e-3,
        warmup_steps: int = 0,
        objective: str = "elbo",
        k: int = 1,
        output_bias: str = "zeros",
        ema_decay: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ):
        objective = check_objective(objective)
        trackers = self.TRACKERS + (("iwae_bound",) if objective == "iwae" else ())
        super().__init__(seed=seed, trackers=trackers, **kwargs)
        self.encoder, self.decoder = encoder, decoder
        self._likelihood = check_likelihood(likelihood)
        self.beta = float(beta)
        self.binarize = bool(binarize)
        self.gaussian_scale = float(gaussian_scale)
        self.min_scale = float(min_scale)
        self.warmup_steps = int(warmup_steps)
        self.objective = objective
        self.k = int(k)
        if self.k < 1:
            raise ValueError(f"k (samples per example) must be at least 1; got {k}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 (0 = no warm-up); got {warmup_steps}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        code = int(self._network_shape(encoder.output_shape)[-1])
        if code != 2 * self.latent_dim:
            raise ValueError(
                f"the encoder must output 2 x latent_dim = {2 * self.latent_dim} values "
                f"(mean and log-variance); it outputs {code}"
            )
        self.ema_decay = check_decay(ema_decay)
        self.decoder_average = (
            WeightAverage(decoder, self.ema_decay, "ema_decoder") if self.ema_decay else None
        )
        # the averaged decoder lives in this attribute: checkpoints and .keras files hold it
        self.ema_decoder = None if self.decoder_average is None else self.decoder_average.average
        self.output_bias = check_output_bias(output_bias)
        self.output_bias_ready = None
        if self.output_bias == "data_mean":
            networks.output_layer(decoder)  # fails now if the decoder has no output bias
            self.output_bias_ready = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="output_bias_ready"
            )
        self.log_scale = None
        if self._likelihood == "gaussian_learned":
            if not 0.0 <= self.min_scale < self.gaussian_scale:
                raise ValueError(
                    f"gaussian_learned needs 0 <= min_scale < gaussian_scale (the initial scale); "
                    f"got min_scale={self.min_scale}, gaussian_scale={self.gaussian_scale}"
                )
            initial = math.log(self.gaussian_scale - self.min_scale)
            self.log_scale = self.add_weight(
                shape=self.image_shape,
                initializer=keras.initializers.Constant(initial),
                name="log_scale",
            )

    # -- shapes ------------------------------------------------------------------------
    @staticmethod
    def _network_shape(shape: Any) -> tuple[Any, ...]:
        """The first input's/output's shape (networks of a CVAE have two inputs)."""
        return tuple(shape[0]) if isinstance(shape[0], (tuple, list)) else tuple(shape)

    @property
    def latent_dim(self) -> int:
        return int(self._network_shape(self.decoder.input_shape)[-1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._network_shape(self.encoder.input_shape)[1:])

    @property
    def likelihood(self) -> str:
        """The decoder likelihood p(x|z) this model's loss uses (also in its config)."""
        return self._likelihood

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) = N(0, I)."""
        return standard_normal_prior(self.latent_dim)

    # -- conditioning hooks (CVAE overrides) ---------------------------------------------
    def condition(self, labels: Any, n: Any, training: bool = False) -> tf.Tensor | None:
        if labels is not None:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} is unconditional and takes no labels; "
                "use a conditional VAE (zoo.load('cvae')) to condition on classes"
            )
        return None

    def encoder_inputs(self, images: tf.Tensor, condition: tf.Tensor | None) -> Any:
        return images

    def decoder_inputs(self, z: tf.Tensor, condition: tf.Tensor | None) -> Any:
        return z

    # -- the model's distributions -----------------------------------------------------
    def _encode(self, images: tf.Tensor, y: tf.Tensor | None, training: bool):
        stats = self.encoder(self.encoder_inputs(images, y), training=training)
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def encode(
        self, images: tf.Tensor, labels: Any = None, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Posterior parameters (mean, log-variance) of q(z|x)."""
        y = self.condition(labels, ops.shape(images)[0])
        return self._encode(images, y, training)

    def scale(self) -> tf.Tensor | None:
        """The learned per-pixel scale of ``gaussian_learned`` (None otherwise)."""
        if self.log_scale is None:
            return None
        return self.min_scale + ops.exp(self.log_scale)

    @property
    def sampling_decoder(self) -> keras.Model:
        """The decoder that decodes at inference: the weight average when ``ema_decay`` is
        set, else the trained decoder."""
        return self.ema_decoder if self.ema_decoder is not None else self.decoder

    def _decoder_distribution(
        self,
        z: tf.Tensor,
        y: tf.Tensor | None,
        training: bool,
        decoder: keras.Model | None = None,
    ) -> tfd.Distribution:
        """p(x|z, y) through ``decoder`` (default: the trained decoder)."""
        decoder = self.decoder if decoder is None else decoder
        logits = decoder(self.decoder_inputs(z, y), training=training)
        return likelihood(
            self._likelihood,
            logits,
            self.gaussian_scale,
            scale=self.scale(),
            event_ndims=len(self.image_shape),
        )

    def decoder_distribution(
        self, z: tf.Tensor, training: bool = False, labels: Any = None
    ) -> tfd.Distribution:
        """p(x|z) (a TFP distribution over whole images)."""
        return self._decoder_distribution(z, self.condition(labels, ops.shape(z)[0]), training)

    #: ``log_likelihood`` accepts z with a leading sample axis (see below).
    log_likelihood_broadcasts = True

    def log_likelihood(
        self, images: tf.Tensor, z: tf.Tensor, labels: Any = None, training: bool = False
    ) -> tf.Tensor:
        """log p(x|z) per example, in nats (summed over pixels).

        ``z`` is [N, d] (one latent point per image, result [N]) or [k, N, d] (k points per
        image, result [k, N]: the images are broadcast, not copied).
        """
        if len(z.shape) == 3:
            k, n, d = ops.shape(z)[0], ops.shape(z)[1], ops.shape(z)[2]
            y = self.condition(labels, n)
            flat_y = None if y is None else ops.tile(y, (k, 1))
            logits = self.decoder(
                self.decoder_inputs(ops.reshape(z, (k * n, d)), flat_y), training=training
            )
            logits = ops.reshape(logits, (k, n, *self.image_shape))
            p = likelihood(
                self._likelihood,
                logits,
                self.gaussian_scale,
                scale=self.scale(),
                event_ndims=len(self.image_shape),
            )
            return p.log_prob(images)
        return self.decoder_distribution(z, training, labels).log_prob(images)

    def decode(self, z: tf.Tensor, labels: Any = None) -> tf.Tensor:
        """The likelihood's mean for latent points z: images in [0, 1] (decoded by
        ``sampling_decoder``: the weight average when ``ema_decay`` is set)."""
        y = self.condition(labels, ops.shape(z)[0])
        return self._decoder_distribution(z, y, False, self.sampling_decoder).mean()

    def generate(self, z: Any, labels: Any = None) -> tf.Tensor:
        """Images (likelihood means) decoded from latent points ``z`` [N, latent_dim]."""
        return self.decode(ops.convert_to_tensor(z, "float32"), labels)

    def reparameterize(self, mean: tf.Tensor, log_variance: tf.Tensor) -> tf.Tensor:
        """z = mean + sigma * epsilon, epsilon ~ N(0, I) from the trainer's seed."""
        return mean + ops.exp(0.5 * log_variance) * self.normal(ops.shape(mean))

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Deterministic reconstruction: decode the posterior mean."""
        return self.reconstruct(images, training=training)

    def reconstruct(self, images: tf.Tensor, labels: Any = None, training: bool = False):
        """Decode the posterior mean: images in [0, 1]."""
        y = self.condition(labels, ops.shape(images)[0])
        mean, _ = self._encode(images, y, training)
        return self._decoder_distribution(mean, y, training).mean()

    def sample(self, n: int, labels: Any = None) -> tf.Tensor:
        """n images decoded from prior draws (moves the trainer's seed generator)."""
        return self.generate(self.normal((n, self.latent_dim)), labels)

    # -- initialisation ----------------------------------------------------------------
    def init_output_bias(self, images: Any) -> None:
        """Set the decoder's output bias to the logit of the mean pixel of ``images``
        (training images in [0, 1], before binarisation): Burda et al. (2015)'s
        initialisation. With ``output_bias="data_mean"`` training does this on its first
        batch; call it with the whole training set before ``fit`` to use every image."""
        self._set_output_bias(mean_pixel_logits(images, self._output_bias_shape()))

    def _output_bias_shape(self) -> tuple[int, ...]:
        return tuple(networks.output_layer(self.decoder).bias.shape)

    def _set_output_bias(self, logits: tf.Tensor) -> None:
        networks.output_layer(self.decoder).bias.assign(logits)
        if self.decoder_average is not None:  # average from the initialised decoder
            self.decoder_average.reset()
        if self.output_bias_ready is not None:
            self.output_bias_ready.assign(1.0)

    def _init_output_bias_once(self, images: tf.Tensor) -> None:
        """:meth:`init_output_bias` on these images if it has not run yet (graph-safe).
        The logits are computed outside the ``tf.cond``: under ``tf.distribute`` their mean
        is an all-reduce, which every replica must run."""
        logits = mean_pixel_logits(images, self._output_bias_shape())

        def init() -> tf.Tensor:
            self._set_output_bias(logits)
            return tf.constant(True)

        tf.cond(self.output_bias_ready < 0.5, init, lambda: tf.constant(False))

    # -- the bound ---------------------------------------------------------------------
    def prepare(self, images: tf.Tensor) -> tf.Tensor:
        """Dynamic binarisation (each pass draws x ~ Bernoulli(pixel)) when enabled."""
        if not self.binarize:
            return images
        noise = self.uniform(ops.shape(images))
        return ops.cast(noise < images, images.dtype)

    def current_beta(self) -> tf.Tensor:
        """beta_t = beta * min(1, t / warmup_steps), t = optimizer iterations (beta if no
        warm-up, or before the model is compiled)."""
        if self.warmup_steps <= 0:
            return ops.convert_to_tensor(self.beta, "float32")
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None:
            return ops.convert_to_tensor(self.beta, "float32")
        step = ops.cast(optimizer.iterations, "float32")
        return self.beta * ops.minimum(1.0, step / float(self.warmup_steps))

    def beta_at(self, step: int | np.ndarray) -> np.ndarray:
        """The KL weight at optimizer step(s) ``step`` (numpy; for schedules and plots)."""
        step = np.asarray(step, dtype=np.float64)
        if self.warmup_steps <= 0:
            return np.full_like(step, self.beta)
        return self.beta * np.minimum(1.0, step / self.warmup_steps)

    def negative_elbo_terms(
        self, images: tf.Tensor, training: bool = False, *, sample: bool = True, labels=None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example (reconstruction nats, KL nats) of a one-sample ELBO estimate.

        ``sample=False`` decodes the posterior mean instead of a draw (deterministic;
        used for scoring).
        """
        y = self.condition(labels, ops.shape(images)[0], training)
        mean, log_variance = self._encode(images, y, training)
        z = self.reparameterize(mean, log_variance) if sample else mean
        reconstruction = -self._decoder_distribution(z, y, training).log_prob(images)
        kl = ops.sum(gaussian_kl_per_dim(mean, log_variance), axis=-1)
        return reconstruction, kl

    def importance_terms(
        self, images: tf.Tensor, k: int, y: tf.Tensor | None, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """k reparameterised posterior samples per example (trainer's seed); returns
        (log p(x|z) [k, N], log p(z) - log q(z|x) [k, N], mean, log-variance)."""
        mean, log_variance = self._encode(images, y, training)
        n, d = ops.shape(mean)[0], self.latent_dim
        eps = self.normal((k, n, d), batch_axis=1)
        z = mean + ops.exp(0.5 * log_variance) * eps
        log_q = -0.5 * ops.sum(ops.square(eps) + log_variance + math.log(2 * math.pi), axis=-1)
        log_pz = -0.5 * ops.sum(ops.square(z) + math.log(2 * math.pi), axis=-1)
        flat_z = ops.reshape(z, (k * n, d))
        tiled = ops.tile(images, (k,) + (1,) * (len(images.shape) - 1))
        tiled_y = None if y is None else ops.tile(y, (k, 1))
        log_px = self._decoder_distribution(flat_z, tiled_y, training).log_prob(tiled)
        return ops.reshape(log_px, (k, n)), log_pz - log_q, mean, log_variance

    def log_weights(self, images: tf.Tensor, k: int, labels: Any = None) -> tf.Tensor:
        """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for k draws z_i ~ q(z|x)
        (trainer's seed), shape [k, N]."""
        y = self.condition(labels, ops.shape(images)[0])
        log_px, log_ratio, _, _ = self.importance_terms(images, k, y)
        return log_px + log_ratio

    def iwae_bound(self, images: tf.Tensor, k: int, labels: Any = None) -> tf.Tensor:
        """Per-example k-sample importance-weighted bound L_k (Burda et al., 2015), nats.
        L_1 is the one-sample ELBO estimate; E[L_k] increases with k towards log p(x)."""
        return log_mean_exp(self.log_weights(images, k, labels), axis=0)

    def step_losses(
        self, images: tf.Tensor, training: bool, labels: Any = None
    ) -> dict[str, tf.Tensor]:
        x = self.prepare(images)
        beta = self.current_beta()
        y = self.condition(labels, ops.shape(x)[0], training)
        if self.objective == "elbo" and self.k == 1:
            mean, log_variance = self._encode(x, y, training)
            z = self.reparameterize(mean, log_variance)
            reconstruction = -self._decoder_distribution(z, y, training).log_prob(x)
        else:
            log_px, log_ratio, mean, log_variance = self.importance_terms(x, self.k, y, training)
            reconstruction = -ops.mean(log_px, axis=0)
        kl = ops.sum(gaussian_kl_per_dim(mean, log_variance), axis=-1)
        rec, kl_mean = losses.average(reconstruction), losses.average(kl)
        values = {
            "loss": rec + beta * kl_mean,
            "elbo": -(rec + kl_mean),
            "reconstruction": rec,
            "kl": kl_mean,
            "beta": beta,
        }
        if self.objective == "iwae":
            # the trained bound weights log p(z)/q(z|x) by beta_t; the reported one is L_k
            values["loss"] = -losses.average(log_mean_exp(log_px + beta * log_ratio, axis=0))
            values["iwae_bound"] = losses.average(log_mean_exp(log_px + log_ratio, axis=0))
        return values

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        images, labels = unpack_batch(data)
        labels = labels if self.conditional else None
        if self.output_bias_ready is not None:
            self._init_output_bias_once(images)
        values = self.minimize(
            lambda: self.step_losses(images, training=True, labels=labels),
            self.optimizer,
            self.trainable_variables,
        )
        if self.decoder_average is not None:
            self.decoder_average.update()
        return self.record(values, ops.shape(images)[0])

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        images, labels = unpack_batch(data)
        labels = labels if self.conditional else None
        values = self.step_losses(images, training=False, labels=labels)
        return self.record(values, ops.shape(images)[0])

    def anomaly_score(self, images: tf.Tensor, labels: Any = None) -> tf.Tensor:
        """Per-example negative ELBO (nats) with z at the posterior mean: deterministic."""
        reconstruction, kl = self.negative_elbo_terms(images, sample=False, labels=labels)
        return reconstruction + kl

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "likelihood": self._likelihood,
            "beta": self.beta,
            "binarize": self.binarize,
            "gaussian_scale": self.gaussian_scale,
            "min_scale": self.min_scale,
            "warmup_steps": self.warmup_steps,
            "objective": self.objective,
            "k": self.k,
            "output_bias": self.output_bias,
            "ema_decay": self.ema_decay,
        }


@keras.saving.register_keras_serializable(package="zoo")
class CVAE(VAE):
    """Conditional VAE (Sohn et al., 2015): q(z|x, y) and p(x|z, y) with y one-hot.

    The encoder takes ``[images, one_hot]`` and the decoder ``[z, one_hot]``. ``labels``
    may be integer class ids [N] or one-hot/soft vectors [N, num_classes]. Without labels
    the condition is the zero vector (the "no label" condition); ``label_dropout`` > 0
    trains that condition too (each training label is dropped with that probability), so
    the model also scores and reconstructs unlabelled images. :meth:`generate` without
    labels cycles through the classes 0, 1, ..., num_classes - 1 (for sample grids).
    """

    conditional = True

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        label_dropout: float = 0.0,
        **kwargs: Any,
    ):
        if len(encoder.inputs) != 2 or len(decoder.inputs) != 2:
            raise ValueError(
                "a CVAE's encoder takes [images, labels] and its decoder [z, labels]; "
                f"got {len(encoder.inputs)} and {len(decoder.inputs)} inputs"
            )
        if not 0.0 <= float(label_dropout) < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1); got {label_dropout}")
        self.label_dropout = float(label_dropout)
        super().__init__(encoder, decoder, **kwargs)
        if int(encoder.input_shape[1][-1]) != self.num_classes:
            raise ValueError(
                f"encoder and decoder disagree on the number of classes: "
                f"{encoder.input_shape[1][-1]} vs {self.num_classes}"
            )

    @property
    def num_classes(self) -> int:
        return int(self.decoder.input_shape[1][-1])

    def one_hot(self, labels: Any, n: Any) -> tf.Tensor:
        """[N, num_classes] float32 from class ids, one-hot rows, or None (zeros)."""
        if labels is None:
            return ops.zeros((n, self.num_classes), "float32")
        labels = ops.convert_to_tensor(labels)
        if len(labels.shape) == 2 and labels.shape[-1] == self.num_classes:
            return ops.cast(labels, "float32")
        if len(labels.shape) == 2 and labels.shape[-1] == 1:
            labels = ops.squeeze(labels, -1)
        if len(labels.shape) != 1:
            raise ValueError(
                f"labels must be class ids [N] or one-hot rows [N, {self.num_classes}]; "
                f"got shape {tuple(labels.shape)}"
            )
        return ops.one_hot(ops.cast(labels, "int32"), self.num_classes, dtype="float32")

    def condition(self, labels: Any, n: Any, training: bool = False) -> tf.Tensor:
        y = self.one_hot(labels, n)
        if training and self.label_dropout > 0 and labels is not None:
            keep = self.uniform((ops.shape(y)[0], 1))
            y = y * ops.cast(keep >= self.label_dropout, y.dtype)
        return y

    def encoder_inputs(self, images: tf.Tensor, condition: tf.Tensor | None) -> Any:
        return [ops.convert_to_tensor(images, "float32"), condition]

    def decoder_inputs(self, z: tf.Tensor, condition: tf.Tensor | None) -> Any:
        return [ops.convert_to_tensor(z, "float32"), condition]

    def generate(self, z: Any, labels: Any = None) -> tf.Tensor:
        """Images of the chosen classes: ``labels`` (ids [N] or one-hot [N, C]); without
        labels, image i shows class i mod num_classes."""
        z = ops.convert_to_tensor(z, "float32")
        if labels is None:
            labels = ops.arange(ops.shape(z)[0]) % self.num_classes
        return self.decode(z, labels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_dropout": self.label_dropout}
