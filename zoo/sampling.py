"""Sample grids from trained models (``zoo sample``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo import data as zdata
from zoo.tasks import Generator, declaration_of

if TYPE_CHECKING:  # pragma: no cover
    import keras


class SampleError(ValueError):
    """``zoo sample`` on a model that neither generates nor maps images to images."""


def model_images(
    model, n: int, seed: int, pairs: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """What the model's task declaration draws: samples from fixed latent points for a
    generator; for a model that reconstructs or translates images, bundled MNIST test
    digits beside their reconstructions or translations, interleaved; ``pairs`` (held-out
    sources and targets, for models trained on pairs) give rows of source | output |
    target."""
    declaration = declaration_of(model)
    if declaration.implements(Generator):
        return declaration.sample_images(n, seed)
    if pairs is not None:
        return next(iter(declaration.image_grids(pairs[0], 0, seed, pairs[1]).values()))
    kind = declaration.examples
    if kind is not None and kind.key == "images":
        digits = zdata.from_sample("test", image_shape=kind.shape).take(max(n // 2, 1))
        grids = declaration.image_grids(np.stack([x.numpy() for x in digits]), 0, seed)
        if grids:
            return next(iter(grids.values()))
    raise SampleError(
        f"{model.name} ({declaration.family}) neither generates nor maps images to images, so "
        "there is nothing to draw; use zoo evaluate for it"
    )


def sample_grid(
    model: keras.Model,
    *,
    n: int = 64,
    seed: int = 0,
    out: str | os.PathLike = "samples.png",
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a PNG grid of :func:`model_images` (conditional models: one class per
    column). ``zoo sample`` loads the model with ``zoo.load_run``."""
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    # conditional models sample class i mod num_classes: one class per column
    ncols = declaration_of(model).num_classes or (6 if pairs is not None else None)
    grid = zdata.image_grid(model_images(model, n, seed, pairs), ncols=ncols or None)
    return Path(zdata.save_png(grid, out))
