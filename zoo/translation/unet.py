"""The U-Net generator of Pix2Pix (Isola et al., 2017, §3.2.1 and appendix 6.1.1).

An encoder-decoder whose mirrored layers are joined by skip connections (Ronneberger et
al., 2015): decoder block i is concatenated on channels with encoder layer n - i, so
low-level structure (edges, positions) shared by the source and the target can bypass the
bottleneck. Encoder ``Ck`` = 4x4 stride-2 convolution with k filters, normalisation,
LeakyReLU 0.2 (no normalisation on the first layer; none on the innermost either: at a 1 x 1
bottleneck instance norm would zero it). Decoder ``CDk`` = 4x4 stride-2 transposed
convolution, normalisation, dropout, ReLU; the last layer maps to the target's channels with
tanh. At 256 x 256 with ``filters=64`` the encoder is C64-C128-C256-C512-C512-C512-C512-C512
and the decoder CD512-CD512-CD512-C512-C256-C128-C64 (before each concatenation).

Dropout: the paper keeps dropout on at test time as the generator's only noise (its z is
ignored otherwise). Here dropout is active in training only: ``training=False`` (what the
trainer's ``translate`` and the exported signatures run) is deterministic, and batch norm
then uses its moving averages (the paper normalises with the test batch's statistics).
Its masks are drawn for the global batch (:class:`GlobalBatchDropout`), so a step on N
replicas equals one device's step (Keras's ``Dropout`` would draw the same masks on every
replica).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers, ops

from zoo import networks
from zoo.precision import OUTPUT_DTYPE
from zoo.trainers.base import draw_global_batch
from zoo.translation.patchgan import normalization_layer

__all__ = ["GlobalBatchDropout", "build_unet_generator", "unet_depth", "unet_widths"]

KERNEL = 4


@keras.saving.register_keras_serializable(package="zoo")
class GlobalBatchDropout(layers.Layer):
    """Inverted dropout (Srivastava et al., 2014) whose mask is drawn for the global batch:
    under ``tf.distribute`` every replica draws the whole batch's mask from its copy of the
    layer's seed generator (the copies move in step) and keeps its own slice
    (:func:`zoo.trainers.base.draw_global_batch`), so N replicas drop what one device
    would. Identity at inference."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1); got {rate}")
        self.rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training or self.rate == 0.0:
            return inputs
        noise = draw_global_batch(keras.random.uniform, ops.shape(inputs), self.seed_generator)
        keep = noise >= self.rate
        return ops.where(keep, inputs / (1.0 - self.rate), ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def unet_depth(height: int, width: int, depth: int | None = None) -> int:
    """The number of stride-2 encoder layers: ``depth``, checked, or (``None``) as many
    halvings as the image allows down to a 1-pixel side (256 -> 8, 32 -> 5).

    Raises ``ValueError`` if the size is not divisible by ``2**depth``."""
    if depth is None:
        depth = 0
        h, w = height, width
        while h % 2 == 0 and w % 2 == 0 and min(h, w) > 1:
            h, w, depth = h // 2, w // 2, depth + 1
        if depth == 0:
            raise ValueError(
                f"a U-Net needs an even image size; got {height}x{width}: crop or resize the "
                "images to a multiple of 2 (a power of 2, e.g. 256, gives a 1x1 bottleneck)"
            )
        return depth
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"depth must be an integer >= 1 or None; got {depth!r}")
    factor = 2**depth
    if height % factor or width % factor:
        raise ValueError(
            f"a U-Net of depth {depth} halves the image {depth} times, so its size must be "
            f"divisible by 2**{depth} = {factor}; got {height}x{width}: crop or resize the "
            f"images to a multiple of {factor}, or pass a smaller depth (or depth=None)"
        )
    return depth


def unet_widths(depth: int, filters: int = 64, max_filters: int = 512) -> list[int]:
    """The encoder's widths from the image inwards: ``filters * 2**i`` capped at
    ``max_filters`` (64, 128, 256, 512, 512, ... at the paper's settings)."""
    return [min(filters * 2**i, max_filters) for i in range(depth)]


def build_unet_generator(
    source_shape: Sequence[int],
    target_channels: int,
    *,
    filters: int = 64,
    max_filters: int = 512,
    depth: int | None = None,
    dropout: float = 0.5,
    dropout_layers: int = 3,
    normalization: str = "batch",
    seed: int | None = None,
    name: str = "unet_generator",
) -> keras.Model:
    """A U-Net from images ``source_shape`` in [-1, 1] to ``[N, H, W, target_channels]`` in
    [-1, 1] (tanh, float32).

    ``depth`` stride-2 encoder layers (``None``: down to 1 x 1, :func:`unet_depth`), widths
    :func:`unet_widths`; ``depth - 1`` skip connections. ``dropout`` (rate) on the first
    ``dropout_layers`` decoder blocks, in training only (:class:`GlobalBatchDropout`,
    seeded from ``seed``). ``normalization``: "batch" (synchronised over replicas), "instance" or
    "none". Initial weights N(0, 0.02), seeded."""
    source_shape = tuple(int(d) for d in source_shape)
    if len(source_shape) != 3:
        raise ValueError(f"source_shape must be (height, width, channels); got {source_shape}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}")
    if dropout_layers < 0:
        raise ValueError(f"dropout_layers must be >= 0; got {dropout_layers}")
    normalization_layer(normalization)  # check the name before building
    depth = unet_depth(source_shape[0], source_shape[1], depth)
    widths = unet_widths(depth, filters, max_filters)
    init = networks.Initializers(seed, kind="normal")

    def conv(cls: type, width: int, label: str, bias: bool) -> layers.Layer:
        return cls(
            width, KERNEL, strides=2, padding="same", use_bias=bias,
            kernel_initializer=init(), name=label,
        )  # fmt: skip

    inputs = keras.Input(source_shape, name="images")
    x = inputs
    skips = []
    for i, width in enumerate(widths):
        norm = normalization_layer(normalization) if 0 < i < depth - 1 else None
        x = conv(layers.Conv2D, width, f"encoder_{i + 1}", norm is None)(x)
        if norm is not None:
            x = norm(x)
        x = layers.LeakyReLU(0.2, name=f"encoder_{i + 1}_out")(x)
        skips.append(x)
    # decoder: back up to the resolution of encoder layer depth - 1, ..., 1
    for j, i in enumerate(range(depth - 2, -1, -1)):
        norm = normalization_layer(normalization)
        x = conv(layers.Conv2DTranspose, widths[i], f"decoder_{j + 1}", norm is None)(x)
        if norm is not None:
            x = norm(x)
        if dropout and j < dropout_layers:
            x = GlobalBatchDropout(dropout, seed=init.next_seed(), name=f"dropout_{j + 1}")(x)
        x = layers.ReLU()(x)
        x = layers.Concatenate(name=f"skip_{j + 1}")([x, skips[i]])
    x = layers.Conv2DTranspose(
        int(target_channels), KERNEL, strides=2, padding="same", kernel_initializer=init(),
        name="output", dtype=OUTPUT_DTYPE,
    )(x)  # fmt: skip
    outputs = layers.Activation("tanh", dtype=OUTPUT_DTYPE, name="tanh")(x)
    return keras.Model(inputs, outputs, name=name)
