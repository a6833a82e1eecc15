"""Pix2Pix builder: a U-Net generator and a conditional PatchGAN (Isola et al., 2017),
trained by :class:`zoo.trainers.pix2pix.Pix2Pix` on (source, target) pairs."""

from __future__ import annotations

from collections.abc import Sequence

from zoo.registry import register
from zoo.trainers.pix2pix import Pix2Pix
from zoo.translation.patchgan import patch_discriminator
from zoo.translation.unet import build_unet_generator


@register(
    "pix2pix",
    family="translator",
    description="Pix2Pix: paired image-to-image translation, U-Net generator with skip "
    "connections and dropout, conditional PatchGAN, adversarial + 100 * L1",
    paper="Isola et al. 2017, Image-to-Image Translation with Conditional Adversarial Networks",
    tiny={
        "source_shape": (32, 32, 1),
        "target_shape": (32, 32, 1),
        "filters": 8,
        "max_filters": 32,
        "patch_layers": 2,
    },
)
def build_pix2pix(
    source_shape: Sequence[int] = (256, 256, 3),
    target_shape: Sequence[int] = (256, 256, 3),
    filters: int = 64,
    max_filters: int = 512,
    depth: int | None = None,
    dropout: float = 0.5,
    dropout_layers: int = 3,
    patch_layers: int = 3,
    l1_weight: float = 100.0,
    adversarial_weight: float = 1.0,
    loss: str = "non_saturating",
    normalization: str = "batch",
    seed: int | None = 0,
) -> Pix2Pix:
    """The paper's 256x256 setting by default: U-Net down to 1x1 (8 levels, widths
    64..512), 70x70 PatchGAN (``patch_layers=3``; 2 gives 34x34 patches, 1 gives 16x16),
    both with batch norm, lambda = 100. ``adversarial_weight=0`` is the L1-only U-Net of
    the paper's ablation. ``dropout`` (on the first ``dropout_layers`` decoder blocks)
    applies in training only: translate is deterministic."""
    source_shape = tuple(int(d) for d in source_shape)
    target_shape = tuple(int(d) for d in target_shape)
    if source_shape[:2] != target_shape[:2]:
        raise ValueError(
            f"source_shape {source_shape} and target_shape {target_shape} must have the same "
            "height and width (Pix2Pix translates pixel-aligned pairs)"
        )
    generator = build_unet_generator(
        source_shape, target_shape[-1], filters=filters, max_filters=max_filters,
        depth=depth, dropout=dropout, dropout_layers=dropout_layers,
        normalization=normalization, seed=seed, name="generator",
    )  # fmt: skip
    discriminator = patch_discriminator(
        target_shape, filters=filters, n_layers=patch_layers, normalization=normalization,
        condition_shape=source_shape, seed=None if seed is None else seed + 7919,
        name="discriminator",
    )  # fmt: skip
    model = Pix2Pix(
        generator, discriminator, l1_weight=l1_weight, adversarial_weight=adversarial_weight,
        loss=loss, seed=seed, name="pix2pix",
    )  # fmt: skip
    model.build()
    return model
