"""Adversarial trainer: a generator and a discriminator (critic), two optimizers.

Goodfellow et al. (2014); losses in :mod:`zoo.losses`. Images enter the
networks in [-1, 1] (tanh generators) and leave the trainer in [0, 1].

One trainer covers the unconditional, conditional and Wasserstein families; the
differences are config flags (every flag is a constructor argument, in ``get_config``):

- ``loss``: a pair of losses in :mod:`zoo.losses` (default non-saturating);
- ``num_classes`` > 0: a conditional GAN (Mirza & Osindero, 2014). Both networks take
  ``[inputs, labels]`` (integer labels ``[batch]``); batches are ``(images, labels)``;
- ``discriminator_steps`` critic steps per generator step; with ``split_batch`` each
  critic step takes its own share of the batch (a fresh real minibatch per critic step,
  Arjovsky et al., 2017, Algorithm 1);
- ``clip_value``: weight clipping of every critic weight to [-c, c] after each critic step
  (WGAN); ``gradient_penalty``: lambda of the WGAN-GP penalty (Gulrajani et al., 2017);
- stabilisers: ``label_smoothing`` (one-sided), ``instance_noise`` (Gaussian noise on the
  discriminator's inputs, sigma annealed linearly to 0 over ``instance_noise_steps``
  generator steps), ``ema_decay`` (an exponential moving average of the generator's
  weights, :class:`zoo.ema.WeightAverage`, used by :meth:`GAN.generate` and exported:
  Karras et al., 2018; Yazici et al., 2019). Spectral normalisation and minibatch standard
  deviation are discriminator layers (:mod:`zoo.layers`), chosen by the builders.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.data.batches import unpack_batch
from zoo.ema import WeightAverage, check_decay
from zoo.trainers.base import Trainer
from zoo.trainers.gan_tasks import GANTasks

#: Losses whose discriminator term uses the real label (so label smoothing applies).
SMOOTHABLE_LOSSES = ("minimax", "non_saturating", "least_squares")


def to_signed(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> [-1, 1]."""
    return images * 2.0 - 1.0


def to_unit(images: tf.Tensor) -> tf.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (images + 1.0) / 2.0


def instance_noise_stddev(step: Any, initial: float, anneal_steps: int) -> tf.Tensor:
    """Instance-noise sigma after ``step`` generator steps: ``initial`` annealed linearly
    to 0 at ``anneal_steps`` and 0 afterwards; ``anneal_steps = 0`` keeps it constant."""
    initial = float(initial)
    if anneal_steps <= 0:
        return ops.convert_to_tensor(initial, "float32")
    fraction = ops.cast(step, "float32") / float(anneal_steps)
    return initial * ops.maximum(1.0 - fraction, 0.0)


@keras.saving.register_keras_serializable(package="zoo")
class GAN(Trainer):
    """Alternating updates: ``discriminator_steps`` critic steps, then one generator step.

    Compile defaults follow each family's paper: Adam(2e-4, beta_1=0.5) (Radford et al.,
    2016); with the Wasserstein loss RMSProp(5e-5) (Arjovsky et al., 2017), or with a
    gradient penalty Adam(1e-4, beta_1=0, beta_2=0.9) (Gulrajani et al., 2017).
    """

    declaration = GANTasks
    NETWORKS = ("generator", "discriminator")
    OPTIMIZERS = {"generator_optimizer": "generator", "discriminator_optimizer": "discriminator"}
    TRACKERS = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        loss: str = "non_saturating",
        num_classes: int = 0,
        discriminator_steps: int = 1,
        split_batch: bool = True,
        label_smoothing: float = 0.0,
        clip_value: float | None = None,
        gradient_penalty: float = 0.0,
        instance_noise: float = 0.0,
        instance_noise_steps: int = 10_000,
        ema_decay: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ):
        trackers = list(self.TRACKERS)
        if gradient_penalty:
            trackers.append("gradient_penalty")
        if instance_noise:
            trackers.append("noise_stddev")
        super().__init__(seed=seed, trackers=tuple(trackers), **kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.loss_kind = losses.check_gan_loss(loss)
        self.num_classes = int(num_classes)
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional); got {num_classes}")
        expected_inputs = 2 if self.num_classes else 1
        for role, net in (("generator", generator), ("discriminator", discriminator)):
            if len(net.inputs) != expected_inputs:
                raise ValueError(
                    f"the {role} takes {len(net.inputs)} input(s); a "
                    f"{'conditional' if self.num_classes else 'unconditional'} GAN needs "
                    f"{expected_inputs} ({'[inputs, labels]' if self.num_classes else 'inputs'})"
                )
        if discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be >= 1; got {discriminator_steps}")
        self.discriminator_steps = int(discriminator_steps)
        self.split_batch = bool(split_batch)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        if label_smoothing and self.loss_kind not in SMOOTHABLE_LOSSES:
            raise ValueError(
                f"label_smoothing has no effect with the {self.loss_kind} loss; it applies to "
                f"{', '.join(SMOOTHABLE_LOSSES)}"
            )
        self.label_smoothing = float(label_smoothing)
        if clip_value is not None and not clip_value > 0:
            raise ValueError(f"clip_value must be > 0 or None; got {clip_value}")
        self.clip_value = None if clip_value is None else float(clip_value)
        if gradient_penalty < 0:
            raise ValueError(f"gradient_penalty must be >= 0; got {gradient_penalty}")
        self.gradient_penalty = float(gradient_penalty)
        if instance_noise < 0 or instance_noise_steps < 0:
            raise ValueError(
                "instance_noise and instance_noise_steps must be >= 0; got "
                f"{instance_noise} and {instance_noise_steps}"
            )
        self.instance_noise = float(instance_noise)
        self.instance_noise_steps = int(instance_noise_steps)
        self.ema_decay = check_decay(ema_decay)
        self.generator_average = (
            WeightAverage(generator, self.ema_decay, "ema_generator") if self.ema_decay else None
        )
        # the averaged generator lives in this attribute: checkpoints and .keras files hold it
        self.ema_generator = (
            None if self.generator_average is None else self.generator_average.average
        )

    # -- construction helpers -------------------------------------------------------------
    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        if self.gradient_penalty:
            return keras.optimizers.Adam(1e-4, beta_1=0.0, beta_2=0.9)  # Gulrajani et al.
        if self.loss_kind == "wasserstein":
            return keras.optimizers.RMSprop(5e-5)  # Arjovsky et al.
        return keras.optimizers.Adam(2e-4, beta_1=0.5)  # Radford et al. (2016)

    # -- shapes -------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def latent_dim(self) -> int:
        return int(self.generator.inputs[0].shape[-1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.generator.output_shape[1:])

    # -- sampling -----------------------------------------------------------------------
    @property
    def sampling_generator(self) -> keras.Model:
        """The generator that makes samples (and should be exported): the EMA copy when
        ``ema_decay`` is set, else the trained generator."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def default_labels(self, n: Any) -> tf.Tensor:
        """Labels ``0, 1, ..., K-1, 0, 1, ...`` for ``n`` samples (every class in turn)."""
        return ops.mod(ops.arange(n, dtype="int32"), self.num_classes)

    def _labels(self, labels: Any, n: Any = None) -> tf.Tensor | None:
        if not self.conditional:
            if labels is not None:
                raise ValueError(f"{self.name} is unconditional: it takes no labels")
            return None
        if labels is None:
            if n is None:
                raise ValueError(
                    f"{self.name} is a conditional GAN: it trains on (images, labels) batches. "
                    "Pass fit(images, labels) or a dataset of (images, labels) pairs "
                    "(in a recipe: data.with_labels = true)"
                )
            return self.default_labels(n)
        return ops.reshape(ops.cast(labels, "int32"), (-1,))

    def _generate_signed(
        self, generator: keras.Model, z: Any, labels: Any, training: bool
    ) -> tf.Tensor:
        z = ops.convert_to_tensor(z, "float32")
        if self.conditional:
            return generator([z, labels], training=training)
        return generator(z, training=training)

    def _discriminate(self, x: Any, labels: Any, training: bool) -> tf.Tensor:
        x = ops.convert_to_tensor(x)
        if self.conditional:
            return self.discriminator([x, labels], training=training)
        return self.discriminator(x, training=training)

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        """Images in [0, 1] for ``z`` (or ``(z, labels)`` for a conditional GAN)."""
        z, labels = inputs if isinstance(inputs, (tuple, list)) else (inputs, None)
        labels = self._labels(labels, ops.shape(z)[0])
        return to_unit(self._generate_signed(self.sampling_generator, z, labels, training))

    def generate(self, z: Any, labels: Any = None) -> tf.Tensor:
        """Images in [0, 1] for latent points ``z`` (from the EMA generator if enabled).

        A conditional GAN takes integer ``labels`` [N]; without them sample ``i`` gets
        class ``i mod num_classes``.
        """
        labels = self._labels(labels, ops.shape(z)[0])
        return to_unit(self._generate_signed(self.sampling_generator, z, labels, False))

    def sample(self, n: int, labels: Any = None) -> tf.Tensor:
        return self.generate(self.normal((n, self.latent_dim)), labels)

    # -- stabilisers -------------------------------------------------------------------
    def generator_steps(self) -> tf.Tensor:
        """Generator updates so far (the generator optimizer's iterations; 0 before compile)."""
        optimizer = getattr(self, "generator_optimizer", None)
        if optimizer is None:
            return ops.convert_to_tensor(0, "int64")
        return optimizer.iterations

    def noise_stddev(self) -> tf.Tensor:
        """The instance-noise sigma for the current generator step."""
        return instance_noise_stddev(
            self.generator_steps(), self.instance_noise, self.instance_noise_steps
        )

    def discriminator_inputs(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """Instance noise (Sønderby et al., 2016; Arjovsky & Bottou, 2017): in training
        only, add N(0, sigma^2) to every input of the discriminator, real or generated."""
        if not (training and self.instance_noise):
            return x
        return x + ops.cast(self.noise_stddev(), x.dtype) * self.normal(ops.shape(x))

    def clip_discriminator(self) -> None:
        """Weight clipping (Arjovsky et al., 2017): every critic weight into [-c, c]."""
        c = self.clip_value
        for variable in self.discriminator.trainable_variables:
            variable.assign(ops.clip(variable, -c, c))

    def update_ema(self) -> None:
        """EMA step of the generator's weights (:meth:`zoo.ema.WeightAverage.update`)."""
        self.generator_average.update()

    # -- objectives (each player's loss with the other player fixed) -----------------
    def discriminator_objective(
        self, images: tf.Tensor, z: tf.Tensor, training: bool = True, labels: Any = None
    ) -> dict[str, tf.Tensor]:
        labels = self._labels(labels)
        fake = self._generate_signed(self.generator, z, labels, training)
        real = self.discriminator_inputs(to_signed(images), training)
        fake = self.discriminator_inputs(fake, training)
        real_logits = self._discriminate(real, labels, training)
        fake_logits = self._discriminate(fake, labels, training)
        per_example = losses.discriminator_loss(
            real_logits, fake_logits, self.loss_kind, real_label=1.0 - self.label_smoothing
        )
        values = {
            "d_loss": losses.average(per_example),
            "d_real": ops.mean(real_logits),
            "d_fake": ops.mean(fake_logits),
        }
        if self.gradient_penalty:
            alpha = losses.interpolation_weights(real, draw=self.uniform)
            penalty = losses.average(
                losses.gradient_penalty(
                    lambda x: self._discriminate(x, labels, training), real, fake, alpha
                )
            )
            values["d_loss"] = values["d_loss"] + self.gradient_penalty * penalty
            values["gradient_penalty"] = penalty
        if self.instance_noise:
            values["noise_stddev"] = self.noise_stddev()
        return values

    def generator_objective(
        self, z: tf.Tensor, training: bool = True, labels: Any = None
    ) -> tf.Tensor:
        labels = self._labels(labels, None if labels is not None else ops.shape(z)[0])
        fake = self.discriminator_inputs(
            self._generate_signed(self.generator, z, labels, training), training
        )
        fake_logits = self._discriminate(fake, labels, training)
        return losses.average(losses.generator_loss(fake_logits, self.loss_kind))

    # -- steps --------------------------------------------------------------------------
    def critic_batch(
        self, images: tf.Tensor, labels: tf.Tensor | None, step: Any
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """The real minibatch of critic step ``step`` (0-based). With ``split_batch``, the
        batch is dealt out to the ``discriminator_steps`` = n critic steps: step k takes
        examples k, k + n, k + 2n, ... (``batch // n`` of them; the remainder is unused; a
        batch smaller than n is reused one example per step); otherwise every step takes
        the whole batch. Dealt, not cut into consecutive slices, so that on replicas whose
        batches are multiples of n each critic step sees the same examples as on one device.
        """
        n = self.discriminator_steps
        if n == 1 or not self.split_batch:
            return images, labels
        batch = ops.shape(images)[0]
        size = ops.maximum(batch // n, 1)
        taken = ops.minimum(step + n * ops.arange(size), batch - 1)
        return ops.take(images, taken, axis=0), (
            None if labels is None else ops.take(labels, taken, axis=0)
        )

    def critic_step(self, real: tf.Tensor, labels: tf.Tensor | None) -> dict[str, tf.Tensor]:
        """One critic update on a real minibatch and as many generated images."""
        z = self.normal((ops.shape(real)[0], self.latent_dim))
        d_values = self.minimize(
            lambda: self.discriminator_objective(real, z, labels=labels),
            self.discriminator_optimizer,
            self.discriminator.trainable_variables,
            key="d_loss",
        )
        if self.clip_value is not None:
            self.clip_discriminator()
        return d_values

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        images, labels = unpack_batch(data)
        labels = self._labels(labels) if self.conditional else None
        n = self.discriminator_steps
        if n == 1 or losses.replicas_in_sync() > 1:
            # Under tf.distribute the critic steps are unrolled: a replica may not reach a
            # synchronisation point (the optimizer's gradient all-reduce) inside a loop.
            for step in range(n):
                d_values = self.critic_step(*self.critic_batch(images, labels, step))
        else:
            # A graph loop, not n unrolled copies: tracing stays as cheap as for one step.
            d_vars = self.discriminator.trainable_variables
            if not self.discriminator_optimizer.built:  # no variables created in the loop
                self.discriminator_optimizer.build(d_vars)
            names = [k for k in self.trackers if k != "g_loss"]

            def body(step: tf.Tensor, values: dict[str, tf.Tensor]) -> tuple:
                values = self.critic_step(*self.critic_batch(images, labels, step))
                return step + 1, {k: ops.cast(values[k], "float32") for k in names}

            _, d_values = tf.while_loop(
                lambda step, _: step < n,
                body,
                (tf.constant(0), {k: tf.zeros((), "float32") for k in names}),
            )
        # The generator's batch: as many samples as the last critic step, with its labels
        # (so generated classes follow the data's class frequencies).
        real, real_labels = self.critic_batch(images, labels, n - 1)
        z = self.normal((ops.shape(real)[0], self.latent_dim))
        g_loss = self.minimize(
            lambda: {"g_loss": self.generator_objective(z, labels=real_labels)},
            self.generator_optimizer,
            self.generator.trainable_variables,
            key="g_loss",
        )["g_loss"]
        if self.generator_average is not None:
            self.update_ema()
        return self.record({**d_values, "g_loss": g_loss}, ops.shape(images)[0])

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        images, labels = unpack_batch(data)
        labels = self._labels(labels) if self.conditional else None
        z = self.normal((ops.shape(images)[0], self.latent_dim))
        d_values = self.discriminator_objective(images, z, training=False, labels=labels)
        g_loss = self.generator_objective(z, training=False, labels=labels)
        return self.record({**d_values, "g_loss": g_loss}, ops.shape(images)[0])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "loss": self.loss_kind,
            "num_classes": self.num_classes,
            "discriminator_steps": self.discriminator_steps,
            "split_batch": self.split_batch,
            "label_smoothing": self.label_smoothing,
            "clip_value": self.clip_value,
            "gradient_penalty": self.gradient_penalty,
            "instance_noise": self.instance_noise,
            "instance_noise_steps": self.instance_noise_steps,
            "ema_decay": self.ema_decay,
        }
