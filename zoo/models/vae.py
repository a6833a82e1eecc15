"""VAE family builders: convolutional and MLP VAEs, beta-VAE, conditional VAE, IWAE.

Every builder returns a trainer (:class:`zoo.trainers.VAE` or :class:`CVAE`) whose
decoder outputs likelihood logits; the likelihood (Bernoulli, continuous Bernoulli,
Gaussian with fixed or learned scale), the objective (ELBO or IWAE with k samples),
beta and the KL warm-up are config values of all of them, and so is ``output_bias``: "data_mean"
starts the decoder's output at the mean training pixel (Burda et al., 2015; the default of
the MLP builders, whose Burda et al. architecture it belongs to), "zeros" at 0.5, and
``ema_decay``: decode and sample with a moving average of the decoder's weights
(:mod:`zoo.ema`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers

from zoo import networks
from zoo.registry import register
from zoo.trainers.vae import CVAE, VAE

ARCHITECTURES = ("conv", "mlp")


def _seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


def _check_architecture(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    return architecture


def conv_networks(
    image_shape: tuple[int, int, int], latent_dim: int, filters: Sequence[int] | None, seed
) -> tuple[keras.Model, keras.Model, tuple[int, ...]]:
    filters = tuple(filters or networks.default_filters(image_shape, base=32))
    encoder = networks.conv_encoder(image_shape, 2 * latent_dim, filters, seed=seed)
    decoder = networks.conv_decoder(
        latent_dim, image_shape, filters, output_activation=None, seed=_seed(seed, 1)
    )
    return encoder, decoder, filters


def mlp_networks(
    image_shape: tuple[int, int, int],
    latent_dim: int,
    hidden: Sequence[int],
    activation: str,
    seed: int | None,
) -> tuple[keras.Model, keras.Model]:
    """Dense encoder to [mean, log-variance] and dense decoder to per-pixel logits."""
    hidden = tuple(int(h) for h in hidden)
    encoder = networks.dense_encoder(
        image_shape, hidden, 2 * latent_dim, activation=activation, seed=seed
    )
    decoder = networks.dense_decoder(
        latent_dim,
        hidden,
        image_shape,
        activation=activation,
        output_activation=None,
        seed=_seed(seed, 1),
    )
    return encoder, decoder


def conditional_encoder(
    image_shape: tuple[int, int, int],
    num_classes: int,
    latent_dim: int,
    *,
    architecture: str,
    filters: Sequence[int] | None,
    hidden: Sequence[int],
    activation: str,
    seed: int | None,
) -> keras.Model:
    """q(z|x, y): the one-hot label is concatenated to the input, as constant feature maps
    (conv) or to the flattened pixels (mlp); the trunk is the unconditional encoder."""
    height, width, channels = image_shape
    images = keras.Input(image_shape, name="images")
    labels = keras.Input((num_classes,), name="labels")
    if architecture == "conv":
        maps = layers.Reshape((1, 1, num_classes))(labels)
        maps = layers.UpSampling2D(size=(height, width))(maps)
        x = layers.Concatenate(axis=-1)([images, maps])
        filters = tuple(filters or networks.default_filters(image_shape, base=32))
        trunk = networks.conv_encoder(
            (height, width, channels + num_classes),
            2 * latent_dim,
            filters,
            seed=seed,
            name="encoder_trunk",
        )
    else:
        x = layers.Concatenate(axis=-1)([layers.Flatten()(images), labels])
        trunk = networks.dense_encoder(
            (height * width * channels + num_classes,),
            tuple(hidden),
            2 * latent_dim,
            activation=activation,
            seed=seed,
            name="encoder_trunk",
        )
    return keras.Model([images, labels], trunk(x), name="encoder")


def conditional_decoder(
    latent_dim: int,
    num_classes: int,
    image_shape: tuple[int, int, int],
    *,
    architecture: str,
    filters: Sequence[int] | None,
    hidden: Sequence[int],
    activation: str,
    seed: int | None,
) -> keras.Model:
    """p(x|z, y): [z, one-hot] concatenated, then the unconditional decoder (logits)."""
    z = keras.Input((latent_dim,), name="z")
    labels = keras.Input((num_classes,), name="labels")
    x = layers.Concatenate(axis=-1)([z, labels])
    if architecture == "conv":
        filters = tuple(filters or networks.default_filters(image_shape, base=32))
        trunk = networks.conv_decoder(
            latent_dim + num_classes,
            image_shape,
            filters,
            output_activation=None,
            seed=seed,
            name="decoder_trunk",
        )
    else:
        trunk = networks.dense_decoder(
            latent_dim + num_classes,
            tuple(hidden),
            image_shape,
            activation=activation,
            output_activation=None,
            seed=seed,
            name="decoder_trunk",
        )
    return keras.Model([z, labels], trunk(x), name="decoder")


#: Builder arguments that shape the networks; every other argument goes to the trainer.
_NETWORK_ARGUMENTS = (
    "image_shape", "latent_dim", "filters", "hidden", "activation", "architecture",
    "num_classes",
)  # fmt: skip


def _build(
    trainer: type[VAE],
    name: str,
    encoder: keras.Model,
    decoder: keras.Model,
    arguments: dict[str, Any],
    **fixed: Any,
) -> VAE:
    """The trainer (named ``name``) over the networks, from the builder's ``arguments``
    (its ``locals()`` on entry) minus the network arguments, plus ``fixed`` settings;
    every builder passes through here, so a trainer option is wired in one place."""
    options = {k: v for k, v in arguments.items() if k not in _NETWORK_ARGUMENTS}
    model = trainer(encoder, decoder, name=name, **options, **fixed)
    model.build()
    return model


@register(
    "vae",
    family="vae",
    description="Convolutional VAE; TFP likelihoods: Bernoulli, continuous Bernoulli, "
    "Gaussian (fixed or learned scale); ELBO or IWAE objective",
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
    min_scale: float = 1e-3,
    warmup_steps: int = 0,
    objective: str = "elbo",
    k: int = 1,
    output_bias: str = "zeros",
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> VAE:
    """Strided-conv encoder to [mean, log-variance]; the decoder outputs likelihood logits."""
    arguments = dict(locals())
    image_shape = networks.check_image_shape(image_shape)
    encoder, decoder, _ = conv_networks(image_shape, latent_dim, filters, seed)
    return _build(VAE, "vae", encoder, decoder, arguments)


@register(
    "beta_vae",
    family="vae",
    description="beta-VAE (convolutional): KL weighted by beta = 4, optional linear KL "
    "warm-up beta_t = beta * min(1, step / warmup_steps)",
    paper="Higgins et al. (2017), beta-VAE: Learning Basic Visual Concepts with a "
    "Constrained Variational Framework",
    tiny={"latent_dim": 4, "filters": (4, 8)},
)
def beta_vae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 10,
    filters: Sequence[int] | None = None,
    likelihood: str = "bernoulli",
    beta: float = 4.0,
    warmup_steps: int = 0,
    binarize: bool = False,
    gaussian_scale: float = 0.1,
    min_scale: float = 1e-3,
    output_bias: str = "zeros",
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> VAE:
    """The convolutional VAE with beta = 4 by default (Higgins et al., 2017)."""
    arguments = dict(locals())
    image_shape = networks.check_image_shape(image_shape)
    encoder, decoder, _ = conv_networks(image_shape, latent_dim, filters, seed)
    return _build(VAE, "beta_vae", encoder, decoder, arguments)


@register(
    "mlp_vae",
    family="vae",
    description="MLP VAE (Burda et al.'s 1-stochastic-layer architecture by default: "
    "784-200-200-50, tanh), any TFP likelihood, ELBO with k samples",
    paper="Kingma & Welling (2014); architecture of Burda et al. (2015)",
    tiny={"latent_dim": 4, "hidden": (16,)},
)
def mlp_vae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 50,
    hidden: Sequence[int] = (200, 200),
    activation: str = "tanh",
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    binarize: bool = False,
    gaussian_scale: float = 0.1,
    min_scale: float = 1e-3,
    warmup_steps: int = 0,
    objective: str = "elbo",
    k: int = 1,
    output_bias: str = "data_mean",
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> VAE:
    """Dense encoder/decoder with ``hidden`` widths (the decoder mirrors the encoder)."""
    arguments = dict(locals())
    image_shape = networks.check_image_shape(image_shape)
    encoder, decoder = mlp_networks(image_shape, latent_dim, hidden, activation, seed)
    return _build(VAE, "mlp_vae", encoder, decoder, arguments)


@register(
    "iwae",
    family="vae",
    description="Importance weighted autoencoder: the MLP VAE trained on the k-sample "
    "importance-weighted bound (k = 5)",
    paper="Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders",
    tiny={"latent_dim": 4, "hidden": (16,), "k": 3},
)
def iwae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 50,
    hidden: Sequence[int] = (200, 200),
    activation: str = "tanh",
    k: int = 5,
    likelihood: str = "bernoulli",
    binarize: bool = False,
    gaussian_scale: float = 0.1,
    min_scale: float = 1e-3,
    output_bias: str = "data_mean",
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> VAE:
    """The MLP VAE with ``objective="iwae"`` (Burda et al.'s 1-layer architecture)."""
    arguments = dict(locals())
    image_shape = networks.check_image_shape(image_shape)
    encoder, decoder = mlp_networks(image_shape, latent_dim, hidden, activation, seed)
    return _build(VAE, "iwae", encoder, decoder, arguments, objective="iwae")


@register(
    "cvae",
    family="vae",
    description="Conditional VAE: one-hot labels concatenated to the encoder's and the "
    "decoder's inputs; generate(z, labels) draws chosen classes",
    paper="Sohn, Lee & Yan (2015), Learning Structured Output Representation using Deep "
    "Conditional Generative Models",
    tiny={"latent_dim": 4, "filters": (4, 8), "hidden": (16,)},
)
def cvae(
    image_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    latent_dim: int = 16,
    architecture: str = "conv",
    filters: Sequence[int] | None = None,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    binarize: bool = False,
    gaussian_scale: float = 0.1,
    min_scale: float = 1e-3,
    warmup_steps: int = 0,
    label_dropout: float = 0.0,
    output_bias: str = "zeros",
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> CVAE:
    """``architecture`` "conv" (strided convolutions, ``filters``) or "mlp" (``hidden``).
    Train on (images, labels) batches (recipe ``data.with_labels = true``)."""
    arguments = dict(locals())
    image_shape = networks.check_image_shape(image_shape)
    architecture = _check_architecture(architecture)
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}")
    common = {
        "architecture": architecture,
        "filters": filters,
        "hidden": hidden,
        "activation": activation,
    }
    encoder = conditional_encoder(image_shape, num_classes, latent_dim, seed=seed, **common)
    decoder = conditional_decoder(
        latent_dim, num_classes, image_shape, seed=_seed(seed, 1), **common
    )
    return _build(CVAE, "cvae", encoder, decoder, arguments)
