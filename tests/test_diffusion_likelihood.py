"""The DDPM variational bound (zoo.diffusion.likelihood) against direct computation: Gaussian KL
by formula and Monte Carlo, the discretised decoder by numerical integration, each KL term against
the posterior of zoo.diffusion.schedules, the whole bound with an oracle ε for a one-point data
distribution, exact sum vs stratified Monte Carlo, bits/dim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from zoo.diffusion import NoiseSchedule
from zoo.diffusion.likelihood import (
    decoder_nll,
    diffusion_kl,
    discretized_gaussian_log_prob,
    in_bits_per_dim,
    log_ndtr,
    normal_kl,
    prior_kl,
    strata_edges,
    stratified_timesteps,
    variational_bound,
)

T = 50
LEVELS = np.arange(256) / 127.5 - 1.0  # the 256 levels of 8-bit data in [-1, 1]


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule("linear", num_steps=T, beta_start=1e-4, beta_end=0.2)


def f32(a) -> tf.Tensor:
    return tf.constant(np.asarray(a, np.float32))


def numpy_kl(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) written with standard deviations."""
    s1, s2 = np.sqrt(v1), np.sqrt(v2)
    return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def oracle(schedule: NoiseSchedule, point: float, bias=None):
    """ε*(x_t, t) = (x_t - √ᾱ_t x*) / √(1 - ᾱ_t), plus ``bias[t]`` if given."""
    alpha_bars = tf.constant(schedule.alpha_bars, tf.float64)
    extra = None if bias is None else tf.constant(bias, tf.float64)

    def eps_fn(x_t, t):
        a = tf.reshape(tf.gather(alpha_bars, t), [-1, 1, 1, 1])
        eps = (tf.cast(x_t, tf.float64) - tf.sqrt(a) * point) / tf.sqrt(1.0 - a)
        if extra is not None:
            eps += tf.reshape(tf.gather(extra, t), [-1, 1, 1, 1])
        return tf.cast(eps, tf.float32)

    return eps_fn


def bin_probability(level: float, mean: float, sigma: float) -> float:
    """P(bin of level) under N(mean, sigma²) by Simpson's rule on the density (in log space)."""
    half = 1 / 255
    lo, hi = level - half, level + half
    # an edge bin's open end: 40 decay lengths of the density beyond its edge (sigma, or
    # sigma / z with the edge z standard deviations into the tail), past the mean if it is inside
    if level < -1 + half:
        lo = min(mean, hi) - 40 * sigma / max(1.0, (mean - hi) / sigma)
    if level > 1 - half:
        hi = max(mean, lo) + 40 * sigma / max(1.0, (lo - mean) / sigma)
    x = np.linspace(lo, hi, 20001)
    log_density = -0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
    peak = log_density.max()
    w = np.ones_like(x)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return peak + math.log(np.sum(w * np.exp(log_density - peak)) * (x[1] - x[0]) / 3)


def test_normal_kl_matches_formula_and_monte_carlo():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=20), rng.normal(size=20)
    v1, v2 = np.exp(rng.normal(size=20)), np.exp(rng.normal(size=20))
    ours = normal_kl(m1, np.log(v1), m2, np.log(v2)).numpy()
    np.testing.assert_allclose(ours, numpy_kl(m1, v1, m2, v2), rtol=1e-10)
    # Monte Carlo: E_q[log q - log p] with 4e5 draws
    x = 0.3 + math.sqrt(0.5) * rng.normal(size=400_000)
    log_q = -0.5 * (x - 0.3) ** 2 / 0.5 - 0.5 * math.log(2 * math.pi * 0.5)
    log_p = -0.5 * (x + 0.4) ** 2 / 2.0 - 0.5 * math.log(2 * math.pi * 2.0)
    estimate, stderr = np.mean(log_q - log_p), np.std(log_q - log_p) / math.sqrt(len(x))
    kl = float(normal_kl(0.3, math.log(0.5), -0.4, math.log(2.0)))
    assert abs(estimate - kl) < 4 * stderr


def test_log_ndtr_matches_erfc_in_every_branch():
    z = np.array([-35.0, -30.0, -25.0, -20.5, -19.5, -8.0, -1.0, 0.0, 0.5, 3.0, 9.0])
    expected = [
        math.log1p(-0.5 * math.erfc(v / math.sqrt(2)))
        if v > 0
        else math.log(0.5 * math.erfc(-v / math.sqrt(2)))
        for v in z
    ]
    np.testing.assert_allclose(log_ndtr(z).numpy(), expected, rtol=1e-12)
    assert log_ndtr(np.array([10.0])).numpy()[0] == pytest.approx(-7.619853e-24, rel=1e-6)
    far = log_ndtr(np.array([-1e4])).numpy()[0]  # erfc underflows here; the series does not
    assert far == pytest.approx(-5e7 - math.log(1e4) - 0.5 * math.log(2 * math.pi), rel=1e-12)


@pytest.mark.parametrize(("mean", "sigma"), [(0.0, 0.01), (0.37, 0.004), (-0.99, 0.2), (0.9, 1.0)])
def test_discretized_decoder_integrates_the_density_over_each_bin(mean, sigma):
    log_p = discretized_gaussian_log_prob(LEVELS, mean, math.log(sigma)).numpy()
    assert math.fsum(np.exp(log_p)) == pytest.approx(1.0, abs=1e-12)
    nearest = int(np.argmin(np.abs(LEVELS - mean)))
    for k in sorted({0, 1, nearest, min(nearest + 1, 255), 128, 254, 255}):
        finite = np.exp(log_p[k]) > 1e-300
        expected = bin_probability(LEVELS[k], mean, sigma)
        if finite:
            assert log_p[k] == pytest.approx(expected, rel=1e-7, abs=1e-9), k


def test_discretized_decoder_is_finite_far_in_the_tails():
    # 2/255-wide bins ~ 200 standard deviations away: probabilities ~ e^-20000, still exact in log
    levels = np.array([1.0, LEVELS[204], -1.0])
    log_p = discretized_gaussian_log_prob(levels, -0.5, math.log(0.005)).numpy()
    assert np.all(np.isfinite(log_p)) and np.all(log_p < -4000)
    expected = [bin_probability(v, -0.5, 0.005) for v in levels]
    np.testing.assert_allclose(log_p, expected, rtol=1e-9)


def test_prior_kl_is_the_kl_of_q_xT_given_x0(schedule):
    x0 = np.random.default_rng(1).uniform(-1, 1, (3, 4, 4, 1))
    a = schedule.alpha_bars[-1]
    expected = numpy_kl(math.sqrt(a) * x0, 1 - a, 0.0, 1.0).reshape(3, -1).sum(1)
    np.testing.assert_allclose(prior_kl(schedule, x0).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_diffusion_kl_matches_the_posterior_against_the_ddpm_step(schedule, variance):
    rng = np.random.default_rng(2)
    x0, noise = rng.uniform(-1, 1, (6, 3, 3, 1)), rng.normal(size=(6, 3, 3, 1))
    eps_pred = noise + 0.3 * rng.normal(size=noise.shape)
    t = np.array([1, 2, 7, 20, 48, 49], np.int32)
    x_t = schedule.add_noise(f32(x0), f32(noise), t)
    mean_q, var_q, _ = schedule.posterior(f32(x0), x_t, t)
    mean_p = schedule.ddpm_step(x_t, f32(eps_pred), t, f32(np.zeros_like(x0)), variance=variance)
    var_p = (schedule.posterior_variance if variance == "beta_tilde" else schedule.betas)[t]
    expected = numpy_kl(
        mean_q.numpy().astype(np.float64), var_q.numpy().astype(np.float64),
        mean_p.numpy().astype(np.float64), var_p.reshape(-1, 1, 1, 1),
    ).reshape(6, -1).sum(1)  # fmt: skip
    ours = diffusion_kl(schedule, f32(noise), f32(eps_pred), t, variance).numpy()
    np.testing.assert_allclose(ours, expected, rtol=2e-3)
    # eq. 12 for sigma² = β̃: β² / (2 sigma² alpha (1 - ᾱ)) ||ε - ε_θ||²
    if variance == "beta_tilde":
        b, a, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
        weight = b**2 / (2 * schedule.posterior_variance[t] * a * (1 - ab))
        err = ((eps_pred - noise) ** 2).reshape(6, -1).sum(1)
        np.testing.assert_allclose(ours, weight * err, rtol=1e-5)


def test_decoder_nll_integrates_around_the_ddpm_mean(schedule):
    rng = np.random.default_rng(3)
    x0 = rng.choice(LEVELS, size=(2, 2, 2, 1))
    noise, eps_pred = rng.normal(size=x0.shape), rng.normal(size=x0.shape)
    zero = np.zeros(2, np.int32)
    x1 = schedule.add_noise(f32(x0), f32(noise), zero)
    mean = schedule.ddpm_step(x1, f32(eps_pred), zero, f32(noise), variance="beta_tilde").numpy()
    sigma = math.exp(0.5 * schedule.posterior_log_variance_clipped[0])
    pairs = [zip(x0[i].ravel(), mean[i].ravel(), strict=True) for i in range(2)]
    expected = [-sum(bin_probability(v, m, sigma) for v, m in pair) for pair in pairs]
    ours = decoder_nll(schedule, f32(x0), x1, f32(eps_pred)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4)  # float32 means, sigma = 0.01


def test_oracle_eps_makes_every_kl_term_zero(schedule):
    point = LEVELS[160]
    x0 = np.full((3, 4, 4, 1), point)
    bound = variational_bound(schedule, oracle(schedule, point), x0, seed=4)
    d = 16
    assert bound["steps"].shape == (3, T)
    np.testing.assert_allclose(bound["steps"][:, 1:], 0.0, atol=1e-6)
    assert np.all(bound["diffusion"] < 1e-5)
    # x̂_0 = x* exactly: L_0 = -D log P(|N(0, sigma²)| <= 1/255), sigma² = β̃ at index 0 (clipped)
    sigma = math.exp(0.5 * schedule.posterior_log_variance_clipped[0])
    decoder = -d * math.log(math.erf(1 / 255 / sigma / math.sqrt(2)))
    np.testing.assert_allclose(bound["decoder"], decoder, rtol=1e-4)
    a = schedule.alpha_bars[-1]
    prior = d * numpy_kl(math.sqrt(a) * point, 1 - a, 0, 1)
    np.testing.assert_allclose(bound["prior"], prior, rtol=1e-6)  # x* rounded to float32
    np.testing.assert_allclose(
        bound["total"], bound["prior"] + bound["diffusion"] + bound["decoder"], rtol=1e-12
    )
    # sigma² = β instead: each KL is the variance mismatch alone, ½ (log β/β̃ + β̃/β - 1) per value
    wide = variational_bound(schedule, oracle(schedule, point), x0, variance="beta")
    ratio = schedule.posterior_variance[1:] / schedule.betas[1:]
    np.testing.assert_allclose(wide["steps"][0, 1:], d * 0.5 * (ratio - np.log(ratio) - 1), 1e-4)


def test_labels_reach_eps_fn_with_their_examples(schedule):
    points = np.array([LEVELS[40], LEVELS[200]])
    labels = np.array([0, 1, 1, 0, 1])
    x0 = np.broadcast_to(points[labels][:, None, None, None], (5, 2, 2, 1))
    alpha_bars = tf.constant(schedule.alpha_bars, tf.float32)

    def eps_fn(x_t, t, y):
        a = tf.reshape(tf.gather(alpha_bars, t), [-1, 1, 1, 1])
        x_star = tf.reshape(tf.gather(tf.constant(points, tf.float32), y), [-1, 1, 1, 1])
        return (x_t - tf.sqrt(a) * x_star) / tf.sqrt(1.0 - a)

    bound = variational_bound(schedule, eps_fn, x0, labels=labels, batch_size=3, rows_per_call=12)
    np.testing.assert_allclose(bound["steps"][:, 1:], 0.0, atol=1e-5)
    swapped = variational_bound(schedule, eps_fn, x0, labels=1 - labels, num_timesteps=4)
    assert np.all(swapped["diffusion"] > 1.0)


def test_exact_sum_and_stratified_estimate_agree(schedule):
    # ε_θ = ε* + g(t): every KL term is deterministic, D β_t² g_t² / (2 β̃_t alpha_t (1 - ᾱ_t))
    g = 0.05 * (1.0 + np.sin(np.arange(T)))
    point, d = LEVELS[90], 4
    x0 = np.full((200, 2, 2, 1), point)
    eps_fn = oracle(schedule, point, bias=g)
    b, a, ab = schedule.betas[1:], schedule.alphas[1:], schedule.alpha_bars[1:]
    closed = d * b**2 * g[1:] ** 2 / (2 * schedule.posterior_variance[1:] * a * (1 - ab))
    exact = variational_bound(schedule, eps_fn, x0[:3], batch_size=2, rows_per_call=10)
    np.testing.assert_allclose(exact["steps"][:, 1:], np.tile(closed, (3, 1)), 1e-3, 1e-6)
    mc = variational_bound(schedule, eps_fn, x0, num_timesteps=5, seed=7, batch_size=100)
    assert np.std(mc["diffusion"]) > 0.01 * closed.sum()  # it does sample different t
    stderr = np.std(mc["diffusion"]) / math.sqrt(len(x0))
    assert abs(np.mean(mc["diffusion"]) - closed.sum()) < 4 * stderr
    np.testing.assert_allclose(mc["prior"], exact["prior"][0])
    assert "steps" not in mc


@pytest.mark.parametrize(
    ("spacing", "sizes"), [("uniform", [9, 8, 8, 8, 8, 8]), ("log", [1, 2, 3, 7, 12, 24])]
)
def test_stratified_timesteps_cover_each_step_once_in_expectation(spacing, sizes):
    # log strata: edges 50^(j/6) = 1, 1.9, 3.7, 7.1, 13.6, 26.1, 50 rounded: 1, 2, 4, 7, 14, 26, 50
    np.testing.assert_array_equal(np.diff(strata_edges(T, 6, spacing)), sizes)
    steps, weights = stratified_timesteps(T, 6, 30_000, seed=1, spacing=spacing)
    assert steps.shape == weights.shape == (30_000, 6)
    assert steps.min() == 1 and steps.max() == T - 1
    assert np.all(np.diff(steps, axis=1) > 0)  # one draw per contiguous stratum, in order
    np.testing.assert_array_equal(weights[0], sizes)
    # E[sum_j w_j 1{t_j = i}] = 1 for every index i = 1..T-1 (sd sqrt(|S_j| - 1) per draw)
    hits = np.bincount(steps.ravel(), weights=weights.ravel(), minlength=T)[1:] / len(steps)
    tolerance = 5 * np.sqrt(np.repeat(sizes, sizes) - 1.0) / math.sqrt(len(steps))
    assert np.all(np.abs(hits - 1.0) <= tolerance + 1e-12)
    np.testing.assert_array_equal(hits[np.repeat(sizes, sizes) == 1], 1.0)  # summed exactly
    edges = strata_edges(1000, 50)
    assert edges[0] == 1 and edges[-1] == 1000 and np.all(np.diff(edges) >= 1)
    with pytest.raises(ValueError, match="spacing"):
        strata_edges(T, 6, "cubic")


def test_bits_per_dim_and_input_checks(schedule):
    converted = in_bits_per_dim({"total": np.array([784 * math.log(2), 0.0])}, 784)
    np.testing.assert_allclose(converted["total"], [1.0, 0.0])
    eps_fn = oracle(schedule, 0.0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        variational_bound(schedule, eps_fn, np.full((1, 2, 2, 1), 255.0))
    with pytest.raises(ValueError, match="variance"):
        variational_bound(schedule, eps_fn, np.zeros((1, 2, 2, 1)), variance="learned")
    with pytest.raises(ValueError, match="labels"):
        variational_bound(schedule, eps_fn, np.zeros((2, 2, 2, 1)), labels=[1])


class FixedBound:
    """A BoundModel without a network: fixed terms (bits/dim) per example."""

    image_shape = (2, 2, 1)
    name = "fixed"

    def variational_bound(self, images, labels=None, num_timesteps=None, seed=0):
        self.asked = num_timesteps
        a, b = np.arange(1.0, len(images) + 1), np.full(len(images), 0.5)
        return {"a": a, "b": b, "total": a + b, "steps": np.zeros((len(images), 3))}


def test_evaluate_model_routes_bound_models_and_reports_every_term(tmp_path):
    import json

    from zoo.likelihood import evaluate_model
    from zoo.tasks import BoundModel, LikelihoodModel

    model = FixedBound()
    assert isinstance(model, BoundModel) and not isinstance(model, LikelihoodModel)
    images = np.zeros((4, 2, 2, 1), np.float32)
    result, out = evaluate_model(model, tmp_path, target="t", images=images, num_timesteps=7)
    assert model.asked == 7 and result["estimator"].startswith("stratified Monte Carlo, 7")
    assert result["terms"] == ["a", "b"] and result["bits_per_dim"] == pytest.approx(3.0)
    assert result["a_bits_per_dim"] == pytest.approx(2.5) and result["b_nats"] == pytest.approx(
        0.5 * 4 * math.log(2)
    )
    assert result["bits_per_dim_stderr"] == pytest.approx(np.std([2, 3, 4, 5], ddof=1) / 2)
    assert json.loads((out / "likelihood.json").read_text())["nll_bound"] == pytest.approx(
        3.0 * 4 * math.log(2)
    )
    assert "| term: b | 1.39 | 0.5000 |" in (out / "likelihood.md").read_text()
    with pytest.raises(TypeError, match="BoundModel"):
        evaluate_model(object(), tmp_path, target="t", images=images)


def test_zoo_evaluate_reports_a_diffusion_models_bound_in_bits_per_dim(tmp_path, capsys):
    import json

    from zoo.cli import main

    out = tmp_path / "exact"
    args = ["evaluate", "ddpm_tiny", "--task", "likelihood", "--n", "2", "--out", str(out)]
    assert main(args) == 0
    assert "bits_per_dim" in capsys.readouterr().out
    result = json.loads((out / "likelihood.json").read_text())
    assert result["n"] == 2 and result["dims"] == 784
    assert result["terms"] == ["prior", "diffusion", "decoder"]
    terms = [result[f"{k}_bits_per_dim"] for k in result["terms"]]
    assert all(math.isfinite(v) and v > 0 for v in terms)
    assert sum(terms) == pytest.approx(result["bits_per_dim"], rel=1e-9)
    assert result["nll_bound"] == pytest.approx(result["bits_per_dim"] * 784 * math.log(2))
    assert result["estimator"].startswith("exact")
    report = (out / "likelihood.md").read_text()
    assert "bits/dim" in report and "term: decoder" in report and "bundled MNIST" in report
    assert list(out.glob("events.out.tfevents.*"))
