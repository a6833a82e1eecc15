"""``zoo export RUN``: choose the calibration data for a run, then :func:`export_model`.

The export core (:mod:`zoo.export.exporter`) takes examples; this module decides which:
the run's own held-out normal data (its recipe's validation split or held-out fraction,
with its class filter), a file or folder given with ``--calibration``, or none when the
threshold is given or the model scores nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from zoo.export import versioning
from zoo.export.exporter import FORMATS, ExportResult, export_model

from zoo import registry
from zoo.data.batches import unpack_batch
from zoo.tasks import AnomalyScorer, declaration_of

__all__ = [
    "CALIBRATION_HELP",
    "CalibrationData",
    "CalibrationError",
    "calibration_data",
    "export_cli",
    "file_calibration_data",
    "run_calibration_data",
    "synthetic_calibration",
]

#: At most this many held-out examples are scored to calibrate (spread over the split).
MAX_CALIBRATION_EXAMPLES = 10_000
CALIBRATION_HELP = (
    "pass --calibration PATH (held-out normal examples: an .npz with `images`, or "
    "`sequences` for sequence models, plus `labels` for conditional models; or a folder of "
    "normal images) or --threshold VALUE"
)


class CalibrationError(ValueError):
    """No held-out normal data to calibrate an anomaly threshold on (``zoo export``)."""


class CalibrationData(NamedTuple):
    """Held-out normal examples for calibration, their labels (conditional models only)
    and a sentence saying what they are (for the CLI, the metadata and the model card)."""

    examples: np.ndarray
    labels: np.ndarray | None
    description: str


def _collect(dataset: tf.data.Dataset, conditional: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Examples (and labels, for ``conditional``) of an unbatched dataset, at most
    :data:`MAX_CALIBRATION_EXAMPLES` of them, evenly spread over it."""
    count = int(dataset.cardinality())
    if count > MAX_CALIBRATION_EXAMPLES:
        stride = math.ceil(count / MAX_CALIBRATION_EXAMPLES)
        dataset = dataset.enumerate().filter(lambda i, _: i % stride == 0).map(lambda _, e: e)
    examples, labels = [], []
    for element in dataset.batch(512).as_numpy_iterator():
        x, y = unpack_batch(element)
        examples.append(x)
        if y is not None:
            labels.append(y)
    if not examples:
        return np.zeros((0,), np.float32), None
    x = np.concatenate(examples).astype(np.float32)
    if not conditional:
        return x, None
    return x, (np.concatenate(labels).astype(np.int64) if labels else None)


def run_calibration_data(model: keras.Model, run_dir: str | os.PathLike) -> CalibrationData:
    """The run's own held-out normal data: its recipe's validation data (the validation
    split, or the held-out ``validation_fraction`` of a folder, .npz or synthetic series),
    with its ``data.classes`` filter, built by the runner's ``build_data``."""
    from zoo.recipes import RecipeError, load_recipe
    from zoo.recipes.runner import build_data

    from zoo.data import DataError

    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / "recipe.toml")
    d = recipe.data
    classes = sorted(int(c) for c in d["classes"] or [])
    try:
        _, validation, _ = build_data(recipe, tuple(int(s) for s in model.image_shape))
    except (DataError, RecipeError, OSError) as error:
        raise CalibrationError(
            f"cannot rebuild the held-out data of {run_dir} to calibrate on ({error}); "
            f"{CALIBRATION_HELP}"
        ) from None
    if d["source"] in ("sample", "tfds"):
        what = f"validation split {d['validation_split']!r}" + (
            f" of tfds {d['name']!r}" if d["source"] == "tfds" else ""
        )
        none_reason = "its recipe sets data.validation_split = ''"
    else:
        where = f" {d['path']}" if d["path"] else ""
        what = (
            f"the held-out data.validation_fraction = {d['validation_fraction']:g} of "
            f"data.source = {d['source']!r}{where}"
        )
        none_reason = "its recipe holds out no data (data.validation_fraction = 0)"
    if validation is None:
        raise CalibrationError(
            f"{run_dir} has no held-out data to calibrate the anomaly threshold on "
            f"({none_reason}); {CALIBRATION_HELP}"
        )
    conditional = bool(declaration_of(model).num_classes)
    examples, labels = _collect(validation, conditional)
    if not len(examples):
        raise CalibrationError(
            f"the held-out data of {run_dir} ({what}, classes {classes}) is empty; "
            f"{CALIBRATION_HELP}"
        )
    if conditional and labels is None:
        raise CalibrationError(
            f"{model.name} is conditional but the held-out data of {run_dir} has no labels; "
            f"{CALIBRATION_HELP}"
        )
    if classes:
        what += f", classes {classes}"
    description = f"{len(examples)} held-out normal examples of {run_dir} ({what})"
    return CalibrationData(examples, labels, description)


def file_calibration_data(model: keras.Model, path: str | os.PathLike) -> CalibrationData:
    """Normal examples given with ``--calibration``: an ``.npz`` file with ``images``
    (uint8 or floats in [0, 1], resized to the model's shape) or, for sequence models,
    ``sequences`` [N, T, F], plus ``labels`` for conditional models; or a folder of images."""
    from zoo import data as zdata

    path = Path(path)
    declaration = declaration_of(model)
    kind = declaration.examples
    conditional = bool(declaration.num_classes)
    if not path.exists():
        raise CalibrationError(f"--calibration {path} does not exist; {CALIBRATION_HELP}")
    labels = None
    if path.is_dir():
        if not kind.from_image_folder or conditional:
            need = f"`{kind.key}`" + (" and `labels`" if conditional else "")
            raise CalibrationError(
                f"--calibration {path} is an image folder, but {model.name} needs {need}: "
                "pass an .npz file"
            )
        folder = zdata.make_dataset("folder", path=path, image_shape=model.image_shape)
        examples, _ = _collect(folder, conditional=False)
    elif path.suffix == ".npz":
        with np.load(path) as arrays:
            key = kind.key
            if key not in arrays.files:
                raise CalibrationError(
                    f"--calibration {path} has no `{key}` array (it has "
                    f"{', '.join(arrays.files) or 'none'})"
                )
            raw = arrays[key]
            labels = arrays["labels"] if conditional and "labels" in arrays.files else None
        examples = kind.from_array(raw)
        if conditional and labels is None:
            raise CalibrationError(
                f"--calibration {path}: {model.name} is conditional, so the file needs a "
                "`labels` array (int class ids [N]) beside the examples"
            )
    else:
        raise CalibrationError(
            f"--calibration {path} is neither an .npz file nor a folder of images"
        )
    description = f"{len(examples)} normal examples given with --calibration {path}"
    return CalibrationData(examples, labels, description)


#: Seed of :func:`synthetic_calibration`'s series: not a seed the recipes train with (they
#: use the recipe seed, 0 by default), so the series are held out.
SYNTHETIC_CALIBRATION_SEED = 20_240_601
SYNTHETIC_CALIBRATION_SERIES = 1250
SYNTHETIC_CALIBRATION = (
    "SYNTHETIC series, not real data: zoo.data.synthetic_series(n_series={n_series}, "
    "length={length}, n_features={features}, anomaly_fraction=0.2, seed={seed}); the {n} "
    "series without an injected anomaly (labels False){crop}, on the raw scale the "
    "recurrent_ae recipes train on (not standardised)"
)


def synthetic_calibration(model: keras.Model) -> CalibrationData:
    """Normal series of the documented synthetic generator, shaped for a sequence model
    (see :data:`SYNTHETIC_CALIBRATION`): calibration data to pass explicitly
    (``export_cli(..., calibration=synthetic_calibration(model))``) for a model trained on
    that generator; never chosen automatically."""
    from zoo.data import synthetic_series
    from zoo.data.timeseries import MIN_LENGTH

    steps, features = (int(d) for d in model.sequence_shape)
    length = max(steps, MIN_LENGTH)
    data = synthetic_series(
        n_series=SYNTHETIC_CALIBRATION_SERIES,
        length=length,
        n_features=features,
        anomaly_fraction=0.2,
        seed=SYNTHETIC_CALIBRATION_SEED,
    )
    normal = data.series[~data.labels][:, :steps]
    description = SYNTHETIC_CALIBRATION.format(
        n_series=SYNTHETIC_CALIBRATION_SERIES,
        length=length,
        features=features,
        seed=SYNTHETIC_CALIBRATION_SEED,
        n=len(normal),
        crop=f", cut to their first {steps} steps" if steps < length else "",
    )
    return CalibrationData(np.ascontiguousarray(normal, dtype=np.float32), None, description)


def calibration_data(
    model: keras.Model,
    run: str | os.PathLike | None = None,
    *,
    calibration: str | os.PathLike | CalibrationData | None = None,
) -> CalibrationData | None:
    """``zoo export``'s calibration data for an anomaly model, or None for a model that
    scores nothing:
    ``calibration`` when given (a path, see :func:`file_calibration_data`, or a
    :class:`CalibrationData`), else the held-out normal data of the run folder ``run``
    (see :func:`run_calibration_data`). Raises :class:`CalibrationError` when neither
    exists."""
    if not declaration_of(model).implements(AnomalyScorer):
        return None
    if isinstance(calibration, CalibrationData):
        return calibration
    if calibration is not None:
        return file_calibration_data(model, calibration)
    run_dir = None if run is None or not Path(run).exists() else registry.run_folder(run)
    if run_dir is None:
        what = "a model name" if run is None or not Path(run).exists() else "not a run folder"
        raise CalibrationError(
            f"{run or model.name} is {what}: there is no held-out normal data to calibrate "
            f"its anomaly threshold on; {CALIBRATION_HELP}"
        )
    return run_calibration_data(model, run_dir)


def check_target(target: str | os.PathLike) -> None:
    """Refuse a path that does not exist before anything is loaded (a name without a
    slash is left to the registry, which suggests close model names)."""
    text = str(target)
    looks_like_path = "/" in text or os.sep in text or text.endswith(".keras")
    if looks_like_path and not Path(text).exists():
        raise FileNotFoundError(
            f"{text} does not exist: pass a run folder (e.g. runs/conv_ae_mnist), a .keras "
            "file or a registered model name (zoo list)"
        )


def export_cli(
    target: str | os.PathLike,
    out: str | os.PathLike,
    formats: str | Sequence[str] = FORMATS,
    name: str | None = None,
    target_fpr: float = 0.01,
    *,
    calibration: str | os.PathLike | CalibrationData | None = None,
    threshold: float | None = None,
) -> ExportResult:
    """``zoo export``'s body: load ``target`` with ``zoo.recipes.runs.load_run`` (a run folder, a
    ``.keras`` file or a registered name) and export it to ``out/<name>/<version>``.

    ``name`` defaults to the model's Keras name (``model.name``, e.g. ``conv_ae``).
    Anomaly models are calibrated at ``target_fpr`` on the run's own held-out normal data
    (its recipe's validation data with its class filter), or on ``calibration`` (see
    :func:`calibration_data`); ``threshold`` sets the threshold instead. Without either,
    a bare ``.keras`` file or model name is refused (:class:`CalibrationError`).
    """
    from zoo.recipes.runs import load_run

    if not math.isfinite(float(target_fpr)):
        raise ValueError(f"target_fpr must be finite; got {target_fpr}")
    check_target(target)
    versioning.check_writable_dir(out)
    model = load_run(target)
    if not declaration_of(model).implements(AnomalyScorer):
        if calibration is not None or threshold is not None:
            raise CalibrationError(
                f"{model.name} scores no anomalies: it has no anomaly threshold; drop "
                "--calibration and --threshold"
            )
        found = None
    else:
        try:
            found = calibration_data(model, target, calibration=calibration)
        except CalibrationError:
            if threshold is None:
                raise
            found = None  # the given threshold needs no data
    examples, labels, description = found if found is not None else (None, None, None)
    user = {"source": str(target)}
    if description is not None:
        user["calibration_data"] = description
    return export_model(
        model,
        out,
        name or model.name,
        formats=formats,
        calibration_images=examples,
        calibration_labels=labels,
        calibration_description=description,
        target_fpr=target_fpr,
        threshold=threshold,
        metadata=user,
    )
