"""Shared benchmark plumbing: machine facts, interleaved timing, markdown reports."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPORTS = Path(__file__).parent / "reports"


# --------------------------------------------------------------------------- recipes

#: The training settings a benchmark reads from a recipe besides its ``model_config``.
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate")


def recipe_settings(name: str) -> dict[str, Any]:
    """A bundled recipe's configuration as a benchmark uses it: the ``model_config``
    (lists as tuples, without ``image_shape``: the benchmarks use the bundled 28x28 digits)
    plus ``epochs``, ``batch_size`` and ``learning_rate`` (constant-rate Adam, the only
    optimizer the benchmarks build). The recipes hold the settings the benchmarks chose,
    so a benchmark and ``zoo train`` train the same model; ``tests/test_recipe_benchmarks.py``
    checks it."""
    from zoo.recipes import load_recipe

    recipe = load_recipe(name)
    optimizer = dict(recipe.optimizer)
    rate = optimizer.pop("learning_rate", None)
    if optimizer.pop("name", "adam") != "adam" or optimizer or not isinstance(rate, float | int):
        raise ValueError(
            f"recipe {name!r}: a benchmark trains with constant-rate Adam; the recipe's "
            f"optimizer is {recipe.optimizer}"
        )
    config = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in recipe.model_config.items()
        if key != "image_shape"
    }
    training = (recipe.epochs, recipe.data["batch_size"], float(rate))
    return {**config, **dict(zip(TRAINING_KEYS, training, strict=True))}


def recipe_training(name: str, overrides: list[str] | None = None) -> tuple[Any, Any, Any, int]:
    """What ``zoo train <name>`` trains, without its logging: the recipe, its model
    built under its ``training.precision`` and compiled as the runner compiles it (the
    recipe's optimizers, one per role, and its
    ``[training]`` speed keys, by the runner's own ``build_optimizers`` and
    ``compile_settings``), the unbatched training data and the steps per epoch.
    ``overrides`` are ``key=value`` strings, as ``zoo train --set`` takes them."""
    from zoo.recipes import load_recipe
    from zoo.recipes.runner import build_data, build_optimizers, compile_settings

    from zoo import registry
    from zoo.precision import precision

    recipe = load_recipe(name, overrides)
    with precision(recipe.training["precision"]):  # layers keep the policy they were built in
        model = registry.load(recipe.model, **recipe.build_config())
        train, _, count = build_data(recipe, tuple(model.image_shape))
        batches = count // recipe.data["batch_size"]
        steps = min(batches, recipe.training["steps_per_epoch"] or batches)
        model.compile(
            **build_optimizers(model, recipe.optimizer, steps * recipe.epochs),
            **compile_settings(recipe.training, steps),
        )
        model.build_optimizers()
    return recipe, model, train, steps


# --------------------------------------------------------------------------- PCA baseline


def pca_fit(examples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, principal directions (rows) and explained-variance ratios, by SVD."""
    flat = examples.reshape(len(examples), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, singular, directions = np.linalg.svd(flat - mean, full_matrices=False)
    variance = singular**2
    return mean, directions, variance / variance.sum()


def pca_components(ratios: np.ndarray, rule: float) -> int:
    """k for a rule: a share of variance (< 1) or a fixed number of components."""
    if rule < 1:
        return int(np.searchsorted(np.cumsum(ratios), rule) + 1)
    return int(rule)


def machine() -> str:
    import keras
    import tensorflow as tf

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}"
    )


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each runner in turn, ``repeats`` rounds (A B A B ...), so drift on a noisy
    machine hits both sides alike. Each runner returns one measurement."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            results[name].append(run())
    return results


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(name: str, title: str, body: str, command: str) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.md"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"# {title}\n\nMade by `{command}` on {stamp}.\n\nMachine: {machine()}.\n\n{body.strip()}\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
