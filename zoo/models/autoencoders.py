"""Autoencoder family builders."""

from __future__ import annotations

from collections.abc import Sequence

from zoo import networks
from zoo.registry import register
from zoo.trainers import Autoencoder


@register(
    "conv_ae",
    family="autoencoder",
    description="Convolutional autoencoder; anomaly score = reconstruction error",
    paper="Masci et al. (2011), Stacked Convolutional Auto-Encoders",
    tiny={"latent_dim": 8, "filters": (4, 8)},
)
def conv_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 32,
    filters: Sequence[int] | None = None,
    batch_norm: bool = False,
    reconstruction_loss: str = "mse",
    seed: int | None = 0,
) -> Autoencoder:
    """Strided-conv encoder to a ``latent_dim`` code, transposed-conv decoder, sigmoid output."""
    image_shape = networks.check_image_shape(image_shape)
    filters = tuple(filters or networks.default_filters(image_shape, base=32))
    encoder = networks.conv_encoder(
        image_shape, latent_dim, filters, batch_norm=batch_norm, seed=seed
    )
    decoder = networks.conv_decoder(
        latent_dim,
        image_shape,
        filters,
        batch_norm=batch_norm,
        seed=None if seed is None else seed + 1,
    )
    model = Autoencoder(
        encoder, decoder, reconstruction_loss=reconstruction_loss, seed=seed, name="conv_ae"
    )
    model.build()
    return model
