"""Adversarial trainer: a generator and a discriminator (critic), two optimizers.

Goodfellow et al. (2014); losses in :mod:`zoo.losses`. Images enter the
networks in [-1, 1] (tanh generators) and leave the trainer in [0, 1].
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.trainers.base import Trainer, images_of


def to_signed(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> [-1, 1]."""
    return images * 2.0 - 1.0


def to_unit(images: tf.Tensor) -> tf.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (images + 1.0) / 2.0


@keras.saving.register_keras_serializable(package="zoo")
class GAN(Trainer):
    """Alternating updates: ``discriminator_steps`` critic steps, then one generator step.

    ``loss`` names a pair of losses in :mod:`zoo.losses` (default non-saturating);
    ``label_smoothing`` sets the real label to ``1 - label_smoothing`` (one-sided).
    """

    NETWORKS = ("generator", "discriminator")
    OPTIMIZERS = {"generator_optimizer": "generator", "discriminator_optimizer": "discriminator"}
    TRACKERS = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        loss: str = "non_saturating",
        discriminator_steps: int = 1,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(seed=seed, **kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.loss_kind = losses.check_gan_loss(loss)
        if discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be >= 1; got {discriminator_steps}")
        self.discriminator_steps = int(discriminator_steps)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(2e-4, beta_1=0.5)  # Radford et al. (2016)

    @property
    def latent_dim(self) -> int:
        return int(self.generator.input_shape[-1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.generator.output_shape[1:])

    def call(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Images in [0, 1] for latent points z."""
        return to_unit(self.generator(z, training=training))

    generate = call

    def sample(self, n: int) -> tf.Tensor:
        return self.generate(self.normal((n, self.latent_dim)))

    # -- objectives (each player's loss with the other player fixed) -----------------
    def discriminator_objective(
        self, images: tf.Tensor, z: tf.Tensor, training: bool = True
    ) -> dict[str, tf.Tensor]:
        fake = self.generator(z, training=training)
        real_logits = self.discriminator(to_signed(images), training=training)
        fake_logits = self.discriminator(fake, training=training)
        per_example = losses.discriminator_loss(
            real_logits, fake_logits, self.loss_kind, real_label=1.0 - self.label_smoothing
        )
        return {
            "d_loss": losses.average(per_example),
            "d_real": ops.mean(real_logits),
            "d_fake": ops.mean(fake_logits),
        }

    def generator_objective(self, z: tf.Tensor, training: bool = True) -> tf.Tensor:
        fake_logits = self.discriminator(self.generator(z, training=training), training=training)
        return losses.average(losses.generator_loss(fake_logits, self.loss_kind))

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        images = images_of(data)
        batch = ops.shape(images)[0]
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        for _ in range(self.discriminator_steps):
            z = self.normal((batch, self.latent_dim))
            with tf.GradientTape() as tape:
                d_values = self.discriminator_objective(images, z)
            grads = tape.gradient(d_values["d_loss"], d_vars)
            self.discriminator_optimizer.apply(grads, d_vars)
        z = self.normal((batch, self.latent_dim))
        with tf.GradientTape() as tape:
            g_loss = self.generator_objective(z)
        grads = tape.gradient(g_loss, g_vars)
        self.generator_optimizer.apply(grads, g_vars)
        return self.record({**d_values, "g_loss": g_loss})

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        images = images_of(data)
        z = self.normal((ops.shape(images)[0], self.latent_dim))
        d_values = self.discriminator_objective(images, z, training=False)
        return self.record({**d_values, "g_loss": self.generator_objective(z, training=False)})

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "loss": self.loss_kind,
            "discriminator_steps": self.discriminator_steps,
            "label_smoothing": self.label_smoothing,
        }
