"""Latent-space tools: lerp/slerp properties, interpolation and traversal grids, prior
samples, the 2-D scatter (PCA) written atomically, and the per-epoch logger."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.latent import (
    LatentSpaceLogger,
    figure_array,
    interpolate,
    interpolation_grid,
    latent_scatter,
    lerp,
    log_grid,
    project_2d,
    sample_prior,
    save_grid,
    slerp,
    traverse,
)


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def angle(a, b):
    return np.arccos(np.clip(np.dot(unit(a), unit(b)), -1.0, 1.0))


def test_lerp_endpoints_and_equal_steps():
    a, b = np.array([1.0, -2.0, 0.5]), np.array([3.0, 0.0, -1.5])
    path = lerp(a, b, 5)
    assert path.shape == (5, 3)
    np.testing.assert_allclose(path[0], a)
    np.testing.assert_allclose(path[-1], b)
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((b - a) / 4, (4, 1)), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        lerp(a, b, 1)


def test_slerp_endpoints_norm_and_midpoint_angle():
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    path = slerp(a, b, 9)
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)  # on the sphere
    omega = angle(a, b)
    mid = path[4]
    assert angle(a, mid) == pytest.approx(omega / 2, abs=1e-5)
    assert angle(mid, b) == pytest.approx(omega / 2, abs=1e-5)
    # the angle advances uniformly
    steps = [angle(path[i], path[i + 1]) for i in range(8)]
    np.testing.assert_allclose(steps, omega / 8, atol=1e-5)
    # a linear path between the same unit vectors dips inside the sphere
    assert np.linalg.norm(lerp(a, b, 9)[4]) < 0.99


def test_slerp_falls_back_for_parallel_and_zero_vectors():
    a = np.array([1.0, 2.0])
    np.testing.assert_allclose(slerp(a, 2 * a, 3), lerp(a, 2 * a, 3), atol=1e-6)
    np.testing.assert_allclose(slerp(np.zeros(2), a, 3), lerp(np.zeros(2), a, 3))


def test_interpolation_and_traversal_shapes(digits):
    model = zoo.load("vae_tiny")
    images = interpolate(model, digits[0], digits[1], steps=6)
    assert images.shape == (6, 28, 28, 1)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # endpoints decode the posterior means of the two inputs
    means, _ = model.encode(digits[:2])
    np.testing.assert_allclose(images[[0, -1]], np.asarray(model.decode(means)), atol=1e-5)
    z = np.ones(model.latent_dim, np.float32)
    assert interpolate(model, z, -z, 4, method="linear").shape == (4, 28, 28, 1)
    grid = interpolation_grid(model, digits[:6], steps=5)
    assert grid.shape == (15, 28, 28, 1)
    trav = traverse(model, dims=[0, 2], values=[-2, 0, 2])
    assert trav.shape == (6, 28, 28, 1)
    # row for dim 0 at value 0 and row for dim 2 at value 0 are the same point (z = 0)
    np.testing.assert_allclose(trav[1], trav[4], atol=1e-6)
    full = traverse(model, digits[0])
    assert full.shape == (model.latent_dim * 7, 28, 28, 1)
    with pytest.raises(ValueError, match="out of range"):
        traverse(model, dims=[model.latent_dim])
    with pytest.raises(ValueError, match="latent point of shape"):
        interpolate(model, np.zeros(3), np.zeros(3))
    samples = sample_prior(model, 5, seed=1)
    np.testing.assert_array_equal(samples, sample_prior(model, 5, seed=1))
    assert samples.shape == (5, 28, 28, 1)


def test_conditional_interpolation_keeps_the_class(digits):
    model = zoo.load("cvae_tiny")
    images = interpolate(model, digits[0], digits[1], steps=4, label=3)
    assert images.shape == (4, 28, 28, 1)
    other = interpolate(model, digits[0], digits[1], steps=4, label=7)
    assert np.abs(images - other).max() > 1e-6


def test_project_2d_uses_pca_beyond_two_dimensions():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(200, 5)) * np.array([5.0, 0.1, 3.0, 0.1, 0.1])
    xy, text = project_2d(points)
    assert xy.shape == (200, 2) and "PCA" in text
    # the first component carries the most variance, and the two explain nearly all
    assert xy[:, 0].var() > xy[:, 1].var() > 0.5 * 9.0
    same, text2 = project_2d(points[:, :2])
    np.testing.assert_array_equal(same, points[:, :2])
    assert "PCA" not in text2


def test_scatter_png_and_grids_are_written(digits, tmp_path):
    labels = np.arange(len(digits)) % 10
    model = zoo.load("vae_tiny")
    fig = latent_scatter(model, digits, labels, path=tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure_array(fig).shape[-1] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was moved into place
    path = save_grid(traverse(model, values=[-1, 1]), tmp_path / "grid.png", ncols=2)
    assert path.is_file()
    log_grid(tmp_path / "tb", "latent/traversal", traverse(model, values=[0, 1]), step=1)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_logger_writes_pngs_and_tensorboard_each_epoch(digits, tmp_path):
    import tensorflow as tf

    model = zoo.load("cvae_tiny")
    model.compile()
    labels = np.arange(len(digits)) % 10
    ds = tf.data.Dataset.from_tensor_slices((digits, labels))
    logger = LatentSpaceLogger.from_dataset(tmp_path, ds, n=20, pairs=2, traverse_dims=2)
    assert logger.images.shape == (20, 28, 28, 1) and logger.labels.shape == (20,)
    state = np.asarray(model.seed_generator.state).copy()
    logger.set_model(model)
    logger.on_epoch_end(0)
    np.testing.assert_array_equal(model.seed_generator.state, state)  # RNG untouched
    names = sorted(p.name for p in (tmp_path / "latent").glob("*.png"))
    assert names == [
        "interpolation_epoch001.png", "scatter_epoch001.png", "traversal_epoch001.png",
    ]  # fmt: skip
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
    acc.Reload()
    assert {"latent/interpolation", "latent/traversal", "latent/scatter"} <= set(
        acc.Tags()["tensors"]
    )
