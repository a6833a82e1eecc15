"""The DDPM variational bound on -log p(x_0), per example, in nats and bits/dim.

Ho, Jain & Abbeel (2020), §3.3 and eq. 5, for 8-bit images scaled to x_0 in [-1, 1]:

    L = L_T + sum_{t=2..T} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || N(0, I))                         (no network)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_θ(x_{t-1} | x_t)),    x_t ~ q(x_t | x_0)
    L_0     = -log p_θ(x_0 | x_1)                                 (discretised decoder, eq. 13)

p_θ(x_{t-1} | x_t) = N(μ_θ, sigma_t² I) with μ_θ from ε_θ (eq. 11) and sigma_t² fixed: β̃_t
(default, the choice for reporting log-likelihoods) or β_t. Index convention as
:mod:`zoo.diffusion.schedules`: 0-based index ``i = t - 1``, so L_{t-1} for t = 2..T is index
i = 1..T-1 and L_0 is index 0.

Bits/dim = nats / (D ln 2), D = the number of pixel values. The decoder puts probability on the 256
bins of width 2/255 around each level (the extreme levels reach ±∞), so the bound is on a
discrete probability and needs no change of variables.

The network enters only as ``eps_fn(x_t, t)`` (or ``eps_fn(x_t, t, labels)``), ``t`` int32 [N];
every (example, step) term is evaluated inside one compiled function per batch of examples, many
steps per network call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.diffusion.schedules import VARIANCES, NoiseSchedule
from zoo.progress import Progress

__all__ = [
    "TERMS",
    "decoder_nll",
    "diffusion_kl",
    "discretized_gaussian_log_prob",
    "in_bits_per_dim",
    "log_ndtr",
    "normal_kl",
    "prior_kl",
    "strata_edges",
    "stratified_timesteps",
    "variational_bound",
]

#: The per-example terms :func:`variational_bound` returns, in the order they add up.
TERMS = ("prior", "diffusion", "decoder", "total")
#: 8-bit data: 256 levels spread evenly over [-1, 1].
LEVELS = 256


def _float64(value):
    """``value`` as a float64 tensor (a Python float goes straight to float64, not via float32)."""
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=tf.float64), tf.float64)


def normal_kl(mean1, log_var1, mean2, log_var2):
    """Elementwise KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))) in nats:
    ½ (log_var2 - log_var1 + exp(log_var1 - log_var2) + (mean1 - mean2)² / exp(log_var2) - 1),
    in float64 (the terms cancel when the variances are close)."""
    mean1, log_var1, mean2, log_var2 = (_float64(v) for v in (mean1, log_var1, mean2, log_var2))
    return 0.5 * (
        log_var2
        - log_var1
        + tf.exp(log_var1 - log_var2)
        + tf.square(mean1 - mean2) * tf.exp(-log_var2)
        - 1.0
    )


def log_ndtr(z):
    """log Φ(z), the standard normal log-CDF, in float64, accurate far into both tails (TensorFlow
    has no ``log_ndtr``): log(erfc(-z/√2) / 2) for z in [-20, 0], log1p(-erfc(z/√2) / 2) above 0,
    and below -20 the asymptotic series -z²/2 - log(-z) - ½ log 2π + log(1 + sum_{k=1..5} (-1)^k
    (2k-1)!! / z^{2k}) (Abramowitz & Stegun 26.2.12; its error there is below 1e-10 relative)."""
    z = _float64(z)
    middle = tf.math.log(0.5 * tf.math.erfc(-tf.clip_by_value(z, -20.0, 0.0) / math.sqrt(2.0)))
    upper = tf.math.log1p(-0.5 * tf.math.erfc(tf.maximum(z, 0.0) / math.sqrt(2.0)))
    w = tf.minimum(z, -20.0)
    inv = 1.0 / tf.square(w)
    series = inv * (-1.0 + inv * (3.0 + inv * (-15.0 + inv * (105.0 + inv * -945.0))))
    lower = -0.5 * tf.square(w) - tf.math.log(-w) - 0.5 * math.log(2.0 * math.pi)
    lower = lower + tf.math.log1p(series)
    return tf.where(z > 0.0, upper, tf.where(z < -20.0, lower, middle))


def discretized_gaussian_log_prob(x, mean, log_scale, levels: int = LEVELS):
    """Elementwise log P(bin of x) under N(mean, exp(log_scale)²), the decoder of Ho et al. (2020)
    eq. 13: the bin of a level x in [-1, 1] is [x - δ, x + δ], δ = 1 / (levels - 1), widened to
    (-∞, x + δ] at the lowest level and [x - δ, ∞) at the highest, so the probabilities of the
    ``levels`` bins sum to 1.

    Computed in float64 from log Φ (:func:`log_ndtr`): an
    interior bin is log Φ(b) + log(1 - exp(log Φ(a) - log Φ(b))), the interval first reflected
    to the lower half of the line (Φ(b) - Φ(a) = Φ(-a) - Φ(-b)) so Φ(b) never rounds to 1."""
    x, mean, log_scale = (_float64(v) for v in (x, mean, log_scale))
    half = 1.0 / (levels - 1)
    inv_scale = tf.exp(-log_scale)
    upper = (x - mean + half) * inv_scale
    lower = (x - mean - half) * inv_scale
    reflect = upper + lower > 0.0
    a = tf.where(reflect, -upper, lower)  # a < b, a + b <= 0
    b = tf.where(reflect, -lower, upper)
    log_b = log_ndtr(b)
    interior = log_b + tf.math.log(-tf.math.expm1(log_ndtr(a) - log_b))
    lowest = log_ndtr(upper)  # P(X <= x + δ)
    highest = log_ndtr(-lower)  # P(X >= x - δ)
    return tf.where(x < -1.0 + half, lowest, tf.where(x > 1.0 - half, highest, interior))


def _sum_per_example(values):
    return tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def _log_variance_table(schedule: NoiseSchedule, variance: str) -> np.ndarray:
    """log sigma_t² of p_θ(x_{t-1} | x_t) per index: log β̃ (clipped at index 0, where β̃ = 0, to β̃
    of index 1, as :meth:`NoiseSchedule.ddpm_step`) or log β."""
    if variance not in VARIANCES:
        raise ValueError(f"bound variance {variance!r} is unknown; use one of {VARIANCES}")
    if variance == "beta":
        return np.log(schedule.betas)
    return schedule.posterior_log_variance_clipped


def _eps_coefficient(schedule: NoiseSchedule) -> np.ndarray:
    """β_t / (√alpha_t √(1 - ᾱ_t)): from ε to the mean of x_{t-1} (Ho et al. eq. 10-11)."""
    return schedule.betas / np.sqrt(schedule.alphas * (1.0 - schedule.alpha_bars))


def prior_kl(schedule: NoiseSchedule, x0):
    """L_T = KL(q(x_T | x_0) || N(0, I)) per example [N] (nats): q(x_T | x_0) = N(√ᾱ_T x_0,
    (1 - ᾱ_T) I) (Ho et al. eq. 4), ᾱ_T the last of the schedule's products."""
    last = schedule.num_steps - 1
    mean = math.sqrt(schedule.alpha_bars[last]) * _float64(x0)
    return _sum_per_example(normal_kl(mean, math.log1p(-schedule.alpha_bars[last]), 0.0, 0.0))


def diffusion_kl(schedule: NoiseSchedule, noise, eps_pred, t, variance: str = "beta_tilde"):
    """L_{t-1} per example [N] (nats) at indices ``t`` >= 1 for x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε with
    ε = ``noise``: KL(q(x_{t-1} | x_t, x_0) || N(μ_θ, sigma_t² I)).

    With x_t built from ε the posterior mean is μ̃ = (x_t - β_t / √(1 - ᾱ_t) ε) / √alpha_t
    (Ho et al. eq. 10), and μ_θ is the same with ε_θ (eq. 11), so
    μ̃ - μ_θ = β_t / (√alpha_t √(1 - ᾱ_t)) (ε_θ - ε) exactly; it is computed in that form, free
    of the cancellation of two nearby means. q's variance is β̃_t; with sigma_t² = β̃_t the term
    is eq. 12's weighted ε error."""
    noise = tf.convert_to_tensor(noise)
    eps_pred = tf.cast(eps_pred, noise.dtype)
    delta = schedule.coefficient(_eps_coefficient(schedule), t, noise) * (eps_pred - noise)
    log_var_q = schedule.coefficient(schedule.posterior_log_variance_clipped, t, noise)
    log_var_p = schedule.coefficient(_log_variance_table(schedule, variance), t, noise)
    return _sum_per_example(normal_kl(delta, log_var_q, 0.0, log_var_p))


def decoder_nll(schedule: NoiseSchedule, x0, x1, eps_pred, variance: str = "beta_tilde"):
    """L_0 = -log p_θ(x_0 | x_1) per example [N] (nats, float64): the discretised Gaussian of
    :func:`discretized_gaussian_log_prob` around μ_θ(x_1, index 0) (Ho et al. eq. 11) with
    variance sigma_1² (β̃ clipped, or β, at index 0)."""
    x1 = tf.convert_to_tensor(x1)
    zero = tf.zeros([tf.shape(x1)[0]], tf.int32)
    eps_pred = tf.cast(eps_pred, x1.dtype)
    alpha = schedule.coefficient(schedule.alphas, zero, x1)
    coef = schedule.coefficient(schedule.betas / np.sqrt(1.0 - schedule.alpha_bars), zero, x1)
    mean = (x1 - coef * eps_pred) / tf.sqrt(alpha)
    log_scale = 0.5 * _log_variance_table(schedule, variance)[0]
    return -_sum_per_example(discretized_gaussian_log_prob(x0, mean, log_scale))


#: How :func:`stratified_timesteps` lays out its strata over t.
SPACINGS = ("log", "uniform")


def strata_edges(num_steps: int, count: int, spacing: str = "log") -> np.ndarray:
    """Edges 1 = e_0 < e_1 < ... < e_count = T of ``count`` contiguous strata [e_j, e_{j+1}) of
    the KL indices 1 .. T-1: sizes that differ by at most one (``"uniform"``), or growing
    geometrically (``"log"``: e_j near T^(j / count), every stratum at least one index wide), so
    the early steps, whose terms are the largest and change fastest, get narrow strata (the
    first ones single steps, summed exactly)."""
    if spacing not in SPACINGS:
        raise ValueError(f"strata spacing {spacing!r} is unknown; use one of {SPACINGS}")
    if not 1 <= count <= num_steps - 1:
        raise ValueError(f"count = {count} strata must lie in 1..T-1 = {num_steps - 1}")
    if spacing == "uniform":
        sizes = [len(a) for a in np.array_split(np.arange(num_steps - 1), count)]
        return np.concatenate([[1], 1 + np.cumsum(sizes)]).astype(np.int64)
    target = np.geomspace(1, num_steps, count + 1)
    edges = np.empty(count + 1, np.int64)
    edges[0], edges[-1] = 1, num_steps
    for j in range(1, count):
        edges[j] = min(max(round(target[j]), edges[j - 1] + 1), num_steps - (count - j))
    return edges


def stratified_timesteps(
    num_steps: int, count: int, n: int, seed: int = 0, spacing: str = "log"
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` steps per example for the KL terms, stratified: indices 1 .. T-1 split into
    ``count`` contiguous strata S_j (:func:`strata_edges`), one index drawn uniformly from each
    S_j for each example (numpy ``seed``). Returns (steps [n, count] int32, weights [n, count] =
    |S_j|): E[|S_j| L_{t_j}] = sum_{t in S_j} L_t, so sum_j |S_j| L_{t_j} is unbiased for the
    sum of the KL terms, whatever the strata."""
    edges = strata_edges(num_steps, count, spacing)
    starts, sizes = edges[:-1], np.diff(edges)
    rng = np.random.default_rng(seed)
    offsets = np.floor(rng.random((n, count)) * sizes).astype(np.int64)
    steps = (starts + np.minimum(offsets, sizes - 1)).astype(np.int32)
    return steps, np.broadcast_to(sizes.astype(np.float64), (n, count)).copy()


def in_bits_per_dim(terms: dict[str, Any], dims: int) -> dict[str, np.ndarray]:
    """Every array of ``terms`` (nats per example) divided by D ln 2: bits per pixel value."""
    return {k: np.asarray(v, np.float64) / (int(dims) * math.log(2.0)) for k, v in terms.items()}


def _bound_function(
    schedule: NoiseSchedule, eps_fn: Callable, conditional: bool, steps_per_call: int, variance
):
    """A compiled function: (x0 [B, ...], labels [B] or None, steps [B, S], seed [2]) ->
    (KL terms [B, S], decoder [B], prior [B]). S is a multiple of ``steps_per_call``; each
    network call evaluates ``steps_per_call`` columns of ``steps`` for the whole batch."""
    c = int(steps_per_call)

    def predict(x_t, t, labels):
        return eps_fn(x_t, t, labels) if conditional else eps_fn(x_t, t)

    @tf.function(reduce_retracing=True, autograph=False)
    def bound(x0, labels, steps, seed):
        batch = tf.shape(x0)[0]
        tile = tf.concat([[c], tf.ones([tf.rank(x0) - 1], tf.int32)], axis=0)
        x_rows = tf.tile(x0, tile)  # row j * B + b = example b, column j of the chunk
        y_rows = None if labels is None else tf.tile(labels, [c])
        chunks = tf.shape(steps)[1] // c

        def body(s, kl):
            t = tf.reshape(tf.transpose(steps[:, s * c : (s + 1) * c]), [-1])
            noise = tf.random.stateless_normal(
                tf.shape(x_rows), seed=seed + tf.stack([0, tf.cast(s, seed.dtype)]), dtype=x0.dtype
            )
            x_t = schedule.add_noise(x_rows, noise, t)
            per_row = diffusion_kl(schedule, noise, predict(x_t, t, y_rows), t, variance)
            return s + 1, kl.write(s, tf.transpose(tf.reshape(per_row, [c, batch])))

        kl = tf.TensorArray(tf.float64, size=chunks, element_shape=tf.TensorShape([None, c]))
        _, kl = tf.while_loop(lambda s, _: s < chunks, body, (tf.constant(0), kl))
        terms = tf.reshape(tf.transpose(kl.stack(), [1, 0, 2]), [batch, chunks * c])
        # the decoder's noise: a stream no chunk uses (chunk indices stay far below 2**20)
        noise = tf.random.stateless_normal(
            tf.shape(x0), seed=seed + tf.constant([0, 2**20], seed.dtype), dtype=x0.dtype
        )
        zero = tf.zeros([batch], tf.int32)
        x1 = schedule.add_noise(x0, noise, zero)
        decoder = decoder_nll(schedule, x0, x1, predict(x1, zero, labels), variance)
        return terms, decoder, prior_kl(schedule, x0)

    return bound


def variational_bound(
    schedule: NoiseSchedule,
    eps_fn: Callable,
    x0: Any,
    *,
    labels: Any = None,
    num_timesteps: int | None = None,
    variance: str = "beta_tilde",
    seed: int = 0,
    spacing: str = "log",
    batch_size: int = 64,
    rows_per_call: int = 256,
) -> dict[str, np.ndarray]:
    """Per-example terms of the DDPM bound (Ho et al. 2020, eq. 5) in nats (float64 [N]):
    ``prior`` L_T, ``diffusion`` sum_{t=2..T} L_{t-1}, ``decoder`` L_0 and ``total``, their sum
    (an upper bound on -log p(x_0) in expectation); with ``num_timesteps=None`` also ``steps``
    [N, T]: L_0 (column 0) and every L_{t-1} (column t - 1). :func:`in_bits_per_dim` converts.

    ``x0``: [N, ...] in [-1, 1], 8-bit data (values are snapped to the nearest of the 256 levels).
    ``eps_fn(x_t, t)`` -> ε_θ, or ``eps_fn(x_t, t, labels)`` when ``labels`` [N] are given.

    Estimators. Each L_{t-1} is a one-sample Monte Carlo estimate over x_t ~ q(x_t | x_0) (seeded
    stateless noise); L_T is exact and L_0 always computed. The sum over t:
    - ``num_timesteps=None``: exact, all T - 1 KL terms (T network evaluations per example);
    - ``num_timesteps=k``: stratified Monte Carlo, k + 1 evaluations per example: indices 1..T-1
      split into k contiguous strata S_j, one t_j uniform in each S_j per example, and
      sum_t L_{t-1} estimated by sum_j |S_j| L_{t_j} (unbiased; :func:`stratified_timesteps`).
      ``spacing="log"`` (default) makes the strata grow geometrically with t, so the large early
      terms are summed (nearly) exactly; ``"uniform"`` gives equal strata. k >= T - 1 is the
      exact sum.

    ``batch_size`` examples go through one compiled call; each network call takes about
    ``rows_per_call`` rows (examples x steps). The result is a pure function of the inputs,
    ``seed`` and ``batch_size``."""
    x0 = np.asarray(x0, np.float32)
    if x0.ndim < 2 or not len(x0):
        raise ValueError(f"x0 must be a non-empty batch [N, ...]; got shape {x0.shape}")
    if np.any(~np.isfinite(x0)) or x0.min() < -1.0 - 1e-3 or x0.max() > 1.0 + 1e-3:
        raise ValueError(
            f"x0 must be finite and in [-1, 1] (images in [0, 1] map to 2 * images - 1); got "
            f"values in [{np.nanmin(x0)}, {np.nanmax(x0)}]"
        )
    half_levels = (LEVELS - 1) / 2.0
    x0 = (np.round((np.clip(x0, -1.0, 1.0) + 1.0) * half_levels) / half_levels - 1.0).astype(
        np.float32
    )
    n, kl_steps = len(x0), schedule.num_steps - 1
    y_all = None if labels is None else np.asarray(labels)
    if y_all is not None and len(y_all) != n:
        raise ValueError(f"{len(y_all)} labels for {n} examples; pass one label per example")
    exact = num_timesteps is None or int(num_timesteps) >= kl_steps
    if not exact and int(num_timesteps) < 1:
        raise ValueError(f"num_timesteps = {num_timesteps} must be >= 1, or None for the exact sum")
    if exact:
        steps = np.broadcast_to(np.arange(1, schedule.num_steps, dtype=np.int32), (n, kl_steps))
        weights = np.ones((n, kl_steps))
    else:
        steps, weights = stratified_timesteps(
            schedule.num_steps, int(num_timesteps), n, seed, spacing
        )
    batch_size = max(1, min(int(batch_size), n))
    columns = steps.shape[1]
    per_call = max(1, min(columns, int(rows_per_call) // batch_size)) if columns else 1
    padded = -(-columns // per_call) * per_call
    bound = _bound_function(schedule, eps_fn, y_all is not None, per_call, variance)
    kl = np.zeros((n, columns))
    decoder, prior = np.zeros(n), np.zeros(n)
    label = f"variational bound, {columns + 1} network evaluations per example, {n} examples"
    with Progress(-(-n // batch_size), label, unit="batches") as bar:
        for b, lo in enumerate(range(0, n, batch_size)):
            hi = min(lo + batch_size, n)
            cols = np.ones((hi - lo, padded), np.int32)  # padding columns: index 1, dropped
            cols[:, :columns] = steps[lo:hi]
            y = None if y_all is None else tf.constant(y_all[lo:hi])
            key = tf.constant([seed, b * 1_000_003], tf.int64)
            terms, dec, pri = bound(tf.constant(x0[lo:hi]), y, tf.constant(cols), key)
            kl[lo:hi] = np.asarray(terms, np.float64)[:, :columns]
            decoder[lo:hi] = np.asarray(dec, np.float64)
            prior[lo:hi] = np.asarray(pri, np.float64)
            bar.update()
    diffusion = np.sum(kl * weights, axis=1)
    result = {
        "prior": prior,
        "diffusion": diffusion,
        "decoder": decoder,
        "total": prior + diffusion + decoder,
    }
    if exact:
        result["steps"] = np.concatenate([decoder[:, None], kl], axis=1)
    return result
