"""The VAE's bound against closed forms and Monte Carlo estimates (Kingma & Welling, 2014)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.trainers.vae_distributions import likelihood, posterior, standard_normal_prior


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


@pytest.fixture
def gaussian_params() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 3)), rng.normal(scale=0.5, size=(5, 3))


def test_kl_is_the_closed_form(gaussian_params):
    """KL(N(mu, sigma^2) || N(0, 1)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)  (K&W, App. B)."""
    mu, log_var = gaussian_params
    kl = tf.keras.ops.convert_to_numpy(zoo_kl(mu.astype("float32"), log_var.astype("float32")))
    expected = 0.5 * np.sum(mu**2 + np.exp(log_var) - 1.0 - log_var, axis=1)
    np.testing.assert_allclose(kl, expected, rtol=1e-5)


def zoo_kl(mu: np.ndarray, log_var: np.ndarray) -> tf.Tensor:
    import tensorflow_probability as tfp

    return tfp.distributions.kl_divergence(
        posterior(mu, log_var), standard_normal_prior(mu.shape[-1])
    )


def test_kl_matches_a_monte_carlo_estimate(gaussian_params):
    mu, log_var = gaussian_params
    sigma = np.exp(0.5 * log_var)
    rng = np.random.default_rng(1)
    z = mu + sigma * rng.standard_normal((200_000, *mu.shape))
    log_q = -0.5 * np.sum(((z - mu) / sigma) ** 2 + log_var + math.log(2 * math.pi), axis=-1)
    log_p = -0.5 * np.sum(z**2 + math.log(2 * math.pi), axis=-1)
    samples = log_q - log_p
    estimate, stderr = samples.mean(axis=0), samples.std(axis=0) / math.sqrt(len(samples))
    analytic = np.asarray(zoo_kl(mu.astype("float32"), log_var.astype("float32")))
    assert np.all(np.abs(estimate - analytic) < 4 * stderr + 1e-3)


def test_likelihoods_match_their_densities():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 3, 1)).astype("float32")
    x = rng.random((2, 3, 3, 1)).astype("float32")
    binary = (x > 0.5).astype("float32")
    # Bernoulli: log p = x l - softplus(l), summed over pixels
    bern = likelihood("bernoulli", logits).log_prob(binary)
    np.testing.assert_allclose(
        bern, np.sum(binary * logits - softplus(logits), axis=(1, 2, 3)), rtol=1e-5
    )
    # Gaussian with fixed scale s around sigmoid(l)
    s, m = 0.1, 1 / (1 + np.exp(-logits))
    gauss = likelihood("gaussian", logits, gaussian_scale=s).log_prob(x)
    expected = -np.sum(
        0.5 * ((x - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi), axis=(1, 2, 3)
    )
    np.testing.assert_allclose(gauss, expected, rtol=1e-5)
    # Continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019): Bernoulli term + log C(lambda)
    lam = m.astype("float64")
    log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    cb = likelihood("continuous_bernoulli", logits).log_prob(x)
    expected = np.sum(x * np.log(lam) + (1 - x) * np.log(1 - lam) + log_c, axis=(1, 2, 3))
    np.testing.assert_allclose(cb, expected, rtol=1e-4)


@pytest.mark.parametrize("kind", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_negative_elbo_terms_are_the_decoder_nll_and_the_kl(kind, digits):
    model = zoo.load("vae_tiny", likelihood=kind)
    images = digits[:4]
    rec, kl = model.negative_elbo_terms(images, sample=False)
    mean, log_var = (np.asarray(t) for t in model.encode(images))
    logits = np.asarray(model.decoder(mean))
    expected_rec = -np.asarray(likelihood(kind, logits).log_prob(images))
    np.testing.assert_allclose(rec, expected_rec, rtol=1e-5)
    expected_kl = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1.0 - log_var, axis=1)
    np.testing.assert_allclose(kl, expected_kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.anomaly_score(images), expected_rec + expected_kl, rtol=1e-5)


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_loss_is_reconstruction_plus_beta_kl_and_elbo_is_unweighted(beta, digits):
    model = zoo.load("vae_tiny", beta=beta)
    values = {k: float(v) for k, v in model.step_losses(digits[:8], training=False).items()}
    assert values["kl"] > 0
    assert values["loss"] == pytest.approx(values["reconstruction"] + beta * values["kl"], rel=1e-6)
    assert values["elbo"] == pytest.approx(-(values["reconstruction"] + values["kl"]), rel=1e-6)


def test_reparameterisation_draws_have_the_posterior_moments_and_gradients():
    model = zoo.load("vae_tiny")
    mu = tf.constant(np.tile([[1.0, -2.0, 0.5, 0.0]], (20_000, 1)), tf.float32)
    log_var = tf.constant(np.tile([[0.0, np.log(4.0), np.log(0.25), 0.0]], (20_000, 1)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([mu, log_var])
        z = model.reparameterize(mu, log_var)
        total = tf.reduce_sum(z)
    z = np.asarray(z)
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0, 0.5, 0.0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), [1.0, 2.0, 0.5, 1.0], rtol=0.03)
    grad_mu, grad_log_var = tape.gradient(total, [mu, log_var])
    np.testing.assert_allclose(grad_mu, 1.0)  # dz/dmu = 1
    assert np.all(np.isfinite(grad_log_var)) and np.abs(np.asarray(grad_log_var)).sum() > 0


def test_dynamic_binarisation_samples_bernoulli_pixels():
    model = zoo.load("vae_tiny", binarize=True)
    images = np.full((200, 28, 28, 1), 0.3, "float32")
    binary = np.asarray(model.prepare(images))
    assert set(np.unique(binary)) <= {0.0, 1.0}
    assert binary.mean() == pytest.approx(0.3, abs=0.01)
    assert not np.array_equal(binary, np.asarray(model.prepare(images)))  # fresh draw each pass


def test_unknown_likelihood_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of bernoulli, continuous_bernoulli, gaussian"):
        zoo.load("vae_tiny", likelihood="poisson")
