"""GAN family builders."""

from __future__ import annotations

from collections.abc import Sequence

from zoo import networks
from zoo.registry import register
from zoo.trainers import GAN


@register(
    "dcgan",
    family="gan",
    description="DCGAN: strided convolutions, batch norm, LeakyReLU critic, tanh generator",
    paper="Radford, Metz & Chintala (2016), Unsupervised Representation Learning with DCGANs",
    tiny={"latent_dim": 8, "filters": (4, 8)},
)
def dcgan(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 64,
    filters: Sequence[int] | None = None,
    loss: str = "non_saturating",
    discriminator_steps: int = 1,
    label_smoothing: float = 0.0,
    seed: int | None = 0,
) -> GAN:
    """``filters`` lists widths from the image inwards (discriminator order); the generator
    mirrors them. Defaults: (32, 64) at 28x28, (64, 128, 256, 512) at 64x64."""
    image_shape = networks.check_image_shape(image_shape)
    base = 32 if min(image_shape[:2]) < 64 else 64
    filters = tuple(filters or networks.default_filters(image_shape, base=base))
    generator = networks.dcgan_generator(latent_dim, image_shape, filters, seed=seed)
    discriminator = networks.dcgan_discriminator(
        image_shape, filters, seed=None if seed is None else seed + 1
    )
    model = GAN(
        generator,
        discriminator,
        loss=loss,
        discriminator_steps=discriminator_steps,
        label_smoothing=label_smoothing,
        seed=seed,
        name="dcgan",
    )
    model.build()
    return model
