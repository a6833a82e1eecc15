"""Image-shape arithmetic of the convolutional networks (no Keras, so configs can be
checked before TensorFlow loads): every conv network halves the image once per entry
of ``filters`` (28x28 -> 14 -> 7, 64x64 -> 32 -> 16 -> 8 -> 4)."""

from __future__ import annotations

from collections.abc import Sequence

ImageShape = tuple[int, int, int]


def check_image_shape(
    image_shape: Sequence[int], error: type[ValueError] = ValueError
) -> ImageShape:
    """Validate an (height, width, channels) triple of positive sizes; the one image-shape
    check (``zoo.data`` raises it as its ``DataError``)."""
    try:
        shape = tuple(int(d) for d in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise error(
            f"image_shape must be (height, width, channels) with positive sizes, e.g. "
            f"(28, 28, 1) or (64, 64, 3); got {image_shape!r}"
        )
    return shape  # type: ignore[return-value]


def default_stages(image_shape: Sequence[int], max_stages: int = 4, min_size: int = 4) -> int:
    """How many times the image can be halved while staying at least ``min_size`` wide."""
    height, width, _ = check_image_shape(image_shape)
    stages = 0
    while (
        stages < max_stages
        and height % 2 ** (stages + 1) == 0
        and width % 2 ** (stages + 1) == 0
        and min(height, width) // 2 ** (stages + 1) >= min_size
    ):
        stages += 1
    return stages


def default_filters(image_shape: Sequence[int], base: int) -> tuple[int, ...]:
    """Doubling widths, one per halving: 28x28 -> (base, 2 base); 64x64 -> (base, ..., 8 base)."""
    return tuple(base * 2**i for i in range(max(default_stages(image_shape), 1)))


def bottom_shape(image_shape: Sequence[int], stages: int) -> tuple[int, int]:
    """Spatial size after ``stages`` halvings; a clear error if the size does not divide."""
    height, width, _ = check_image_shape(image_shape)
    factor = 2**stages
    if height % factor or width % factor:
        raise ValueError(
            f"image size {height}x{width} cannot be halved {stages} times (one per entry of "
            f"filters); use sizes divisible by {factor} such as 28 or 64, resize the images, "
            f"or pass fewer filters (e.g. filters with {default_stages(image_shape)} entries)"
        )
    return height // factor, width // factor
