"""GAN family: networks and registered builders.

- ``gan``: MLP generator and discriminator (Goodfellow et al., 2014);
- ``dcgan``: convolutional (Radford et al., 2016);
- ``cgan``: conditional, labels by concatenation or a projection discriminator
  (Mirza & Osindero, 2014; Miyato & Koyama, 2018);
- ``wgan``: Wasserstein critic with weight clipping (Arjovsky et al., 2017);
- ``wgan_gp``: Wasserstein critic with a gradient penalty (Gulrajani et al., 2017).

All train with :class:`zoo.trainers.GAN` and share the stabiliser flags:
``spectral_norm`` and ``minibatch_std`` (discriminator layers from :mod:`zoo.layers`),
``instance_noise``/``instance_noise_steps`` and ``ema_decay`` (trainer), and
``label_smoothing`` for the losses with a real label.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import layers

from zoo import networks
from zoo.layers import MinibatchStdDev, OneHot, SpectralNorm
from zoo.precision import OUTPUT_DTYPE
from zoo.registry import register
from zoo.trainers import GAN

NORMALIZATIONS = ("batch", "layer", "none")
CONDITIONINGS = ("concat", "projection")


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def _spectral(enabled: bool, seed: int | None) -> Callable[[layers.Layer], layers.Layer]:
    """Wrap layers in :class:`SpectralNorm` (distinct seeds for ``u``) when enabled; the
    wrapper takes its layer's dtype policy (a float32 output layer stays float32)."""
    count = [0]

    def wrap(layer: layers.Layer) -> layers.Layer:
        if not enabled:
            return layer
        count[0] += 1
        u_seed = None if seed is None else seed * 7919 + count[0]
        return SpectralNorm(layer, seed=u_seed, dtype=layer.dtype_policy)

    return wrap


def _normalization(kind: str) -> layers.Layer | None:
    """Batch norm (synchronized across replicas), layer norm over every non-batch axis with
    per-channel scale and offset (as in Gulrajani et al.'s critics), or nothing."""
    if kind == "batch":
        return networks.sync_batch_norm()
    if kind == "layer":
        return layers.GroupNormalization(groups=1)
    return None


def _labels_input() -> keras.KerasTensor:
    """The class-id input of conditional networks (int32 [N])."""
    return keras.Input((), dtype="int32", name="labels")


# -- generators ------------------------------------------------------------------------
#: The DCGAN generator (conditional with ``num_classes``): one implementation, in
#: :mod:`zoo.networks`.
conv_generator = networks.dcgan_generator


def mlp_generator(
    latent_dim: int,
    image_shape: Sequence[int],
    hidden: Sequence[int],
    *,
    num_classes: int = 0,
    seed: int | None = None,
) -> keras.Model:
    """Fully connected generator: ReLU layers of widths ``reversed(hidden)`` (``hidden``
    is given discriminator-side, from the image inwards), tanh pixels in [-1, 1]."""
    image_shape = networks.check_image_shape(image_shape)
    init = networks.Initializers(seed)
    z = keras.Input((latent_dim,), name="z")
    inputs, x = [z], z
    if num_classes:
        labels = _labels_input()
        inputs.append(labels)
        x = layers.Concatenate(name="z_and_label")([z, OneHot(num_classes)(labels)])
    for width in reversed(hidden):
        x = layers.Dense(width, activation="relu", kernel_initializer=init())(x)
    x = layers.Dense(
        math.prod(image_shape), activation="tanh", kernel_initializer=init(), dtype=OUTPUT_DTYPE
    )(x)
    outputs = layers.Reshape(image_shape, name="pixels", dtype=OUTPUT_DTYPE)(x)
    return keras.Model(inputs if num_classes else z, outputs, name="generator")


# -- discriminators --------------------------------------------------------------------
def _head(
    features: keras.KerasTensor,
    labels: keras.KerasTensor | None,
    *,
    num_classes: int,
    conditioning: str,
    init: networks.Initializers,
    sn: Callable[[layers.Layer], layers.Layer],
) -> keras.KerasTensor:
    """One logit from flat features; with a projection discriminator (Miyato & Koyama,
    2018) the logit is ``psi(phi(x)) + <embed(y), phi(x)>``. The head computes in float32
    under any dtype policy (:mod:`zoo.precision`)."""
    out = OUTPUT_DTYPE
    logit = sn(layers.Dense(1, kernel_initializer=init(), name="logit", dtype=out))(features)
    if num_classes and conditioning == "projection":
        embedded = sn(
            layers.Embedding(
                num_classes,
                int(features.shape[-1]),
                embeddings_initializer=init(),
                name="embed",
                dtype=out,
            )
        )(labels)
        projection = layers.Dot(axes=1, name="projection", dtype=out)([embedded, features])
        logit = layers.Add(name="conditional_logit", dtype=out)([logit, projection])
    return logit


def conv_discriminator(
    image_shape: Sequence[int],
    filters: Sequence[int],
    *,
    normalization: str = "batch",
    spectral_norm: bool = False,
    minibatch_std: bool = False,
    num_classes: int = 0,
    conditioning: str = "concat",
    seed: int | None = None,
) -> keras.Model:
    """DCGAN discriminator: strided 4x4 convolutions, normalization (not on the first
    layer), LeakyReLU(0.2), one logit. With the defaults it is
    :func:`zoo.networks.dcgan_discriminator` layer for layer.

    ``normalization``: ``batch``, ``layer`` (WGAN-GP critics) or ``none`` (WGAN critics);
    ``spectral_norm`` wraps every convolution, dense and embedding layer;
    ``minibatch_std`` appends the minibatch standard deviation before the logit.
    With ``num_classes`` the inputs are ``[images, labels]``: ``concat`` appends the
    one-hot label as constant image channels, ``projection`` projects it onto the
    features.
    """
    image_shape = networks.check_image_shape(image_shape)
    networks.bottom_shape(image_shape, len(filters))
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("conditioning", conditioning, CONDITIONINGS)
    init = networks.Initializers(seed, kind="normal")
    sn = _spectral(spectral_norm, seed)
    images = keras.Input(image_shape, name="images")
    x, labels = images, None
    if num_classes:
        labels = _labels_input()
        if conditioning == "concat":
            maps = layers.Reshape((1, 1, num_classes))(OneHot(num_classes)(labels))
            maps = layers.UpSampling2D(image_shape[:2], name="label_maps")(maps)
            x = layers.Concatenate(name="images_and_label")([x, maps])
    for i, width in enumerate(filters):
        norm = _normalization(normalization) if i > 0 else None
        conv = layers.Conv2D(
            width,
            4,
            strides=2,
            padding="same",
            use_bias=norm is None,
            kernel_initializer=init(),
        )
        x = sn(conv)(x)
        if norm is not None:
            x = norm(x)
        x = layers.LeakyReLU(0.2)(x)
    if minibatch_std:
        x = MinibatchStdDev(name="minibatch_std")(x)
    x = layers.Flatten()(x)
    logit = _head(x, labels, num_classes=num_classes, conditioning=conditioning, init=init, sn=sn)
    return keras.Model([images, labels] if num_classes else images, logit, name="discriminator")


def mlp_discriminator(
    image_shape: Sequence[int],
    hidden: Sequence[int],
    *,
    normalization: str = "none",
    spectral_norm: bool = False,
    minibatch_std: bool = False,
    num_classes: int = 0,
    conditioning: str = "concat",
    seed: int | None = None,
) -> keras.Model:
    """Fully connected discriminator: flatten, Dense layers of widths ``hidden`` with
    LeakyReLU(0.2), one logit. Options as for :func:`conv_discriminator` (``concat``
    appends the one-hot label to the flat image)."""
    image_shape = networks.check_image_shape(image_shape)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("conditioning", conditioning, CONDITIONINGS)
    init = networks.Initializers(seed)
    sn = _spectral(spectral_norm, seed)
    images = keras.Input(image_shape, name="images")
    x, labels = layers.Flatten()(images), None
    if num_classes:
        labels = _labels_input()
        if conditioning == "concat":
            x = layers.Concatenate(name="images_and_label")([x, OneHot(num_classes)(labels)])
    for width in hidden:
        norm = _normalization(normalization)
        x = sn(layers.Dense(width, use_bias=norm is None, kernel_initializer=init()))(x)
        if norm is not None:
            x = norm(x)
        x = layers.LeakyReLU(0.2)(x)
    if minibatch_std:
        x = MinibatchStdDev(name="minibatch_std")(x)
    logit = _head(x, labels, num_classes=num_classes, conditioning=conditioning, init=init, sn=sn)
    return keras.Model([images, labels] if num_classes else images, logit, name="discriminator")


# -- builders ---------------------------------------------------------------------------
def _networks(
    architecture: str,
    image_shape: Sequence[int],
    latent_dim: int,
    widths: Sequence[int] | None,
    seed: int | None,
    **discriminator: Any,
) -> tuple[keras.Model, keras.Model]:
    """Generator and discriminator of one architecture (``conv`` or ``mlp``); ``widths``
    are listed from the image inwards and default by image size."""
    image_shape = networks.check_image_shape(image_shape)
    check_choice("architecture", architecture, ("conv", "mlp"))
    num_classes = discriminator.get("num_classes", 0)
    d_seed = None if seed is None else seed + 1
    if architecture == "mlp":
        hidden = tuple(widths or (512, 256))
        return (
            mlp_generator(latent_dim, image_shape, hidden, num_classes=num_classes, seed=seed),
            mlp_discriminator(image_shape, hidden, seed=d_seed, **discriminator),
        )
    base = 32 if min(image_shape[:2]) < 64 else 64
    filters = tuple(widths or networks.default_filters(image_shape, base=base))
    return (
        conv_generator(latent_dim, image_shape, filters, num_classes=num_classes, seed=seed),
        conv_discriminator(image_shape, filters, seed=d_seed, **discriminator),
    )


def _arguments(values: dict[str, Any], widths: str) -> dict[str, Any]:
    """A builder's arguments (its ``locals()`` on entry) for :func:`_build`, with the
    builder's width argument (``hidden`` or ``filters``) renamed ``widths``."""
    arguments = dict(values)
    arguments["widths"] = arguments.pop(widths)
    return arguments


#: Builder arguments that shape the discriminator (``num_classes`` shapes both networks
#: and the trainer); every other argument goes to the :class:`GAN` trainer.
_DISCRIMINATOR_OPTIONS = ("normalization", "spectral_norm", "minibatch_std", "conditioning")


def _build(
    name: str,
    architecture: str,
    *,
    image_shape: Sequence[int],
    latent_dim: int,
    widths: Sequence[int] | None,
    seed: int | None,
    num_classes: int = 0,
    **options: Any,
) -> GAN:
    """One registered GAN: the networks of ``architecture`` from the builder's network
    options, and the trainer (named ``name``) from the rest; every builder's arguments
    pass through here, so a stabiliser added to :class:`GAN` is wired in one place."""
    network = {k: options.pop(k) for k in _DISCRIMINATOR_OPTIONS if k in options}
    if num_classes:
        network["num_classes"] = num_classes
    generator, discriminator = _networks(
        architecture, image_shape, latent_dim, widths, seed, **network
    )
    model = GAN(generator, discriminator, name=name, num_classes=num_classes, seed=seed, **options)
    model.build()
    return model


@register(
    "gan",
    family="gan",
    description="Vanilla GAN: fully connected generator and discriminator, minimax or "
    "non-saturating loss",
    paper="Goodfellow et al. (2014), Generative Adversarial Nets",
    tiny={"latent_dim": 8, "hidden": (16,)},
)
def gan(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 100,
    hidden: Sequence[int] = (512, 256),
    loss: str = "non_saturating",
    normalization: str = "none",
    discriminator_steps: int = 1,
    label_smoothing: float = 0.0,
    spectral_norm: bool = False,
    minibatch_std: bool = False,
    instance_noise: float = 0.0,
    instance_noise_steps: int = 10_000,
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> GAN:
    """``hidden``: discriminator widths from the image inwards (the generator mirrors them).
    ``loss="minimax"`` is the paper's original objective, ``"non_saturating"`` its
    recommended generator loss (sec. 3); the other losses of :mod:`zoo.losses` work too."""
    return _build("gan", "mlp", **_arguments(locals(), widths="hidden"))


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
    normalization: str = "batch",
    discriminator_steps: int = 1,
    label_smoothing: float = 0.0,
    spectral_norm: bool = False,
    minibatch_std: bool = False,
    instance_noise: float = 0.0,
    instance_noise_steps: int = 10_000,
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> GAN:
    """``filters`` lists widths from the image inwards (discriminator order); the generator
    mirrors them. Defaults: (32, 64) at 28x28, (64, 128, 256, 512) at 64x64. With
    ``spectral_norm`` consider ``normalization="none"`` (Miyato et al.'s critics)."""
    return _build("dcgan", "conv", **_arguments(locals(), widths="filters"))


@register(
    "cgan",
    family="gan",
    description="Conditional GAN: class labels condition both networks (concatenation or a "
    "projection discriminator)",
    paper="Mirza & Osindero (2014), Conditional GANs; Miyato & Koyama (2018), cGANs with "
    "Projection Discriminator",
    tiny={"latent_dim": 8, "filters": (4, 8)},
)
def cgan(
    image_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    latent_dim: int = 64,
    conditioning: str = "concat",
    architecture: str = "conv",
    filters: Sequence[int] | None = None,
    loss: str = "non_saturating",
    normalization: str = "batch",
    discriminator_steps: int = 1,
    label_smoothing: float = 0.0,
    spectral_norm: bool = False,
    minibatch_std: bool = False,
    instance_noise: float = 0.0,
    instance_noise_steps: int = 10_000,
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> GAN:
    """Trains on ``(images, labels)`` batches with integer labels in ``[0, num_classes)``;
    ``generate(z, labels)``. The generator always takes the one-hot label concatenated to
    z; ``conditioning`` chooses the discriminator's: ``concat`` (one-hot label as extra
    image channels) or ``projection`` (inner product of a label embedding with the
    features; Miyato & Koyama use it with ``spectral_norm=True``, ``loss="hinge"``,
    ``normalization="none"``). ``architecture``: ``conv`` (DCGAN networks, ``filters``)
    or ``mlp`` (as ``gan``, ``filters`` then lists the hidden widths)."""
    if num_classes < 1:
        raise ValueError(f"a conditional GAN needs num_classes >= 1; got {num_classes}")
    check_choice("conditioning", conditioning, CONDITIONINGS)
    arguments = _arguments(locals(), widths="filters")
    return _build("cgan", arguments.pop("architecture"), **arguments)


@register(
    "wgan",
    family="gan",
    description="Wasserstein GAN: critic with weight clipping, n_critic critic steps per "
    "generator step, RMSProp",
    paper="Arjovsky, Chintala & Bottou (2017), Wasserstein GAN",
    tiny={"latent_dim": 8, "filters": (4, 8)},
)
def wgan(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 64,
    filters: Sequence[int] | None = None,
    clip_value: float = 0.01,
    discriminator_steps: int = 5,
    split_batch: bool = True,
    normalization: str = "none",
    spectral_norm: bool = False,
    minibatch_std: bool = False,
    instance_noise: float = 0.0,
    instance_noise_steps: int = 10_000,
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> GAN:
    """The paper's defaults: c = 0.01, n_critic = 5, and (at compile) RMSProp(5e-5).

    ``split_batch``: each batch is cut into ``discriminator_steps`` critic minibatches
    (so use a batch size of n_critic x m: 5 x 64 = 320 in the recipe), and the
    generator step uses m samples. ``normalization`` defaults to ``none``: the paper's
    DCGAN critic had batch norm, which makes the critic's score of an example depend on
    the rest of its batch (``"batch"`` restores it)."""
    return _build("wgan", "conv", loss="wasserstein", **_arguments(locals(), widths="filters"))


@register(
    "wgan_gp",
    family="gan",
    description="WGAN-GP: Wasserstein critic with a gradient penalty, layer norm, Adam",
    paper="Gulrajani et al. (2017), Improved Training of Wasserstein GANs",
    tiny={"latent_dim": 8, "filters": (4, 8)},
)
def wgan_gp(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 64,
    filters: Sequence[int] | None = None,
    gradient_penalty: float = 10.0,
    discriminator_steps: int = 5,
    split_batch: bool = True,
    normalization: str = "layer",
    spectral_norm: bool = False,
    minibatch_std: bool = False,
    instance_noise: float = 0.0,
    instance_noise_steps: int = 10_000,
    ema_decay: float | None = None,
    seed: int | None = 0,
) -> GAN:
    """The paper's defaults: lambda = 10, n_critic = 5, alpha ~ Uniform[0, 1] per example,
    and (at compile) Adam(1e-4, beta_1=0, beta_2=0.9). The critic has no batch norm (the
    penalty is per example): layer norm by default, or ``normalization="none"``."""
    if normalization == "batch":
        raise ValueError(
            "wgan_gp: batch norm in the critic invalidates the per-example gradient penalty "
            "(Gulrajani et al., sec. 4); use normalization='layer' or 'none'"
        )
    return _build("wgan_gp", "conv", loss="wasserstein", **_arguments(locals(), widths="filters"))
