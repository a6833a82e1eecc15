"""Noise schedules and single diffusion steps, apart from the network.

Index convention: ``t`` runs over 0 .. T-1 and ``alpha_bar[t] = prod_{s <= t} (1 - beta_s)``,
so index ``t`` is step ``t + 1`` of Ho et al. (2020). Index -1 means "clean data":
``alpha_bar[-1] = 1`` (:meth:`NoiseSchedule.alpha_bar_at` handles it), which is where a DDIM
trajectory ends.

References (equation numbers as printed):
- Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models" (DDPM): eq. 4 (q(x_t|x_0)),
  eq. 6-7 (the posterior), eq. 11 and Algorithm 2 (the ancestral step).
- Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", eq. 17 (cosine).
- Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models" (DDIM), eq. 12 and 16.
- Salimans & Ho (2022), "Progressive Distillation for Fast Sampling of Diffusion Models", §4 (v).

The tables are computed once in float64 numpy at construction; every per-step function uses
``keras.ops`` only, so it runs inside a ``tf.function`` / ``keras.ops.fori_loop``.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = [
    "NoiseSchedule",
    "cosine_alpha_bar",
    "cosine_betas",
    "ddim_timesteps",
    "eps_from_v",
    "eps_from_x0",
    "linear_betas",
    "v_from_x0_eps",
    "x0_from_eps",
    "x0_from_v",
]

KINDS = ("linear", "cosine")
VARIANCES = ("beta", "beta_tilde")


def linear_betas(num_steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    """β_1..β_T rising linearly from ``start`` to ``end`` (Ho et al. 2020, §4: 1e-4 to 0.02,
    T = 1000)."""
    return np.linspace(start, end, num_steps, dtype=np.float64)


def cosine_alpha_bar(t: np.ndarray, num_steps: int, s: float = 0.008) -> np.ndarray:
    """ᾱ(t) = f(t) / f(0), f(t) = cos²(((t / T) + s) / (1 + s) · π / 2), for real ``t`` in [0, T]
    (Nichol & Dhariwal 2021, eq. 17)."""
    t = np.asarray(t, dtype=np.float64)

    def f(u):
        return np.cos((u / num_steps + s) / (1 + s) * math.pi / 2) ** 2

    return f(t) / f(np.zeros_like(t))


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """β_t = 1 - ᾱ(t) / ᾱ(t - 1) for t = 1..T from :func:`cosine_alpha_bar`, clipped at ``max_beta``
    to avoid the singularity at t = T (Nichol & Dhariwal 2021, §3.2)."""
    steps = np.arange(num_steps + 1, dtype=np.float64)
    alpha_bar = cosine_alpha_bar(steps, num_steps, s)
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def ddim_timesteps(num_steps: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """An evenly spaced sub-sequence of ``count`` of the ``num_steps`` indices, for DDIM sampling
    (Song et al. 2021, §4.2 and Appendix C.2, the "linear" τ).

    Returns ``(timesteps, previous)``, int32 arrays of length ``count`` in sampling order
    (descending): step ``i`` goes from ``timesteps[i]`` to ``previous[i]``; ``previous[-1]`` is -1
    (clean data). ``timesteps`` always starts at T - 1 and ends at 0."""
    if not 1 <= count <= num_steps:
        raise ValueError(
            f"count = {count} DDIM steps must lie in 1..num_steps = {num_steps}; "
            "pass a count no larger than the schedule's num_steps"
        )
    timesteps = np.round(np.linspace(num_steps - 1, 0, count)).astype(np.int32)
    if count == 1:
        timesteps = np.array([num_steps - 1], np.int32)
    previous = np.append(timesteps[1:], -1).astype(np.int32)
    return timesteps, previous


# ε / x_0 / v conversions. `alpha_bar` broadcasts against x (see NoiseSchedule.coefficient).
def x0_from_eps(x_t, eps, alpha_bar):
    """x̂_0 = (x_t - √(1 - ᾱ) ε) / √ᾱ, from x_t = √ᾱ x_0 + √(1 - ᾱ) ε (Ho et al. 2020, eq. 4, 15)."""
    return (x_t - ops.sqrt(1.0 - alpha_bar) * eps) / ops.sqrt(alpha_bar)


def eps_from_x0(x_t, x0, alpha_bar):
    """ε = (x_t - √ᾱ x_0) / √(1 - ᾱ) (Ho et al. 2020, eq. 4 solved for ε)."""
    return (x_t - ops.sqrt(alpha_bar) * x0) / ops.sqrt(1.0 - alpha_bar)


def v_from_x0_eps(x0, eps, alpha_bar):
    """v = √ᾱ ε - √(1 - ᾱ) x_0 (Salimans & Ho 2022, §4: v = alpha_t ε - sigma_t x)."""
    return ops.sqrt(alpha_bar) * eps - ops.sqrt(1.0 - alpha_bar) * x0


def x0_from_v(x_t, v, alpha_bar):
    """x_0 = √ᾱ x_t - √(1 - ᾱ) v (Salimans & Ho 2022, §4: x̂ = alpha_t z_t - sigma_t v̂)."""
    return ops.sqrt(alpha_bar) * x_t - ops.sqrt(1.0 - alpha_bar) * v


def eps_from_v(x_t, v, alpha_bar):
    """ε = √(1 - ᾱ) x_t + √ᾱ v (Salimans & Ho 2022, §4, with alpha_t² + sigma_t² = 1)."""
    return ops.sqrt(1.0 - alpha_bar) * x_t + ops.sqrt(alpha_bar) * v


class NoiseSchedule:
    """A discrete β schedule of ``num_steps`` steps and the diffusion maths built on it.

    Serialisable: ``NoiseSchedule.from_config(schedule.get_config())`` rebuilds it. ``t`` arguments
    are int tensors of shape [N] (one step per example) or scalars; per-step coefficients are
    gathered and reshaped to broadcast against ``x`` of any rank."""

    def __init__(
        self,
        kind: str = "linear",
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        max_beta: float = 0.999,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"noise schedule kind {kind!r} is unknown; use one of {KINDS}")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps = {num_steps} must be a positive number of steps")
        self.kind, self.num_steps = kind, int(num_steps)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.cosine_s, self.max_beta = float(cosine_s), float(max_beta)
        if kind == "linear":
            betas = linear_betas(self.num_steps, self.beta_start, self.beta_end)
        else:
            betas = cosine_betas(self.num_steps, self.cosine_s, self.max_beta)
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError(f"every beta must lie in (0, 1); got {betas.min()}..{betas.max()}")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = np.cumprod(self.alphas)
        #: ᾱ_{t-1}, with ᾱ before the first step = 1.
        self.alpha_bars_prev = np.append(1.0, self.alpha_bars[:-1])
        # Posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7).
        self.posterior_variance = betas * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)
        # β̃ at the first step is 0; its log is clipped to β̃ of the second step, as Ho et al.'s code.
        first = self.posterior_variance[1] if self.num_steps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        # Tables over t = -1 .. T-1 (index t + 1), t = -1 being clean data. 1 - ᾱ and log ᾱ are
        # kept apart from ᾱ so float32 steps avoid the cancellation of 1 - ᾱ near t = 0.
        self._alpha_bar_ext = np.append(1.0, self.alpha_bars)
        self._one_minus_alpha_bar_ext = np.append(0.0, 1.0 - self.alpha_bars)
        self._log_alpha_bar_ext = np.append(0.0, np.cumsum(np.log(self.alphas)))
        self.posterior_mean_coef_x0 = (
            betas * np.sqrt(self.alpha_bars_prev) / (1.0 - self.alpha_bars)
        )
        self.posterior_mean_coef_xt = (
            (1.0 - self.alpha_bars_prev) * np.sqrt(self.alphas) / (1.0 - self.alpha_bars)
        )

    # --- serialisation ---------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_steps": self.num_steps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "cosine_s": self.cosine_s,
            "max_beta": self.max_beta,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        return cls(**config)

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.kind!r}, num_steps={self.num_steps})"

    # --- gathering -------------------------------------------------------------------------
    @staticmethod
    def coefficient(table: np.ndarray, t, x):
        """``table[t]`` as ``x``'s dtype, shaped [N, 1, ..., 1] to broadcast against ``x``."""
        dtype = keras.backend.standardize_dtype(x.dtype)
        values = ops.take(ops.convert_to_tensor(table.astype(np.float32)), ops.cast(t, "int32"))
        values = ops.cast(values, dtype)
        if len(ops.shape(values)) == 0:
            return values
        return ops.reshape(values, (-1,) + (1,) * (len(ops.shape(x)) - 1))

    def alpha_bar_at(self, t, x):
        """ᾱ_t for t in -1 .. T-1 (ᾱ_{-1} = 1: clean data), broadcast against ``x``."""
        return self.coefficient(self._alpha_bar_ext, ops.cast(t, "int32") + 1, x)

    def one_minus_alpha_bar_at(self, t, x):
        """1 - ᾱ_t for t in -1 .. T-1, from a float64 table (exact near t = 0 in float32)."""
        return self.coefficient(self._one_minus_alpha_bar_ext, ops.cast(t, "int32") + 1, x)

    # --- forward process and posterior -----------------------------------------------------
    def add_noise(self, x0, noise, t):
        """A sample of q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I): √ᾱ_t x_0 + √(1 - ᾱ_t) ε
        (Ho et al. 2020, eq. 4)."""
        alpha_bar = self.coefficient(self.alpha_bars, t, x0)
        return ops.sqrt(alpha_bar) * x0 + ops.sqrt(1.0 - alpha_bar) * noise

    def posterior(self, x0, x_t, t):
        """``(mean, variance, log_variance_clipped)`` of q(x_{t-1} | x_t, x_0) (Ho et al. 2020,
        eq. 6-7):
        mean = β_t √ᾱ_{t-1} / (1 - ᾱ_t) x_0 + (1 - ᾱ_{t-1}) √alpha_t / (1 - ᾱ_t) x_t,
        variance β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) β_t."""
        mean = (
            self.coefficient(self.posterior_mean_coef_x0, t, x_t) * x0
            + self.coefficient(self.posterior_mean_coef_xt, t, x_t) * x_t
        )
        variance = self.coefficient(self.posterior_variance, t, x_t)
        log_variance = self.coefficient(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # --- samplers' single steps ------------------------------------------------------------
    def ddpm_step(self, x_t, eps, t, noise, variance: str = "beta", clip_x0: float | None = None):
        """One ancestral step x_t -> x_{t-1} (Ho et al. 2020, Algorithm 2 / eq. 11):
        x_{t-1} = (x_t - β_t / √(1 - ᾱ_t) ε_θ) / √alpha_t + sigma_t z,
        with sigma_t² = β_t (``variance="beta"``) or β̃_t (``"beta_tilde"``),
        and no noise at the last step (t = 0).

        ``clip_x0``: clip x̂_0 to [-clip_x0, clip_x0] and take the posterior mean at x̂_0 instead
        (equal to eq. 11 when nothing is clipped; the usual choice for images in [-1, 1])."""
        if variance not in VARIANCES:
            raise ValueError(f"DDPM variance {variance!r} is unknown; use one of {VARIANCES}")
        if clip_x0 is None:
            beta = self.coefficient(self.betas, t, x_t)
            alpha_bar = self.coefficient(self.alpha_bars, t, x_t)
            alpha = self.coefficient(self.alphas, t, x_t)
            mean = (x_t - beta / ops.sqrt(1.0 - alpha_bar) * eps) / ops.sqrt(alpha)
        else:
            x0 = x0_from_eps(x_t, eps, self.coefficient(self.alpha_bars, t, x_t))
            mean, _, _ = self.posterior(ops.clip(x0, -clip_x0, clip_x0), x_t, t)
        if variance == "beta":
            log_var = self.coefficient(np.log(self.betas), t, x_t)
        else:
            log_var = self.coefficient(self.posterior_log_variance_clipped, t, x_t)
        nonzero = ops.cast(ops.reshape(ops.cast(t, "int32") > 0, ops.shape(log_var)), x_t.dtype)
        return mean + nonzero * ops.exp(0.5 * log_var) * noise

    def ddim_sigma(self, t, t_prev, eta, x):
        """sigma_τ(η) = η √((1 - ᾱ_prev) / (1 - ᾱ_t)) √(1 - ᾱ_t / ᾱ_prev)
        (Song et al. 2021, eq. 16); η = 1 on the full sequence gives DDPM's β̃_t.
        Zero when t_prev > t (encoding)."""
        log_ratio = self.coefficient(
            self._log_alpha_bar_ext, ops.cast(t, "int32") + 1, x
        ) - self.coefficient(self._log_alpha_bar_ext, ops.cast(t_prev, "int32") + 1, x)
        # 1 - ᾱ_t / ᾱ_prev = -expm1(log ᾱ_t - log ᾱ_prev), without float32 cancellation.
        variance = (
            self.one_minus_alpha_bar_at(t_prev, x)
            / self.one_minus_alpha_bar_at(t, x)
            * -ops.expm1(log_ratio)
        )
        return ops.cast(eta, x.dtype) * ops.sqrt(ops.maximum(variance, 0.0))

    def ddim_step(self, x_t, eps, t, t_prev, eta: float = 0.0, noise=None):
        """One DDIM step x_t -> x_{t_prev} for any t_prev (Song et al. 2021, eq. 12):
        x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - sigma²) ε_θ + sigma z,
        x̂_0 = (x_t - √(1 - ᾱ_t) ε_θ) / √ᾱ_t.

        t_prev = -1 lands on clean data. With η = 0 the step is deterministic and, run with
        t_prev > t, is the DDIM encoder (the discretised ODE of eq. 13 run forwards); η > 0 needs
        ``noise`` (standard normal, x_t's shape)."""
        if noise is None and isinstance(eta, (int, float)) and eta > 0:
            raise ValueError(f"a DDIM step with eta = {eta} > 0 draws noise; pass noise=")
        alpha_bar, alpha_bar_prev = self.alpha_bar_at(t, x_t), self.alpha_bar_at(t_prev, x_t)
        x0 = (x_t - ops.sqrt(self.one_minus_alpha_bar_at(t, x_t)) * eps) / ops.sqrt(alpha_bar)
        sigma = self.ddim_sigma(t, t_prev, eta, x_t)
        remaining = self.one_minus_alpha_bar_at(t_prev, x_t) - sigma**2
        direction = ops.sqrt(ops.maximum(remaining, 0.0)) * eps
        out = ops.sqrt(alpha_bar_prev) * x0 + direction
        if noise is not None:
            out = out + sigma * noise
        return out
