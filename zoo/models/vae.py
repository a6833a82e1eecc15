"""VAE family builders."""

from __future__ import annotations

from collections.abc import Sequence

from zoo import networks
from zoo.registry import register
from zoo.trainers import VAE


@register(
    "vae",
    family="vae",
    description="Convolutional VAE; TFP likelihoods: Bernoulli, continuous Bernoulli, Gaussian",
    paper="Kingma & Welling (2014), Auto-Encoding Variational Bayes",
    tiny={"latent_dim": 4, "filters": (4, 8)},
)
def vae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 16,
    filters: Sequence[int] | None = None,
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    binarize: bool = False,
    gaussian_scale: float = 0.1,
    seed: int | None = 0,
) -> VAE:
    """Strided-conv encoder to [mean, log-variance]; the decoder outputs likelihood logits."""
    image_shape = networks.check_image_shape(image_shape)
    filters = tuple(filters or networks.default_filters(image_shape, base=32))
    encoder = networks.conv_encoder(image_shape, 2 * latent_dim, filters, seed=seed)
    decoder = networks.conv_decoder(
        latent_dim,
        image_shape,
        filters,
        output_activation=None,
        seed=None if seed is None else seed + 1,
    )
    model = VAE(
        encoder,
        decoder,
        likelihood=likelihood,
        beta=beta,
        binarize=binarize,
        gaussian_scale=gaussian_scale,
        seed=seed,
        name="vae",
    )
    model.build()
    return model
