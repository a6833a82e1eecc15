"""Autoencoder family builders: undercomplete, overcomplete, denoising, convolutional,
memory-augmented, sparse, contractive, recurrent and stacked. One trainer
(``Autoencoder``) serves them all; they differ in networks and regulariser."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from zoo import networks
from zoo.layers import MemoryAddressing
from zoo.precision import OUTPUT_DTYPE
from zoo.registry import register
from zoo.trainers import Autoencoder, SequenceAutoencoder

#: Regularisers an overcomplete autoencoder may use, mapped to trainer options.
OVERCOMPLETE_REGULARIZERS = {
    "sparse_l1": {"penalty": "l1", "penalty_weight": 1e-3},
    "sparse_kl": {"penalty": "kl", "penalty_weight": 1.0, "sparsity_target": 0.05},
    "denoising": {"corruption": "masking", "noise_level": 0.3},
    "contractive": {"penalty": "contractive", "penalty_weight": 0.1},
}


def _seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


def _dense(
    name: str,
    *,
    image_shape: Sequence[int],
    latent_dim: int,
    seed: int | None,
    hidden: Sequence[int] = (),
    code_activation: str | None = None,
    **trainer: object,
) -> Autoencoder:
    """A dense autoencoder named ``name``; ``trainer`` (the builder's remaining arguments:
    loss, score, penalty, corruption, ...) goes to :class:`Autoencoder`."""
    image_shape = networks.check_image_shape(image_shape)
    encoder = networks.dense_encoder(
        image_shape, hidden, latent_dim, code_activation=code_activation, seed=seed
    )
    decoder = networks.dense_decoder(latent_dim, hidden, image_shape, seed=_seed(seed, 1))
    model = Autoencoder(encoder, decoder, seed=seed, name=name, **trainer)
    model.build()
    return model


def _conv(
    name: str,
    *,
    image_shape: Sequence[int],
    latent_dim: int,
    filters: Sequence[int] | None,
    seed: int | None,
    batch_norm: bool = False,
    convs_per_stage: int = 1,
    memory: dict[str, float] | None = None,
    **trainer: object,
) -> Autoencoder:
    """A convolutional autoencoder named ``name``; ``trainer`` as for :func:`_dense`.
    ``memory`` (``MemoryAddressing`` arguments) puts a memory module between the
    encoder's code and the decoder (it is the decoder's first layer; it computes in float32
    under any dtype policy: its cosines, softmax, shrinkage and entropy use 1e-12 guards
    that float16 rounds to zero)."""
    image_shape = networks.check_image_shape(image_shape)
    filters = tuple(filters or networks.default_filters(image_shape, base=32))
    layout = {"batch_norm": batch_norm, "convs_per_stage": convs_per_stage}
    encoder = networks.conv_encoder(image_shape, latent_dim, filters, **layout, seed=seed)
    decoder = networks.conv_decoder(latent_dim, image_shape, filters, **layout, seed=_seed(seed, 1))
    if memory is not None:
        codes = keras.Input((latent_dim,), name="z")
        addressed = MemoryAddressing(
            **memory, seed=_seed(seed, 2), name="memory", dtype=OUTPUT_DTYPE
        )(codes)
        decoder = keras.Model(codes, decoder(addressed), name="decoder")
    model = Autoencoder(encoder, decoder, seed=seed, name=name, **trainer)
    model.build()
    return model


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
    convs_per_stage: int = 1,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    """Strided-conv encoder to a ``latent_dim`` code, transposed-conv decoder, sigmoid
    output; ``convs_per_stage`` > 1 adds 3x3 convolutions at each resolution."""
    return _conv("conv_ae", **locals())


@register(
    "memory_ae",
    family="autoencoder",
    description="Memory-augmented convolutional autoencoder (MemAE): the decoder sees only "
    "a mix of learned memory rows (hard-shrunk softmax addressing)",
    paper="Gong et al. (2019), Memorizing Normality to Detect Anomaly (MemAE)",
    tiny={"latent_dim": 8, "filters": (4, 8), "memory_items": 6},
)
def memory_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 16,
    filters: Sequence[int] | None = None,
    memory_items: int = 50,
    shrink_threshold: float = 0.0025,
    entropy_weight: float = 2e-4,
    sharpness: float = 1.0,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    """``conv_ae`` with a :class:`~zoo.layers.MemoryAddressing` module of ``memory_items``
    rows between code and decoder, addressed by softmax(``sharpness`` x cosine similarity);
    ``entropy_weight`` x the addressing entropy is added to the loss in training."""
    arguments = dict(locals())
    arguments["memory"] = {
        "items": arguments.pop("memory_items"),
        "shrink_threshold": arguments.pop("shrink_threshold"),
        "entropy_weight": arguments.pop("entropy_weight"),
        "sharpness": arguments.pop("sharpness"),
    }
    return _conv("memory_ae", **arguments)


@register(
    "denoising_ae",
    family="autoencoder",
    description="Denoising convolutional autoencoder: corrupted input in training, clean target",
    paper="Vincent et al. (2008), Extracting and Composing Robust Features with Denoising AEs",
    tiny={"latent_dim": 8, "filters": (4, 8)},
)
def denoising_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 32,
    filters: Sequence[int] | None = None,
    corruption: str = "gaussian",
    noise_level: float = 0.3,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    """``corruption``: gaussian (std ``noise_level``), masking or salt_and_pepper
    (probability ``noise_level``); applied only in training. ``denoise(images)`` cleans."""
    return _conv("denoising_ae", **locals())


@register(
    "dense_ae",
    family="autoencoder",
    description="Undercomplete dense autoencoder: the bottleneck is smaller than the input",
    paper="Hinton & Salakhutdinov (2006), Reducing the Dimensionality of Data with NNs",
    tiny={"latent_dim": 8, "hidden": (16,)},
)
def dense_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    hidden: Sequence[int] = (256,),
    latent_dim: int = 32,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    arguments = dict(locals())
    size = math.prod(image_shape)
    if latent_dim >= size:
        raise ValueError(
            f"an undercomplete autoencoder needs latent_dim < input size ({size}); got "
            f"{latent_dim}. For a larger code use overcomplete_ae with a regularizer"
        )
    return _dense("dense_ae", **arguments)


@register(
    "overcomplete_ae",
    family="autoencoder",
    description="Overcomplete dense autoencoder (code larger than the input) with a regulariser",
    paper="Vincent et al. (2010); Ng (2011); Rifai et al. (2011)",
    tiny={"latent_dim": 1024, "regularizer": "sparse_kl"},
)
def overcomplete_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 1024,
    regularizer: str | None = None,
    penalty_weight: float | None = None,
    noise_level: float | None = None,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    """A single sigmoid code layer wider than the input. Without a regulariser it can
    learn the identity, so one is required: sparse_l1, sparse_kl, denoising or contractive."""
    arguments = dict(locals())
    size = math.prod(image_shape)
    if latent_dim <= size:
        raise ValueError(
            f"an overcomplete autoencoder needs latent_dim > input size ({size}); got {latent_dim}"
        )
    if regularizer not in OVERCOMPLETE_REGULARIZERS:
        raise ValueError(
            f"an overcomplete autoencoder (code {latent_dim} > input {size}) can copy its input "
            f"and learn nothing; pass regularizer= one of {', '.join(OVERCOMPLETE_REGULARIZERS)}"
            + (f" (got {regularizer!r})" if regularizer is not None else "")
        )
    # The regulariser's settings, with the caller's weight or noise level where it has one.
    options = dict(OVERCOMPLETE_REGULARIZERS[regularizer])
    for key in ("penalty_weight", "noise_level"):
        given = arguments.pop(key)
        if given is not None and key in options:
            options[key] = given
    del arguments["regularizer"]
    return _dense("overcomplete_ae", code_activation="sigmoid", **arguments, **options)


@register(
    "sparse_ae",
    family="autoencoder",
    description="Sparse autoencoder: KL sparsity target on mean activations, or L1 on codes",
    paper="Ng (2011), Sparse autoencoder (CS294A notes)",
    tiny={"latent_dim": 16, "hidden": (32,)},
)
def sparse_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    hidden: Sequence[int] = (256,),
    latent_dim: int = 128,
    penalty: str = "kl",
    penalty_weight: float = 1.0,
    sparsity_target: float = 0.05,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    """Sigmoid code; ``penalty`` kl (to ``sparsity_target``) or l1, tracked as ``penalty``."""
    if penalty not in ("kl", "l1"):
        raise ValueError(f"sparse_ae penalty must be 'kl' or 'l1'; got {penalty!r}")
    return _dense("sparse_ae", code_activation="sigmoid", **locals())


@register(
    "contractive_ae",
    family="autoencoder",
    description="Contractive autoencoder: Frobenius norm of the encoder Jacobian as penalty",
    paper="Rifai et al. (2011), Contractive Auto-Encoders",
    tiny={"latent_dim": 16},
)
def contractive_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = 128,
    penalty_weight: float = 0.1,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    """One sigmoid dense encoder layer, so the Jacobian penalty is computed analytically."""
    return _dense("contractive_ae", code_activation="sigmoid", penalty="contractive", **locals())


@register(
    "stacked_ae",
    family="autoencoder",
    description="Stacked dense autoencoder: greedy layer-wise pre-training, then fine-tuning",
    paper="Bengio et al. (2007), Greedy Layer-Wise Training of Deep Networks",
    tiny={"hidden": (32, 16), "latent_dim": 8},
)
def stacked_ae(
    image_shape: Sequence[int] = (28, 28, 1),
    hidden: Sequence[int] = (256, 128),
    latent_dim: int = 32,
    reconstruction_loss: str = "mse",
    score: str = "l2",
    score_blur: float = 0.0,
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> Autoencoder:
    """Pre-train with :func:`zoo.trainers.layerwise.greedy_layerwise_pretrain` (the
    ``stacked_ae_mnist`` recipe runs both phases), then ``fit`` end to end."""
    return _dense("stacked_ae", **locals())


@register(
    "recurrent_ae",
    family="sequence_autoencoder",
    description="LSTM/GRU sequence-to-sequence autoencoder for (multivariate) time series",
    paper="Malhotra et al. (2016), LSTM-based Encoder-Decoder for Anomaly Detection",
    tiny={"units": 8, "latent_dim": 4, "sequence_shape": (32, 3)},
)
def recurrent_ae(
    sequence_shape: Sequence[int] = (64, 3),
    units: int = 64,
    latent_dim: int = 16,
    cell: str = "lstm",
    mask_value: float = 0.0,
    noise_level: float = 0.0,
    score: str = "l2",
    score_top_fraction: float = 1.0,
    seed: int | None = 0,
) -> SequenceAutoencoder:
    """Inputs [T, F]; shorter sequences are padded with ``mask_value`` (all features) and
    masked. Scores per timestep (``step_scores``) and per sequence (``anomaly_score``: the
    mean step score, or the mean of the largest ``score_top_fraction`` of the valid steps)."""
    if len(sequence_shape) != 2:
        raise ValueError(f"sequence_shape must be (timesteps, features); got {sequence_shape}")
    encoder = networks.recurrent_encoder(
        sequence_shape, units, latent_dim, cell=cell, mask_value=mask_value, seed=seed
    )
    decoder = networks.recurrent_decoder(
        latent_dim, units, sequence_shape, cell=cell, seed=_seed(seed, 1)
    )
    model = SequenceAutoencoder(
        encoder, decoder, mask_value=mask_value, score=score, seed=seed, name="recurrent_ae",
        score_top_fraction=score_top_fraction,
        corruption="gaussian" if noise_level else None, noise_level=noise_level,
    )  # fmt: skip
    model.build()
    return model
