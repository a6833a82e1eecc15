"""The importance-sampled marginal likelihood against a model whose p(x) is known in
closed form, the IWAE bound against the ELBO, active units, and the run evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from zoo.recipes.evaluation import evaluate_likelihood_run

import zoo
from zoo.likelihood import (
    active_units,
    bits_per_dim,
    evaluate_likelihood,
    importance_sampled_log_likelihood,
    kl_per_dimension,
    report_markdown,
)
from zoo.tasks import LikelihoodModel

tfd = tfp.distributions


class LinearGaussian:
    """p(z) = N(0, I_d), p(x|z) = N(W z + b, s^2 I_D)  =>  p(x) = N(b, W W^T + s^2 I).

    q(z|x) is deliberately *not* the exact posterior N(S W^T (x - b) / s^2, S) with
    S = (I + W^T W / s^2)^-1: it keeps only the diagonal of S (the exact posterior is
    correlated), inflates it by ``q_scale`` and shifts the mean by ``q_shift``.
    """

    def __init__(self, w: np.ndarray, b: np.ndarray, s: float, q_scale=1.5, q_shift=0.2):
        self.w, self.b, self.s = w.astype(np.float64), b.astype(np.float64), float(s)
        d = w.shape[1]
        precision = np.eye(d) + self.w.T @ self.w / self.s**2
        self.post_cov = np.linalg.inv(precision)
        self.q_var = np.diag(self.post_cov) * np.asarray(q_scale, np.float64)
        self.q_shift = np.broadcast_to(np.asarray(q_shift, np.float64), (d,)).copy()
        self.q_shift[np.all(self.w == 0, axis=0)] = 0.0  # a collapsed unit stays at 0
        self._w32 = tf.constant(self.w, tf.float32)
        self._b32 = tf.constant(self.b, tf.float32)
        self.prior = tfd.MultivariateNormalDiag(loc=tf.zeros([d], tf.float32))

    def encode(self, x):
        x = np.asarray(x, np.float64)
        mean = (x - self.b) @ self.w @ self.post_cov.T / self.s**2 + self.q_shift
        log_var = np.broadcast_to(np.log(self.q_var), mean.shape)
        return mean.astype(np.float32), log_var.astype(np.float32)

    def log_likelihood(self, x, z):
        loc = tf.matmul(z, self._w32, transpose_b=True) + self._b32
        return tf.reduce_sum(tfd.Normal(loc, self.s).log_prob(x), axis=-1)

    def log_marginal(self, x: np.ndarray) -> np.ndarray:
        cov = self.w @ self.w.T + self.s**2 * np.eye(len(self.b))
        diff = np.asarray(x, np.float64) - self.b
        _, logdet = np.linalg.slogdet(cov)
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        return -0.5 * (maha + logdet + len(self.b) * math.log(2 * math.pi))


@pytest.fixture(scope="module")
def linear_model() -> LinearGaussian:
    rng = np.random.default_rng(0)
    return LinearGaussian(rng.normal(size=(6, 3)), rng.normal(size=6), s=0.7)


@pytest.fixture(scope="module")
def linear_data(linear_model) -> np.ndarray:
    rng = np.random.default_rng(1)
    m = linear_model
    z = rng.standard_normal((8, 3))
    return (z @ m.w.T + m.b + m.s * rng.standard_normal((8, 6))).astype(np.float32)


def test_the_hand_built_model_follows_the_protocol(linear_model):
    assert isinstance(linear_model, LikelihoodModel)
    assert isinstance(zoo.load("vae_tiny"), LikelihoodModel)


def test_estimate_converges_to_the_closed_form(linear_model, linear_data):
    truth = linear_model.log_marginal(linear_data)
    errors = {}
    for k in (1, 50, 5000):
        estimate = importance_sampled_log_likelihood(
            linear_model, linear_data, k=k, batch_k=700, seed=3
        )
        assert estimate.shape == truth.shape and estimate.dtype == np.float64
        errors[k] = np.abs(estimate - truth)
    # Monte Carlo error ~ 1/sqrt(k): about 0.02 nats at k = 5000 for this q (0.007 at 50000)
    assert errors[5000].max() < 0.1 and errors[5000].mean() < 0.04, errors[5000]
    assert errors[5000].mean() < errors[50].mean() < errors[1].mean()
    # same seed, same draws; chunks of 7 samples estimate the same quantity as one chunk
    single = importance_sampled_log_likelihood(linear_model, linear_data, k=3000, batch_k=3000)
    again = importance_sampled_log_likelihood(linear_model, linear_data, k=3000, batch_k=3000)
    chunked = importance_sampled_log_likelihood(linear_model, linear_data, k=3000, batch_k=7)
    np.testing.assert_array_equal(single, again)
    np.testing.assert_allclose(chunked, truth, atol=0.1)
    np.testing.assert_allclose(single, truth, atol=0.1)


def test_estimate_does_not_exceed_the_truth_in_expectation(linear_model, linear_data):
    """E[log p_hat] <= log p(x) (Jensen); at small k the bias is clearly negative and it
    shrinks with k. Repeats are copies of each example (independent draws per copy)."""
    repeats = 400
    truth = linear_model.log_marginal(linear_data)
    tiled = np.tile(linear_data, (repeats, 1))
    bias = {}
    for k in (2, 20, 200):
        est = importance_sampled_log_likelihood(linear_model, tiled, k=k, batch_size=800, seed=k)
        diff = (est.reshape(repeats, -1) - truth).mean(axis=1)  # per repeat, over examples
        mean, stderr = diff.mean(), diff.std(ddof=1) / math.sqrt(repeats)
        assert mean <= 3 * stderr, (k, mean, stderr)
        bias[k] = mean
    assert bias[2] < -3 * 0.01 and bias[2] < bias[20] < bias[200] + 1e-3


def test_numerically_stable_for_very_negative_log_weights(linear_model):
    """Far-away inputs give log-weights near -1e4: no underflow to -inf."""
    x = np.full((2, 6), 60.0, np.float32)
    estimate = importance_sampled_log_likelihood(linear_model, x, k=2000, batch_k=300)
    truth = linear_model.log_marginal(x)
    assert np.all(np.isfinite(estimate)) and np.all(truth < -500)
    assert np.all(estimate <= truth + 1.0)


def test_iwae_bound_is_at_least_the_elbo_and_equals_it_at_k1(digits):
    model = zoo.load("mlp_vae_tiny", seed=4)
    model.compile(optimizer="adam")
    model.fit(digits, batch_size=32, epochs=20, verbose=0)
    x = tf.constant(digits[:8])
    repeats = 100
    tiled = tf.tile(x, (repeats, 1, 1, 1))
    l1 = np.asarray(model.iwae_bound(tiled, 1)).reshape(repeats, -1)
    l5 = np.asarray(model.iwae_bound(tiled, 5)).reshape(repeats, -1)
    # the ELBO with its analytic KL: E_q log p(x|z) from many draws, minus KL
    rec, kl = (np.asarray(t).reshape(repeats, -1) for t in model.negative_elbo_terms(tiled))
    elbo = -(rec + kl)
    for a, b in ((l5, l1), (l5, elbo)):
        gain = (a - b).mean(axis=1)  # per repeat, averaged over the 8 examples
        assert gain.mean() > 3 * gain.std(ddof=1) / math.sqrt(repeats), gain.mean()
    # k = 1: the bound is the one-sample ELBO, whose expectation is the analytic ELBO
    delta = (l1 - elbo).mean(axis=1)
    assert abs(delta.mean()) < 4 * delta.std(ddof=1) / math.sqrt(repeats) + 1e-3
    assert np.asarray(model.iwae_bound(x, 1)).shape == (8,)  # per example
    # and the estimator with k = 2000 sits above the k = 5 bound
    est = importance_sampled_log_likelihood(model, digits[:8], k=2000, seed=0)
    assert np.mean(est) > l5.mean()


def test_iwae_objective_trains_on_the_bound(digits):
    model = zoo.load("iwae_tiny")
    values = {k: float(v) for k, v in model.step_losses(digits[:16], training=False).items()}
    assert values["loss"] == pytest.approx(-values["iwae_bound"], rel=1e-6)
    assert values["iwae_bound"] >= values["elbo"] - 1.0  # same samples; L_k >= mean log w
    assert model.objective == "iwae" and model.k == 3
    with pytest.raises(ValueError, match="choose one of elbo, iwae"):
        zoo.load("vae_tiny", objective="renyi")


def test_active_units_and_kl_per_dim_show_a_collapsed_unit():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(6, 4))
    w[:, 2] = 0.0  # z_2 does not influence x: its posterior is the prior
    model = LinearGaussian(w, np.zeros(6), s=0.5, q_scale=1.0, q_shift=0.0)
    x = (rng.standard_normal((300, 4)) @ w.T + 0.5 * rng.standard_normal((300, 6))).astype(
        "float32"
    )
    result = evaluate_likelihood(model, x, k=20)
    assert result["active_units"] == 3
    assert result["unit_activity"][2] == pytest.approx(0.0, abs=1e-10)
    assert result["kl_per_dim"][2] == pytest.approx(0.0, abs=1e-6)
    assert min(result["kl_per_dim"][j] for j in (0, 1, 3)) > 0.1
    count, activity = active_units(np.c_[np.zeros(50), np.linspace(-1, 1, 50)])
    assert count == 1 and activity[0] == 0.0
    np.testing.assert_allclose(kl_per_dimension([[1.0, 0.0]], [[0.0, np.log(2.0)]]),
                               [0.5, 0.5 * (2.0 - 1.0 - np.log(2.0))])  # fmt: skip


def test_collapsed_vae_dimension_is_counted(digits):
    model = zoo.load("vae_tiny")
    code = model.encoder.get_layer("code")
    kernel, bias = (np.asarray(v) for v in code.get_weights())
    d = model.latent_dim
    kernel[:, :d] *= 50.0  # make the other means vary strongly over the data
    kernel[:, 1], bias[1] = 0.0, 0.0  # mean of z_1 = 0
    kernel[:, d + 1], bias[d + 1] = 0.0, 0.0  # log-variance of z_1 = 0: q = p(z_1)
    code.set_weights([kernel, bias])
    result = evaluate_likelihood(model, digits, k=4)
    assert result["active_units"] == d - 1
    assert result["kl_per_dim"][1] == pytest.approx(0.0, abs=1e-6)
    assert "binarised once" in result["data"]


def test_evaluate_likelihood_report_is_consistent(digits):
    model = zoo.load("mlp_vae_tiny")
    result = evaluate_likelihood(model, digits[:10], k=64, batch_k=16, seed=1)
    assert result["nll"] == pytest.approx(-result["log_likelihood"])
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (784 * math.log(2)))
    assert result["log_likelihood"] >= result["elbo"] - 0.5  # IS estimate above the ELBO
    assert result["gap"] == pytest.approx(result["log_likelihood"] - result["elbo"], abs=1e-6)
    assert result["kl"] == pytest.approx(sum(result["kl_per_dim"]), rel=1e-6)
    json.dumps(result)
    text = report_markdown(result)
    assert "bits/dim" in text and "active units" in text and "bernoulli" in text
    assert bits_per_dim([-784 * math.log(2)], 784)[0] == pytest.approx(1.0)
    # the draws depend only on the seed: the same call gives the same numbers
    again = evaluate_likelihood(model, digits[:10], k=64, batch_k=16, seed=1, per_example=True)
    assert again["nll"] == result["nll"] and "log_likelihood_per_example" not in result
    assert np.mean(again["log_likelihood_per_example"]) == pytest.approx(result["log_likelihood"])
    assert np.mean(again["elbo_per_example"]) == pytest.approx(result["elbo"])


@pytest.mark.parametrize("name", ["mlp_vae_tiny", "cvae_tiny"])
def test_sample_axis_log_likelihood_equals_the_copied_images_one(name, digits):
    model = zoo.load(name)
    labels = np.arange(4) if model.conditional else None
    z = np.random.default_rng(0).normal(size=(3, 4, model.latent_dim)).astype("float32")
    wide = np.asarray(model.log_likelihood(digits[:4], z, labels=labels))
    flat = model.log_likelihood(
        np.tile(digits[:4], (3, 1, 1, 1)),
        z.reshape(12, -1),
        labels=None if labels is None else np.tile(labels, 3),
    )
    assert wide.shape == (3, 4)
    np.testing.assert_allclose(wide, np.asarray(flat).reshape(3, 4), rtol=1e-6)


def test_conditional_models_are_evaluated_given_labels(digits):
    model = zoo.load("cvae_tiny")
    labels = np.arange(6) % 10
    est = importance_sampled_log_likelihood(model, (digits[:6] > 0.5) * 1.0, k=32, labels=labels)
    assert est.shape == (6,) and np.all(np.isfinite(est))


def test_evaluate_run_writes_json_markdown_and_tensorboard(digits, tmp_path):
    model = zoo.load("mlp_vae_tiny")
    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "eval"
    result, folder = evaluate_likelihood_run(path, k=16, n=20, out_dir=out)
    assert folder == out and result["n"] == 20 and result["k"] == 16
    saved = json.loads((out / "likelihood.json").read_text())
    assert saved["nll"] == pytest.approx(result["nll"])
    assert "bundled MNIST sample" in (out / "likelihood.md").read_text()
    from zoo.likelihood import evaluation_images

    _, labels = evaluation_images(model, n=20)
    assert len(set(labels.tolist())) == 10  # spread over the classes, not the first digits
    assert list(out.glob("events.out.tfevents.*"))
    with pytest.raises(TypeError, match="importance sampling"):
        from zoo.likelihood import _check_model

        _check_model(object())
