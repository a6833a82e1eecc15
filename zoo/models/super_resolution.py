"""Super-resolution models: ``srresnet`` and ``srgan`` (Ledig et al., 2017).

Both build the same networks (:mod:`zoo.translation.srresnet`) and train with
:class:`zoo.trainers.super_resolution.SuperResolution`; they differ in the adversarial
weight (0 for SRResNet's MSE training, 1e-3 for SRGAN). The paper trains in two stages:

1. ``srresnet`` on the content loss alone (pixel MSE, or VGG features with
   ``vgg19_weights``);
2. ``srgan`` with ``generator_weights`` = the first stage's ``.keras`` file or run folder
   (or a ``.weights.h5`` file of its generator): the generator starts from the SRResNet,
   the discriminator from scratch.

Keys: ``channels``, ``scale`` (a power of 2), ``generator_filters`` and ``n_blocks`` (the
paper: 64 and 16), ``patch_size`` (the high-resolution training patch; the paper: 96),
``discriminator_filters`` (64) and ``discriminator_pooling`` ("flatten", the paper's dense
head on a fixed patch, or "average": global average pooling, size-free and lighter), and
``global_skip`` ("none", the paper's; "nearest" or "bicubic": the generator learns a residual
over that interpolation of its input, not in the paper, see :mod:`zoo.translation.srresnet`)
and ``batch_norm`` (True, the paper's; False drops the generator's batch norm, as EDSR).
"""

from __future__ import annotations

from typing import Any

from zoo.registry import register
from zoo.trainers.super_resolution import SuperResolution
from zoo.translation.srresnet import build_sr_discriminator, build_srresnet


def _build(
    name: str,
    *,
    channels: int,
    scale: int,
    generator_filters: int,
    n_blocks: int,
    global_skip: str,
    batch_norm: bool,
    patch_size: int,
    discriminator_filters: int,
    discriminator_pooling: str,
    generator_weights: str | None,
    seed: int | None,
    **options: Any,
) -> SuperResolution:
    """One registered super-resolution model (trainer named ``name``)."""
    generator = build_srresnet(
        channels, scale=scale, filters=generator_filters, n_blocks=n_blocks,
        global_skip=global_skip, batch_norm=batch_norm, seed=seed, name="generator",
    )  # fmt: skip
    discriminator = build_sr_discriminator(
        (patch_size, patch_size, channels),
        filters=discriminator_filters,
        pooling=discriminator_pooling,
        seed=None if seed is None else seed + 1,
        name="discriminator",
    )
    model = SuperResolution(
        generator, discriminator, patch_size=patch_size, seed=seed, name=name, **options
    )
    model.build()
    if generator_weights is not None:
        model.load_generator_weights(generator_weights)
    return model


@register(
    "srresnet",
    family="translator",
    description="SRResNet: residual generator with sub-pixel x4 upsampling, trained on the "
    "content loss (pixel MSE offline, VGG19 features with its weights file); upscale(images) "
    "takes any size",
    paper="Ledig et al. 2017, Photo-Realistic Single Image Super-Resolution Using a "
    "Generative Adversarial Network",
    tiny={"channels": 1, "generator_filters": 8, "n_blocks": 1, "patch_size": 32,
          "discriminator_filters": 8},
)  # fmt: skip
def srresnet(
    channels: int = 3,
    scale: int = 4,
    generator_filters: int = 64,
    n_blocks: int = 16,
    global_skip: str = "none",
    batch_norm: bool = True,
    patch_size: int = 96,
    discriminator_filters: int = 64,
    discriminator_pooling: str = "flatten",
    adversarial_weight: float = 0.0,
    loss: str = "non_saturating",
    vgg19_weights: str | None = None,
    vgg19_layer: str = "block5_conv4",
    generator_weights: str | None = None,
    seed: int | None = 0,
) -> SuperResolution:
    """SRResNet (adversarial_weight 0: the discriminator is built, never trained)."""
    return _build("srresnet", **locals())


@register(
    "srgan",
    family="translator",
    description="SRGAN: the SRResNet generator against a VGG-style discriminator, content "
    "loss + 1e-3 x adversarial loss; start it from a trained srresnet (generator_weights)",
    paper="Ledig et al. 2017, Photo-Realistic Single Image Super-Resolution Using a "
    "Generative Adversarial Network",
    tiny={"channels": 1, "generator_filters": 8, "n_blocks": 1, "patch_size": 32,
          "discriminator_filters": 8},
)  # fmt: skip
def srgan(
    channels: int = 3,
    scale: int = 4,
    generator_filters: int = 64,
    n_blocks: int = 16,
    global_skip: str = "none",
    batch_norm: bool = True,
    patch_size: int = 96,
    discriminator_filters: int = 64,
    discriminator_pooling: str = "flatten",
    adversarial_weight: float = 1e-3,
    loss: str = "non_saturating",
    vgg19_weights: str | None = None,
    vgg19_layer: str = "block5_conv4",
    generator_weights: str | None = None,
    seed: int | None = 0,
) -> SuperResolution:
    """SRGAN's adversarial stage (Ledig et al. train it from an SRResNet's generator)."""
    return _build("srgan", **locals())
