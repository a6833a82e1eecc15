"""Resumable training state: every network, every optimizer, the epoch and the RNG state.

A run's checkpoints are TensorFlow checkpoints (``<run>/checkpoints/ckpt-<n>``),
written atomically by ``tf.train.CheckpointManager`` (the index is replaced
only once the data files are complete). A checkpoint is never written from
non-finite weights: training that diverges stops with :class:`TrainingDivergedError`
and the last good checkpoint stays the newest.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.trainers.base import Trainer

CHECKPOINT_DIR = "checkpoints"


class TrainingDivergedError(RuntimeError):
    """A loss or a weight became NaN or infinite; nothing was saved after that point."""

    def __init__(self, epoch: int, step: int | str, what: str, last_good: str | None):
        self.epoch, self.step, self.last_good = epoch, step, last_good
        super().__init__(
            f"training diverged at epoch {epoch} step {step} ({what}); last good checkpoint: "
            f"{last_good or 'none'}; lower the learning rate (optimizer.learning_rate) or "
            "check the data for NaN/inf values"
        )


class TrainingState:
    """The ``tf.train.Checkpoint`` of a trainer plus the number of finished epochs.

    Saves go to ``directory``; :meth:`restore_latest` reads ``restore_from`` (default
    ``directory``). A non-chief worker of a multi-worker run saves into a temporary folder
    (the save is a collective operation every worker must call) but resumes from the
    chief's checkpoints (:func:`zoo.distribute.write_dir`).
    """

    def __init__(
        self,
        model: Trainer,
        directory: str | os.PathLike,
        max_to_keep: int = 3,
        restore_from: str | os.PathLike | None = None,
    ):
        self.model = model
        self.restore_from = Path(restore_from if restore_from is not None else directory)
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
        latest = latest_checkpoint(self.restore_from)
        if latest is None:
            return 0
        self.model.build_optimizers()  # slots must exist to be restored into
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())


def first_non_finite_weight(model: keras.Model) -> str | None:
    """The path of the first model variable holding a NaN or infinity (None if all finite)."""
    for variable in model.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable.value))):
            return variable.path
    return None


class CheckpointEveryEpoch(keras.callbacks.Callback):
    """Writes a :class:`TrainingState` checkpoint at the end of every epoch, and stops
    training at the first non-finite loss (checked after every batch) or weight (checked
    before every save) with :class:`TrainingDivergedError`, so no checkpoint ever holds
    non-finite weights and the previous one is kept as the last good one.

    Batch logs hold each tracker's running mean over the epoch: a NaN there means a NaN
    loss at this step or earlier in the epoch, and the error names the first such step.
    """

    def __init__(self, state: TrainingState):
        super().__init__()
        self.state = state
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            number = _as_float(value)
            if number is not None and not math.isfinite(number):
                raise TrainingDivergedError(
                    self.epoch + 1, batch + 1, f"{name} = {number}", self.state.latest
                )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        bad = first_non_finite_weight(self.model)
        if bad is not None:
            raise TrainingDivergedError(
                epoch + 1, "end", f"non-finite weights in {bad}", self.state.latest
            )
        self.state.save(epoch + 1)


def _as_float(value: Any) -> float | None:
    """A scalar log value as a float (None for anything that is not a number)."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(array) if array.ndim == 0 else None


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The newest checkpoint prefix in a checkpoint folder (None if it has none)."""
    return tf.train.latest_checkpoint(str(directory)) if Path(directory).is_dir() else None


def find_checkpoint(path: str | os.PathLike) -> str:
    """A checkpoint prefix from a prefix, a checkpoint folder, or a run folder."""
    path = Path(path)
    for folder in (path / CHECKPOINT_DIR, path):
        latest = latest_checkpoint(folder)
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
