"""The runner behind ``zoo train``: a recipe in, a run folder out.

A run folder holds ``recipe.toml`` (the resolved recipe), TensorBoard logs
(``train/``, ``validation/``: per-step and per-epoch scalars, image grids,
hyper-parameters), ``samples/*.png``, ``checkpoints/`` (every epoch: networks,
optimizers, epoch, RNG state) and ``model.keras`` at the end.

A run stops at the first non-finite loss or weight (``TrainingDivergedError``, the last
good checkpoint kept); a run that fails before its first checkpoint removes the folder
it created, so a rerun needs neither ``--resume`` nor ``--overwrite``. The callbacks a
run fits with (TensorBoard, image grids, ``history.json``, the recipe's ``[logging]``)
are in :mod:`zoo.recipes.callbacks`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from zoo.recipes.callbacks import HistoryFile, ZooTensorBoard, check_logging, logging_callbacks
from zoo.recipes.distributed_loop import fit_for
from zoo.recipes.pair_data import build_pair_data
from zoo.recipes.recipe import Recipe, RecipeError, load_recipe

from zoo import data as zdata
from zoo import registry
from zoo.checkpoints import CheckpointEveryEpoch, TrainingState, latest_checkpoint
from zoo.distribute import (
    check_global_batch,
    is_chief,
    make_strategy,
    remove_write_dir,
    write_dir,
)
from zoo.fileio import atomic_path, atomic_write_text
from zoo.precision import precision
from zoo.tasks import declaration_of
from zoo.trainers.base import Trainer
from zoo.translation.schedules import LinearDecay

#: Learning-rate schedules by recipe name; each takes ``initial_learning_rate`` and
#: ``decay_steps`` (the run's steps unless the recipe sets them).
SCHEDULES: dict[str, type] = {
    "cosine": keras.optimizers.schedules.CosineDecay,
    "exponential": keras.optimizers.schedules.ExponentialDecay,
    "linear_decay": LinearDecay,  # CycleGAN: constant for hold_fraction (0.5), then to 0
}


@dataclass
class RunResult:
    run_dir: Path
    model: Trainer
    history: dict[str, list[float]]
    initial_epoch: int


# -- optimizers -------------------------------------------------------------------------
def build_optimizer(
    spec: dict[str, Any], total_steps: int, where: str
) -> keras.optimizers.Optimizer:
    """``{name = "adam", learning_rate = 2e-4, beta_1 = 0.5}``; ``learning_rate`` may be a
    table ``{schedule = "cosine", initial = 1e-3}`` (decay over the whole run by default)."""
    spec = dict(spec)
    name = spec.pop("name", "adam")
    lr = spec.get("learning_rate")
    if isinstance(lr, dict):
        lr = dict(lr)
        kind = lr.pop("schedule", None)
        if kind not in SCHEDULES:
            raise RecipeError(
                f"{where}.learning_rate.schedule must be one of "
                f"{', '.join(SCHEDULES)}; got {kind!r}"
            )
        initial = lr.pop("initial", 1e-3)
        lr.setdefault("decay_steps", total_steps)
        if kind == "exponential":
            lr.setdefault("decay_rate", 0.1)
        try:
            spec["learning_rate"] = SCHEDULES[kind](initial_learning_rate=initial, **lr)
        except (TypeError, ValueError) as error:
            raise RecipeError(f"{where}.learning_rate: {error}") from None
    try:
        cls = type(keras.optimizers.get(name))
        return cls(**spec)
    except (TypeError, ValueError) as error:
        raise RecipeError(
            f"{where}: cannot build optimizer {name!r} with {spec}: {error}. Use a Keras optimizer "
            "name (adam, adamw, rmsprop, sgd, ...) and its constructor arguments"
        ) from None


def build_optimizers(model: Trainer, spec: dict[str, Any], total_steps: int) -> dict[str, Any]:
    """One optimizer per role of the trainer; a flat table serves a single-role trainer."""
    roles = list(model.OPTIMIZERS)
    short = {role.removesuffix("_optimizer"): role for role in roles}
    if not spec:
        return {}
    # a flat table's learning_rate may itself be a table (a schedule)
    nested = all(isinstance(v, dict) for v in spec.values()) and "learning_rate" not in spec
    if len(roles) == 1 and not nested:
        return {roles[0]: build_optimizer(spec, total_steps, "optimizer")}
    unknown = [k for k in spec if k not in short]
    if not nested or unknown:
        raise RecipeError(
            f"model {model.name!r} trains with {len(roles)} optimizer(s); give one table per role: "
            + ", ".join(f"[optimizer.{s}]" for s in short)
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return {short[k]: build_optimizer(v, total_steps, f"optimizer.{k}") for k, v in spec.items()}


def compile_settings(training: dict[str, Any], steps: int) -> dict[str, Any]:
    """The ``[training]`` speed keys as ``compile`` arguments. ``steps_per_execution``
    becomes the largest divisor of the epoch's ``steps`` not above it, so one execution
    never runs into the next epoch (epoch ends, checkpoints and ``--resume`` stay put)."""
    wanted = min(int(training["steps_per_execution"]), max(int(steps), 1))
    per_call = max(n for n in range(1, wanted + 1) if steps % n == 0) if steps > 0 else 1
    return {"steps_per_execution": per_call, "jit_compile": training["jit_compile"]}


# -- data -----------------------------------------------------------------------------
def keep_classes(ds: tf.data.Dataset, classes: list[int], with_labels: bool) -> tf.data.Dataset:
    """Only the examples whose label is in ``classes`` (one-class training)."""
    wanted = tf.constant(sorted(int(c) for c in classes), tf.int64)
    ds = ds.filter(lambda x, y: tf.reduce_any(tf.equal(tf.cast(y, tf.int64), wanted)))
    return ds if with_labels else ds.map(lambda x, y: x)


def synthetic_sequences(recipe: Recipe, sequence_shape: tuple[int, ...]) -> tf.data.Dataset:
    """Normal series of the documented synthetic generator (no injected anomalies)."""
    steps, features = sequence_shape
    series = zdata.synthetic_series(
        n_series=recipe.data["n_series"], length=steps, n_features=features,
        anomaly_fraction=0.0, seed=recipe.seed,
    )  # fmt: skip
    return zdata.from_series(series.series)


def build_data(
    recipe: Recipe, image_shape: tuple[int, ...]
) -> tuple[tf.data.Dataset, tf.data.Dataset | None, int]:
    """Unbatched train and validation datasets, and the number of training examples."""
    d = recipe.data
    classes = list(d["classes"] or [])
    common = {"image_shape": image_shape, "with_labels": d["with_labels"] or bool(classes)}
    source = d["source"]
    if source in ("sample", "tfds"):
        extra = {"name": d["name"]} if source == "tfds" else {}
        train = zdata.make_dataset(source, split=d["split"], **extra, **common)
        val = (
            zdata.make_dataset(source, split=d["validation_split"], **extra, **common)
            if d["validation_split"]
            else None
        )
    else:
        if source == "synthetic_series":
            if classes:
                raise RecipeError("data.classes does not apply to synthetic_series")
            full = synthetic_sequences(recipe, image_shape)
        elif source == "numpy":
            if not d["path"]:
                raise RecipeError(
                    "data.source = 'numpy' needs data.path: an .npz file with `images`"
                )
            arrays = np.load(d["path"])
            full = zdata.make_dataset(
                "numpy",
                images=arrays["images"],
                labels=arrays.get("labels"),
                resize=True,
                **common,
            )
        else:
            full = zdata.make_dataset(source, path=d["path"], **common)
        count = int(full.cardinality())
        if count < 0:
            count = sum(1 for _ in full)
        n_val = round(count * float(d["validation_fraction"]))
        train, val = full.skip(n_val), (full.take(n_val) if n_val else None)
    if classes:
        train = keep_classes(train, classes, d["with_labels"])
        val = keep_classes(val, classes, d["with_labels"]) if val is not None else None
    count = int(train.cardinality())
    if count < 0:
        count = sum(1 for _ in train)
    if count == 0:
        raise RecipeError(
            f"no training examples left (data.classes = {classes}); check the classes exist"
        )
    train = train.apply(tf.data.experimental.assert_cardinality(count))  # filters forget it
    if val is not None and int(val.cardinality()) < 0:
        val = val.apply(tf.data.experimental.assert_cardinality(sum(1 for _ in val)))
    return train, val, count


def pretrain_layerwise(
    model: Trainer, train_ds: tf.data.Dataset, recipe: Recipe, run_dir: Path
) -> None:
    """Greedy layer-wise pre-training before fine-tuning; each depth logs its own
    TensorBoard run (``pretrain_layer_<i>``) and history entry."""
    from zoo.trainers.layerwise import greedy_layerwise_pretrain

    # Every epoch in one pass, each epoch's order fixed by (seed, epoch): every depth sees
    # the same batches however often the data was iterated before (a one-epoch dataset
    # reshuffles per iteration, and fit under a strategy iterates it differently).
    epochs, batch_size = recipe.training["pretrain_epochs"], recipe.data["batch_size"]
    steps = int(train_ds.cardinality()) // batch_size
    batches = zdata.batch(
        train_ds, batch_size, seed=recipe.seed, epochs=epochs, steps_per_epoch=steps
    )
    histories = greedy_layerwise_pretrain(
        model,
        batches,
        epochs=epochs,
        steps_per_epoch=steps,
        callbacks=lambda depth: [ZooTensorBoard(str(run_dir / f"pretrain_layer_{depth}"))],
        verbose=recipe.training["verbose"],
        fit_of=lambda shallow: fit_for(shallow, model.distribute_strategy),
    )
    atomic_write_text(run_dir / "pretrain_history.json", json.dumps(histories, indent=1))


def write_hparams(run_dir: Path, recipe: Recipe) -> None:
    """The recipe's values as TensorBoard hyper-parameters (HParams dashboard)."""
    from tensorboard.plugins.hparams import api as hp

    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        elif value is not None:
            flat[prefix] = str(value)

    walk("", recipe.values)
    with tf.summary.create_file_writer(str(run_dir / "train")).as_default():
        hp.hparams(flat, trial_id=run_dir.name)


# -- the run ---------------------------------------------------------------------------
def check_run_dir(
    logdir: str | os.PathLike, name: str, resume: bool, overwrite: bool, chief: bool = True
) -> Path:
    """The run folder's path, after checking that it may be used (nothing is created).
    A non-chief worker writes elsewhere: only ``resume`` (the chief's checkpoints) is checked."""
    run_dir = Path(logdir) / name
    for folder in (run_dir, *run_dir.parents) if chief else ():
        if folder.exists():
            if folder == run_dir and not folder.is_dir():
                raise RecipeError(f"run folder {run_dir} is a file; pass --run-name NAME")
            if not folder.is_dir():
                raise RecipeError(
                    f"--logdir: {folder} is a file, not a folder; pass --logdir a folder "
                    "(it is created if missing)"
                )
            break
    kept = chief and run_dir.exists() and any(run_dir.iterdir())
    if kept and not resume and not overwrite:
        raise RecipeError(
            f"run folder {run_dir} already exists; pass --resume to continue it, "
            "--run-name NAME to start another, or --overwrite to replace it"
        )
    if resume and latest_checkpoint(run_dir / "checkpoints") is None:
        raise RecipeError(
            f"--resume: {run_dir} has no checkpoints to resume from (no epoch finished); "
            "rerun without --resume" + (" and with --overwrite" if kept else "")
        )
    return run_dir


def make_run_dir(run_dir: Path, replace: bool) -> bool:
    """Create the run folder (emptied first when ``replace``); True if this call made it."""
    try:
        if replace and run_dir.exists():
            shutil.rmtree(run_dir)
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RecipeError(
            f"cannot create the run folder {run_dir}: {error.strerror or error}; pass --logdir "
            "a folder you can write to"
        ) from None
    return created


def save_model_atomically(model: keras.Model, path: Path) -> None:
    """``model.save`` to ``path`` atomically (``zoo.fileio.atomic_path``)."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def train(
    recipe: Recipe | str | os.PathLike,
    *,
    logdir: str | os.PathLike = "runs",
    overrides: list[str] | None = None,
    resume: bool = False,
    run_name: str | None = None,
    overwrite: bool = False,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> RunResult:
    """Run a recipe: build the model, data and optimizers, fit with TensorBoard,
    image grids and per-epoch checkpoints; ``resume`` continues from the last checkpoint.

    The recipe's ``[distribute]`` strategy holds the model and its optimizers (built in
    its scope; the batch size is global) and ``training.precision`` is the dtype policy
    while the run builds and trains (the previous policy is restored afterwards). Only the
    chief writes the run folder; other workers write a temporary folder, removed at the end.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise RecipeError("pass overrides to load_recipe, or pass a recipe path to train")
    distribute = recipe.distribute  # multi_worker: built before TensorFlow runs any op
    strategy = make_strategy(
        distribute["strategy"],
        distribute["devices"],
        timeout_seconds=distribute["timeout_seconds"],
    )
    chief = is_chief(strategy)
    run_dir = check_run_dir(logdir, run_name or recipe.name, resume, overwrite, chief)
    with precision(recipe.training["precision"]):
        return _train(recipe, strategy, run_dir, chief, resume, overwrite, callbacks)


def _train(
    recipe: Recipe,
    strategy: tf.distribute.Strategy,
    run_dir: Path,
    chief: bool,
    resume: bool,
    overwrite: bool,
    callbacks: list[keras.callbacks.Callback] | None,
) -> RunResult:
    """``train`` under its precision: the model and its optimizers built in the strategy's
    scope (nothing else is: the logging's own models stay plain), data, folder, fit."""
    if recipe.training["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(recipe.seed)

    try:
        config = registry.resolve_config(recipe.model, recipe.model_config)
    except registry.ConfigError as error:
        raise RecipeError(f"[model_config]: {error}") from None
    config["seed"] = recipe.model_config.get("seed", recipe.seed)
    with strategy.scope():
        model = registry.load(recipe.model, **config)
    declaration = declaration_of(model)
    if declaration.num_classes and not recipe.data["with_labels"]:
        raise RecipeError(
            f"{recipe.model!r} is conditional: it trains on (image, label) pairs. Set "
            "data.with_labels = true (the data source must have labels)"
        )
    extractor = check_logging(model, recipe)

    augment = None
    if declaration.pair_shapes is not None:  # image-to-image: (source, target) pairs
        pair_data = build_pair_data(recipe, *declaration.pair_shapes, bool(model.paired))
        train_ds, val_ds, count = pair_data.train, pair_data.validation, pair_data.count
        augment = pair_data.augment
    else:
        train_ds, val_ds, count = build_data(recipe, tuple(model.image_shape))
    batch_size = recipe.data["batch_size"]
    check_global_batch(batch_size, strategy)
    batches = count // batch_size
    if batches == 0:
        raise RecipeError(
            f"the training data has {count} examples, fewer than data.batch_size={batch_size}; "
            "lower the batch size or add data"
        )
    steps = min(batches, recipe.training["steps_per_epoch"] or batches)
    total_steps = steps * recipe.epochs
    with strategy.scope():  # optimizers built before fit: MirroredStrategy needs it
        model.compile(
            **build_optimizers(model, recipe.optimizer, total_steps),
            **compile_settings(recipe.training, steps),
        )
        model.build_optimizers()

    # Everything is validated: only now is the run folder touched.
    created = chief and make_run_dir(run_dir, replace=overwrite and not resume)
    out_dir = write_dir(run_dir, strategy)  # run_dir on the chief, else a temporary folder
    state = TrainingState(model, out_dir / "checkpoints", restore_from=run_dir / "checkpoints")
    try:
        result = _run(
            recipe, model, state, train_ds, val_ds, extractor, steps, resume, callbacks, augment
        )
    except BaseException:
        if created and state.latest is None:  # nothing worth keeping: let a rerun start clean
            shutil.rmtree(run_dir, ignore_errors=True)
            print(
                f"removed {run_dir}: the run stopped before its first checkpoint", file=sys.stderr
            )
        raise
    finally:
        remove_write_dir(out_dir, run_dir)
    result.run_dir = run_dir
    return result


def _run(
    recipe: Recipe,
    model: Trainer,
    state: TrainingState,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    extractor: Any,
    steps: int,
    resume: bool,
    callbacks: list[keras.callbacks.Callback] | None,
    augment: Any = None,
) -> RunResult:
    """``train`` once its run folder exists: restore, log, fit, save ``model.keras``.
    ``augment``: the per-example training augmentation (image pairs' crops and flips)."""
    run_dir = Path(state.manager.directory).parent  # where this process writes
    initial_epoch = state.restore_latest() if resume else 0
    if resume and initial_epoch >= recipe.epochs:
        print(f"{run_dir}: already trained for {initial_epoch} epochs; nothing to resume")
    elif resume:
        print(
            f"resuming {run_dir} from epoch {initial_epoch + 1} of {recipe.epochs} "
            f"(checkpoint {latest_checkpoint(state.restore_from)})"
        )
    atomic_write_text(run_dir / "recipe.toml", recipe.to_toml())

    d, batch_size = recipe.data, recipe.data["batch_size"]
    train_batches = zdata.batch(
        train_ds,
        batch_size,
        seed=recipe.seed,
        cache=d["cache"],
        epochs=recipe.epochs,
        first_epoch=initial_epoch,
        shuffle_buffer=d["shuffle_buffer"],
        steps_per_epoch=steps,
        augment=augment,
    )
    replicas = model.distribute_strategy.num_replicas_in_sync
    if val_ds is not None and replicas > 1:  # every batch, the last too, splits evenly: an
        n = int(val_ds.cardinality())  # empty replica batch fails ("input depth ... 1 vs 4")
        val_ds = val_ds.take(n - n % replicas)
    val_batches = (
        zdata.batch(val_ds, batch_size, shuffle=False, drop_remainder=False, cache=d["cache"])
        if val_ds is not None
        else None
    )
    write_hparams(run_dir, recipe)
    pretrain_epochs = recipe.training["pretrain_epochs"]
    if pretrain_epochs and not resume:
        with model.distribute_strategy.scope():  # its shallow models and optimizers too
            pretrain_layerwise(model, train_ds, recipe, run_dir)
    history_file = HistoryFile(run_dir / "history.json", initial_epoch)
    tensorboard = ZooTensorBoard(str(run_dir), update_freq=recipe.training["log_every_steps"])
    all_callbacks = [
        tensorboard,
        CheckpointEveryEpoch(state),  # before the others: nothing runs on diverged weights
        history_file,
        *logging_callbacks(model, recipe, run_dir, train_ds, val_ds, extractor),
        *(callbacks or []),
    ]
    try:
        fit_for(model, model.distribute_strategy)(  # multi_worker: a custom loop (no fit)
            train_batches,
            epochs=recipe.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=val_batches,
            callbacks=all_callbacks,
            verbose=recipe.training["verbose"],
            shuffle=False,  # the dataset is shuffled per epoch, seeded, by zoo.data.batch
            check_inputs=False,  # zoo.data sources give finite float32, images in [0, 1]
        )
    finally:
        tensorboard.close()
    if int(state.epoch.numpy()) >= recipe.epochs:
        save_model_atomically(model, run_dir / "model.keras")
    return RunResult(run_dir, model, history_file.history, initial_epoch)
