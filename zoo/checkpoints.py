"""Resumable training state: every network, every optimizer, the epoch and the RNG state.

A run's checkpoints are TensorFlow checkpoints (``<run>/checkpoints/ckpt-<n>``),
written atomically by ``tf.train.CheckpointManager`` (the index is replaced
only once the data files are complete).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from zoo.trainers.base import Trainer

CHECKPOINT_DIR = "checkpoints"


class TrainingState:
    """The ``tf.train.Checkpoint`` of a trainer plus the number of finished epochs."""

    def __init__(self, model: Trainer, directory: str | os.PathLike, max_to_keep: int = 3):
        self.model = model
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizers=dict(model.optimizers),
            rng_state=model.seed_generator.state,
            epoch=self.epoch,
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self, epoch: int) -> str:
        self.epoch.assign(epoch)
        return self.manager.save(checkpoint_number=epoch)

    def restore_latest(self) -> int:
        """Restore the newest checkpoint; returns the number of finished epochs (0 if none)."""
        if self.latest is None:
            return 0
        self.model.build_optimizers()  # slots must exist to be restored into
        self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())


class CheckpointEveryEpoch(keras.callbacks.Callback):
    """Writes a :class:`TrainingState` checkpoint at the end of every epoch."""

    def __init__(self, state: TrainingState):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.state.save(epoch + 1)


def find_checkpoint(path: str | os.PathLike) -> str:
    """A checkpoint prefix from a prefix, a checkpoint folder, or a run folder."""
    path = Path(path)
    for folder in (path / CHECKPOINT_DIR, path):
        if folder.is_dir():
            latest = tf.train.latest_checkpoint(str(folder))
            if latest:
                return latest
    if Path(f"{path}.index").exists():
        return str(path)
    raise FileNotFoundError(
        f"no checkpoint at {path}: pass a run folder (holding {CHECKPOINT_DIR}/), a "
        "checkpoint folder, a checkpoint prefix such as runs/x/checkpoints/ckpt-3, a "
        ".weights.h5 file or a .keras file"
    )


def load_weights(model: Trainer, weights: str | os.PathLike) -> None:
    """Load network weights from a ``.weights.h5`` file or a run's checkpoint."""
    weights = str(weights)
    if weights.endswith(".weights.h5"):
        model.load_weights(weights)
        return
    prefix = find_checkpoint(weights)
    status = tf.train.Checkpoint(model=model).restore(prefix)
    status.expect_partial()  # optimizer slots and the epoch are not needed for inference
    status.assert_existing_objects_matched()
