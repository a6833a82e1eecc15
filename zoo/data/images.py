"""Image grids and atomic PNG writing (numpy + Pillow only)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from PIL import Image

from zoo.data.core import DataError
from zoo.fileio import atomic_path

PAD = 1  # pixels between tiles
PAD_VALUE = 255  # white separators (visible on MNIST's black background)


def as_image_batch(images: Any, what: str = "images") -> np.ndarray:
    """``images`` as a numpy (N, H, W, C) batch: (N, H, W) gains a channel axis; anything
    else than a non-empty 3-D or 4-D array is a :class:`DataError` naming ``what``."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[0] == 0:
        raise DataError(
            f"{what} must be a non-empty (N,H,W) or (N,H,W,C) batch; got shape "
            f"{array.shape}: stack the images into one array"
        )
    return array


def image_grid(images: Any, ncols: int | None = None) -> np.ndarray:
    """Tile ``(N,H,W,C)`` images (floats in [0,1], or uint8) into one uint8 image.

    Tiles are separated by 1 white pixel, so the result has shape
    ``(rows*(H+1)-1, cols*(W+1)-1, C)``; ``ncols`` defaults to ceil(sqrt(N)) and
    unused cells are white. (N,H,W) input is treated as grayscale.
    """
    arr = as_image_batch(images, "image_grid's images")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise DataError("image_grid got NaN/inf pixels; check the model output")
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    n, height, width, channels = arr.shape
    cols = math.ceil(math.sqrt(n)) if ncols is None else int(ncols)
    if cols <= 0:
        raise DataError(f"ncols must be positive, got {ncols!r}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    grid = np.full(
        (rows * (height + PAD) - PAD, cols * (width + PAD) - PAD, channels),
        PAD_VALUE,
        dtype=np.uint8,
    )
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = r * (height + PAD), c * (width + PAD)
        grid[top : top + height, left : left + width] = arr[i]
    return grid


def save_png(array: Any, path: str | os.PathLike[str]) -> str:
    """Write a uint8 HxWxC (C=1 or 3; HxW also accepted) array as a PNG, atomically.

    The image is written atomically (``zoo.fileio.atomic_path``); parent folders are
    created. Returns ``str(path)``.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise DataError(
            f"save_png needs uint8 pixels, got {arr.dtype}; convert floats in [0,1] with "
            "image_grid() or (x * 255).round().astype(np.uint8)"
        )
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise DataError(
            f"save_png needs an HxW, HxWx1 or HxWx3 array, got shape {np.asarray(array).shape}"
        )
    image = Image.fromarray(np.ascontiguousarray(arr))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return str(path)
