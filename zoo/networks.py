"""Plain Keras networks shared by the trainers (encoders, decoders, generators, critics).

Every builder returns a functional ``keras.Model`` (so it serialises with
``get_config`` and loads in safe mode) and works for any image size that can be
halved once per entry of ``filters`` (28x28 -> 14 -> 7, 64x64 -> 32 -> 16 -> 8 -> 4).

Under a mixed dtype policy (:mod:`zoo.precision`) every network's output layer computes
in float32 (:data:`zoo.precision.OUTPUT_DTYPE`), and batch norm is synchronized across
replicas (:func:`sync_batch_norm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers

# The shape arithmetic has no Keras in it (the registry checks configs with it before
# TensorFlow loads); it is re-exported here for the builders.
from zoo.precision import OUTPUT_DTYPE
from zoo.shapes import (  # noqa: F401
    ImageShape,
    bottom_shape,
    check_image_shape,
    default_filters,
    default_stages,
)


def sync_batch_norm() -> layers.BatchNormalization:
    """Batch normalisation with statistics over the global batch: ``synchronized=True``
    (Keras 3, TensorFlow backend) all-reduces the batch sums across the replicas of a
    ``tf.distribute`` strategy, so N replicas at global batch B normalise (and update the
    moving averages) as one device at batch B; without a strategy it is plain batch norm
    (Ioffe & Szegedy, 2015). Statistics are computed in float32 under any dtype policy."""
    return layers.BatchNormalization(synchronized=True)


class Initializers:
    """Hands out seeded initializers, a distinct seed per layer, so one seed rebuilds one net."""

    def __init__(self, seed: int | None, kind: str = "glorot_uniform", stddev: float = 0.02):
        self.seed, self.kind, self.stddev, self.count = seed, kind, stddev, 0

    def __call__(self) -> keras.initializers.Initializer:
        seed = self.next_seed()
        if self.kind == "normal":  # Radford et al. (2016): N(0, 0.02)
            return keras.initializers.RandomNormal(0.0, self.stddev, seed=seed)
        return keras.initializers.GlorotUniform(seed=seed)

    def next_seed(self) -> int | None:
        seed = None if self.seed is None else self.seed * 1009 + self.count
        self.count += 1
        return seed

    def orthogonal(self) -> keras.initializers.Initializer:
        """For recurrent kernels (Keras' default kind), seeded like the others."""
        return keras.initializers.Orthogonal(seed=self.next_seed())


def _check_convs_per_stage(convs_per_stage: int) -> None:
    if not (isinstance(convs_per_stage, int) and convs_per_stage >= 1):
        raise ValueError(
            f"convs_per_stage must be an integer >= 1 (1 = one strided convolution per "
            f"resolution); got {convs_per_stage!r}"
        )


def conv_encoder(
    image_shape: Sequence[int],
    output_dim: int,
    filters: Sequence[int],
    *,
    batch_norm: bool = False,
    convs_per_stage: int = 1,
    seed: int | None = None,
    name: str = "encoder",
) -> keras.Model:
    """Strided 4x4 convolutions (each followed by ``convs_per_stage - 1`` 3x3 ones at the
    same resolution), then a dense layer of ``output_dim`` units (linear)."""
    image_shape = check_image_shape(image_shape)
    bottom_shape(image_shape, len(filters))
    _check_convs_per_stage(convs_per_stage)
    init = Initializers(seed)
    inputs = keras.Input(image_shape, name="images")
    x = inputs
    for i, width in enumerate(filters):
        for j in range(convs_per_stage):
            x = layers.Conv2D(
                width, 4 if j == 0 else 3, strides=2 if j == 0 else 1, padding="same",
                kernel_initializer=init(),
            )(x)  # fmt: skip
            if batch_norm and (i > 0 or j > 0):
                x = sync_batch_norm()(x)
            x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(output_dim, kernel_initializer=init(), name="code", dtype=OUTPUT_DTYPE)(
        x
    )
    return keras.Model(inputs, outputs, name=name)


def conv_decoder(
    latent_dim: int,
    image_shape: Sequence[int],
    filters: Sequence[int],
    *,
    output_activation: str | None = "sigmoid",
    batch_norm: bool = False,
    convs_per_stage: int = 1,
    seed: int | None = None,
    name: str = "decoder",
) -> keras.Model:
    """Dense projection to the bottom feature map, then 4x4 transposed convolutions (each
    followed by ``convs_per_stage - 1`` 3x3 convolutions at the same resolution).

    ``filters`` lists widths from the image up (as for the encoder); the decoder
    walks them in reverse. The last layer maps to the image's channels.
    """
    image_shape = check_image_shape(image_shape)
    height, width = bottom_shape(image_shape, len(filters))
    _check_convs_per_stage(convs_per_stage)
    init = Initializers(seed)
    widths = list(reversed(filters))
    inputs = keras.Input((latent_dim,), name="z")
    x = layers.Dense(height * width * widths[0], kernel_initializer=init())(inputs)
    x = layers.Reshape((height, width, widths[0]))(x)
    x = layers.LeakyReLU(0.2)(x)
    for out_width in [*widths[1:], widths[-1]]:
        x = layers.Conv2DTranspose(
            out_width, 4, strides=2, padding="same", kernel_initializer=init()
        )(x)
        if batch_norm:
            x = sync_batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
        for _ in range(convs_per_stage - 1):
            x = layers.Conv2D(out_width, 3, padding="same", kernel_initializer=init())(x)
            if batch_norm:
                x = sync_batch_norm()(x)
            x = layers.LeakyReLU(0.2)(x)
    outputs = layers.Conv2D(
        image_shape[-1],
        3,
        padding="same",
        activation=output_activation,
        kernel_initializer=init(),
        name="pixels",
        dtype=OUTPUT_DTYPE,
    )(x)
    return keras.Model(inputs, outputs, name=name)


def dcgan_generator(
    latent_dim: int,
    image_shape: Sequence[int],
    filters: Sequence[int],
    *,
    num_classes: int = 0,
    seed: int | None = None,
) -> keras.Model:
    """DCGAN generator (Radford et al., 2016): project, reshape, fractionally-strided
    convolutions with batch norm and ReLU, tanh output in [-1, 1]. With ``num_classes``,
    inputs are ``[z, labels]`` (int class ids) and the one-hot label is concatenated to z
    (Mirza & Osindero, 2014)."""
    from zoo.layers import OneHot

    image_shape = check_image_shape(image_shape)
    height, width = bottom_shape(image_shape, len(filters))
    init = Initializers(seed, kind="normal")
    widths = list(reversed(filters))
    z = keras.Input((latent_dim,), name="z")
    inputs, x = z, z
    if num_classes:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs = [z, labels]
        x = layers.Concatenate(name="z_and_label")([z, OneHot(num_classes)(labels)])
    x = layers.Dense(height * width * widths[0], use_bias=False, kernel_initializer=init())(x)
    x = layers.Reshape((height, width, widths[0]))(x)
    x = sync_batch_norm()(x)
    x = layers.ReLU()(x)
    for out_width in widths[1:]:
        x = layers.Conv2DTranspose(
            out_width, 4, strides=2, padding="same", use_bias=False, kernel_initializer=init()
        )(x)
        x = sync_batch_norm()(x)
        x = layers.ReLU()(x)
    outputs = layers.Conv2DTranspose(
        image_shape[-1],
        4,
        strides=2,
        padding="same",
        activation="tanh",
        kernel_initializer=init(),
        name="pixels",
        dtype=OUTPUT_DTYPE,
    )(x)
    return keras.Model(inputs, outputs, name="generator")


def dcgan_discriminator(
    image_shape: Sequence[int], filters: Sequence[int], *, seed: int | None = None
) -> keras.Model:
    """DCGAN discriminator: strided convolutions, batch norm (not on the first layer),
    LeakyReLU(0.2), one logit."""
    image_shape = check_image_shape(image_shape)
    bottom_shape(image_shape, len(filters))
    init = Initializers(seed, kind="normal")
    inputs = keras.Input(image_shape, name="images")
    x = inputs
    for i, width in enumerate(filters):
        x = layers.Conv2D(
            width, 4, strides=2, padding="same", use_bias=i == 0, kernel_initializer=init()
        )(x)
        if i > 0:
            x = sync_batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(1, kernel_initializer=init(), name="logit", dtype=OUTPUT_DTYPE)(x)
    return keras.Model(inputs, outputs, name="discriminator")


def dense_encoder(
    input_shape: Sequence[int],
    hidden: Sequence[int],
    latent_dim: int,
    *,
    activation: str = "relu",
    code_activation: str | None = None,
    seed: int | None = None,
    name: str = "encoder",
) -> keras.Model:
    """Flatten, Dense layers of widths ``hidden``, then a ``latent_dim`` code.

    Layers are named ``encoder_dense_<i>`` (1-based; the code layer is the last) so
    layer-wise pre-training can pair them with the decoder's.
    """
    init = Initializers(seed)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = layers.Flatten()(inputs)
    widths = [*hidden, latent_dim]
    for i, width in enumerate(widths, start=1):
        last = i == len(widths)
        x = layers.Dense(
            width,
            activation=code_activation if last else activation,
            kernel_initializer=init(),
            name=f"encoder_dense_{i}",
            dtype=OUTPUT_DTYPE if last else None,
        )(x)
    return keras.Model(inputs, x, name=name)


def dense_decoder(
    latent_dim: int,
    hidden: Sequence[int],
    output_shape: Sequence[int],
    *,
    activation: str = "relu",
    output_activation: str | None = "sigmoid",
    seed: int | None = None,
    name: str = "decoder",
) -> keras.Model:
    """Mirror of :func:`dense_encoder`: ``hidden`` is given encoder-side (input first).

    Layer ``decoder_dense_<i>`` maps the encoder's layer-i output back to its input.
    """
    init = Initializers(seed)
    output_shape = tuple(output_shape)
    inputs = keras.Input((latent_dim,), name="z")
    widths = [int(math.prod(output_shape)), *hidden]  # input of encoder layer i = widths[i-1]
    x = inputs
    for i in range(len(widths), 0, -1):
        x = layers.Dense(
            widths[i - 1],
            activation=output_activation if i == 1 else activation,
            kernel_initializer=init(),
            name=f"decoder_dense_{i}",
            dtype=OUTPUT_DTYPE if i == 1 else None,
        )(x)
    outputs = layers.Reshape(output_shape, name="pixels", dtype=OUTPUT_DTYPE)(x)
    return keras.Model(inputs, outputs, name=name)


RNN_CELLS = {"lstm": layers.LSTM, "gru": layers.GRU}


def recurrent_encoder(
    sequence_shape: Sequence[int],
    units: int,
    latent_dim: int,
    *,
    cell: str = "lstm",
    mask_value: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """Masking (steps whose features all equal ``mask_value`` are padding), an LSTM/GRU,
    then a dense code: the encoder of a sequence-to-sequence autoencoder
    (Srivastava et al., 2015; Malhotra et al., 2016)."""
    if cell not in RNN_CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(RNN_CELLS)}")
    init = Initializers(seed)
    inputs = keras.Input(tuple(sequence_shape), name="sequences")
    x = layers.Masking(mask_value=mask_value)(inputs)
    x = RNN_CELLS[cell](
        units, kernel_initializer=init(), recurrent_initializer=init.orthogonal(), name="rnn"
    )(x)
    outputs = layers.Dense(latent_dim, kernel_initializer=init(), name="code", dtype=OUTPUT_DTYPE)(
        x
    )
    return keras.Model(inputs, outputs, name="encoder")


def recurrent_decoder(
    latent_dim: int,
    units: int,
    sequence_shape: Sequence[int],
    *,
    cell: str = "lstm",
    seed: int | None = None,
) -> keras.Model:
    """Repeat the code over time, an LSTM/GRU returning sequences, a linear readout per step."""
    steps, features = (int(s) for s in sequence_shape)
    init = Initializers(seed)
    inputs = keras.Input((latent_dim,), name="z")
    x = layers.RepeatVector(steps)(inputs)
    x = RNN_CELLS[cell](
        units,
        return_sequences=True,
        kernel_initializer=init(),
        recurrent_initializer=init.orthogonal(),
        name="rnn",
    )(x)
    outputs = layers.TimeDistributed(
        layers.Dense(features, kernel_initializer=init(), dtype=OUTPUT_DTYPE),
        name="values",
        dtype=OUTPUT_DTYPE,
    )(x)
    return keras.Model(inputs, outputs, name="decoder")


def output_layer(network: keras.Model) -> keras.layers.Layer:
    """The last layer with a bias in ``network``, looking inside nested models (a
    conditional decoder wraps its trunk): the layer whose bias sets the output's offset."""
    for layer in reversed(network.layers):
        if isinstance(layer, keras.Model):
            try:
                return output_layer(layer)
            except ValueError:
                continue
        if getattr(layer, "bias", None) is not None:
            return layer
    raise ValueError(f"network {network.name!r} has no layer with a bias")
