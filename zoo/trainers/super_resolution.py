"""Single-image super-resolution: SRResNet and SRGAN (Ledig et al., 2017, "Photo-Realistic
Single Image Super-Resolution Using a Generative Adversarial Network", CVPR).

Batches are ``(low_res, high_res)`` pairs of images in [0, 1] (the high-resolution patch
``patch_size`` x ``patch_size`` and its ``scale``-times smaller version). The generator takes
the low-resolution images in [0, 1] and makes [-1, 1] images (tanh), the range of the targets
and of the discriminator's inputs, as in the paper (§3.2); :meth:`SuperResolution.upscale`
maps them back to [0, 1] (clipped: a generator with a ``global_skip``, not in the paper, adds
an unbounded residual to an interpolation of its input).

Objectives (per example, averaged over the batch):

- generator: ``l_content + adversarial_weight * l_adversarial``, where ``l_content`` is
  :class:`zoo.translation.content.ContentLoss` (pixel MSE on [-1, 1] by default; an
  extractor's feature MSE, e.g. VGG19's ``block5_conv4`` scaled by 1/12.75 when
  ``vgg19_weights`` names the weights file) and ``l_adversarial`` is
  :func:`zoo.losses.generator_loss` (non-saturating ``-log D(G(x))`` by default, eq. 6);
- discriminator: :func:`zoo.losses.discriminator_loss` on (high_res, G(low_res)).

``adversarial_weight = 0`` is SRResNet: the content loss alone, the discriminator is never
called and its optimizer never steps. ``1e-3`` is SRGAN's. The paper's two stages: train an
SRResNet on MSE, then start SRGAN from its generator (the ``generator_weights`` key of the
``srgan`` builder, :meth:`SuperResolution.load_generator_weights`). Both default to
Adam(1e-4, beta_1=0.9) (the paper's; it lowers the rate to 1e-5 for the second half of
the adversarial stage).

``psnr`` is tracked on [0, 1] (``10 log10(1 / MSE)`` per image, averaged), all channels,
no border crop: the benchmark's Y-channel figures come from :mod:`zoo.metrics`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.data.batches import unpack_batch
from zoo.trainers.adversarial import to_signed, to_unit
from zoo.trainers.base import Trainer
from zoo.trainers.translation_tasks import TranslatorTasks
from zoo.translation.content import VGG_FEATURE_SCALE, ContentLoss, vgg19_extractor
from zoo.translation.srresnet import check_scale, generator_scale

__all__ = ["SuperResolution"]


@keras.saving.register_keras_serializable(package="zoo")
class SuperResolution(Trainer):
    """SRResNet (``adversarial_weight=0``) or SRGAN (``adversarial_weight=1e-3``).

    ``content_extractor``: a Keras model (images in [0, 1] -> features) for the content
    loss; it is not part of the config or of saved files (set it again after loading).
    ``vgg19_weights`` / ``vgg19_layer``: build Keras' VGG19 from a local ImageNet weights
    file instead (kept in the config as a path); neither: pixel MSE.
    """

    declaration = TranslatorTasks
    NETWORKS = ("generator", "discriminator")
    OPTIMIZERS = {"generator_optimizer": "generator", "discriminator_optimizer": "discriminator"}
    TRACKERS = ("g_loss", "content_loss", "psnr", "g_adversarial", "d_loss")
    TRANSLATIONS: ClassVar[dict[str, tuple[str, str]]] = {"upscale": ("upscale", "upscaled")}
    paired: ClassVar[bool] = True
    TARGETS_ARE_IMAGES = True

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        adversarial_weight: float = 1e-3,
        loss: str = "non_saturating",
        patch_size: int = 96,
        vgg19_weights: str | None = None,
        vgg19_layer: str = "block5_conv4",
        content_feature_scale: float | None = None,
        content_extractor: keras.Model | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ):
        if not (isinstance(adversarial_weight, (int, float)) and adversarial_weight >= 0):
            raise ValueError(
                f"adversarial_weight must be >= 0 (0 = SRResNet, 1e-3 = SRGAN); got "
                f"{adversarial_weight!r}"
            )
        adversarial = adversarial_weight > 0
        trackers = self.TRACKERS if adversarial else ("g_loss", "content_loss", "psnr")
        super().__init__(seed=seed, trackers=trackers, **kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.adversarial_weight = float(adversarial_weight)
        self.loss_kind = losses.check_gan_loss(loss)
        scale = check_scale(generator_scale(generator))
        if not (isinstance(patch_size, int) and patch_size >= scale and patch_size % scale == 0):
            raise ValueError(
                f"patch_size (the high-resolution training patch) must be a multiple of the "
                f"scale {scale}; got {patch_size!r}"
            )
        self.patch_size = patch_size
        if content_extractor is not None and vgg19_weights is not None:
            raise ValueError("pass either content_extractor or vgg19_weights, not both")
        self.vgg19_weights = None if vgg19_weights is None else str(vgg19_weights)
        self.vgg19_layer = vgg19_layer
        self.content_feature_scale = content_feature_scale
        if self.vgg19_weights is not None:
            content_extractor = vgg19_extractor(
                self.vgg19_weights, vgg19_layer, channels=self.channels
            )
        self.content_extractor = content_extractor

    # -- the content loss (not tracked by Keras: its extractor is never saved) ----------
    @property
    def content_extractor(self) -> keras.Model | None:
        return self._content.extractor

    def set_content_extractor(self, extractor: keras.Model | None) -> None:
        """Use ``extractor``'s features (None: pixel MSE) for the content loss; also what
        ``model.content_extractor = extractor`` does."""
        scale = self.content_feature_scale
        if scale is None:
            scale = VGG_FEATURE_SCALE if self.vgg19_weights is not None else 1.0
        # a plain object holds it: Keras would track a Model attribute into saved files
        self._content = ContentLoss(extractor, scale)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "content_extractor":  # before Keras' attribute tracking sees the model
            self.set_content_extractor(value)
            return
        super().__setattr__(name, value)

    def content_loss(self, hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        """Per-example content loss of [-1, 1] images (:class:`ContentLoss`)."""
        return self._content(hr, sr)

    # -- shapes (the translator contract) ------------------------------------------------
    @property
    def adversarial(self) -> bool:
        return self.adversarial_weight > 0

    @property
    def scale(self) -> int:
        return generator_scale(self.generator)

    @property
    def channels(self) -> int:
        return int(self.generator.inputs[0].shape[-1])

    @property
    def source_shape(self) -> tuple[int, int, int]:
        side = self.patch_size // self.scale
        return (side, side, self.channels)

    @property
    def target_shape(self) -> tuple[int, int, int]:
        return (self.patch_size, self.patch_size, self.channels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The high-resolution patch (the images a data pipeline crops; the low-resolution
        inputs are their downscales)."""
        return self.target_shape

    @property
    def fully_convolutional(self) -> bool:
        return True

    @property
    def translation_networks(self) -> list[keras.Model]:
        return [self.generator]

    # -- inference -----------------------------------------------------------------------
    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        return to_unit(self.generator(inputs, training=training))

    def upscale(self, images: Any) -> tf.Tensor:
        """Images [N, H, W, C] in [0, 1], any H and W -> [N, scale H, scale W, C] in [0, 1]."""
        images = ops.convert_to_tensor(images, "float32")
        out = ops.cast(to_unit(self.generator(images, training=False)), "float32")
        return ops.clip(out, 0.0, 1.0)  # a no-op for tanh; a global skip is unbounded

    def translate(self, images: Any) -> tf.Tensor:
        """The translator protocol's name for :meth:`upscale`."""
        return self.upscale(images)

    def reference_loss(self, source: Any, target: Any) -> tf.Tensor:
        """Pixel MSE on [0, 1] between ``upscale(source)`` and ``target`` (inference mode)."""
        target = ops.convert_to_tensor(target, "float32")
        return ops.mean(ops.square(self.upscale(source) - target))

    def card_notes(self) -> list[str]:
        content = (
            f"VGG19 {self.vgg19_layer} features (weights {Path(self.vgg19_weights).name})"
            if self.vgg19_weights
            else "pixel MSE (the offline default; a VGG19 feature loss needs its weights file)"
            if self.content_extractor is None
            else f"the features of a user-supplied extractor ({self.content_extractor.name})"
        )
        stage = (
            f"SRGAN: content loss + {self.adversarial_weight:g} x adversarial loss"
            if self.adversarial
            else "SRResNet: content loss only"
        )
        return [
            f"- Upscales x{self.scale} (Ledig et al., 2017); trained as {stage}; content loss: "
            f"{content}; trained on {self.patch_size}x{self.patch_size} patches."
        ]

    # -- objectives ----------------------------------------------------------------------
    def generator_objective(
        self, low_res: tf.Tensor, high_res: tf.Tensor, training: bool = True
    ) -> dict[str, tf.Tensor]:
        """``high_res`` in [-1, 1]; g_loss = content + adversarial_weight * adversarial."""
        sr = ops.cast(self.generator(low_res, training=training), "float32")
        content = losses.average(self.content_loss(high_res, sr))
        # PSNR on [0, 1]: the [-1, 1] squared error is 4x the [0, 1] one
        mse = ops.mean(ops.reshape(ops.square(sr - high_res), (ops.shape(sr)[0], -1)), axis=1)
        psnr = -10.0 * ops.log(ops.maximum(mse / 4.0, 1e-10)) / math.log(10.0)
        values = {"content_loss": content, "psnr": losses.average(psnr), "g_loss": content}
        if self.adversarial:
            logits = self.discriminator(sr, training=training)
            adversarial = losses.average(losses.generator_loss(logits, self.loss_kind))
            values["g_adversarial"] = adversarial
            values["g_loss"] = content + self.adversarial_weight * adversarial
        return values

    def discriminator_objective(
        self, low_res: tf.Tensor, high_res: tf.Tensor, training: bool = True
    ) -> dict[str, tf.Tensor]:
        sr = ops.stop_gradient(self.generator(low_res, training=training))
        real = self.discriminator(high_res, training=training)
        fake = self.discriminator(sr, training=training)
        return {"d_loss": losses.average(losses.discriminator_loss(real, fake, self.loss_kind))}

    def _pair(self, data: Any) -> tuple[tf.Tensor, tf.Tensor]:
        low_res, high_res = unpack_batch(data)
        if high_res is None:
            raise ValueError(
                f"{self.name} trains on (low_res, high_res) pairs: pass fit(low_res, high_res) "
                "or a dataset of pairs (zoo.data.pairs)"
            )
        return ops.cast(low_res, "float32"), to_signed(ops.cast(high_res, "float32"))

    # -- steps ---------------------------------------------------------------------------
    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        low_res, high_res = self._pair(data)
        values: dict[str, tf.Tensor] = {}
        if self.adversarial:
            values = self.minimize(
                lambda: self.discriminator_objective(low_res, high_res),
                self.discriminator_optimizer,
                self.discriminator.trainable_variables,
                key="d_loss",
            )
        g_values = self.minimize(
            lambda: self.generator_objective(low_res, high_res),
            self.generator_optimizer,
            self.generator.trainable_variables,
            key="g_loss",
        )
        return self.record({**values, **g_values}, ops.shape(low_res)[0])

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        low_res, high_res = self._pair(data)
        values = self.generator_objective(low_res, high_res, training=False)
        if self.adversarial:
            values.update(self.discriminator_objective(low_res, high_res, training=False))
        return self.record(values, ops.shape(low_res)[0])

    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(1e-4, beta_1=0.9)  # Ledig et al. (2017), §3.2

    # -- the two-stage recipe -------------------------------------------------------------
    def load_generator_weights(self, path: str | Path) -> None:
        """Start from another run's generator (SRGAN from a trained SRResNet): ``path`` is a
        ``.keras`` file of a super-resolution trainer, a ``.weights.h5`` file of the
        generator alone, or a run folder / checkpoint of a super-resolution run."""
        path = Path(path).expanduser()
        if not (path.exists() or Path(f"{path}.index").exists()):  # or a checkpoint prefix
            raise FileNotFoundError(
                f"generator_weights {str(path)!r} not found: pass the .keras file or the run "
                "folder of a trained srresnet (or a .weights.h5 file of its generator)"
            )
        name = path.name
        if name.endswith(".weights.h5"):
            self.generator.load_weights(str(path))
            return
        if name.endswith(".keras"):
            saved = keras.saving.load_model(str(path), safe_mode=True, compile=False)
            source = getattr(saved, "generator", saved)
            self._copy_generator(source.get_weights(), path)
            return
        from zoo.checkpoints import find_checkpoint

        prefix = find_checkpoint(path)
        holder = tf.train.Checkpoint(generator=self.generator)
        status = tf.train.Checkpoint(model=holder).restore(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()

    def _copy_generator(self, weights: list[Any], where: Path) -> None:
        shapes = [tuple(w.shape) for w in self.generator.get_weights()]
        given = [tuple(w.shape) for w in weights]
        if shapes != given:
            raise ValueError(
                f"{where} holds a generator of another shape ({len(given)} arrays) than this "
                f"one ({len(shapes)}): build with the same channels, scale, filters and n_blocks"
            )
        self.generator.set_weights(weights)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "adversarial_weight": self.adversarial_weight,
            "loss": self.loss_kind,
            "patch_size": self.patch_size,
            "vgg19_weights": self.vgg19_weights,
            "vgg19_layer": self.vgg19_layer,
            "content_feature_scale": self.content_feature_scale,
        }
