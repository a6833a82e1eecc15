"""Parity: the exported artifacts compute what the Keras model computes.

On one fixed batch, every signature is run eagerly through Keras (the reference), through
the reloaded SavedModel (TF2 loader), through the TF1 loader by tensor names (as TF Serving
does) and, where converted, through onnxruntime. Floats must agree within
``atol + rtol * |reference|`` (``numpy.isclose``'s rule; the relative part matters for
VAE scores in the hundreds or thousands of nats, where float32 round-off alone is ~1e-4);
boolean verdicts must agree exactly except for examples whose score lies within that
tolerance of the threshold (where round-off may legitimately flip the verdict).
``normalized_score = (anomaly_score - mean) / std`` inherits the score's tolerance divided
by ``std`` (a round-off of d in the score is d / std in the normalised score).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from zoo.export import onnx_export, savedmodel

from zoo.progress import Progress
from zoo.tasks import SignatureSet, Tolerance

__all__ = ["ParityError", "check_parity", "compare_outputs"]

BACKENDS = ("savedmodel", "tf1_session", "onnxruntime")


class ParityError(AssertionError):
    """An exported artifact disagrees with Keras beyond the stated tolerance.

    ``report`` holds the per-signature, per-backend differences that were measured.
    """

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}


def _tolerance(reference: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    return atol + rtol * np.abs(reference)


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    atol: float,
    rtol: float,
    normalization_std: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Differences per output and a list of failures (empty when within tolerance).

    With ``normalization_std``, ``normalized_score`` is allowed the ``anomaly_score``
    tolerance divided by that std."""
    diffs: dict[str, Any] = {}
    failures: list[str] = []
    missing = sorted(set(reference) ^ set(candidate))
    if missing:
        failures.append(f"output names differ: {sorted(reference)} vs {sorted(candidate)}")
        return diffs, failures
    near_threshold = None
    if "anomaly_score" in reference and "threshold" in reference:
        score = np.asarray(reference["anomaly_score"], np.float64)
        threshold = np.asarray(reference["threshold"], np.float64)
        near_threshold = np.abs(score - threshold) <= _tolerance(threshold, atol, rtol)
    for key in sorted(reference):
        ref, got = np.asarray(reference[key]), np.asarray(candidate[key])
        if ref.shape != got.shape:
            failures.append(f"{key}: shape {got.shape} != {ref.shape}")
            continue
        if ref.dtype == np.bool_ or got.dtype == np.bool_:
            if got.dtype != np.bool_ or ref.dtype != np.bool_:
                failures.append(f"{key}: dtype {got.dtype} != {ref.dtype}")
                continue
            differ = ref != got
            excused = near_threshold if near_threshold is not None else np.zeros_like(differ)
            mismatches = int(np.sum(differ & ~excused))
            diffs[key] = {"mismatches": mismatches, "near_threshold": int(np.sum(excused))}
            if mismatches:
                failures.append(f"{key}: {mismatches} verdict(s) differ away from the threshold")
            continue
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        if ref.size == 0:
            diffs[key] = {"max_abs_diff": 0.0}
            continue
        error = np.abs(ref64 - got64)
        if not np.all(np.isfinite(got64) == np.isfinite(ref64)):
            failures.append(f"{key}: non-finite values differ")
        worst = float(np.nanmax(error)) if np.any(np.isfinite(error)) else float("nan")
        diffs[key] = {"max_abs_diff": worst}
        allowed = _tolerance(ref64, atol, rtol)
        rule = f"atol {atol:g} + rtol {rtol:g} * |ref|"
        if key == "normalized_score" and normalization_std and "anomaly_score" in reference:
            score = np.asarray(reference["anomaly_score"], np.float64)
            allowed = np.maximum(allowed, _tolerance(score, atol, rtol) / normalization_std)
            diffs[key]["allowed"] = float(np.max(allowed))
            rule = f"(atol {atol:g} + rtol {rtol:g} * |anomaly_score|) / std {normalization_std:g}"
        if np.any(error > allowed):
            failures.append(f"{key}: max |diff| {worst:.3g} exceeds {rule}")
    return diffs, failures


def check_parity(
    signature_set: SignatureSet,
    calls: Mapping[str, Mapping[str, np.ndarray]],
    savedmodel_dir: str | os.PathLike,
    onnx_paths: Mapping[str, str | os.PathLike],
    *,
    atol: float | None = None,
    rtol: float | None = None,
    tf1: bool = True,
) -> dict[str, Any]:
    """Compare every backend with Keras on ``calls`` (``{signature or alias: inputs}``).

    Each signature is held to its own declared :class:`~zoo.tasks.Tolerance` (an
    iterative sampler may state a looser one than a one-layer decoder); ``atol`` /
    ``rtol``, when given, override it for every signature. Returns the report recorded
    in the export metadata; raises :class:`ParityError` (carrying the report) on any
    disagreement.
    """

    def tolerance(name: str) -> Tolerance:
        declared = signature_set.resolve(name).tolerance
        return Tolerance(
            declared.atol if atol is None else float(atol),
            declared.rtol if rtol is None else float(rtol),
        )

    tolerances = {name: tolerance(name) for name in calls}
    steps = 2 + int(tf1) + len(onnx_paths)
    with Progress(steps, "export parity (keras, savedmodel, tf1, onnx)", unit="runs") as bar:
        references = {
            name: {
                k: np.asarray(v)
                for k, v in signature_set.resolve(name)
                .reference(**{k: tf.constant(x) for k, x in inputs.items()})
                .items()
            }
            for name, inputs in calls.items()
        }
        bar.update()
        runs: dict[str, dict[str, dict[str, np.ndarray]]] = {
            "savedmodel": savedmodel.run_tf2(savedmodel_dir, calls)
        }
        bar.update()
        if tf1:
            runs["tf1_session"] = savedmodel.run_tf1(savedmodel_dir, calls)
            bar.update()
        onnx_runs: dict[str, dict[str, np.ndarray]] = {}
        for name, path in onnx_paths.items():
            signature = signature_set.signatures[name]
            outputs = onnx_export.run_onnx(path, calls[name])
            renamed = {signature.onnx_output_name(k): k for k in signature.output_names}
            onnx_runs[name] = {renamed.get(k, k): v for k, v in outputs.items()}
            bar.update()
    if onnx_paths:
        runs["onnxruntime"] = onnx_runs

    loosest = max(tolerances.values(), key=lambda t: (t.atol, t.rtol), default=Tolerance())
    report: dict[str, Any] = {
        "atol": loosest.atol,
        "rtol": loosest.rtol,
        "tolerances": {name: t.to_dict() for name, t in tolerances.items()},
        "rule": "|candidate - keras| <= atol + rtol * |keras| with each signature's own "
        "atol and rtol (tolerances); verdicts exact unless the score is within that "
        "tolerance of the threshold; normalized_score within the anomaly_score tolerance / std",
        "batch_size": int(max(len(next(iter(v.values()))) for v in calls.values())),
        "backends": list(runs),
        "signatures": {},
        "max_abs_diff": 0.0,
    }
    failures: list[str] = []
    std = signature_set.normalization[1] if signature_set.normalization else None
    for name in calls:
        entry = {}
        for backend, results in runs.items():
            if name not in results:
                continue
            diffs, problems = compare_outputs(
                references[name],
                results[name],
                atol=tolerances[name].atol,
                rtol=tolerances[name].rtol,
                normalization_std=std,
            )
            entry[backend] = diffs
            failures += [f"{name} [{backend}] {p}" for p in problems]
            for d in diffs.values():
                if "max_abs_diff" in d and np.isfinite(d["max_abs_diff"]):
                    report["max_abs_diff"] = max(report["max_abs_diff"], d["max_abs_diff"])
        report["signatures"][name] = entry
    report["passed"] = not failures
    if failures:
        raise ParityError(
            "exported model disagrees with Keras:\n  " + "\n  ".join(failures), report
        )
    return report
