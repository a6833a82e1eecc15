"""Pix2Pix: paired image-to-image translation with a conditional GAN (Isola et al., 2017).

The generator G (a U-Net, :mod:`zoo.translation.unet`) maps a source image x to G(x); the
discriminator D (a PatchGAN, :mod:`zoo.translation.patchgan`) judges (source, image) pairs
patch by patch. Objectives (eq. 4 of the paper), on images in [-1, 1]:

- discriminator: ``d_loss = 1/2 * [L_D(D(x, y), D(x, G(x)))]``, the GAN loss of
  :func:`zoo.losses.discriminator_loss` (per-patch terms averaged) halved, as the paper
  does "to slow down the rate at which D learns relative to G" (§3.3). With Adam the factor
  changes little beyond the epsilon term; it is kept for fidelity;
- generator: ``g_loss = adversarial_weight * L_G(D(x, G(x))) + l1_weight * |y - G(x)|_1``
  with ``l1_weight`` = lambda = 100 and the L1 a mean over pixels on the networks' [-1, 1]
  scale (``g_l1``; twice the mean absolute error of [0, 1] images).

One step is one discriminator step, then one generator step (the generator is run again
after D's update). ``adversarial_weight=0`` is the paper's L1-only ablation: no
discriminator step is taken (D and its optimizer do not move) and only ``g_loss``/``g_l1``
are tracked. Trackers otherwise: g_loss, g_adversarial, g_l1, d_loss, d_real, d_fake (the
mean logits on real and generated pairs).

Dropout (the U-Net's only noise) is active in training only: ``translate`` is
deterministic. Its masks are seeded from the builder's seed and drawn for the global batch
(:class:`zoo.translation.unet.GlobalBatchDropout`), so under ``tf.distribute`` a step equals
a one-device step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.trainers.adversarial import to_signed, to_unit
from zoo.trainers.base import Trainer
from zoo.trainers.translation_tasks import TranslatorTasks

__all__ = ["Pix2Pix"]

ADVERSARIAL_TRACKERS = ("g_loss", "g_adversarial", "g_l1", "d_loss", "d_real", "d_fake")
L1_ONLY_TRACKERS = ("g_loss", "g_l1")


def _pair(data: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``(source, target)`` from a batch (Keras gives a tuple; sample weights are refused)."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise ValueError(
        "Pix2Pix trains on (source, target) pairs: pass fit(sources, targets) or a dataset "
        "of (source, target) tuples (zoo.data.pairs.from_pairs); got "
        + (f"a tuple of {len(data)}" if isinstance(data, (tuple, list)) else type(data).__name__)
    )


@keras.saving.register_keras_serializable(package="zoo")
class Pix2Pix(Trainer):
    """A U-Net generator and a conditional PatchGAN trained on (source, target) pairs.

    Images enter and leave in [0, 1]; the networks work in [-1, 1]. Defaults follow the
    paper: Adam(2e-4, beta_1=0.5) for both players, lambda = 100, non-saturating loss.
    """

    declaration = TranslatorTasks
    NETWORKS = ("generator", "discriminator")
    OPTIMIZERS = {"generator_optimizer": "generator", "discriminator_optimizer": "discriminator"}
    TRACKERS = ADVERSARIAL_TRACKERS
    TARGETS_ARE_IMAGES = True
    TRANSLATIONS: ClassVar[dict[str, tuple[str, str]]] = {
        "translate": ("translate", "translations")
    }
    paired: ClassVar[bool] = True

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        l1_weight: float = 100.0,
        adversarial_weight: float = 1.0,
        loss: str = "non_saturating",
        seed: int | None = None,
        **kwargs: Any,
    ):
        if l1_weight < 0 or adversarial_weight < 0:
            raise ValueError(
                "l1_weight and adversarial_weight must be >= 0; got "
                f"{l1_weight} and {adversarial_weight}"
            )
        if not (l1_weight or adversarial_weight):
            raise ValueError("l1_weight and adversarial_weight are both 0: nothing to train")
        trackers = ADVERSARIAL_TRACKERS if adversarial_weight else L1_ONLY_TRACKERS
        kwargs.pop("trackers", None)
        super().__init__(seed=seed, trackers=trackers, **kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.l1_weight = float(l1_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.loss_kind = losses.check_gan_loss(loss)
        if len(discriminator.inputs) != 2:
            raise ValueError(
                "the Pix2Pix discriminator judges (source, image) pairs: it must take two "
                f"inputs [source, image] (patch_discriminator(..., condition_shape=...)); "
                f"it takes {len(discriminator.inputs)}"
            )
        source, target = self.source_shape, self.target_shape
        if source[:2] != target[:2]:
            raise ValueError(
                f"source {source} and target {target} must have the same height and width"
            )

    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(2e-4, beta_1=0.5)  # Isola et al. (2017), §3.3

    # -- the translator contract ----------------------------------------------------------
    @property
    def source_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.generator.input_shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.generator.output_shape[1:])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """What ``fit`` receives first (the sources: checked to be floats in [0, 1])."""
        return self.source_shape

    @property
    def fully_convolutional(self) -> bool:
        return False

    @property
    def adversarial(self) -> bool:
        """False for the L1-only ablation (``adversarial_weight=0``)."""
        return self.adversarial_weight > 0

    @property
    def translation_networks(self) -> list[keras.Model]:
        return [self.generator]

    def translate(self, images: Any) -> tf.Tensor:
        """Target images in [0, 1] for source images in [0, 1] (no dropout: deterministic)."""
        images = ops.convert_to_tensor(images, "float32")
        return to_unit(self.generator(to_signed(images), training=False))

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        return to_unit(self.generator(to_signed(inputs), training=training))

    def reference_loss(self, source: Any, target: Any) -> tf.Tensor:
        """Mean absolute error of ``translate(source)`` against ``target`` on [0, 1]
        images (``g_l1 / 2`` at training=False)."""
        target = ops.convert_to_tensor(target, "float32")
        return ops.mean(ops.abs(self.translate(source) - target))

    def card_notes(self) -> list[str]:
        return [
            "- Pix2Pix (Isola et al., 2017): U-Net generator, PatchGAN discriminator on "
            f"(source, target) pairs, lambda = {self.l1_weight:g}"
            + ("" if self.adversarial else " (L1 only: adversarial_weight = 0)")
            + ". The paper keeps dropout on at test time as noise; the exported translate "
            "runs without dropout (deterministic) and batch norm uses its moving averages.",
        ]

    # -- objectives (each player's loss with the other fixed) -----------------------------
    def _generate(self, source: tf.Tensor, training: bool) -> tf.Tensor:
        return self.generator(source, training=training)

    def discriminator_objective(
        self, source: tf.Tensor, target: tf.Tensor, fake: tf.Tensor, training: bool = True
    ) -> dict[str, tf.Tensor]:
        """Half the GAN loss of D on (source, target) vs (source, fake), all in [-1, 1]."""
        real_logits = self.discriminator([source, target], training=training)
        fake_logits = self.discriminator([source, fake], training=training)
        per_example = losses.discriminator_loss(real_logits, fake_logits, self.loss_kind)
        return {
            "d_loss": 0.5 * losses.average(per_example),
            "d_real": ops.mean(real_logits),
            "d_fake": ops.mean(fake_logits),
        }

    def generator_objective(
        self, source: tf.Tensor, target: tf.Tensor, training: bool = True
    ) -> dict[str, tf.Tensor]:
        """``adversarial_weight * L_G + l1_weight * L1`` (sources and targets in [-1, 1])."""
        fake = self._generate(source, training)
        l1 = losses.average(ops.mean(ops.abs(target - fake), axis=(1, 2, 3)))
        values = {"g_l1": l1}
        g_loss = self.l1_weight * l1
        if self.adversarial:
            logits = self.discriminator([source, fake], training=training)
            adversarial = losses.average(losses.generator_loss(logits, self.loss_kind))
            values["g_adversarial"] = adversarial
            g_loss = g_loss + self.adversarial_weight * adversarial
        values["g_loss"] = g_loss
        return values

    # -- steps -----------------------------------------------------------------------------
    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        source, target = _pair(data)
        source = to_signed(ops.convert_to_tensor(source, "float32"))
        target = to_signed(ops.convert_to_tensor(target, "float32"))
        values: dict[str, tf.Tensor] = {}
        if self.adversarial:
            fake = ops.stop_gradient(self._generate(source, True))
            values.update(
                self.minimize(
                    lambda: self.discriminator_objective(source, target, fake),
                    self.discriminator_optimizer,
                    self.discriminator.trainable_variables,
                    key="d_loss",
                )
            )
        values.update(
            self.minimize(
                lambda: self.generator_objective(source, target),
                self.generator_optimizer,
                self.generator.trainable_variables,
                key="g_loss",
            )
        )
        return self.record(values, ops.shape(source)[0])

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        source, target = _pair(data)
        source = to_signed(ops.convert_to_tensor(source, "float32"))
        target = to_signed(ops.convert_to_tensor(target, "float32"))
        values = self.generator_objective(source, target, training=False)
        if self.adversarial:
            fake = self._generate(source, False)
            values.update(self.discriminator_objective(source, target, fake, training=False))
        return self.record(values, ops.shape(source)[0])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "l1_weight": self.l1_weight,
            "adversarial_weight": self.adversarial_weight,
            "loss": self.loss_kind,
        }
