"""CycleGAN (Zhu et al., 2017): unpaired image-to-image translation between domains A and B.

Two generators, G = ``generator_ab`` (A -> B) and F = ``generator_ba`` (B -> A), and two
PatchGAN discriminators: ``discriminator_a`` tells real A images from F(b),
``discriminator_b`` real B images from G(a). (The reference code names them the other
way round, after the generator each one judges.) Batches are ``(a, b)``: images of the two
domains, drawn independently, same shape, in [0, 1]; the networks work in [-1, 1] (tanh
generators), and every loss below is on [-1, 1] images, as in the reference code.

Generator objective (§3.3, eq. 3, with the least-squares GAN of §4 and the identity loss
of §5.2), means over pixels (and the discriminators' patches) and the batch::

    L_G = mean (D_B(G(a)) - 1)^2 + mean (D_A(F(b)) - 1)^2
          + lambda_cycle * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)
          + lambda_cycle * identity_weight * (|G(b) - b|_1 + |F(a) - a|_1)

(lambda_cycle = 10, identity_weight = 0.5). The adversarial terms are twice
:func:`zoo.losses.generator_loss` ``"least_squares"`` (Mao et al.'s 1/2 convention); each
discriminator minimises :func:`zoo.losses.discriminator_loss` ``"least_squares"``,
``[(D(x) - 1)^2 + D(x_fake)^2] / 2``: the paper's objective halved "to slow down the rate
at which D learns" (§7.1), on generated images from a 50-image history
(:class:`zoo.translation.image_pool.ImagePool`).

Four optimizer roles, Adam(2e-4, beta_1=0.5) each. The reference code steps both
generators with one Adam over their joint objective; Adam is per weight, so two Adams of
the same settings stepped at the same point are that optimizer. Here the two generator
steps are two :meth:`Trainer.minimize` calls on the same joint objective, nested (the
objective of G's step is F's step, which returns the objective's values before it applies
F's update), so both gradients are taken at the same weights from one forward pass. Then
each discriminator takes its step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.data.batches import unpack_batch
from zoo.trainers.adversarial import to_signed, to_unit
from zoo.trainers.base import Trainer
from zoo.trainers.translation_tasks import TranslatorTasks
from zoo.translation.image_pool import ImagePool

__all__ = ["CycleGAN", "mean_absolute_error"]

LOSS = "least_squares"


def mean_absolute_error(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Per-example mean |x - y| over the pixels (``[batch]``)."""
    pixels = ops.cast(ops.prod(ops.shape(x)[1:]), "float32")
    return losses.reconstruction_error(x, y, "mae") / pixels


@keras.saving.register_keras_serializable(package="zoo")
class CycleGAN(Trainer):
    """Unpaired translation A <-> B with cycle consistency (see the module doc)."""

    declaration = TranslatorTasks
    NETWORKS = ("generator_ab", "generator_ba", "discriminator_a", "discriminator_b")
    OPTIMIZERS = {
        "generator_ab_optimizer": "generator_ab",
        "generator_ba_optimizer": "generator_ba",
        "discriminator_a_optimizer": "discriminator_a",
        "discriminator_b_optimizer": "discriminator_b",
    }
    TRACKERS = (
        "g_loss",
        "g_ab_adversarial",
        "g_ba_adversarial",
        "cycle_loss",
        "identity_loss",
        "d_a_loss",
        "d_b_loss",
    )
    TRANSLATIONS: ClassVar[dict[str, tuple[str, str]]] = {
        "translate_a_to_b": ("translate_a_to_b", "translations"),
        "translate_b_to_a": ("translate_b_to_a", "translations"),
    }
    paired: ClassVar[bool] = False
    TARGETS_ARE_IMAGES = True
    fully_convolutional = False

    def __init__(
        self,
        generator_ab: keras.Model,
        generator_ba: keras.Model,
        discriminator_a: keras.Model,
        discriminator_b: keras.Model,
        *,
        lambda_cycle: float = 10.0,
        identity_weight: float = 0.5,
        pool_size: int = 50,
        seed: int | None = None,
        **kwargs: Any,
    ):
        if not lambda_cycle >= 0 or not identity_weight >= 0:
            raise ValueError(
                f"lambda_cycle and identity_weight must be >= 0; got {lambda_cycle} and "
                f"{identity_weight}"
            )
        trackers = tuple(t for t in self.TRACKERS if identity_weight or t != "identity_loss")
        super().__init__(seed=seed, trackers=trackers, **kwargs)
        shape = tuple(generator_ab.input_shape[1:])
        for role, net in (("generator_ab", generator_ab), ("generator_ba", generator_ba)):
            if tuple(net.input_shape[1:]) != shape or tuple(net.output_shape[1:]) != shape:
                raise ValueError(
                    f"CycleGAN's generators map images of one shape to the same shape; "
                    f"{role} maps {net.input_shape[1:]} -> {net.output_shape[1:]}, expected "
                    f"{shape} -> {shape}"
                )
        for role, net in (
            ("discriminator_a", discriminator_a),
            ("discriminator_b", discriminator_b),
        ):
            if len(net.inputs) != 1 or tuple(net.input_shape[1:]) != shape:
                raise ValueError(
                    f"{role} must take one input of shape {shape} (an unconditional PatchGAN); "
                    f"it takes {net.input_shape}"
                )
        self.generator_ab, self.generator_ba = generator_ab, generator_ba
        self.discriminator_a, self.discriminator_b = discriminator_a, discriminator_b
        self.lambda_cycle = float(lambda_cycle)
        self.identity_weight = float(identity_weight)
        self.pool_size = int(pool_size)
        # histories of generated images: pool_a of F(b) (for D_A), pool_b of G(a) (for D_B)
        self.pool_a = ImagePool(shape, self.pool_size, name="pool_a")
        self.pool_b = ImagePool(shape, self.pool_size, name="pool_b")

    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(2e-4, beta_1=0.5)  # Zhu et al., §4

    # -- the translator contract --------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.generator_ab.input_shape[1:])

    @property
    def source_shape(self) -> tuple[int, ...]:
        return self.image_shape

    @property
    def target_shape(self) -> tuple[int, ...]:
        return self.image_shape

    @property
    def translation_networks(self) -> list[keras.Model]:
        return [self.generator_ab, self.generator_ba]

    def translate_a_to_b(self, images: Any) -> tf.Tensor:
        """G(a): images of domain A [N, H, W, C] in [0, 1] -> domain B, in [0, 1]."""
        return to_unit(self.generator_ab(to_signed(ops.cast(images, "float32")), training=False))

    def translate_b_to_a(self, images: Any) -> tf.Tensor:
        """F(b): images of domain B in [0, 1] -> domain A, in [0, 1]."""
        return to_unit(self.generator_ba(to_signed(ops.cast(images, "float32")), training=False))

    def translate(self, images: Any) -> tf.Tensor:
        """The first direction, A -> B."""
        return self.translate_a_to_b(images)

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        return self.translate_a_to_b(inputs)

    def reference_loss(self, source: Any, target: Any) -> tf.Tensor:
        """Cycle L1 on [0, 1] images at inference, the mean of both directions:
        (mean |F(G(a)) - a| + mean |G(F(b)) - b|) / 2 (``source`` = a, ``target`` = b)."""
        a, b = ops.cast(source, "float32"), ops.cast(target, "float32")
        back_a = self.translate_b_to_a(self.translate_a_to_b(a))
        back_b = self.translate_a_to_b(self.translate_b_to_a(b))
        return 0.5 * (ops.mean(ops.abs(back_a - a)) + ops.mean(ops.abs(back_b - b)))

    def card_notes(self) -> list[str]:
        return [
            "- translate_a_to_b (serving_default) is G: A -> B; translate_b_to_a is F: B -> A. "
            "Trained on unpaired images of the two domains (Zhu et al., 2017).",
        ]

    # -- objectives ---------------------------------------------------------------------
    def generator_objective(
        self, a: tf.Tensor, b: tf.Tensor, training: bool = True
    ) -> dict[str, tf.Tensor]:
        """The joint objective of both generators on signed images (module doc), with its
        terms and the generated batches ``fake_a`` = F(b), ``fake_b`` = G(a)."""
        fake_b = self.generator_ab(a, training=training)
        fake_a = self.generator_ba(b, training=training)
        back_a = self.generator_ba(fake_b, training=training)
        back_b = self.generator_ab(fake_a, training=training)
        # 2 x zoo's least-squares generator loss (1/2 (D - 1)^2) = the paper's (D - 1)^2
        adv_ab = 2.0 * losses.average(
            losses.generator_loss(self.discriminator_b(fake_b, training=training), LOSS)
        )
        adv_ba = 2.0 * losses.average(
            losses.generator_loss(self.discriminator_a(fake_a, training=training), LOSS)
        )
        cycle = losses.average(mean_absolute_error(back_a, a) + mean_absolute_error(back_b, b))
        total = adv_ab + adv_ba + self.lambda_cycle * cycle
        values = {
            "g_ab_adversarial": adv_ab,
            "g_ba_adversarial": adv_ba,
            "cycle_loss": cycle,
        }
        if self.identity_weight:
            same_b = self.generator_ab(b, training=training)
            same_a = self.generator_ba(a, training=training)
            identity = losses.average(
                mean_absolute_error(same_b, b) + mean_absolute_error(same_a, a)
            )
            total = total + self.lambda_cycle * self.identity_weight * identity
            values["identity_loss"] = identity
        return {"g_loss": total, **values, "fake_a": fake_a, "fake_b": fake_b}

    def discriminator_objective(
        self, discriminator: keras.Model, real: tf.Tensor, fake: tf.Tensor, training: bool = True
    ) -> tf.Tensor:
        """[mean (D(real) - 1)^2 + mean D(fake)^2] / 2 on signed images."""
        real_logits = discriminator(real, training=training)
        fake_logits = discriminator(ops.stop_gradient(fake), training=training)
        return losses.average(losses.discriminator_loss(real_logits, fake_logits, LOSS))

    # -- steps --------------------------------------------------------------------------
    def _domains(self, data: Any) -> tuple[tf.Tensor, tf.Tensor]:
        a, b = unpack_batch(data)
        if b is None:
            raise ValueError(
                "CycleGAN trains on (a, b) batches: images of domain A and of domain B "
                "(unpaired, same shape); pass fit(images_a, images_b) or a dataset of pairs"
            )
        return to_signed(ops.cast(a, "float32")), to_signed(ops.cast(b, "float32"))

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        a, b = self._domains(data)

        def generator_ba_step() -> dict[str, tf.Tensor]:
            # F's step on the joint objective; its values (taken before F moves) are G's
            return self.minimize(
                lambda: self.generator_objective(a, b),
                self.generator_ba_optimizer,
                self.generator_ba.trainable_variables,
                key="g_loss",
            )

        values = self.minimize(
            generator_ba_step,
            self.generator_ab_optimizer,
            self.generator_ab.trainable_variables,
            key="g_loss",
        )
        fake_a = self.pool_a.query(ops.stop_gradient(values.pop("fake_a")), self.uniform)
        fake_b = self.pool_b.query(ops.stop_gradient(values.pop("fake_b")), self.uniform)
        values["d_a_loss"] = self.minimize(
            lambda: {"loss": self.discriminator_objective(self.discriminator_a, a, fake_a)},
            self.discriminator_a_optimizer,
            self.discriminator_a.trainable_variables,
        )["loss"]
        values["d_b_loss"] = self.minimize(
            lambda: {"loss": self.discriminator_objective(self.discriminator_b, b, fake_b)},
            self.discriminator_b_optimizer,
            self.discriminator_b.trainable_variables,
        )["loss"]
        return self.record(values, ops.shape(a)[0])

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        a, b = self._domains(data)
        values = self.generator_objective(a, b, training=False)
        fake_a, fake_b = values.pop("fake_a"), values.pop("fake_b")
        values["d_a_loss"] = self.discriminator_objective(
            self.discriminator_a, a, fake_a, training=False
        )
        values["d_b_loss"] = self.discriminator_objective(
            self.discriminator_b, b, fake_b, training=False
        )
        return self.record(values, ops.shape(a)[0])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "lambda_cycle": self.lambda_cycle,
            "identity_weight": self.identity_weight,
            "pool_size": self.pool_size,
        }
