"""Shared benchmark plumbing: machine facts, interleaved timing, markdown reports."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPORTS = Path(__file__).parent / "reports"


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
