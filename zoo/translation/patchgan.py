"""The PatchGAN discriminator of Pix2Pix (Isola et al., 2017, §3.2.2 and appendix 6.1.2),
also CycleGAN's (Zhu et al., 2017).

It classifies every N x N patch of an image as real or fake: C64-C128-C256-C512 (``Ck`` =
4x4 convolution with k filters, normalisation, LeakyReLU 0.2; no normalisation on the first),
stride 2 except the last ``Ck`` and the final 1-channel convolution, which have stride 1.
With three stride-2 layers (``n_layers=3``) each output logit sees a 70 x 70 patch of the
input (:func:`receptive_field`). With "same" padding a 256 x 256 input gives a 32 x 32 map of
logits (the reference code pads by 1 without "same" and gets 30 x 30; the receptive field
is the same). Fewer
layers give smaller patches (``n_layers`` 1: 16 x 16, 2: 34 x 34) for small images.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from zoo import networks
from zoo.precision import OUTPUT_DTYPE

__all__ = ["NORMALIZATIONS", "patch_discriminator", "receptive_field"]

NORMALIZATIONS = ("batch", "instance", "none")
KERNEL = 4


def normalization_layer(kind: str) -> layers.Layer | None:
    """Batch norm (synchronized over replicas), instance norm or nothing. Instance norm is
    ``GroupNormalization(groups=-1)``: one group per channel, statistics per image
    (Ulyanov et al., 2016; TensorFlow Addons' InstanceNormalization is unmaintained)."""
    if kind == "batch":
        return networks.sync_batch_norm()
    if kind == "instance":
        return layers.GroupNormalization(groups=-1, epsilon=1e-5)
    if kind == "none":
        return None
    raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(NORMALIZATIONS)}")


def patch_discriminator(
    input_shape: Sequence[int],
    *,
    filters: int = 64,
    n_layers: int = 3,
    normalization: str = "batch",
    condition_shape: Sequence[int] | None = None,
    seed: int | None = None,
    name: str = "patch_discriminator",
) -> keras.Model:
    """A PatchGAN on images ``input_shape`` -> one logit per patch ``[N, h, w, 1]`` (float32).

    ``n_layers`` stride-2 ``Ck`` layers (filters doubling from ``filters``, capped at 8x),
    then one stride-1 ``Ck`` and a stride-1 1-channel convolution. With ``condition_shape``
    the model takes ``[condition, image]`` and judges the pair, concatenated on channels
    (Pix2Pix's conditional discriminator sees (source, target))."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1; got {n_layers}")
    normalization_layer(normalization)  # check the name before building
    init = networks.Initializers(seed, kind="normal")  # N(0, 0.02), as the papers
    image = keras.Input(tuple(input_shape), name="images")
    inputs: list[keras.KerasTensor] = [image]
    x = image
    if condition_shape is not None:
        condition = keras.Input(tuple(condition_shape), name="condition")
        if tuple(condition_shape)[:2] != tuple(input_shape)[:2]:
            raise ValueError(
                f"the condition {tuple(condition_shape)} and the image {tuple(input_shape)} "
                "must have the same height and width"
            )
        inputs = [condition, image]
        x = layers.Concatenate()([condition, image])
    strides = [2] * n_layers + [1]
    for i, stride in enumerate(strides):
        width = filters * min(2**i, 8)
        x = layers.Conv2D(
            width, KERNEL, strides=stride, padding="same", use_bias=(i == 0),
            kernel_initializer=init(),
        )(x)  # fmt: skip
        norm = normalization_layer(normalization) if i > 0 else None
        if norm is not None:
            x = norm(x)
        x = layers.LeakyReLU(0.2)(x)
    logits = layers.Conv2D(
        1, KERNEL, padding="same", kernel_initializer=init(), dtype=OUTPUT_DTYPE, name="logits"
    )(x)
    # one input is passed bare (a list of one makes Keras warn on plain-tensor calls)
    return keras.Model(inputs if len(inputs) > 1 else image, logits, name=name)


def receptive_field(model: keras.Model) -> int:
    """The side of the input patch one output value depends on, from the model's stack of
    convolutions (square kernels): r = 1 + sum_i (k_i - 1) * prod_{j<i} s_j."""
    field, jump = 1, 1
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D, layers.AveragePooling2D)):
            kernel = layer.kernel_size if hasattr(layer, "kernel_size") else layer.pool_size
            stride = layer.strides
            field += (int(kernel[0]) - 1) * jump
            jump *= int(stride[0])
    return field
