"""Diffusion foundations, apart from any network: noise schedules, the forward process
q(x_t | x_0), its posterior, the DDPM and DDIM steps, and the ε/x_0/v conversions
(:mod:`zoo.diffusion.schedules`), plus a compiled DDIM loop (:mod:`zoo.diffusion.samplers`) and
the AnoDDPM anomaly score built on it (:mod:`zoo.diffusion.anomaly`), and the DDPM variational
bound in bits/dim (:mod:`zoo.diffusion.likelihood`).

Importing this package has no side effects."""

from __future__ import annotations

from zoo.diffusion.anomaly import (
    TStarChoice,
    anomaly_timesteps,
    choose_t_star,
    diffusion_anomaly_score,
)
from zoo.diffusion.likelihood import in_bits_per_dim, variational_bound
from zoo.diffusion.samplers import ddim_loop, ddpm_loop
from zoo.diffusion.schedules import (
    NoiseSchedule,
    cosine_alpha_bar,
    cosine_betas,
    ddim_timesteps,
    eps_from_v,
    eps_from_x0,
    linear_betas,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from zoo.diffusion.unet import build_unet

__all__ = [
    "NoiseSchedule",
    "TStarChoice",
    "anomaly_timesteps",
    "build_unet",
    "choose_t_star",
    "cosine_alpha_bar",
    "cosine_betas",
    "ddim_loop",
    "ddim_timesteps",
    "ddpm_loop",
    "diffusion_anomaly_score",
    "eps_from_v",
    "eps_from_x0",
    "in_bits_per_dim",
    "linear_betas",
    "v_from_x0_eps",
    "variational_bound",
    "x0_from_eps",
    "x0_from_v",
]
