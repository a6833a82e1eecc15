"""``export_model``: a trained zoo model -> ``<out>/<name>/<version>/`` (+ ONNX), checked.

Layout written (TF Serving's: integer version folders under the model's base path)::

    <out_dir>/<name>/
        1/                                  SavedModel (the TF Serving version folder)
            saved_model.pb, variables/
            assets.extra/zoo_export.json    metadata: signatures, threshold, parity, versions
            assets.extra/MODEL_CARD.md      the same for people: score, threshold, limits
            assets.extra/tf_serving_warmup_requests
        onnx/1/<signature>.onnx             one ONNX file per ONNX-able signature
        .tmp-<uuid>/                        only while an export is running (its owner in
                                            .owner.json; a dead export's is removed by the next)

Each export is staged in ``.tmp-<uuid>`` (ignored by TF Serving: not an integer), checked
(ONNX checker + onnxruntime, parity Keras vs SavedModel vs TF1 session vs ONNX), and
renamed into place; on any failure the staging folder is removed and the error re-raised,
so a version folder is complete or absent.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from zoo.export import (
    calibration,
    model_card,
    onnx_export,
    parity,
    savedmodel,
    signatures,
    versioning,
)
from zoo.export import warmup as warmup_records
from zoo.export.calibration import ScoreNormalization, Threshold, anomaly_scores
from zoo.export.versioning import ExportPathError

__all__ = [
    "FORMATS",
    "METADATA_FILE",
    "MODEL_CARD_FILE",
    "CalibrationData",
    "CalibrationError",
    "ExportPathError",
    "ExportResult",
    "calibration_data",
    "export_cli",
    "export_model",
    "synthetic_calibration",
]

FORMATS = ("savedmodel", "onnx")
METADATA_FILE = "zoo_export.json"
MODEL_CARD_FILE = model_card.MODEL_CARD_FILE
METADATA_FORMAT = "zoo-export/1"
PARITY_BATCH = 4
WARMUP_BATCH = 2


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the version folder, its number, ONNX files by signature,
    the metadata written to ``assets.extra/zoo_export.json`` and the parity report."""

    version_dir: Path
    version: int
    onnx_paths: dict[str, Path]
    metadata: dict[str, Any]
    parity: dict[str, Any]
    threshold: Threshold | None = field(default=None)
    normalization: ScoreNormalization | None = field(default=None)

    @property
    def model_card(self) -> Path:
        """``assets.extra/MODEL_CARD.md`` of the version folder."""
        return self.version_dir / "assets.extra" / MODEL_CARD_FILE


# ----------------------------------------------------------------------------- inputs


def _check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(f.lower() for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if "savedmodel" not in formats:
        raise ValueError(
            "formats must include 'savedmodel': the version folder is the SavedModel and "
            "ONNX files are checked against it"
        )
    return formats


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.isdigit():
        raise ValueError(
            f"invalid model name {name!r}: use a non-numeric folder name without slashes"
        )
    return name


def _stack(data: Any, rank: int, what: str) -> np.ndarray:
    """float32 ``[N, ...]`` from an array, a list, or a ``tf.data.Dataset`` of examples or
    ``(examples, labels)`` (batched or not); ``rank`` is one example's rank."""
    if isinstance(data, tf.data.Dataset):
        parts = []
        for element in data.as_numpy_iterator():
            element = element[0] if isinstance(element, (tuple, list)) else element
            element = np.asarray(element)
            parts.append(element[None] if element.ndim == rank else element)
        if not parts:
            raise ValueError(f"the calibration dataset of {what} is empty")
        array = np.concatenate(parts).astype(np.float32)
    else:
        array = np.asarray(data, dtype=np.float32)
    if array.ndim == rank:
        array = array[None]
    return array


def as_images(images: Any, image_shape: Sequence[int]) -> np.ndarray:
    """float32 ``[N, *image_shape]`` in [0, 1] from an array, a list of images or a
    ``tf.data.Dataset`` of images or ``(images, labels)`` (batched or not)."""
    array = _stack(images, len(image_shape), "images")
    if tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"calibration images have shape {tuple(array.shape[1:])} per image but the model "
            f"takes {tuple(image_shape)}; resize them, e.g. with zoo.data.from_numpy(images, "
            f"image_shape={tuple(image_shape)}, resize=True)"
        )
    if array.shape[0] == 0:
        raise ValueError("calibration images are empty")
    if not np.all(np.isfinite(array)) or array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise ValueError(
            f"calibration images must be float32 in [0, 1]; got values in "
            f"[{np.nanmin(array):g}, {np.nanmax(array):g}] (divide uint8 images by 255)"
        )
    return array


def as_sequences(sequences: Any, sequence_shape: Sequence[int]) -> np.ndarray:
    """float32 ``[N, T, F]`` (finite; padded steps hold ``mask_value`` in every feature)
    from an array, a list of sequences or a ``tf.data.Dataset``, like :func:`as_images`."""
    array = _stack(sequences, len(sequence_shape), "sequences")
    if tuple(array.shape[1:]) != tuple(sequence_shape):
        steps, features = sequence_shape
        raise ValueError(
            f"calibration sequences have shape {tuple(array.shape[1:])} per sequence but the "
            f"model takes {tuple(sequence_shape)} ({steps} steps, {features} features); pad or "
            f"cut them with zoo.data.pad_sequences(..., maxlen={steps}) or window them with "
            f"zoo.data.sliding_windows(series, size={steps})"
        )
    if array.shape[0] == 0:
        raise ValueError("calibration sequences are empty")
    if not np.all(np.isfinite(array)):
        raise ValueError("calibration sequences contain NaN or inf; pad with mask_value instead")
    return array


def as_examples(data: Any, model: keras.Model, family: str) -> np.ndarray:
    """Calibration examples in the model's input format (images or sequences)."""
    if family == "sequence_autoencoder":
        return as_sequences(data, model.sequence_shape)
    return as_images(data, model.image_shape)


def as_labels(labels: Any, model: keras.Model, n: int | None) -> np.ndarray | None:
    """Calibration labels for a conditional model: int64 class ids [n] in [0, num_classes).
    Unconditional models take none; a conditional anomaly model scores each example under
    its label, so calibration data must come with labels."""
    num_classes = signatures.num_classes_of(model)
    if not num_classes:
        if labels is not None:
            raise ValueError(f"{type(model).__name__} is unconditional: it takes no labels")
        return None
    if n is None:
        return None
    if labels is None:
        raise ValueError(
            f"{model.name} is conditional ({num_classes} classes): its anomaly score depends "
            "on the label, so calibration needs calibration_labels=<int class ids [N]> beside "
            "calibration_images"
        )
    ids = np.asarray(labels)
    if ids.ndim != 1 or len(ids) != n or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"calibration_labels must be {n} integer class ids, shape [{n}]; got dtype "
            f"{ids.dtype}, shape {ids.shape}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(
            f"calibration_labels must lie in [0, {num_classes}); got {ids.min()}..{ids.max()}"
        )
    return ids.astype(np.int64)


def _resolve_threshold(
    model: keras.Model,
    family: str,
    images: np.ndarray | None,
    labels: np.ndarray | None,
    threshold: float | Threshold | None,
    target_fpr: float,
) -> tuple[Threshold | None, np.ndarray | None]:
    """The threshold to bake in, and the calibration scores (None without data)."""
    if family == "gan":
        if threshold is not None:
            raise ValueError(f"{type(model).__name__} is a generator: it has no anomaly threshold")
        return None, None
    scores = (
        anomaly_scores(model, images, labels, label="calibration scores")
        if images is not None
        else None
    )
    if isinstance(threshold, Threshold):
        return threshold, scores
    if threshold is not None:
        given = Threshold.given(float(threshold))
        if scores is None:
            return given, None
        return Threshold(
            value=given.value,
            method="given",
            n=int(scores.size),
            observed_fpr=float(np.mean(scores > given.value)),
        ), scores
    if scores is None:
        shape = ", ".join(map(str, model.image_shape))
        what = (
            f"normal sequences, float32 [N, {shape}] padded with mask_value"
            if family == "sequence_autoencoder"
            else f"normal images, float32 [N, {shape}] in [0, 1]"
        )
        raise ValueError(
            f"exporting a {family} needs an anomaly threshold for its 'score' signature: pass "
            f"calibration_images=<{what}> to "
            f"calibrate one at target_fpr={target_fpr}, or threshold=<float> "
            "(or a zoo.export.Threshold) to set it yourself"
        )
    calibration.warn_if_calibration_too_small(scores.size, target_fpr, stacklevel=4)
    return calibration.calibrate_threshold(scores, target_fpr=target_fpr), scores


def _normalization(scores: np.ndarray | None) -> tuple[ScoreNormalization | None, str | None]:
    """Mean/std of the calibration scores, or (None, why not)."""
    if scores is None:
        return None, "no calibration data was given, so there are no scores to normalise with"
    try:
        return ScoreNormalization.from_scores(scores), None
    except ValueError as error:
        return None, str(error)


def _pad_for_parity(batch: np.ndarray, mask_value: float) -> np.ndarray:
    """A copy of a sequence batch with padding where parity must check masking: example
    1 padded at the end (second half), example 2 at the start (first quarter)."""
    batch = batch.copy()
    steps = batch.shape[1]
    if len(batch) > 1:
        batch[1, steps // 2 :] = mask_value
    if len(batch) > 2:
        batch[2, : max(1, steps // 4)] = mask_value
    return batch


def _parity_inputs(
    model: keras.Model,
    signature_set: signatures.SignatureSet,
    images: np.ndarray | None,
    labels: np.ndarray | None = None,
    n: int = PARITY_BATCH,
) -> dict[str, dict[str, np.ndarray]]:
    """One fixed batch per signature and alias: the first ``n`` calibration examples (or
    seeded uniform noise; sequences get padding at the end of example 1 and the start of
    example 2, so masking is checked), seeded normal ``z``, seeds 0..n-1, labels (the
    calibration labels, else 0, 1, ... mod num_classes) for conditional models, and for
    ``score_with_threshold`` a per-example threshold at the batch's median score."""
    rng = np.random.default_rng(0)
    key = "sequences" if signature_set.input_key == "sequences" else "images"
    use_data = images is not None and len(images) >= n
    if use_data:
        batch = images[:n]
    elif key == "sequences":
        batch = rng.standard_normal((n, *model.image_shape)).astype(np.float32)
    else:
        batch = rng.uniform(size=(n, *model.image_shape)).astype(np.float32)
    if key == "sequences":
        batch = _pad_for_parity(batch, model.mask_value)
    values = {
        key: batch,
        "z": rng.standard_normal((n, int(model.latent_dim))).astype(np.float32),
        "seed": np.arange(n, dtype=np.int64),
    }
    num_classes = signatures.num_classes_of(model)
    if num_classes:
        given = use_data and labels is not None
        values["labels"] = labels[:n] if given else np.arange(n, dtype=np.int64) % num_classes
    if "score_with_threshold" in signature_set.signatures:
        scores = anomaly_scores(model, batch, values.get("labels"), label="parity batch scores")
        median = float(np.median(scores))
        values["threshold"] = np.full([n], median, np.float32)
    return {
        name: {k: values[k] for k in signature_set.resolve(name).input_names}
        for name in signature_set.endpoint_names()
    }


# ----------------------------------------------------------------------------- metadata


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in (
        "tensorflow",
        "keras",
        "tensorflow-probability",
        "tf2onnx",
        "onnx",
        "onnxruntime",
        "tensorflow-serving-api",
        "zoo",
    ):
        with contextlib.suppress(_importlib_metadata.PackageNotFoundError):
            found[dist] = _importlib_metadata.version(dist)
    found["tensorflow"] = tf.__version__
    found["keras"] = keras.__version__
    return found


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: getattr(o, "tolist", lambda: str(o))()))


def _model_summary(model: keras.Model, signature_set: signatures.SignatureSet) -> dict[str, Any]:
    model_class = type(model)
    summary = {
        "class": f"{model_class.__module__}.{model_class.__qualname__}",
        "family": signature_set.family,
        "registered_name": getattr(model, "zoo_name", None),
        "keras_name": model.name,
        "image_shape": list(model.image_shape),
        "latent_dim": int(model.latent_dim),
        "input": {
            "key": signature_set.input_key,
            "shape": [None, *model.image_shape]
            if signature_set.input_key != "z"
            else [None, int(model.latent_dim)],
            "dtype": "float32",
        },
        "config": model.get_config(),
    }
    num_classes = signatures.num_classes_of(model)
    if num_classes:
        summary["num_classes"] = num_classes
        summary["labels"] = {"key": "labels", "shape": [None], "dtype": "int64"}
    if signature_set.family == "sequence_autoencoder":
        summary["sequence_shape"] = list(model.sequence_shape)
        summary["mask_value"] = float(model.mask_value)
    return summary


def _build_metadata(
    model: keras.Model,
    name: str,
    version: int,
    signature_set: signatures.SignatureSet,
    defs: dict[str, Any],
    onnx_files: Mapping[str, Path],
    threshold: Threshold | None,
    normalization: ScoreNormalization | None,
    normalization_note: str | None,
    calibration_info: dict[str, Any] | None,
    parity_report: dict[str, Any],
    warmup_count: int,
    opset: int | None,
    user: Mapping[str, Any] | None,
) -> dict[str, Any]:
    sigs = {}
    for key, definition in defs.items():
        alias_of = signature_set.aliases.get(key)
        signature = signature_set.resolve(key)
        entry = {**definition, "description": signature.description}
        if alias_of:
            entry["alias_of"] = alias_of
        if key in onnx_files:
            entry["onnx"] = {
                "file": f"{versioning.ONNX_FOLDER}/{version}/{onnx_files[key].name}",
                "output_names": {k: signature.onnx_output_name(k) for k in signature.output_names},
            }
        sigs[key] = entry
    thresh = score = None
    if threshold is not None:
        thresh = {
            **threshold.to_dict(),
            "score_definition": signature_set.score_definition,
            "rule": "is_anomaly = anomaly_score > threshold",
        }
        score = {
            "definition": signature_set.score_definition,
            "higher_is_more_anomalous": True,
            "outputs": signature_set.resolve("score").output_names,
        }
    norm = None
    if threshold is not None:
        norm = (
            {**normalization.to_dict(), "output": "normalized_score", "source": "calibration"}
            if normalization is not None
            else {"output": None, "reason": normalization_note}
        )
    savedmodel_only = {
        n: s.savedmodel_only_reason for n, s in signature_set.signatures.items() if not s.onnx
    }
    return _jsonable(
        {
            "format": METADATA_FORMAT,
            "name": name,
            "version": version,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": _model_summary(model, signature_set),
            "serving_default": signature_set.aliases.get("serving_default"),
            "signatures": sigs,
            "score": score,
            "threshold": thresh,
            "normalization": norm,
            "calibration": calibration_info,
            "onnx": {
                "folder": f"{versioning.ONNX_FOLDER}/{version}" if onnx_files else None,
                "opset": opset if onnx_files else None,
                "signatures": sorted(onnx_files),
                "savedmodel_only": sorted(savedmodel_only),
                "savedmodel_only_reasons": savedmodel_only,
            },
            "parity": parity_report,
            "warmup": {
                "file": f"assets.extra/{warmup_records.WARMUP_FILE}",
                "records": warmup_count,
            }
            if warmup_count
            else None,
            "model_card": f"assets.extra/{MODEL_CARD_FILE}",
            "versions": _versions(),
            "user": dict(user or {}),
        }
    )


# ----------------------------------------------------------------------------- export


def export_model(
    model: keras.Model,
    out_dir: str | os.PathLike,
    name: str,
    *,
    formats: str | Sequence[str] = FORMATS,
    calibration_images: Any = None,
    calibration_labels: Any = None,
    calibration_description: str | None = None,
    target_fpr: float = 0.01,
    threshold: float | Threshold | None = None,
    parity_atol: float = 1e-4,
    parity_rtol: float = 1e-5,
    warmup: bool = True,
    metadata: Mapping[str, Any] | None = None,
    version: int | None = None,
    opset: int = onnx_export.DEFAULT_OPSET,
) -> ExportResult:
    """Export a zoo GAN, Autoencoder (image or sequence) or VAE for TF Serving (and ONNX
    Runtime), atomically, with ``assets.extra/MODEL_CARD.md`` and ``zoo_export.json``.

    Anomaly models need ``calibration_images`` (held-out *normal* examples: images, or
    sequences ``[N, T, F]`` for a ``SequenceAutoencoder``; a conditional VAE also needs
    ``calibration_labels``, int class ids [N]; the threshold is the smallest
    with FPR <= ``target_fpr`` on their scores, and their score mean and std give
    ``normalized_score``) or an explicit ``threshold`` (then ``normalized_score`` needs
    calibration data too, or is left out). ``calibration_description`` says in the
    model card what the calibration data is (and so what the model may be used on).
    The first ``4`` calibration examples are also the parity batch.
    ``calibration_images`` is ignored for generators. ``version`` defaults to
    max(existing) + 1. ``metadata`` is stored under ``"user"`` in the metadata. Raises
    :class:`~zoo.export.ParityError` if any backend disagrees with Keras beyond
    ``parity_atol + parity_rtol * |keras|``; nothing is left behind on failure.
    """
    formats = _check_formats(formats)
    name = _check_name(str(name))
    versioning.check_writable_dir(out_dir)
    family = signatures.family_of(model)
    examples = (
        as_examples(calibration_images, model, family)
        if calibration_images is not None and family != "gan"
        else None
    )
    labels = as_labels(calibration_labels, model, None if examples is None else len(examples))
    chosen, scores = _resolve_threshold(model, family, examples, labels, threshold, target_fpr)
    normalization, normalization_note = _normalization(scores) if chosen else (None, None)
    signature_set = signatures.build_signatures(
        model,
        None if chosen is None else chosen.value,
        None if normalization is None else (normalization.mean, normalization.std),
    )
    calibration_info = None
    if chosen is not None:
        calibration_info = {
            "examples": signature_set.input_key,
            "n": 0 if examples is None else len(examples),
            "description": calibration_description
            or (
                "calibration data passed by the caller (not described: pass "
                "calibration_description=... to export_model)"
                if examples is not None
                else None
            ),
        }
        warning = (
            calibration.calibration_size_warning(chosen.n, target_fpr)
            if chosen.method == "quantile"
            else None
        )
        if warning:
            calibration_info["warning"] = warning

    base = Path(out_dir) / name
    if version is None:
        version = versioning.next_version(base)
    elif int(version) < 1 or (base / str(int(version))).exists():
        raise ValueError(f"version {version} is taken or invalid under {base}")
    version = int(version)
    staging = versioning.staging_dir(base)
    try:
        sm_dir = staging / "savedmodel"
        savedmodel.write_savedmodel(signature_set, sm_dir)
        calls = _parity_inputs(model, signature_set, examples, labels)

        onnx_files: dict[str, Path] = {}
        if "onnx" in formats:
            for sig in signature_set.signatures.values():
                if sig.onnx:
                    path = staging / versioning.ONNX_FOLDER / f"{sig.name}.onnx"
                    onnx_export.convert_signature(sig, path, opset=opset)
                    onnx_files[sig.name] = path

        report = parity.check_parity(
            signature_set, calls, sm_dir, onnx_files, atol=parity_atol, rtol=parity_rtol
        )

        extra = sm_dir / "assets.extra"
        warmup_count = 0
        if warmup:
            requests = {
                key: {k: v[:WARMUP_BATCH] for k, v in inputs.items()}
                for key, inputs in calls.items()
            }
            warmup_count = warmup_records.write_warmup_requests(
                extra / warmup_records.WARMUP_FILE, name, requests
            )
        meta = _build_metadata(
            model,
            name,
            version,
            signature_set,
            savedmodel.read_signature_defs(sm_dir),
            onnx_files,
            chosen,
            normalization,
            normalization_note,
            calibration_info,
            report,
            warmup_count,
            opset,
            metadata,
        )
        extra.mkdir(parents=True, exist_ok=True)
        (extra / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
        (extra / MODEL_CARD_FILE).write_text(model_card.render(meta))
        version_dir, onnx_dir = versioning.commit(staging, base, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    onnx_paths = {k: onnx_dir / p.name for k, p in onnx_files.items()} if onnx_dir else {}
    return ExportResult(version_dir, version, onnx_paths, meta, report, chosen, normalization)


# ----------------------------------------------------------------------------- zoo export

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


def run_folder_of(target: str | os.PathLike) -> Path | None:
    """The run folder behind ``target`` (a run folder, or the ``model.keras`` in one):
    the folder holding ``recipe.toml``; None for a bare ``.keras`` file or a model name."""
    path = Path(target)
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    return folder if folder is not None and (folder / "recipe.toml").is_file() else None


def _collect(dataset: tf.data.Dataset, conditional: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Examples (and labels, for ``conditional``) of an unbatched dataset, at most
    :data:`MAX_CALIBRATION_EXAMPLES` of them, evenly spread over it."""
    count = int(dataset.cardinality())
    if count > MAX_CALIBRATION_EXAMPLES:
        stride = math.ceil(count / MAX_CALIBRATION_EXAMPLES)
        dataset = dataset.enumerate().filter(lambda i, _: i % stride == 0).map(lambda _, e: e)
    examples, labels = [], []
    for element in dataset.batch(512).as_numpy_iterator():
        if isinstance(element, tuple):
            examples.append(element[0])
            labels.append(element[1])
        else:
            examples.append(element)
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
    conditional = bool(signatures.num_classes_of(model))
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
    family = signatures.family_of(model)
    conditional = bool(signatures.num_classes_of(model))
    sequences = family == "sequence_autoencoder"
    if not path.exists():
        raise CalibrationError(f"--calibration {path} does not exist; {CALIBRATION_HELP}")
    labels = None
    if path.is_dir():
        if sequences or conditional:
            need = "`sequences`" if sequences else "`images` and `labels`"
            raise CalibrationError(
                f"--calibration {path} is an image folder, but {model.name} needs {need}: "
                "pass an .npz file"
            )
        folder = zdata.make_dataset("folder", path=path, image_shape=model.image_shape)
        examples, _ = _collect(folder, conditional=False)
    elif path.suffix == ".npz":
        with np.load(path) as arrays:
            key = "sequences" if sequences and "sequences" in arrays.files else "images"
            if key not in arrays.files:
                raise CalibrationError(
                    f"--calibration {path} has no `{key}` array (it has "
                    f"{', '.join(arrays.files) or 'none'})"
                )
            raw = arrays[key]
            labels = arrays["labels"] if conditional and "labels" in arrays.files else None
        if sequences:
            examples = as_sequences(raw, model.sequence_shape)
        else:
            dataset = zdata.from_numpy(raw, image_shape=model.image_shape, resize=True)
            examples, _ = _collect(dataset, conditional=False)
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
    """``zoo export``'s calibration data for an anomaly model, or None for a generator:
    ``calibration`` when given (a path, see :func:`file_calibration_data`, or a
    :class:`CalibrationData`), else the held-out normal data of the run folder ``run``
    (see :func:`run_calibration_data`). Raises :class:`CalibrationError` when neither
    exists."""
    if signatures.family_of(model) == "gan":
        return None
    if isinstance(calibration, CalibrationData):
        return calibration
    if calibration is not None:
        return file_calibration_data(model, calibration)
    run_dir = None if run is None else run_folder_of(run)
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
    """``zoo export``'s body: load ``target`` with ``zoo.runs.load_run`` (a run folder, a
    ``.keras`` file or a registered name) and export it to ``out/<name>/<version>``.

    ``name`` defaults to the model's Keras name (``model.name``, e.g. ``conv_ae``).
    Anomaly models are calibrated at ``target_fpr`` on the run's own held-out normal data
    (its recipe's validation data with its class filter), or on ``calibration`` (see
    :func:`calibration_data`); ``threshold`` sets the threshold instead. Without either,
    a bare ``.keras`` file or model name is refused (:class:`CalibrationError`).
    """
    from zoo.runs import load_run

    if not math.isfinite(float(target_fpr)):
        raise ValueError(f"target_fpr must be finite; got {target_fpr}")
    check_target(target)
    versioning.check_writable_dir(out)
    model = load_run(target)
    if signatures.family_of(model) == "gan":
        if calibration is not None or threshold is not None:
            raise CalibrationError(
                f"{model.name} is a generator: it has no anomaly threshold; drop "
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
