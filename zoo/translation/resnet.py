"""CycleGAN's ResNet generator (Zhu et al., 2017, appendix 7.2), after Johnson et al.'s
(2016) style-transfer network: ``c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-C``.

- ``c7s1-k``: reflection padding 3, 7x7 convolution with k filters, stride 1, instance
  norm, ReLU (the last one: C filters and tanh, no norm);
- ``dk``: 3x3 convolution, stride 2, instance norm, ReLU (``n_downsampling`` of them, the
  width doubling each time);
- ``Rk``: a residual block of two (reflection pad 1, 3x3 convolution, instance norm) with a
  ReLU between them, added to its input;
- ``uk``: 3x3 transposed convolution, stride 2, instance norm, ReLU.

Instance normalisation is ``keras.layers.GroupNormalization(groups=-1)``: one group per
channel, so every channel of every image is normalised by its own mean and variance
(Ulyanov et al., 2016). TensorFlow Addons, which had ``InstanceNormalization``, is no longer
maintained, and Keras 3 has no instance-norm layer of its own.

Reflection padding mirrors the image about its border row without repeating it (``[a, b,
c]`` padded by 1 is ``[b, a, b, c, b]``): the 7x7 and 3x3 convolutions then see no zero
frame, which reduces border artefacts (Johnson et al.). It is ``tf.pad(mode="REFLECT")``,
an op SavedModel and ONNX (``Pad`` with ``mode="reflect"``) both carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers, ops

from zoo import networks
from zoo.precision import OUTPUT_DTYPE

__all__ = ["ReflectionPadding2D", "build_resnet_generator", "instance_norm"]


@keras.saving.register_keras_serializable(package="zoo")
class ReflectionPadding2D(layers.Layer):
    """Pads the height and width of ``[N, H, W, C]`` by reflection (the border pixel is the
    mirror, not repeated). ``padding``: an int (all four sides) or ``(rows, columns)``;
    each must be smaller than the padded side (a reflection needs that many pixels)."""

    def __init__(self, padding: int | Sequence[int] = 1, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(padding, int):
            padding = (padding, padding)
        rows, columns = (int(p) for p in padding)
        if rows < 0 or columns < 0:
            raise ValueError(f"padding must be >= 0; got {padding}")
        self.padding = (rows, columns)

    def call(self, inputs: Any) -> Any:
        rows, columns = self.padding
        return ops.pad(inputs, [[0, 0], [rows, rows], [columns, columns], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        n, h, w, c = input_shape
        rows, columns = self.padding
        return (
            n,
            None if h is None else h + 2 * rows,
            None if w is None else w + 2 * columns,
            c,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": list(self.padding)}


def instance_norm() -> layers.GroupNormalization:
    """Instance normalisation: ``GroupNormalization(groups=-1)`` (one group per channel;
    epsilon 1e-5 as PyTorch's ``InstanceNorm2d``, which the reference code uses)."""
    return layers.GroupNormalization(groups=-1, epsilon=1e-5)


def build_resnet_generator(
    image_shape: Sequence[int],
    *,
    filters: int = 64,
    n_blocks: int = 9,
    n_downsampling: int = 2,
    output_channels: int | None = None,
    seed: int | None = None,
    name: str = "resnet_generator",
) -> keras.Model:
    """The ResNet generator on ``image_shape`` [H, W, C] images in [-1, 1] -> [-1, 1] (tanh,
    float32) with ``output_channels`` (default C) channels.

    H and W must be divisible by ``2 ** n_downsampling`` (the transposed convolutions double
    the size back). Weights start from N(0, 0.02) (the reference code's init), seeded."""
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (height, width, channels); got {image_shape}")
    for key, value, low in (("filters", filters, 1), ("n_blocks", n_blocks, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}; got {value!r}")
    if not isinstance(n_downsampling, int) or n_downsampling < 0:
        raise ValueError(f"n_downsampling must be an integer >= 0; got {n_downsampling!r}")
    factor = 2**n_downsampling
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(
            f"the ResNet generator halves the image {n_downsampling} time(s), so height and "
            f"width must be multiples of {factor}; got {shape[0]}x{shape[1]}. Resize or crop "
            f"the images, or set n_downsampling lower"
        )
    init = networks.Initializers(seed, kind="normal")

    def conv(x: Any, width: int, kernel: int, stride: int = 1, pad: int = 0) -> Any:
        if pad:
            x = ReflectionPadding2D(pad)(x)
        padding = "valid" if pad or kernel == 1 else "same"
        # no bias: the instance norm's offset follows
        return layers.Conv2D(
            width, kernel, strides=stride, padding=padding, use_bias=False,
            kernel_initializer=init(),
        )(x)  # fmt: skip

    images = keras.Input(shape, name="images")
    x = conv(images, filters, 7, pad=3)
    x = layers.ReLU()(instance_norm()(x))
    for i in range(n_downsampling):
        x = conv(x, filters * 2 ** (i + 1), 3, stride=2)
        x = layers.ReLU()(instance_norm()(x))
    width = filters * factor
    for _ in range(n_blocks):
        y = conv(x, width, 3, pad=1)
        y = layers.ReLU()(instance_norm()(y))
        y = instance_norm()(conv(y, width, 3, pad=1))
        x = layers.Add()([x, y])
    for i in reversed(range(n_downsampling)):
        x = layers.Conv2DTranspose(
            filters * 2**i, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=init(),
        )(x)  # fmt: skip
        x = layers.ReLU()(instance_norm()(x))
    x = ReflectionPadding2D(3)(x)
    outputs = layers.Conv2D(
        output_channels or shape[-1],
        7,
        activation="tanh",
        kernel_initializer=init(),
        dtype=OUTPUT_DTYPE,
        name="pixels",
    )(x)
    return keras.Model(images, outputs, name=name)
