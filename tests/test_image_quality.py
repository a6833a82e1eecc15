"""zoo.metrics.image_quality: PSNR/SSIM/L1 against closed forms and Wang et al.'s formula,
BT.601 luma, the border crop and the bicubic resizing of the SR data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.metrics import image_quality as iq


def rng_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def reference_ssim(a: np.ndarray, b: np.ndarray, max_value: float = 1.0) -> np.ndarray:
    """Wang et al. (2004) eq. 13 with their 11x11 Gaussian window (sigma 1.5) over the
    valid positions, written out in numpy: SSIM per image, mean over positions and channels."""
    size, sigma = 11, 1.5
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2

    def local_mean(x):  # x: [N, H, W, C] -> [N, H-10, W-10, C]
        views = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
        return np.einsum("nhwcij,ij->nhwc", views, window)

    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.mean(axis=(1, 2, 3))


# --------------------------------------------------------------------------- PSNR / L1


@pytest.mark.parametrize("d", [0.01, 0.1, 0.25])
def test_psnr_of_a_constant_offset_is_the_closed_form(d):
    target = np.full((3, 16, 16, 3), 0.5)
    output = target + d
    expected = 10 * math.log10(1 / d**2)
    np.testing.assert_allclose(iq.psnr(output, target), expected, rtol=1e-10)
    np.testing.assert_allclose(iq.l1(output, target), d, rtol=1e-10)
    # max_value scales the peak: 255 on 0-255 images gives the same PSNR
    np.testing.assert_allclose(
        iq.psnr(output * 255, target * 255, max_value=255.0), expected, rtol=1e-10
    )


def test_psnr_and_l1_are_per_image():
    target = np.zeros((2, 8, 8, 1))
    output = target.copy()
    output[0] += 0.1
    output[1, :4] += 0.2  # half the pixels off by 0.2: MSE 0.02, L1 0.1
    np.testing.assert_allclose(iq.psnr(output, target), [20.0, 10 * math.log10(50)])
    np.testing.assert_allclose(iq.l1(output, target), [0.1, 0.1])


def test_identical_images_have_infinite_psnr_ssim_one_and_zero_l1():
    x = rng_images((2, 24, 24, 3))
    assert np.all(np.isinf(iq.psnr(x, x))) and np.all(iq.psnr(x, x) > 0)
    np.testing.assert_allclose(iq.ssim(x, x), 1.0, atol=1e-9)
    np.testing.assert_array_equal(iq.l1(x, x), 0.0)
    report = iq.paired_report(x, x)
    assert report["psnr"] == math.inf and report["l1"] == 0 and report["n"] == 2


# --------------------------------------------------------------------------- Y, shave


@pytest.mark.parametrize(
    "rgb, y255",
    [
        ((1, 0, 0), 16 + 65.481),
        ((0, 1, 0), 16 + 128.553),
        ((0, 0, 1), 16 + 24.966),
        ((1, 1, 1), 235.0),
        ((0, 0, 0), 16.0),
    ],
)
def test_luma_of_pure_colours_is_the_bt601_formula(rgb, y255):
    image = np.broadcast_to(np.asarray(rgb, np.float64), (1, 4, 5, 3))
    y = iq.rgb_to_y(image)
    assert y.shape == (1, 4, 5, 1)
    np.testing.assert_allclose(y, y255 / 255, rtol=1e-12)


def test_a_grayscale_image_is_its_own_luma():
    x = rng_images((2, 6, 6, 1))
    np.testing.assert_array_equal(iq.rgb_to_y(x), x.astype(np.float64))


def test_psnr_on_y_compares_luma_only():
    target = rng_images((2, 20, 20, 3))
    # a change of chroma with the same luma: (dR, dG, dB) orthogonal to the Y weights
    c = np.asarray(iq.Y_COEFFICIENTS)
    direction = np.cross(c, [1.0, 1.0, 1.0])
    output = target + 1e-3 * direction / np.abs(direction).max()
    assert np.all(iq.psnr(output, target, y_channel=True) > 200)  # same Y up to round-off
    assert np.all(iq.psnr(output, target) < 80)


def test_shave_removes_exactly_the_border():
    x = np.arange(2 * 10 * 12 * 1, dtype=np.float64).reshape(2, 10, 12, 1) / 240
    out = iq.shave(x, 3)
    assert out.shape == (2, 4, 6, 1)
    np.testing.assert_array_equal(out, x[:, 3:7, 3:9])
    np.testing.assert_array_equal(iq.shave(x, 0), x)
    # pixels in the border do not count
    y = x.copy()
    y[:, :3] = 1.0
    assert np.all(np.isinf(iq.psnr(y, x, border=3)))
    with pytest.raises(ValueError, match="leaves nothing"):
        iq.shave(x, 5)


# --------------------------------------------------------------------------- SSIM


def test_ssim_matches_wang_et_al_formula():
    a = rng_images((3, 24, 20, 3), seed=1)
    b = np.clip(a + 0.2 * rng_images((3, 24, 20, 3), seed=2) - 0.1, 0, 1)
    np.testing.assert_allclose(iq.ssim(a, b), reference_ssim(a, b), atol=1e-6)
    ya, yb = iq.rgb_to_y(a), iq.rgb_to_y(b)
    np.testing.assert_allclose(
        iq.ssim(a, b, y_channel=True, border=4),
        reference_ssim(ya[:, 4:-4, 4:-4], yb[:, 4:-4, 4:-4]),
        atol=1e-6,
    )


def test_ssim_is_symmetric_below_one_for_noise_and_falls_as_noise_grows():
    a = rng_images((4, 28, 28, 1), seed=3)
    noise = np.random.default_rng(4).normal(0, 1, a.shape)
    scores = []
    for sigma in (0.02, 0.1, 0.3):
        b = np.clip(a + sigma * noise, 0, 1)
        ab, ba = iq.ssim(a, b), iq.ssim(b, a)
        np.testing.assert_allclose(ab, ba, atol=1e-12)
        assert np.all(ab < 1) and np.all(ab > 0)
        scores.append(ab)
    assert np.all(scores[0] > scores[1]) and np.all(scores[1] > scores[2])
    assert np.all(scores[2] < 0.8)


def test_ssim_refuses_images_smaller_than_its_window():
    x = rng_images((1, 16, 16, 1))
    with pytest.raises(ValueError, match="at least 11x11"):
        iq.ssim(x, x, border=3)


# --------------------------------------------------------------------------- resizing


def test_downscale_then_bicubic_upscale_of_a_constant_is_the_constant():
    hr = np.full((2, 32, 24, 3), 0.37, np.float32)
    lr = iq.downscale(hr, 4)
    assert lr.shape == (2, 8, 6, 3)
    np.testing.assert_allclose(lr, 0.37, atol=1e-6)
    up = iq.bicubic_upscale(lr, 4)
    assert up.shape == hr.shape
    np.testing.assert_allclose(up, 0.37, atol=1e-6)
    near = iq.nearest_upscale(lr, 4)
    np.testing.assert_allclose(near, 0.37, atol=1e-6)


def test_resizing_stays_in_range_and_checks_the_scale():
    hr = (rng_images((1, 16, 16, 1)) > 0.5).astype(np.float32)  # overshoot-prone edges
    up = iq.bicubic_upscale(iq.downscale(hr, 2), 2)
    assert up.min() >= 0 and up.max() <= 1
    near = iq.nearest_upscale(hr[:, :2, :2], 3)
    np.testing.assert_array_equal(near[0, :3, :3, 0], hr[0, 0, 0, 0])
    with pytest.raises(ValueError, match="do not divide by scale 3"):
        iq.downscale(hr, 3)
    with pytest.raises(ValueError, match="positive integer"):
        iq.bicubic_upscale(hr, 0)


def test_bicubic_upscale_of_a_smooth_image_beats_nearest():
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    hr = (0.5 + 0.4 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy))[None, ..., None]
    lr = iq.downscale(hr, 4)
    bicubic = iq.psnr(iq.bicubic_upscale(lr, 4), hr, border=4)
    nearest = iq.psnr(iq.nearest_upscale(lr, 4), hr, border=4)
    assert bicubic[0] > nearest[0] + 3


def test_paired_report_holds_the_means_and_errors_name_the_problem():
    a, b = rng_images((3, 16, 16, 3), 5), rng_images((3, 16, 16, 3), 6)
    report = iq.paired_report(a, b, y_channel=True, border=2)
    assert report["n"] == 3
    assert report["l1"] == pytest.approx(iq.l1(a, b).mean())
    assert report["psnr"] == pytest.approx(iq.psnr(a, b, y_channel=True, border=2).mean())
    assert report["ssim"] == pytest.approx(iq.ssim(a, b, y_channel=True, border=2).mean())
    with pytest.raises(ValueError, match="same shape"):
        iq.l1(a, b[:, :8])
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        iq.psnr(a[..., 0], b[..., 0])
