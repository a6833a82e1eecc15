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
from zoo.export import (
    model_card,
    onnx_export,
    parity,
    savedmodel,
    versioning,
)
from zoo.export import warmup as warmup_records
from zoo.export.versioning import ExportPathError

from zoo import calibration
from zoo.calibration import ScoreNormalization, Threshold, anomaly_scores
from zoo.tasks import AnomalyScorer, SignatureSet, TaskDeclaration, declaration_of

__all__ = [
    "FORMATS",
    "METADATA_FILE",
    "MODEL_CARD_FILE",
    "ExportPathError",
    "ExportResult",
    "as_labels",
    "export_model",
]

FORMATS = ("savedmodel", "onnx")
METADATA_FILE = "zoo_export.json"
MODEL_CARD_FILE = model_card.MODEL_CARD_FILE
METADATA_FORMAT = "zoo-export/1"
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


def as_labels(
    labels: Any, model: keras.Model, num_classes: int, n: int | None
) -> np.ndarray | None:
    """Calibration labels for a conditional model: int64 class ids [n] in [0, num_classes).
    Unconditional models take none; a conditional anomaly model scores each example under
    its label, so calibration data must come with labels."""
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
    declaration: TaskDeclaration,
    images: np.ndarray | None,
    labels: np.ndarray | None,
    threshold: float | Threshold | None,
    target_fpr: float,
) -> tuple[Threshold | None, np.ndarray | None]:
    """The threshold to bake in, and the calibration scores (None without data)."""
    model = declaration.model
    if not declaration.implements(AnomalyScorer):
        if threshold is not None:
            raise ValueError(
                f"{type(model).__name__} scores no anomalies ({declaration.family}): it has no "
                "anomaly threshold"
            )
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
        kind = declaration.examples
        what = f"normal {kind.key}, {kind.describe()}"
        raise ValueError(
            f"exporting a {declaration.family} needs an anomaly threshold for its 'score' "
            f"signature: pass calibration_images=<{what}> to "
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


def _model_summary(model: keras.Model, declaration: TaskDeclaration) -> dict[str, Any]:
    """The model as the metadata records it: class, tasks, what its declaration states
    (input, shapes, intended use) and its config."""
    model_class = type(model)
    return {
        "class": f"{model_class.__module__}.{model_class.__qualname__}",
        "family": declaration.family,
        "tasks": [task.__name__ for task in declaration.tasks],
        "registered_name": getattr(model, "zoo_name", None),
        "keras_name": model.name,
        **declaration.summary(),
        "intended_use": declaration.use_notes(),
        "config": model.get_config(),
    }


def _build_metadata(
    model: keras.Model,
    name: str,
    version: int,
    declaration: TaskDeclaration,
    signature_set: SignatureSet,
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
    definition = declaration.score_definition()
    if threshold is not None:
        thresh = {
            **threshold.to_dict(),
            "score_definition": definition,
            "rule": calibration.RULE,
        }
        score = {
            "definition": definition,
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
            "model": _model_summary(model, declaration),
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
    parity_atol: float | None = None,
    parity_rtol: float | None = None,
    warmup: bool = True,
    metadata: Mapping[str, Any] | None = None,
    version: int | None = None,
    opset: int = onnx_export.DEFAULT_OPSET,
) -> ExportResult:
    """Export a zoo model for TF Serving (and ONNX Runtime), atomically, with
    ``assets.extra/MODEL_CARD.md`` and ``zoo_export.json``. What is exported comes from the
    model's task declaration (:func:`zoo.tasks.declaration_of`): its signatures, their
    parity tolerances, example inputs and model-card notes.

    Anomaly models need ``calibration_images`` (held-out *normal* examples: images, or
    sequences ``[N, T, F]`` for a ``SequenceAutoencoder``; a conditional VAE also needs
    ``calibration_labels``, int class ids [N]; the threshold is the smallest
    with FPR <= ``target_fpr`` on their scores, and their score mean and std give
    ``normalized_score``) or an explicit ``threshold`` (then ``normalized_score`` needs
    calibration data too, or is left out). ``calibration_description`` says in the
    model card what the calibration data is (and so what the model may be used on).
    The first ``4`` calibration examples are also the parity batch.
    ``calibration_images`` is ignored for models that score nothing. ``version`` defaults
    to max(existing) + 1. ``metadata`` is stored under ``"user"`` in the metadata. Raises
    :class:`~zoo.export.ParityError` if any backend disagrees with Keras beyond each
    signature's declared tolerance (``parity_atol`` / ``parity_rtol`` override it for all);
    nothing is left behind on failure.
    """
    formats = _check_formats(formats)
    name = _check_name(str(name))
    versioning.check_writable_dir(out_dir)
    declaration = declaration_of(model)
    scorer = declaration.implements(AnomalyScorer)
    examples = (
        declaration.examples.check(calibration_images)
        if calibration_images is not None and scorer
        else None
    )
    n = None if examples is None else len(examples)
    labels = as_labels(calibration_labels, model, declaration.num_classes, n)
    chosen, scores = _resolve_threshold(declaration, examples, labels, threshold, target_fpr)
    normalization, normalization_note = _normalization(scores) if chosen else (None, None)
    signature_set = declaration.signatures(
        None if chosen is None else chosen.value,
        None if normalization is None else (normalization.mean, normalization.std),
    )
    calibration_info = None
    if chosen is not None:
        calibration_info = {
            "examples": declaration.input_key,
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
        calls = declaration.example_inputs(signature_set, examples, labels)

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
            declaration,
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
