"""GAN and reconstruction losses against their equations (numpy, written from the papers)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo import losses


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture
def logits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 1)).astype("float32") * 3, rng.normal(size=(64, 1)).astype(
        "float32"
    ) * 3


def test_minimax_discriminator_is_the_cross_entropy(logits):
    real, fake = logits
    expected = -np.log(sigmoid(real[:, 0])) - np.log(1.0 - sigmoid(fake[:, 0]))  # Goodfellow eq. 1
    for kind in ("minimax", "non_saturating"):
        got = np.asarray(losses.discriminator_loss(real, fake, kind))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_generator_losses(logits):
    _, fake = logits
    d = sigmoid(fake[:, 0])
    np.testing.assert_allclose(
        losses.generator_loss(fake, "minimax"), np.log(1.0 - d), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        losses.generator_loss(fake, "non_saturating"), -np.log(d), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        losses.generator_loss(fake, "least_squares"), 0.5 * (fake[:, 0] - 1) ** 2, rtol=1e-6
    )
    np.testing.assert_allclose(losses.generator_loss(fake, "wasserstein"), -fake[:, 0], rtol=1e-6)
    np.testing.assert_allclose(losses.generator_loss(fake, "hinge"), -fake[:, 0], rtol=1e-6)


def test_non_saturating_has_strong_gradient_where_minimax_saturates():
    """Goodfellow et al. (2014) sec. 3: early on D(G(z)) ~ 0 and log(1 - D) saturates."""
    import tensorflow as tf

    fake = tf.constant([[-8.0]])
    grads = {}
    for kind in ("minimax", "non_saturating"):
        with tf.GradientTape() as tape:
            tape.watch(fake)
            loss = losses.generator_loss(fake, kind)
        grads[kind] = abs(float(tape.gradient(loss, fake)[0, 0]))
    assert grads["minimax"] < 1e-3 < 0.99 < grads["non_saturating"]


def test_other_discriminator_losses(logits):
    real, fake = logits
    r, f = real[:, 0], fake[:, 0]
    np.testing.assert_allclose(
        losses.discriminator_loss(real, fake, "least_squares"),
        0.5 * (r - 1) ** 2 + 0.5 * f**2,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        losses.discriminator_loss(real, fake, "wasserstein"), f - r, rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.discriminator_loss(real, fake, "hinge"),
        np.maximum(0, 1 - r) + np.maximum(0, 1 + f),
        rtol=1e-6,
    )


def test_one_sided_label_smoothing(logits):
    real, fake = logits
    y = 0.9
    s = sigmoid(real[:, 0])
    expected = -(y * np.log(s) + (1 - y) * np.log(1 - s)) - np.log(1 - sigmoid(fake[:, 0]))
    got = losses.discriminator_loss(real, fake, "non_saturating", real_label=y)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_unknown_gan_loss_names_the_choices():
    with pytest.raises(ValueError, match="choose one of minimax, non_saturating"):
        losses.generator_loss(np.zeros((2, 1), "float32"), "vanilla")


def test_reconstruction_errors_sum_over_pixels():
    rng = np.random.default_rng(1)
    x = rng.random((3, 4, 4, 1)).astype("float32")
    y = rng.random((3, 4, 4, 1)).astype("float32")
    np.testing.assert_allclose(
        losses.reconstruction_error(x, y, "mse"), ((x - y) ** 2).sum(axis=(1, 2, 3)), rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.reconstruction_error(x, y, "mae"), np.abs(x - y).sum(axis=(1, 2, 3)), rtol=1e-5
    )
    bce = -(x * np.log(y) + (1 - x) * np.log(1 - y)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(losses.reconstruction_error(x, y, "bce"), bce, rtol=1e-4)
    with pytest.raises(ValueError, match="choose one of mse, mae, bce"):
        losses.reconstruction_error(x, y, "l2")


def test_average_is_the_global_batch_mean():
    values = np.arange(6, dtype="float32")
    assert float(losses.average(values)) == pytest.approx(values.mean())
