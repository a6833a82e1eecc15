"""The callbacks ``zoo train`` fits with, and the logging a recipe asks for.

- :class:`ZooTensorBoard`: TensorBoard whose ``update_freq`` thins only per-batch
  summaries (every callback's epoch-end images and scalars are kept).
- :class:`ImageGrids`: the image grids the model's task declaration draws, as PNG files
  under ``samples/`` and TensorBoard images.
- :class:`HistoryFile`: ``history.json`` written at each epoch's end.
- :func:`check_logging` refuses logging the model cannot do before the run folder
  exists; :func:`logging_callbacks` builds the image, latent-space and sample-quality
  loggers a recipe's ``[logging]`` table asks for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from zoo.recipes.recipe import Recipe, RecipeError

from zoo import data as zdata
from zoo.data.batches import unpack_batch
from zoo.fileio import atomic_write_text
from zoo.tasks import Generator, declaration_of
from zoo.trainers.base import Trainer

__all__ = [
    "HistoryFile",
    "ImageGrids",
    "ZooTensorBoard",
    "check_logging",
    "latent_examples",
    "logging_callbacks",
    "take_images",
    "take_pairs",
]


class ZooTensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` whose ``update_freq = N`` thins only the per-batch
    summaries: everything written outside a training batch (``epoch_*`` and validation
    scalars, and every other callback's ``on_epoch_end`` images and metrics) is recorded.

    Keras 3 keeps ``tf.summary.record_if(step % N == 0)`` of the last batch active until
    the next batch, so when the steps per epoch are not a multiple of N the epoch-end
    summaries of every callback are silently dropped. Between batches this callback
    enters ``record_if(True)``; :meth:`close` unwinds the summary contexts and closes the
    writers after a failed ``fit`` (Keras calls ``on_train_end`` only on success).

    With ``steps_per_execution = k`` Keras calls the batch hooks once per k steps but
    counts them as one step; here per-step scalars carry the training step they end on,
    and a call is recorded when a multiple of N falls among its k steps.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._between_batches: Any = None

    def _record_between_batches(self, on: bool) -> None:
        if on and self._between_batches is None and self.update_freq != "epoch":
            self._between_batches = tf.summary.record_if(True)
            self._between_batches.__enter__()
        elif not on and self._between_batches is not None:
            self._between_batches.__exit__(None, None, None)
            self._between_batches = None

    def _steps_per_call(self) -> int:
        """Training steps one ``on_train_batch_*`` call covers (``steps_per_execution``)."""
        return max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)

    def _push_writer(self, writer: Any, step: int) -> None:
        """Keras' writer context, recording when a multiple of ``update_freq`` falls among
        the steps this call covers (Keras tests ``step % update_freq`` of the call's count,
        which with ``steps_per_execution = k`` logs at step ``k * update_freq``)."""
        if self.update_freq == "epoch":
            return
        covered = self._steps_per_call() if writer is self._train_writer else 1
        freq = self.update_freq
        context = (
            writer.as_default(step),
            tf.summary.record_if(lambda: step // freq > (step - covered) // freq),
        )
        self._prev_summary_state.append(context)
        for part in context:
            part.__enter__()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._record_between_batches(False)
        # Keras counts one step per call; a call runs steps_per_execution of them, so the
        # per-step scalars are labelled with the training step they end on.
        self._global_train_batch += self._steps_per_call() - 1
        super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        self._record_between_batches(True)

    def on_test_end(self, logs: dict | None = None) -> None:
        # Swap Keras' validation context (recording on test-step multiples) for one that
        # records, in place, so the contexts still unwind in order when Keras pops it.
        if self.update_freq != "epoch":
            self._pop_writer()
            context = (
                self._val_writer.as_default(self._global_test_batch),
                tf.summary.record_if(True),
            )
            for part in context:
                part.__enter__()
            self._prev_summary_state.append(context)
        super().on_test_end(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._record_between_batches(False)
        super().on_train_end(logs)

    def close(self) -> None:
        """Undo every summary context this callback entered and close its writers."""
        self._record_between_batches(False)
        while self._prev_summary_state:
            self._pop_writer()
        self._close_writers()


class ImageGrids(keras.callbacks.Callback):
    """Every N epochs: a grid of samples from fixed latent points and a grid of
    reconstructions of fixed validation images, as PNG files and TensorBoard images.

    Fixed inputs are drawn once from numpy, so logging never moves the trainer's RNG.
    """

    def __init__(
        self,
        run_dir: Path,
        images: np.ndarray,
        num_samples: int,
        every: int,
        seed: int,
        ncols: int | None = None,
        targets: np.ndarray | None = None,
    ):
        super().__init__()
        self.ncols = ncols
        self.targets = targets
        self.folder = run_dir / "samples"
        self.every = max(int(every), 1)
        self.images = images
        self.num_samples = num_samples
        self.seed = seed
        self.writer = tf.summary.create_file_writer(str(run_dir / "train"))
        self.written: list[Path] = []

    def grids(self) -> dict[str, np.ndarray]:
        """The grids the model's task declaration draws (samples from fixed noise;
        reconstructions or translations of the fixed images beside them)."""
        declaration = declaration_of(self.model)
        return declaration.image_grids(self.images, self.num_samples, self.seed, self.targets)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        grids = self.grids()
        if grids:
            self.folder.mkdir(parents=True, exist_ok=True)
        for kind, images in grids.items():
            ncols = {"reconstructions": 16, "translations": 6}.get(kind, self.ncols)
            grid = zdata.image_grid(images, ncols=ncols)
            path = self.folder / f"{kind}_epoch{epoch + 1:03d}.png"
            zdata.save_png(grid, path)
            self.written.append(path)
            with self.writer.as_default(), tf.summary.record_if(True):  # see ZooTensorBoard
                tf.summary.image(kind, grid[None].astype("float32") / 255.0, step=epoch + 1)
        self.writer.flush()


def take_images(ds: tf.data.Dataset, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` images from an unbatched dataset (labels dropped), shuffled with ``seed``."""
    taken = ds.shuffle(4096, seed=seed).take(int(n)).map(lambda *x: unpack_batch(x)[0])
    return np.stack(list(taken.as_numpy_iterator())).astype("float32")


def take_pairs(ds: tf.data.Dataset, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` (source, target) pairs of an unbatched dataset of pairs, shuffled."""
    taken = list(ds.shuffle(4096, seed=seed).take(int(n)).as_numpy_iterator())
    sources, targets = zip(*taken, strict=True)
    return np.stack(sources).astype("float32"), np.stack(targets).astype("float32")


def check_logging(model: Trainer, recipe: Recipe) -> Any:
    """Refuse logging the model cannot do, before the run folder exists; returns the
    feature extractor for sample-quality metrics (or None when they are off)."""
    logging = recipe.logging
    if not logging["quality_every_epochs"]:
        return None
    if not declaration_of(model).implements(Generator):
        raise RecipeError(
            f"logging.quality_every_epochs: {model.name!r} does not generate images; set it to 0"
        )
    from zoo.metrics import FeatureExtractorUnavailableError, get_feature_extractor

    name = logging["feature_extractor"]
    if name == "mnist_classifier" and tuple(model.image_shape) != (28, 28, 1):
        raise RecipeError(
            "logging.feature_extractor = 'mnist_classifier' embeds 28x28x1 digits; this model "
            f"makes {'x'.join(map(str, model.image_shape))} images. Set "
            "logging.feature_extractor = 'inception_v3' (needs its ImageNet weights) or "
            "logging.quality_every_epochs = 0"
        )
    try:
        return get_feature_extractor(name)
    except (ValueError, FeatureExtractorUnavailableError) as error:
        raise RecipeError(f"logging.feature_extractor: {error}") from None


def latent_examples(
    recipe: Recipe, image_shape: tuple[int, ...], fallback: tf.data.Dataset
) -> tf.data.Dataset:
    """Held-out examples for the latent plots: labelled (for the scatter's colours) when
    the source has labels, whatever ``data.with_labels`` says; else ``fallback``."""
    d = recipe.data
    if d["source"] not in ("sample", "tfds"):
        return fallback
    extra = {"name": d["name"]} if d["source"] == "tfds" else {}
    split = d["validation_split"] or d["split"]
    return zdata.make_dataset(
        d["source"], split=split, image_shape=image_shape, with_labels=True, **extra
    )


def logging_callbacks(
    model: Trainer,
    recipe: Recipe,
    run_dir: Path,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    extractor: Any,
) -> list[keras.callbacks.Callback]:
    """Image grids for every image model; latent-space grids for VAEs; sample-quality
    metrics for generators when ``logging.quality_every_epochs`` is set."""
    logging, declaration = recipe.logging, declaration_of(model)
    preview = val_ds if val_ds is not None else train_ds
    takes_images = declaration.examples is not None and declaration.examples.key == "images"
    if not (takes_images or declaration.implements(Generator)):  # e.g. sequence models
        return []
    out: list[keras.callbacks.Callback] = []
    if logging["sample_every_epochs"] and logging["num_samples"]:
        if declaration.pair_shapes is not None:  # 8 fixed held-out pairs: 8 rows of 3
            images, targets = take_pairs(preview, 8)
        else:  # 16 fixed images spread over the split
            images, targets = take_images(preview, 16), None
        out.append(
            ImageGrids(
                run_dir,
                images,
                logging["num_samples"],
                logging["sample_every_epochs"],
                recipe.seed,
                ncols=declaration.num_classes or None,  # conditional: one class per column
                targets=targets,
            )
        )
    if declaration.latent_plots and logging["latent_every_epochs"]:
        from zoo.latent import LatentSpaceLogger

        examples = latent_examples(recipe, tuple(model.image_shape), preview)
        out.append(
            LatentSpaceLogger.from_dataset(
                run_dir, examples, logging["latent_examples"], seed=recipe.seed,
                every=logging["latent_every_epochs"],
            )
        )  # fmt: skip
    if extractor is not None:
        from zoo.metrics.quality_callback import SampleQualityCallback

        n = logging["quality_samples"]
        reference = take_images(train_ds, n)
        heldout = take_images(val_ds, n) if val_ds is not None else take_images(train_ds.skip(n), n)
        out.append(
            SampleQualityCallback(
                run_dir / "train", logging["quality_every_epochs"], n, seed=recipe.seed,
                real_reference=reference, real_heldout=heldout, feature_extractor=extractor,
            )
        )  # fmt: skip
    return out


class HistoryFile(keras.callbacks.Callback):
    """Appends each epoch's logs to ``history.json`` as the epoch ends, so a killed run
    keeps its history; on resume, entries past the restored epoch are dropped."""

    def __init__(self, path: Path, initial_epoch: int):
        super().__init__()
        self.path = path
        previous = json.loads(path.read_text()) if path.exists() else {}
        self.history = {k: v[:initial_epoch] for k, v in previous.items()}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        atomic_write_text(self.path, json.dumps(self.history, indent=1))
