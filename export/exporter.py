"""``export_model``: a trained zoo model -> ``<out>/<name>/<version>/`` (+ ONNX), checked.

Layout written (TF Serving's: integer version folders under the model's base path)::

    <out_dir>/<name>/
        1/                                  SavedModel (the TF Serving version folder)
            saved_model.pb, variables/
            assets.extra/zoo_export.json    metadata: signatures, threshold, parity, versions
            assets.extra/tf_serving_warmup_requests
        onnx/1/<signature>.onnx             one ONNX file per ONNX-able signature
        .tmp-<uuid>/                        only while an export is running

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
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from zoo.export import calibration, onnx_export, parity, savedmodel, signatures, versioning
from zoo.export import warmup as warmup_records
from zoo.export.calibration import Threshold

__all__ = ["FORMATS", "METADATA_FILE", "ExportResult", "export_cli", "export_model"]

FORMATS = ("savedmodel", "onnx")
METADATA_FILE = "zoo_export.json"
METADATA_FORMAT = "zoo-export/1"
PARITY_BATCH = 4
WARMUP_BATCH = 2
SCORE_BATCH = 256


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


def as_images(images: Any, image_shape: Sequence[int]) -> np.ndarray:
    """float32 ``[N, *image_shape]`` in [0, 1] from an array, a list of images or a
    ``tf.data.Dataset`` of images or ``(images, labels)`` (batched or not)."""
    if isinstance(images, tf.data.Dataset):
        parts = []
        for element in images.as_numpy_iterator():
            element = element[0] if isinstance(element, (tuple, list)) else element
            element = np.asarray(element)
            parts.append(element[None] if element.ndim == len(image_shape) else element)
        if not parts:
            raise ValueError("the calibration dataset is empty")
        array = np.concatenate(parts).astype(np.float32)
    else:
        array = np.asarray(images, dtype=np.float32)
    if array.ndim == len(image_shape):
        array = array[None]
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


def anomaly_scores(
    model: keras.Model, images: np.ndarray, batch_size: int = SCORE_BATCH
) -> np.ndarray:
    """``model.anomaly_score`` over ``images`` in batches (float64 numpy)."""
    parts = [
        np.asarray(model.anomaly_score(tf.constant(images[i : i + batch_size])), np.float64)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts).reshape(-1)


def _resolve_threshold(
    model: keras.Model,
    family: str,
    images: np.ndarray | None,
    threshold: float | Threshold | None,
    target_fpr: float,
) -> Threshold | None:
    if family == "gan":
        if threshold is not None:
            raise ValueError(f"{type(model).__name__} is a generator: it has no anomaly threshold")
        return None
    if isinstance(threshold, Threshold):
        return threshold
    if threshold is not None:
        given = Threshold.given(float(threshold))
        if images is None:
            return given
        scores = anomaly_scores(model, images)
        return Threshold(
            value=given.value,
            method="given",
            n=int(scores.size),
            observed_fpr=float(np.mean(scores > given.value)),
        )
    if images is None:
        shape = ", ".join(map(str, model.image_shape))
        raise ValueError(
            f"exporting a {family} needs an anomaly threshold for its 'score' signature: pass "
            f"calibration_images=<normal images, float32 [N, {shape}] in [0, 1]> to "
            f"calibrate one at target_fpr={target_fpr}, or threshold=<float> "
            "(or a zoo.export.Threshold) to set it yourself"
        )
    return calibration.calibrate_threshold(anomaly_scores(model, images), target_fpr=target_fpr)


def _parity_inputs(
    model: keras.Model,
    signature_set: signatures.SignatureSet,
    images: np.ndarray | None,
    n: int = PARITY_BATCH,
) -> dict[str, dict[str, np.ndarray]]:
    """One fixed batch per signature and alias: the first ``n`` calibration images (or
    seeded uniform noise), seeded normal ``z``, seeds 0..n-1, and for
    ``score_with_threshold`` a per-example threshold at the batch's median score."""
    rng = np.random.default_rng(0)
    if images is not None and len(images) >= n:
        batch_images = images[:n]
    else:
        batch_images = rng.uniform(size=(n, *model.image_shape)).astype(np.float32)
    values = {
        "images": batch_images,
        "z": rng.standard_normal((n, int(model.latent_dim))).astype(np.float32),
        "seed": np.arange(n, dtype=np.int64),
    }
    if "score_with_threshold" in signature_set.signatures:
        median = float(np.median(anomaly_scores(model, batch_images)))
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


def _build_metadata(
    model: keras.Model,
    name: str,
    version: int,
    signature_set: signatures.SignatureSet,
    defs: dict[str, Any],
    onnx_files: Mapping[str, Path],
    threshold: Threshold | None,
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
    thresh = None
    if threshold is not None:
        thresh = {
            **threshold.to_dict(),
            "score_definition": signature_set.score_definition,
            "rule": "is_anomaly = anomaly_score > threshold",
        }
    model_class = type(model)
    return _jsonable(
        {
            "format": METADATA_FORMAT,
            "name": name,
            "version": version,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "class": f"{model_class.__module__}.{model_class.__qualname__}",
                "family": signature_set.family,
                "registered_name": getattr(model, "zoo_name", None),
                "keras_name": model.name,
                "image_shape": list(model.image_shape),
                "latent_dim": int(model.latent_dim),
                "config": model.get_config(),
            },
            "serving_default": signature_set.aliases.get("serving_default"),
            "signatures": sigs,
            "threshold": thresh,
            "onnx": {
                "folder": f"{versioning.ONNX_FOLDER}/{version}" if onnx_files else None,
                "opset": opset if onnx_files else None,
                "signatures": sorted(onnx_files),
                "savedmodel_only": sorted(
                    n for n, s in signature_set.signatures.items() if not s.onnx
                ),
            },
            "parity": parity_report,
            "warmup": {
                "file": f"assets.extra/{warmup_records.WARMUP_FILE}",
                "records": warmup_count,
            }
            if warmup_count
            else None,
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
    target_fpr: float = 0.01,
    threshold: float | Threshold | None = None,
    parity_atol: float = 1e-4,
    parity_rtol: float = 1e-5,
    warmup: bool = True,
    metadata: Mapping[str, Any] | None = None,
    version: int | None = None,
    opset: int = onnx_export.DEFAULT_OPSET,
) -> ExportResult:
    """Export a zoo GAN, Autoencoder or VAE for TF Serving (and ONNX Runtime), atomically.

    Autoencoders and VAEs need ``calibration_images`` (normal examples; the threshold is
    the smallest with FPR <= ``target_fpr`` on them) or an explicit ``threshold``; the
    first ``4`` calibration images are also the parity batch. ``calibration_images`` is
    ignored for generators. ``version`` defaults to max(existing) + 1. ``metadata`` is
    stored under ``"user"`` in ``assets.extra/zoo_export.json``. Raises
    :class:`~zoo.export.ParityError` if any backend disagrees with Keras beyond
    ``parity_atol + parity_rtol * |keras|``; nothing is left behind on failure.
    """
    formats = _check_formats(formats)
    name = _check_name(str(name))
    family = signatures.family_of(model)
    images = (
        as_images(calibration_images, model.image_shape)
        if calibration_images is not None and family != "gan"
        else None
    )
    chosen = _resolve_threshold(model, family, images, threshold, target_fpr)
    signature_set = signatures.build_signatures(model, None if chosen is None else chosen.value)

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
        calls = _parity_inputs(model, signature_set, images)

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
            report,
            warmup_count,
            opset,
            metadata,
        )
        extra.mkdir(parents=True, exist_ok=True)
        (extra / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
        version_dir, onnx_dir = versioning.commit(staging, base, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    onnx_paths = {k: onnx_dir / p.name for k, p in onnx_files.items()} if onnx_dir else {}
    return ExportResult(version_dir, version, onnx_paths, meta, report, chosen)


SAMPLE_CALIBRATION = (
    "bundled MNIST sample, test split: zoo.data.from_sample('test', image_shape=model.image_shape)"
    " (every digit counts as normal; resized/recoloured to the model's image shape)"
)


def export_cli(
    target: str | os.PathLike,
    out: str | os.PathLike,
    formats: str | Sequence[str] = FORMATS,
    name: str | None = None,
    target_fpr: float = 0.01,
) -> ExportResult:
    """``zoo export``'s body: load ``target`` with ``zoo.runs.load_run`` (a run folder, a
    ``.keras`` file or a registered name) and export it to ``out/<name>/<version>``.

    ``name`` defaults to the model's Keras name (``model.name``, e.g. ``conv_ae``).
    Autoencoders and VAEs are calibrated on the bundled MNIST sample's test split
    resized to the model's image shape (all digits count as normal); for other data,
    call :func:`export_model` with ``calibration_images``.
    """
    from zoo.runs import load_run

    model = load_run(target)
    family = signatures.family_of(model)
    images = None
    if family != "gan":
        from zoo.data import from_sample

        dataset = from_sample("test", image_shape=model.image_shape).batch(1024)
        images = np.concatenate(list(dataset.as_numpy_iterator()))
    user = {"source": str(target)}
    if images is not None:
        user["calibration_data"] = SAMPLE_CALIBRATION
    if not math.isfinite(float(target_fpr)):
        raise ValueError(f"target_fpr must be finite; got {target_fpr}")
    return export_model(
        model,
        out,
        name or model.name,
        formats=formats,
        calibration_images=images,
        target_fpr=target_fpr,
        metadata=user,
    )
