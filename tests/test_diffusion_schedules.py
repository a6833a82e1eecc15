"""Closed-form checks of zoo.diffusion: schedules, q(x_t | x_0), the posterior, the DDPM and DDIM
steps, ε/x_0/v conversions and the compiled DDIM loop. Numpy references only; no network."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.diffusion import (
    NoiseSchedule,
    cosine_alpha_bar,
    ddim_loop,
    ddim_timesteps,
    eps_from_v,
    eps_from_x0,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)

T = 1000


@pytest.fixture(scope="module", params=["linear", "cosine"])
def schedule(request) -> NoiseSchedule:
    return NoiseSchedule(request.param, num_steps=T)


def tensor(a) -> tf.Tensor:
    return tf.constant(np.asarray(a, np.float32))


def steps(*values) -> tf.Tensor:
    return tf.constant(np.asarray(values, np.int32))


def test_linear_schedule_endpoints_and_products():
    s = NoiseSchedule("linear", num_steps=T)
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(s.betas), (0.02 - 1e-4) / (T - 1), rtol=1e-9)
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1.0 - s.betas), rtol=1e-12)
    # ᾱ_T for the DDPM schedule: exp(sum log(1 - β)) ≈ 4.04e-5, so x_T is nearly pure noise.
    assert s.alpha_bars[-1] == pytest.approx(math.exp(np.log1p(-s.betas).sum()), rel=1e-9)
    assert 3e-5 < s.alpha_bars[-1] < 5e-5


def test_cosine_alpha_bar_follows_its_formula():
    s = NoiseSchedule("cosine", num_steps=T)
    t = np.arange(1, T + 1, dtype=np.float64)
    f = np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2
    f0 = math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    clipped = s.betas >= 0.999
    assert clipped.sum() == 1 and clipped[-1]  # only the singular last step is clipped
    np.testing.assert_allclose(s.alpha_bars[:-1], (f / f0)[:-1], rtol=1e-9)
    np.testing.assert_allclose(s.alpha_bars[:-1], cosine_alpha_bar(t, T)[:-1], rtol=1e-12)
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1.0 - s.betas), rtol=1e-12)
    assert s.betas.max() == pytest.approx(0.999)


def test_config_round_trip_and_errors():
    s = NoiseSchedule("cosine", num_steps=50, cosine_s=0.01)
    again = NoiseSchedule.from_config(s.get_config())
    assert again.get_config() == s.get_config()
    np.testing.assert_array_equal(again.betas, s.betas)
    with pytest.raises(ValueError, match="kind 'sigmoid' is unknown"):
        NoiseSchedule("sigmoid")
    with pytest.raises(ValueError, match="count = 0"):
        ddim_timesteps(T, 0)
    with pytest.raises(ValueError, match="variance 'learned' is unknown"):
        s.ddpm_step(tensor([[0.0]]), tensor([[0.0]]), steps(1), tensor([[0.0]]), variance="learned")


def test_ddim_timesteps_are_an_even_descending_subsequence():
    timesteps, previous = ddim_timesteps(T, 50)
    assert len(timesteps) == 50 and timesteps[0] == T - 1 and timesteps[-1] == 0
    assert np.all(np.diff(timesteps) < 0)
    np.testing.assert_allclose(np.diff(timesteps), -(T - 1) / 49, atol=1)
    np.testing.assert_array_equal(previous, np.append(timesteps[1:], -1))
    full, full_prev = ddim_timesteps(T, T)
    np.testing.assert_array_equal(full, np.arange(T - 1, -1, -1))
    np.testing.assert_array_equal(full_prev, full - 1)


def test_q_xt_given_x0_mean_and_variance_by_sampling(schedule):
    rng = np.random.default_rng(0)
    n = 200_000
    x0 = np.array([0.9, -0.4, 0.1], np.float32)
    for t in (0, 250, 999):
        noise = rng.standard_normal((n, 3)).astype(np.float32)
        x0_n = tensor(np.broadcast_to(x0, (n, 3)))
        x_t = schedule.add_noise(x0_n, tensor(noise), steps(*[t] * n))
        x_t = x_t.numpy()
        ab = schedule.alpha_bars[t]
        np.testing.assert_allclose(x_t.mean(0), math.sqrt(ab) * x0, atol=0.01)
        np.testing.assert_allclose(x_t.var(0), 1.0 - ab, atol=0.01 * max(1.0 - ab, 0.1))


def test_posterior_matches_ho_eq_7_and_gaussian_conditioning(schedule):
    t = np.array([1, 10, 500, 998], np.int32)
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((4, 2))
    x_t = rng.standard_normal((4, 2))
    mean, var, log_var = schedule.posterior(tensor(x0), tensor(x_t), tf.constant(t))
    ab, ab_prev = schedule.alpha_bars[t], schedule.alpha_bars[t - 1]
    beta = schedule.betas[t]
    # Ho et al. eq. 7.
    mean_7 = (np.sqrt(ab_prev) * beta / (1 - ab))[:, None] * x0 + (
        np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
    )[:, None] * x_t
    var_7 = (1 - ab_prev) / (1 - ab) * beta
    # Direct conditioning of the joint Gaussian: x_{t-1} ~ N(√ab' x0, 1 - ab'),
    # x_t = √alpha x_{t-1} + √β e, so Cov = √alpha (1 - ab'), Var(x_t) = 1 - ab.
    cov = np.sqrt(1 - beta) * (1 - ab_prev)
    mean_c = np.sqrt(ab_prev)[:, None] * x0 + (cov / (1 - ab))[:, None] * (
        x_t - np.sqrt(ab)[:, None] * x0
    )
    var_c = (1 - ab_prev) - cov**2 / (1 - ab)
    np.testing.assert_allclose(mean.numpy(), mean_7, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(mean.numpy(), mean_c, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(var.numpy().ravel(), var_7, rtol=2e-5)
    np.testing.assert_allclose(var.numpy().ravel(), var_c, rtol=1e-4)
    np.testing.assert_allclose(log_var.numpy().ravel(), np.log(var_7), rtol=1e-5, atol=1e-6)
    # At the first step β̃ = 0 and the clipped log-variance is that of the second step.
    _, var0, log_var0 = schedule.posterior(tensor([[0.0]]), tensor([[0.0]]), steps(0))
    assert var0.numpy().item() == 0.0
    clipped = np.log(schedule.posterior_variance[1])
    assert log_var0.numpy().item() == pytest.approx(clipped, rel=1e-6)


def test_ddpm_step_is_algorithm_2(schedule):
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-0.8, 0.8, (3, 4))
    eps = rng.standard_normal((3, 4))
    z = rng.standard_normal((3, 4))
    t = np.array([0, 7, 900], np.int32)
    x_t = schedule.add_noise(tensor(x0), tensor(eps), tf.constant(t))
    beta, ab = schedule.betas[t][:, None], schedule.alpha_bars[t][:, None]
    mean = (x_t.numpy() - beta / np.sqrt(1 - ab) * eps) / np.sqrt(1 - beta)
    beta_tilde = schedule.posterior_variance[t][:, None]
    for variance, sigma2 in (("beta", beta), ("beta_tilde", beta_tilde)):
        out = schedule.ddpm_step(x_t, tensor(eps), tf.constant(t), tensor(z), variance=variance)
        sigma = np.sqrt(sigma2) * (t[:, None] > 0)  # no noise at the last step
        np.testing.assert_allclose(out.numpy(), mean + sigma * z, rtol=1e-4, atol=1e-4)
    # With the true ε, Algorithm 2's mean is the posterior mean at the true x_0; clipping x̂_0
    # to a range that holds it changes nothing.
    post_mean, _, _ = schedule.posterior(tensor(x0), x_t, tf.constant(t))
    zero = tf.zeros_like(x_t)
    plain = schedule.ddpm_step(x_t, tensor(eps), tf.constant(t), zero)
    clipped = schedule.ddpm_step(x_t, tensor(eps), tf.constant(t), zero, clip_x0=1.0)
    np.testing.assert_allclose(plain.numpy(), post_mean.numpy(), atol=2e-3)
    np.testing.assert_allclose(clipped.numpy(), post_mean.numpy(), atol=2e-3)


def test_ddim_eta_one_on_the_full_sequence_is_the_ddpm_posterior(schedule):
    t = np.arange(T, dtype=np.int32)
    x = tensor(np.zeros((T, 1)))
    sigma = schedule.ddim_sigma(tf.constant(t), tf.constant(t - 1), 1.0, x).numpy().ravel()
    np.testing.assert_allclose(sigma**2, schedule.posterior_variance, rtol=1e-4, atol=1e-12)
    # And the step's distribution, by sampling, given the exact ε for a known x_0.
    rng = np.random.default_rng(3)
    n, x0 = 100_000, 0.6
    for step in (1, 300, 990):
        eps = rng.standard_normal((n, 1))
        x_t = schedule.add_noise(tensor(np.full((n, 1), x0)), tensor(eps), steps(*[step] * n))
        noise = tensor(rng.standard_normal((n, 1)))
        ts = steps(*[step] * n)
        out = schedule.ddim_step(x_t, tensor(eps), ts, ts - 1, eta=1.0, noise=noise).numpy()
        post_mean, post_var, _ = schedule.posterior(tensor(np.full((n, 1), x0)), x_t, ts)
        np.testing.assert_allclose(out, post_mean.numpy(), atol=6 * math.sqrt(post_var[0, 0]))
        residual = out - post_mean.numpy()
        assert residual.var() == pytest.approx(post_var.numpy()[0, 0], rel=0.02)
        assert abs(residual.mean()) < 0.02 * math.sqrt(post_var.numpy()[0, 0]) + 1e-6


def gaussian_data_eps(schedule: NoiseSchedule, data_std: float):
    """The exact ε-predictor E[ε | x_t] for data x_0 ~ N(0, data_std²): a fixed linear model."""

    def eps_fn(x_t, t):
        ab = schedule.alpha_bar_at(t, x_t)
        return tf.sqrt(1.0 - ab) * x_t / (ab * data_std**2 + 1.0 - ab)

    return eps_fn


def compiled_ddim(schedule, eps_fn, timesteps, targets, eta=0.0, seed=None):
    """:func:`ddim_loop` with these steps, as one ``tf.function`` of x alone."""
    return tf.function(lambda x: ddim_loop(schedule, eps_fn, x, timesteps, targets, eta, seed))


def test_ddim_eta_zero_is_deterministic_and_inverts():
    s = NoiseSchedule("linear", num_steps=T)
    rng = np.random.default_rng(4)
    x0 = tensor(0.5 * rng.standard_normal((16, 3)))
    eps_fn = gaussian_data_eps(s, 0.5)
    errors = {}
    for k in (10, 100, 1000):
        timesteps, previous = ddim_timesteps(T, k)
        # Encoding runs the same steps backwards: previous[i] -> timesteps[i], from t = -1 up.
        encode = compiled_ddim(s, eps_fn, previous[::-1], timesteps[::-1])
        decode = compiled_ddim(s, eps_fn, timesteps, previous)
        latent = encode(x0)
        back = decode(latent)
        np.testing.assert_array_equal(back.numpy(), decode(latent).numpy())  # deterministic
        errors[k] = float(np.abs(back.numpy() - x0.numpy()).max())
    # The encoding is a discretised ODE: the round trip converges as the steps grow.
    # Measured (max |error|, data std 0.5): 0.54 at 10 steps, 0.063 at 100, 0.0068 at 1000.
    assert errors[1000] < 1e-2, errors
    assert errors[1000] < errors[100] / 5 and errors[100] < errors[10] / 5, errors
    # With the oracle ε of a fixed x_0, x̂_0 is exact at every step: any x_T decodes to x_0.
    timesteps, previous = ddim_timesteps(T, 20)

    def oracle(x_t, t):
        return eps_from_x0(x_t, x0, s.alpha_bar_at(t, x_t))

    decoded = ddim_loop(s, oracle, tensor(rng.standard_normal((16, 3))), timesteps, previous)
    np.testing.assert_allclose(decoded.numpy(), x0.numpy(), atol=1e-4)


def test_v_and_eps_conversions_round_trip():
    rng = np.random.default_rng(5)
    x0, eps = tensor(rng.standard_normal((5, 3))), tensor(rng.standard_normal((5, 3)))
    ab = tensor(rng.uniform(0.01, 0.99, (5, 1)))
    x_t = tf.sqrt(ab) * x0 + tf.sqrt(1.0 - ab) * eps
    v = v_from_x0_eps(x0, eps, ab)
    np.testing.assert_allclose(
        v.numpy(), (np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(x0_from_v(x_t, v, ab).numpy(), x0.numpy(), atol=1e-5)
    np.testing.assert_allclose(eps_from_v(x_t, v, ab).numpy(), eps.numpy(), atol=1e-5)
    np.testing.assert_allclose(x0_from_eps(x_t, eps, ab).numpy(), x0.numpy(), atol=1e-4)
    np.testing.assert_allclose(eps_from_x0(x_t, x0, ab).numpy(), eps.numpy(), atol=1e-4)


def test_steps_compile_in_fori_loop_and_match_a_python_loop():
    s = NoiseSchedule("cosine", num_steps=100)
    x_T = tensor(np.random.default_rng(6).standard_normal((4, 2, 2, 1)))
    eps_fn = gaussian_data_eps(s, 0.7)
    seed = tf.constant([11, 3], tf.int32)
    timesteps, previous = ddim_timesteps(100, 10)

    ddim = compiled_ddim(s, eps_fn, timesteps, previous, 0.5, seed)
    x = x_T
    for i, (t, t_prev) in enumerate(zip(timesteps, previous, strict=True)):
        noise = tf.random.stateless_normal(x.shape, seed=seed + tf.constant([0, i]))
        ts, ps = tf.fill([4], int(t)), tf.fill([4], int(t_prev))
        x = s.ddim_step(x, eps_fn(x, ts), ts, ps, eta=0.5, noise=noise)
    np.testing.assert_allclose(ddim(x_T).numpy(), x.numpy(), rtol=1e-5, atol=1e-5)

    @tf.function
    def compiled_ddpm(x):
        def body(i, x_t):
            t = tf.fill([4], 99 - i)
            noise = tf.random.stateless_normal(tf.shape(x_t), seed=seed + tf.stack([0, i]))
            return s.ddpm_step(x_t, eps_fn(x_t, t), t, noise, variance="beta_tilde")

        return keras.ops.fori_loop(0, 100, body, x)

    x = x_T
    for i in range(100):
        t = tf.fill([4], 99 - i)
        noise = tf.random.stateless_normal(x.shape, seed=seed + tf.constant([0, i]))
        x = s.ddpm_step(x, eps_fn(x, t), t, noise, variance="beta_tilde")
    np.testing.assert_allclose(compiled_ddpm(x_T).numpy(), x.numpy(), rtol=1e-4, atol=1e-4)
    assert np.isfinite(x.numpy()).all()
