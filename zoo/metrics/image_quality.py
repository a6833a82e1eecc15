"""Full-reference image quality for image-to-image models: L1, PSNR and SSIM per image,
the luma channel and border crop of the super-resolution papers, and the bicubic
resizing that makes (and naively inverts) low-resolution inputs.

Conventions (all images float ``[N, H, W, C]`` in [0, 1], C = 1 or 3):

- **Y channel** (:func:`rgb_to_y`): ITU-R BT.601 luma as the SR papers compute it (MATLAB's
  ``rgb2ycbcr``, used by Dong et al. 2014 and Ledig et al. 2017):
  ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` on [0, 1] RGB, so Y lies in
  [16, 235] / 255. A 1-channel image is its own Y (no rescaling). The papers also round
  to 8 bits first; nothing is rounded here.
- **PSNR** ``10 log10(max_value^2 / MSE)`` per image, on Y in [0, 1] with
  ``max_value = 1`` (the papers' Y on 0-255 with peak 255 gives the same number).
  Identical images have MSE 0 and PSNR ``inf`` (as :func:`skimage.metrics.peak_signal_noise_ratio`);
  a mean over a set with one such image is ``inf``.
- **SSIM** (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
  statistics over the valid window positions (no padding), the map averaged over
  positions and channels: ``tf.image.ssim``, which tests/test_image_quality.py checks
  against a direct implementation of the paper's formula. Wang et al.'s MATLAB code also
  downsamples images larger than 256 pixels; this does not.
- **Border crop** (:func:`shave`): ``border`` pixels off every side before PSNR/SSIM;
  SR papers crop ``scale`` pixels (the borders of an upscaled image lack context).

Importing this module loads neither TensorFlow nor Keras; the functions that resize or
compute SSIM import TensorFlow when called.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "SSIM_FILTER_SIGMA",
    "SSIM_FILTER_SIZE",
    "SSIM_K1",
    "SSIM_K2",
    "Y_COEFFICIENTS",
    "Y_OFFSET",
    "bicubic_upscale",
    "downscale",
    "l1",
    "nearest_upscale",
    "paired_report",
    "psnr",
    "rgb_to_y",
    "shave",
    "ssim",
]

#: BT.601 luma on [0, 1] RGB, scaled to 8-bit studio range: Y_255 = 16 + c . (R, G, B).
Y_OFFSET = 16.0
Y_COEFFICIENTS = (65.481, 128.553, 24.966)
#: Wang et al. (2004)'s SSIM settings.
SSIM_FILTER_SIZE, SSIM_FILTER_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _images(x: Any, what: str) -> np.ndarray:
    """``x`` as a float64 ``[N, H, W, C]`` array with C in (1, 3) and finite values."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(
            f"{what} must be images [N, H, W, C] with C = 1 or 3; got shape {array.shape} "
            "(add a channel axis with images[..., None] for grayscale [N, H, W])"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or inf")
    return array


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _images(a, "outputs"), _images(b, "targets")
    if x.shape != y.shape:
        raise ValueError(
            f"outputs and targets must have the same shape; got {x.shape} and {y.shape} "
            "(upscale the outputs, or crop both to the same size)"
        )
    return x, y


def rgb_to_y(images: Any) -> np.ndarray:
    """Luma ``[N, H, W, 1]`` in [16/255, 235/255] of RGB images in [0, 1] (ITU-R BT.601,
    as SR papers compute it; see the module docstring). 1-channel images are returned as
    they are."""
    x = _images(images, "images")
    if x.shape[-1] == 1:
        return x
    y = Y_OFFSET + x @ np.asarray(Y_COEFFICIENTS, dtype=np.float64)
    return (y / 255.0)[..., None]


def shave(images: Any, border: int) -> np.ndarray:
    """``images`` without ``border`` pixels on each of the four sides."""
    x = _images(images, "images")
    border = int(border)
    if border < 0:
        raise ValueError(f"border must be >= 0; got {border}")
    if border == 0:
        return x
    h, w = x.shape[1:3]
    if 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves nothing of {h}x{w} images")
    return x[:, border : h - border, border : w - border, :]


def _prepared(a: Any, b: Any, y_channel: bool, border: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(a, b)
    if y_channel:
        x, y = rgb_to_y(x), rgb_to_y(y)
    return shave(x, border), shave(y, border)


def l1(a: Any, b: Any) -> np.ndarray:
    """Mean absolute difference per image, ``(N,)`` (on [0, 1] images, all channels)."""
    x, y = _pair(a, b)
    return np.abs(x - y).mean(axis=(1, 2, 3))


def psnr(
    a: Any, b: Any, *, y_channel: bool = False, border: int = 0, max_value: float = 1.0
) -> np.ndarray:
    """PSNR in dB per image, ``(N,)``: ``10 log10(max_value^2 / MSE)`` over the pixels
    (on Y with ``y_channel``, after a ``border`` crop). Identical images give ``inf``."""
    x, y = _prepared(a, b, y_channel, border)
    mse = np.square(x - y).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(max_value) ** 2 / mse)


def ssim(
    a: Any, b: Any, *, y_channel: bool = False, border: int = 0, max_value: float = 1.0
) -> np.ndarray:
    """SSIM per image, ``(N,)`` (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
    K1 0.01, K2 0.03, valid positions; the mean over positions and channels), on Y with
    ``y_channel``, after a ``border`` crop."""
    import tensorflow as tf

    x, y = _prepared(a, b, y_channel, border)
    if min(x.shape[1:3]) < SSIM_FILTER_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_FILTER_SIZE}x{SSIM_FILTER_SIZE} after the "
            f"border crop; got {x.shape[1]}x{x.shape[2]}"
        )
    value = tf.image.ssim(
        tf.constant(x, tf.float64), tf.constant(y, tf.float64), max_val=float(max_value),
        filter_size=SSIM_FILTER_SIZE, filter_sigma=SSIM_FILTER_SIGMA, k1=SSIM_K1, k2=SSIM_K2,
    )  # fmt: skip
    return np.asarray(value, dtype=np.float64)


def _resize(images: Any, size: tuple[int, int], method: str, antialias: bool) -> np.ndarray:
    import tensorflow as tf

    x = tf.constant(_images(images, "images"), tf.float32)
    out = tf.image.resize(x, size, method=method, antialias=antialias)
    return np.asarray(tf.clip_by_value(out, 0.0, 1.0), dtype=np.float32)


def _scale(scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer; got {scale!r}")
    return int(scale)


def bicubic_upscale(lr: Any, scale: int) -> np.ndarray:
    """``lr`` ``[N, h, w, C]`` resized to ``[N, h*scale, w*scale, C]`` by bicubic
    interpolation (``tf.image.resize``, Keys a = -0.5), clipped to [0, 1]: the baseline
    every SR paper reports."""
    scale = _scale(scale)
    h, w = np.shape(lr)[1:3]
    return _resize(lr, (h * scale, w * scale), "bicubic", antialias=False)


def nearest_upscale(lr: Any, scale: int) -> np.ndarray:
    """``lr`` with each pixel repeated ``scale`` x ``scale`` times (nearest neighbour)."""
    x = _images(lr, "images")
    scale = _scale(scale)
    return np.repeat(np.repeat(x, scale, axis=1), scale, axis=2).astype(np.float32)


def downscale(hr: Any, scale: int) -> np.ndarray:
    """``hr`` ``[N, H, W, C]`` (H, W divisible by ``scale``) resized to
    ``[N, H/scale, W/scale, C]`` by bicubic interpolation with antialiasing (the kernel
    widened by ``scale``, like MATLAB's ``imresize``), clipped to [0, 1]: how the zoo makes
    low-resolution inputs (Ledig et al. 2017 downsample by bicubic, factor 4), the same op
    as the training pairs' (:func:`zoo.data.pairs.downscale`)."""
    from zoo.data.pairs import downscale as downscale_tensor

    scale = _scale(scale)
    h, w = np.shape(hr)[1:3]
    if h % scale or w % scale:
        raise ValueError(
            f"high-resolution images of {h}x{w} do not divide by scale {scale}; crop them to "
            f"{h - h % scale}x{w - w % scale} first"
        )
    images = _images(hr, "images").astype(np.float32)
    return np.asarray(downscale_tensor(images, (h // scale, w // scale)), dtype=np.float32)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def paired_report(
    outputs: Any, targets: Any, *, y_channel: bool = False, border: int = 0
) -> dict[str, float]:
    """Means over the images of :func:`l1` (all channels, no crop), :func:`psnr` and
    :func:`ssim` (on Y with ``y_channel``, after a ``border`` crop), plus ``n``."""
    x, y = _pair(outputs, targets)
    return {
        "l1": _mean(l1(x, y)),
        "psnr": _mean(psnr(x, y, y_channel=y_channel, border=border)),
        "ssim": _mean(ssim(x, y, y_channel=y_channel, border=border)),
        "n": len(x),
    }
