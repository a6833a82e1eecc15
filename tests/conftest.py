"""Shared test helpers: quiet TensorFlow, a fixed batch of real digits, tiny recipes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import recipe_toml

#: Logical CPU devices every test process has (tf.distribute tests mirror over them).
LOGICAL_CPUS = 2


def pytest_configure(config: pytest.Config) -> None:
    """Split the CPU into ``LOGICAL_CPUS`` logical devices before TensorFlow starts, as
    Keras's own distribute tests do, so ``MirroredStrategy`` has two replicas on a machine
    without GPUs. Ops without a device scope still run on ``/CPU:0``."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(LOGICAL_CPUS)]
    )


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
        path.write_text(recipe_toml(name, model, epochs=epochs) + extra)
        return path

    return make
