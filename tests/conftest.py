"""Shared test helpers: quiet TensorFlow, a fixed batch of real digits, tiny recipes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest

TINY_RECIPE = """
name = "{name}"
model = "{model}"
seed = 3
epochs = {epochs}

[model_config]
image_shape = [28, 28, 1]

[data]
source = "sample"
batch_size = 32

[training]
steps_per_epoch = 3
log_every_steps = 1
verbose = 0

[logging]
num_samples = 4
"""


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """32 real bundled MNIST digits, float32 in [0, 1], shape (32, 28, 28, 1)."""
    from zoo.data import load_sample

    images, _ = load_sample("test")
    return (images[:32] / 255.0).astype("float32")


@pytest.fixture(scope="session")
def digit_labels() -> np.ndarray:
    """The labels of ``digits`` (int64, shape (32,))."""
    from zoo.data import load_sample

    return load_sample("test")[1][:32].astype("int64")


@pytest.fixture
def tiny_recipe(tmp_path: Path):
    """Write a tiny recipe for ``model`` and return its path."""

    def make(
        model: str = "dcgan_tiny", epochs: int = 2, name: str = "tiny", extra: str = ""
    ) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY_RECIPE.format(name=name, model=model, epochs=epochs) + extra)
        return path

    return make
