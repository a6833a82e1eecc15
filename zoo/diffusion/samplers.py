"""A DDIM sampling loop compiled as one ``keras.ops.fori_loop``, never a Python loop of ``predict``.

The network enters only as ``eps_fn(x_t, t) -> ε_θ``, so the loop knows no architecture: the
trainer and export build it around their own denoiser (and classifier-free guidance, if any).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from keras import ops

from zoo.diffusion.schedules import NoiseSchedule

__all__ = ["ddim_loop", "ddpm_loop"]


def ddim_loop(
    schedule: NoiseSchedule,
    eps_fn: Callable,
    x,
    timesteps: np.ndarray,
    targets: np.ndarray,
    eta: float = 0.0,
    seed=None,
):
    """Run DDIM steps ``timesteps[i] -> targets[i]`` for i = 0 .. K-1 from ``x`` (Song et al. 2021,
    eq. 12) inside ``keras.ops.fori_loop``, calling ``eps_fn(x_t, t)`` with ``t`` an int32 [N]
    tensor once per step.

    ``(timesteps, targets)`` from :func:`zoo.diffusion.schedules.ddim_timesteps` sample (T-1 -> -1);
    swapped and reversed they encode (x_0 -> x_{T-1}, η = 0 only). η > 0 needs ``seed``, an int
    tensor of shape [2]: step i draws ``tf.random.stateless_normal`` with seed ``seed + [0, i]``,
    so the result is a pure function of its inputs (same in eager, ``tf.function`` and export)."""
    timesteps = np.asarray(timesteps, np.int32)
    targets = np.asarray(targets, np.int32)
    if timesteps.shape != targets.shape or timesteps.ndim != 1:
        raise ValueError(
            f"timesteps {timesteps.shape} and targets {targets.shape} must be 1-D of equal length; "
            "use ddim_timesteps(num_steps, K)"
        )
    if isinstance(eta, (int, float)) and eta > 0 and seed is None:
        raise ValueError(f"DDIM with eta = {eta} > 0 draws noise; pass seed= (int tensor [2])")
    sources_table = ops.convert_to_tensor(timesteps)
    targets_table = ops.convert_to_tensor(targets)
    batch = ops.shape(x)[0]

    def body(i, x_t):
        t = ops.full((batch,), sources_table[i], dtype="int32")
        t_prev = ops.full((batch,), targets_table[i], dtype="int32")
        eps = ops.cast(eps_fn(x_t, t), x_t.dtype)
        noise = None
        if seed is not None:
            step_seed = ops.cast(seed, "int32") + ops.stack([0, ops.cast(i, "int32")])
            noise = tf.random.stateless_normal(ops.shape(x_t), seed=step_seed, dtype=x_t.dtype)
        return schedule.ddim_step(x_t, eps, t, t_prev, eta=eta, noise=noise)

    return ops.fori_loop(0, len(timesteps), body, x)


def ddpm_loop(
    schedule: NoiseSchedule,
    eps_fn: Callable,
    x,
    seed,
    variance: str = "beta",
    clip_x0: float | None = None,
):
    """Ancestral sampling x_{T-1} -> x_{-1} over all T steps (Ho et al. 2020, Algorithm 2)
    inside one ``keras.ops.fori_loop``; step i (t = T-1-i) draws its noise with
    ``tf.random.stateless_normal`` seeded ``seed + [0, i]`` (``seed``: int tensor [2])."""
    batch = ops.shape(x)[0]
    last = schedule.num_steps - 1

    def body(i, x_t):
        t = ops.full((batch,), last - i, dtype="int32")
        eps = ops.cast(eps_fn(x_t, t), x_t.dtype)
        step_seed = ops.cast(seed, "int32") + ops.stack([0, ops.cast(i, "int32")])
        noise = tf.random.stateless_normal(ops.shape(x_t), seed=step_seed, dtype=x_t.dtype)
        return schedule.ddpm_step(x_t, eps, t, noise, variance=variance, clip_x0=clip_x0)

    return ops.fori_loop(0, schedule.num_steps, body, x)
