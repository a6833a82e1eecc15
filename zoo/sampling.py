"""Sample grids from trained models (``zoo sample``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zoo import data as zdata
from zoo.runs import load_run


def fixed_latents(n: int, latent_dim: int, seed: int) -> np.ndarray:
    """Latent points drawn from N(0, I) by numpy: the same seed gives the same grid."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype("float32")


def model_images(model, n: int, seed: int) -> np.ndarray:
    """Samples from a generator or VAE; for an autoencoder, originals and reconstructions
    of bundled MNIST digits, interleaved."""
    if hasattr(model, "generate"):
        return np.asarray(model.generate(fixed_latents(n, model.latent_dim, seed)))
    pairs = max(n // 2, 1)
    images = np.stack(
        [x.numpy() for x in zdata.from_sample("test", image_shape=model.image_shape).take(pairs)]
    )
    recon = np.asarray(model.reconstruct(images))
    return np.stack([images, recon], axis=1).reshape(-1, *images.shape[1:])


def sample_grid(
    run: str | os.PathLike, *, n: int = 64, seed: int = 0, out: str | os.PathLike = "samples.png"
) -> Path:
    """Write a PNG grid for a run folder, ``.keras`` file or registered model name
    (conditional models: one class per column)."""
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    model = load_run(run)
    # conditional models sample class i mod num_classes: one class per column
    ncols = getattr(model, "num_classes", 0) if getattr(model, "conditional", False) else 0
    grid = zdata.image_grid(model_images(model, n, seed), ncols=ncols or None)
    return Path(zdata.save_png(grid, out))
