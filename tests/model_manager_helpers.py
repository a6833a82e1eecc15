"""Tiny SavedModel versions for the model manager and batching tests.

Each version answers ``y = x + value`` (so an answer tells which version served it)
and has a ``checked`` signature that asserts ``x >= 0`` in the graph; warmup records
are written with the exporter's own writer (zoo.export.warmup).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf
from zoo.export.warmup import WARMUP_FILE, write_warmup_requests

MODEL = "toy"


def export_version(
    path: Path, value: float, warmup: dict[str, dict[str, np.ndarray]] | None = None
) -> Path:
    """Write a version folder at ``path`` (written beside it, then renamed in, as an
    export that lands atomically)."""

    class Toy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def predict(self, x):
            return {"y": x + value}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def checked(self, x):
            tf.debugging.assert_non_negative(x, message="x must be >= 0")
            return {"y": x + value}

    staging = path.parent.parent / f".staging-{path.parent.name}-{path.name}"
    shutil.rmtree(staging, ignore_errors=True)
    toy = Toy()
    tf.saved_model.save(
        toy, str(staging), signatures={"serving_default": toy.predict, "checked": toy.checked}
    )
    if warmup is not None:
        write_warmup_requests(staging / "assets.extra" / WARMUP_FILE, MODEL, warmup)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(path)
    return path


def write_config(root: Path, policy: str, labels: str = "") -> Path:
    """A models.config at ``root`` serving ``toy`` from ``root/models/toy``."""
    config = root / "models.config"
    config.write_text(
        "model_config_list { config { "
        f'name: "{MODEL}" base_path: "/models/{MODEL}" model_platform: "tensorflow" '
        f"model_version_policy {{ {policy} }} {labels}}} }}\n"
    )
    return config
