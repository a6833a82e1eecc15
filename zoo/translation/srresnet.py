"""SRResNet generator and SRGAN discriminator (Ledig et al., 2017, "Photo-Realistic Single
Image Super-Resolution Using a Generative Adversarial Network", CVPR, Figure 4).

Generator: a 9x9 convolution + PReLU, ``n_blocks`` residual blocks (3x3 conv, BN, PReLU,
3x3 conv, BN, skip), a 3x3 conv + BN with a long skip from the first PReLU, log2(scale)
sub-pixel blocks (3x3 conv to 4 * filters, depth-to-space by 2, PReLU; Shi et al., 2016)
and a final 9x9 convolution. It is fully convolutional (input ``(None, None, C)``; the
PReLU slopes are per channel, shared over height and width), so one set of weights upscales
images of any size.

Ranges, as in the paper (§3.2): the low-resolution input is in [0, 1]; the output is tanh,
in [-1, 1], the range of the high-resolution targets. The trainer
(:class:`zoo.trainers.super_resolution.SuperResolution`) maps it back to [0, 1].

``global_skip`` ("nearest" or "bicubic"; default "none", the paper's network) departs from
Ledig et al.: the generator adds an interpolation of its input (mapped to [-1, 1]) to a
linear, zero-initialised last convolution, so it learns only the residual over that
interpolation (Kim et al., 2016, VDSR's global residual learning) and starts out equal to
it. A CPU budget of a few thousand steps does not get the paper's network past bicubic
interpolation; this one starts there. Its output is not bounded: ``upscale`` clips.
``batch_norm=False`` drops the residual blocks' batch norm (Lim et al., 2017, EDSR: batch
norm hurts super-resolution and costs compute; also not Ledig et al.'s network).

Discriminator: eight 3x3 convolutions of ``filters`` x 1, 1, 2, 2, 4, 4, 8, 8 channels with
strides 1, 2, 1, 2, ... (LeakyReLU 0.2, BN from the second), a dense layer of
``16 * filters`` units (1024 at 64, the paper's), LeakyReLU and one logit. ``pooling=
"flatten"`` is the paper's (a fixed high-resolution patch size); ``"average"`` pools the last
feature map globally first, so the discriminator takes any size and its dense layer stays
small (``filters * 8`` inputs instead of ``(patch / 16)^2 * filters * 8``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import layers

from zoo import networks
from zoo.precision import OUTPUT_DTYPE

__all__ = [
    "GLOBAL_SKIPS",
    "POOLINGS",
    "Interpolation",
    "PixelShuffle",
    "build_sr_discriminator",
    "build_srresnet",
    "check_scale",
    "generator_scale",
]

POOLINGS = ("flatten", "average")
GLOBAL_SKIPS = ("none", "nearest", "bicubic")


@keras.saving.register_keras_serializable(package="zoo")
class PixelShuffle(layers.Layer):
    """Sub-pixel rearrangement (Shi et al., 2016): ``[N, H, W, r^2 C] -> [N, rH, rW, C]``,
    ``tf.nn.depth_to_space`` (NHWC; one ``DepthToSpace`` op in SavedModel and ONNX)."""

    def __init__(self, block_size: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        if not (isinstance(block_size, int) and block_size >= 2):
            raise ValueError(f"block_size must be an integer >= 2; got {block_size!r}")
        self.block_size = block_size

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        n, h, w, c = input_shape
        r = self.block_size
        if c is not None and c % (r * r):
            raise ValueError(f"depth_to_space({r}) needs channels divisible by {r * r}; got {c}")
        return (
            n,
            None if h is None else h * r,
            None if w is None else w * r,
            None if c is None else c // (r * r),
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="zoo")
class Interpolation(layers.Layer):
    """``[N, H, W, C] -> [N, s H, s W, C]`` by ``tf.image.resize`` (``method`` "nearest" or
    "bicubic", Keys a = -0.5, no antialiasing); any H and W (one ``Resize`` op in ONNX)."""

    def __init__(self, scale: int = 4, method: str = "bicubic", **kwargs: Any):
        super().__init__(**kwargs)
        if method not in GLOBAL_SKIPS[1:]:
            raise ValueError(f"unknown interpolation {method!r}; choose nearest or bicubic")
        self.scale, self.method = int(scale), method

    def call(self, images: tf.Tensor) -> tf.Tensor:
        size = tf.shape(images)[1:3] * self.scale
        return tf.cast(tf.image.resize(images, size, method=self.method), images.dtype)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        n, h, w, c = input_shape
        s = self.scale
        return (n, None if h is None else h * s, None if w is None else w * s, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "method": self.method}


def check_scale(scale: int) -> int:
    """``scale`` if it is a power of 2 >= 2 (one x2 sub-pixel block each), else ValueError."""
    if not (isinstance(scale, int) and scale >= 2 and scale & (scale - 1) == 0):
        raise ValueError(
            f"scale must be a power of 2 (2, 4, 8, ...): the generator upsamples with x2 "
            f"sub-pixel blocks; got {scale!r}"
        )
    return scale


def generator_scale(generator: keras.Model) -> int:
    """The upscaling factor of a generator: the product of its sub-pixel block sizes."""
    return math.prod(
        layer.block_size for layer in generator.layers if isinstance(layer, PixelShuffle)
    )


def _prelu(name: str | None = None) -> layers.PReLU:
    """PReLU with one slope per channel (shared over H and W: works at any size)."""
    return layers.PReLU(shared_axes=[1, 2], name=name)


def build_srresnet(
    channels: int = 3,
    *,
    scale: int = 4,
    filters: int = 64,
    n_blocks: int = 16,
    global_skip: str = "none",
    batch_norm: bool = True,
    seed: int | None = None,
    name: str = "srresnet",
) -> keras.Model:
    """SRResNet: low-resolution images [N, H, W, C] in [0, 1] -> [N, sH, sW, C] in [-1, 1]
    (unbounded around the interpolation with a ``global_skip``)."""
    check_scale(scale)
    if global_skip not in GLOBAL_SKIPS:
        raise ValueError(
            f"unknown global_skip {global_skip!r}; choose one of {', '.join(GLOBAL_SKIPS)}"
        )
    if filters < 1 or n_blocks < 0 or channels < 1:
        raise ValueError(
            f"channels and filters must be >= 1 and n_blocks >= 0; got channels={channels}, "
            f"filters={filters}, n_blocks={n_blocks}"
        )
    init = networks.Initializers(seed)

    def conv(width: int, kernel: int, **kw: Any) -> layers.Conv2D:
        return layers.Conv2D(width, kernel, padding="same", kernel_initializer=init(), **kw)

    def norm(x: keras.KerasTensor) -> keras.KerasTensor:
        """Batch norm (synchronized over replicas); the convolutions before it have no
        bias (it would cancel, and its ~0 gradient makes Adam's steps noise)."""
        return networks.sync_batch_norm()(x) if batch_norm else x

    inputs = keras.Input((None, None, channels), name="images")
    head = _prelu("head_prelu")(conv(filters, 9, name="head_conv")(inputs))
    x = head
    for b in range(n_blocks):
        y = _prelu()(norm(conv(filters, 3, use_bias=not batch_norm)(x)))
        y = norm(conv(filters, 3, use_bias=not batch_norm)(y))
        x = layers.Add(name=f"block{b}_skip")([x, y])
    x = norm(conv(filters, 3, use_bias=not batch_norm)(x))
    x = layers.Add(name="long_skip")([head, x])
    for u in range(int(math.log2(scale))):
        x = conv(4 * filters, 3, name=f"upsample{u}_conv")(x)
        x = _prelu(f"upsample{u}_prelu")(PixelShuffle(2, name=f"upsample{u}_shuffle")(x))
    if global_skip == "none":
        outputs = conv(channels, 9, activation="tanh", name="pixels", dtype=OUTPUT_DTYPE)(x)
        return keras.Model(inputs, outputs, name=name)
    residual = layers.Conv2D(
        channels, 9, padding="same", kernel_initializer="zeros", name="residual",
        dtype=OUTPUT_DTYPE,
    )(x)  # fmt: skip
    base = Interpolation(scale, global_skip, name="interpolation", dtype=OUTPUT_DTYPE)(inputs)
    base = layers.Rescaling(2.0, -1.0, name="to_signed", dtype=OUTPUT_DTYPE)(base)
    outputs = layers.Add(name="pixels", dtype=OUTPUT_DTYPE)([base, residual])
    return keras.Model(inputs, outputs, name=name)


def build_sr_discriminator(
    hr_shape: Sequence[int],
    *,
    filters: int = 64,
    pooling: str = "flatten",
    seed: int | None = None,
    name: str = "sr_discriminator",
) -> keras.Model:
    """Ledig et al.'s discriminator: high-resolution images [N, *hr_shape] in [-1, 1] -> one
    logit [N, 1] (float32). With ``pooling="average"`` the height and width are free."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    hr_shape = tuple(hr_shape)
    if len(hr_shape) != 3:
        raise ValueError(f"hr_shape must be (height, width, channels); got {hr_shape}")
    if pooling == "flatten":
        for side in hr_shape[:2]:
            if side is None or side % 16:
                raise ValueError(
                    f"the flatten discriminator halves the patch four times: height and width "
                    f"must be multiples of 16; got {hr_shape[:2]} (or use pooling='average')"
                )
    else:
        hr_shape = (None, None, hr_shape[-1])
    init = networks.Initializers(seed)
    inputs = keras.Input(hr_shape, name="images")
    x = inputs
    for i, multiple in enumerate((1, 1, 2, 2, 4, 4, 8, 8)):
        x = layers.Conv2D(
            filters * multiple, 3, strides=1 + i % 2, padding="same", use_bias=i == 0,
            kernel_initializer=init(),
        )(x)  # fmt: skip
        if i > 0:
            x = networks.sync_batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x) if pooling == "flatten" else layers.GlobalAveragePooling2D()(x)
    x = layers.LeakyReLU(0.2)(layers.Dense(16 * filters, kernel_initializer=init())(x))
    logit = layers.Dense(1, kernel_initializer=init(), name="logit", dtype=OUTPUT_DTYPE)(x)
    return keras.Model(inputs, logit, name=name)
