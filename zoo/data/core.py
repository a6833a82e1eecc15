"""Shared pieces of the input pipelines: the error type and image conversions."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from zoo import shapes

ImageShape = shapes.ImageShape


class DataError(ValueError):
    """Bad input to a ``zoo.data`` function; the message names the problem and the fix."""


class DataWarning(UserWarning):
    """Input a ``zoo.data`` function could partly use (e.g. undecodable files it skipped)."""


def fmt_shape(shape: Sequence[int | None]) -> str:
    """Format a shape as ``HxWxC`` (``?`` for unknown sizes)."""
    return "x".join("?" if d is None else str(d) for d in shape)


def check_image_shape(image_shape: Sequence[int]) -> ImageShape:
    """Validate an ``(H, W, C)`` shape (:func:`zoo.shapes.check_image_shape`), raising
    :class:`DataError`."""
    return shapes.check_image_shape(image_shape, DataError)


def to_float_images(x: tf.Tensor | object) -> tf.Tensor:
    """Convert images of any dtype to float32 in [0, 1].

    Unsigned/signed integers are divided by their dtype's maximum (uint8: 255),
    bools map to {0, 1} and floats are assumed to be in [0, 1] already (clipped).
    """
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.bool:
        return tf.cast(x, tf.float32)
    if x.dtype.is_integer:
        x = tf.cast(x, tf.float32) / float(x.dtype.max)
    else:
        x = tf.cast(x, tf.float32)
    return tf.clip_by_value(x, 0.0, 1.0)


def convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Convert a float image's (statically known) channel count to ``channels``.

    Alpha is dropped (2->1, 4->3), grayscale is tiled to RGB, RGB is converted to
    luma, and an opaque alpha channel is added when 4 channels are asked for.
    """
    have = image.shape[-1]
    if have is None:
        raise DataError("the images' channel count is unknown; pass an explicit image_shape")
    if have == channels:
        return image
    if have in (2, 4):  # drop alpha
        image, have = image[..., : have - 1], have - 1
    if have == channels:
        return image
    if have == 1 and channels in (3, 4):
        image, have = tf.repeat(image, 3, axis=-1), 3
    elif have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    if have == 3 and channels == 4:
        return tf.concat([image, tf.ones_like(image[..., :1])], axis=-1)
    if have == channels:
        return image
    raise DataError(
        f"cannot convert {have}-channel images to {channels} channels; "
        "use image_shape with 1 (grayscale) or 3 (RGB) channels"
    )


def fit_image(image: tf.Tensor, image_shape: ImageShape) -> tf.Tensor:
    """Convert any image tensor to float32 in [0,1] with exactly ``image_shape``."""
    height, width, channels = image_shape
    image = convert_channels(to_float_images(image), channels)
    if image.shape[0] != height or image.shape[1] != width:
        image = tf.image.resize(image, (height, width), antialias=True)
        image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, image_shape)
