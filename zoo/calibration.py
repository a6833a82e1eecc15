"""Anomaly thresholds from scores: a quantile of normal scores, or the best F1 on labels.

Convention throughout the zoo: a *higher* score is more anomalous and an example is
flagged when ``score > threshold`` (strictly) or its score is not finite (:data:`RULE`:
a NaN or infinite input is never called normal). The quantile rule follows the usual
"fix the false-positive rate on held-out normal data" practice (as in anomalib's
adaptive thresholds); the F1 rule is the classic precision/recall trade-off.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zoo.progress import Progress

__all__ = [
    "MIN_SCORES_ABOVE_THRESHOLD",
    "CalibrationSizeWarning",
    "ScoreNormalization",
    "Threshold",
    "anomaly_scores",
    "calibrate_threshold",
    "calibrate_threshold_f1",
    "calibration_size_warning",
    "is_anomaly",
    "min_calibration_size",
    "warn_if_calibration_too_small",
]

#: The size rule for a quantile threshold: at least this many calibration scores must
#: lie above it (see :func:`min_calibration_size`).
MIN_SCORES_ABOVE_THRESHOLD = 10


#: The decision rule, in words (metadata, model cards, signature descriptions).
RULE = "is_anomaly = anomaly_score > threshold, or anomaly_score is NaN or infinite"


def is_anomaly(scores: Any, threshold: Any) -> np.ndarray:
    """The verdicts of :data:`RULE`: ``score > threshold`` or a non-finite score (a NaN
    score compares False with everything, so without this a NaN input would be normal)."""
    scores = np.asarray(scores, np.float64)
    return (scores > np.asarray(threshold, np.float64)) | ~np.isfinite(scores)


class CalibrationSizeWarning(UserWarning):
    """The calibration set is too small for the target false-positive rate."""


def min_calibration_size(target_fpr: float) -> int:
    """The fewest normal examples that calibrate a threshold at ``target_fpr`` reliably:
    ``ceil(10 / target_fpr)`` (1,000 at 1%, 200 at 5%; none needed at 0).

    The quantile threshold from ``n`` scores leaves ``m = floor(target_fpr * n)`` of them
    above it, and the false-positive rate it achieves on new normal data is estimated
    from those ``m`` alone: its relative standard error is about ``1 / sqrt(m)``
    (binomial). Asking for ``m >= 10`` keeps that below about 32%; with ``m = 0``
    (fewer than ``1 / target_fpr`` examples) the "quantile" is just the largest score.
    """
    target_fpr = float(target_fpr)
    if target_fpr <= 0.0:
        return 0
    return math.ceil(MIN_SCORES_ABOVE_THRESHOLD / target_fpr - 1e-9)


def calibration_size_warning(n: int, target_fpr: float) -> str | None:
    """One line saying why ``n`` calibration examples are too few for ``target_fpr``
    (the rule of :func:`min_calibration_size`), or None when they are enough."""
    needed = min_calibration_size(target_fpr)
    if int(n) >= needed:
        return None
    above = math.floor(float(target_fpr) * int(n) + 1e-9)
    where = (
        "the threshold is simply the largest score"
        if above == 0
        else f"only {above} {'scores lie' if above > 1 else 'score lies'} above the threshold"
    )
    return (
        f"the calibration set has {int(n)} normal examples, too few for a target FPR of "
        f"{float(target_fpr):g}: {where}, so the false-positive rate on new data is uncertain "
        f"(rule: at least 10 / target_fpr = {needed} examples); calibrate on more held-out "
        "normal data or raise the target FPR"
    )


def warn_if_calibration_too_small(n: int, target_fpr: float, stacklevel: int = 3) -> str | None:
    """:func:`calibration_size_warning`, also issued as a :class:`CalibrationSizeWarning`
    (``stacklevel`` as for :func:`warnings.warn`, counted from this function: the default
    names the caller of the function that calls it)."""
    message = calibration_size_warning(n, target_fpr)
    if message is not None:
        warnings.warn(message, CalibrationSizeWarning, stacklevel=stacklevel)
    return message


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and how it was chosen.

    ``observed_fpr`` is the fraction of *normal* calibration scores above ``value``
    (for ``best_f1``: of the examples labelled normal). ``n`` counts the calibration
    scores used. ``method`` is ``"quantile"``, ``"best_f1"`` or ``"given"``.
    """

    value: float
    method: str
    target_fpr: float | None = None
    n: int = 0
    observed_fpr: float | None = None
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def given(cls, value: float) -> Threshold:
        """A threshold chosen by the caller (no calibration data)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"threshold must be a finite number; got {value}")
        return cls(value=value, method="given")


@dataclass(frozen=True)
class ScoreNormalization:
    """``normalized_score = (anomaly_score - mean) / std`` from held-out normal scores.

    ``std`` is the sample standard deviation (``ddof=1``) of the ``n`` calibration
    scores, so a normal example scores about N(0, 1) if the scores are roughly normal;
    anomalies score many standard deviations above 0.
    """

    mean: float
    std: float
    n: int
    ddof: int = 1

    RULE = "normalized_score = (anomaly_score - mean) / std"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule": self.RULE}

    @classmethod
    def from_scores(cls, scores_normal: Any) -> ScoreNormalization:
        """Mean and sample std of ``scores_normal``; needs two or more scores that differ."""
        scores = _scores(scores_normal, "scores_normal")
        if scores.size < 2:
            raise ValueError(
                f"score normalisation needs at least 2 calibration scores; got {scores.size}"
            )
        std = float(np.std(scores, ddof=1))
        if not std > 0.0:
            raise ValueError("calibration scores are all equal: their std is 0, nothing to scale")
        return cls(mean=float(np.mean(scores)), std=std, n=int(scores.size))

    def apply(self, scores: Any) -> np.ndarray:
        """The normalised scores (float64), as the exported graph computes them in float32."""
        return (np.asarray(scores, np.float64) - self.mean) / self.std


def _scores(values: Any, what: str = "scores") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        array = array.reshape(-1)
    if array.size == 0:
        raise ValueError(f"{what} are empty; calibration needs at least one score")
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(f"{what} contain {bad} non-finite value(s) (NaN or inf)")
    return array


def calibrate_threshold(scores_normal: Any, *, target_fpr: float = 0.01) -> Threshold:
    """The smallest threshold whose false-positive rate on ``scores_normal`` is <= ``target_fpr``.

    With ``n`` scores and ``m = floor(target_fpr * n)`` allowed false positives, that
    threshold is the ``(n - m)``-th smallest score: at most ``m`` scores lie strictly
    above it, and any smaller threshold lets at least ``m + 1`` through. Ties can make
    the observed FPR smaller than the target, never larger.
    """
    if not 0.0 <= float(target_fpr) < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1); got {target_fpr}")
    scores = np.sort(_scores(scores_normal, "scores_normal"))
    n = scores.size
    allowed = math.floor(float(target_fpr) * n + 1e-9)  # guard 0.29 * 100 = 28.999...
    value = float(scores[n - 1 - allowed])
    observed = float(np.mean(scores > value))
    return Threshold(
        value=value, method="quantile", target_fpr=float(target_fpr), n=n, observed_fpr=observed
    )


def calibrate_threshold_f1(scores: Any, labels: Any) -> Threshold:
    """The threshold maximising F1 of ``score > threshold`` against ``labels`` (1 = anomaly).

    Candidates are every distinct score (flag what lies strictly above it) and one
    value just below the smallest score (flag everything). Ties in F1 go to the
    highest threshold (fewest alarms).
    """
    scores = _scores(scores)
    labels = np.asarray(labels).reshape(-1)
    if labels.size != scores.size:
        raise ValueError(f"{scores.size} scores but {labels.size} labels; pass one label per score")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    positive = labels.astype(bool)
    if not positive.any():
        raise ValueError("labels contain no anomalies (1s); F1 is undefined")
    pos_sorted = np.sort(scores[positive])
    neg_sorted = np.sort(scores[~positive])
    lowest = float(np.nextafter(scores.min(), -np.inf))
    candidates = np.concatenate([[lowest], np.unique(scores)])
    tp = pos_sorted.size - np.searchsorted(pos_sorted, candidates, side="right")
    fp = neg_sorted.size - np.searchsorted(neg_sorted, candidates, side="right")
    fn = pos_sorted.size - tp
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    best = int(np.flatnonzero(f1 == f1.max())[-1])  # highest threshold among ties
    flagged = tp[best] + fp[best]
    return Threshold(
        value=float(candidates[best]),
        method="best_f1",
        n=int(scores.size),
        observed_fpr=float(fp[best] / neg_sorted.size) if neg_sorted.size else 0.0,
        f1=float(f1[best]),
        precision=float(tp[best] / flagged) if flagged else 0.0,
        recall=float(tp[best] / pos_sorted.size),
    )


SCORE_BATCH = 256


def anomaly_scores(
    model: Any,
    x: Any,
    labels: Any = None,
    *,
    batch_size: int = SCORE_BATCH,
    label: str = "anomaly scores",
) -> np.ndarray:
    """``model.anomaly_score`` (float64 numpy [N]) over an array of inputs, in batches of
    ``batch_size``, or over a dataset of batches, with a progress bar on stderr; a
    conditional model scores each example under its ``labels``."""
    if hasattr(x, "as_numpy_iterator"):
        batches = ((b, None) for b in x.as_numpy_iterator())
        total = int(x.cardinality()) if int(x.cardinality()) >= 0 else 0
    else:
        x = np.asarray(x, "float32")
        y = None if labels is None else np.asarray(labels)
        starts = range(0, len(x), batch_size)
        batches = (
            (x[i : i + batch_size], None if y is None else y[i : i + batch_size]) for i in starts
        )
        total = len(starts)
    parts = []
    with Progress(total, label, unit="batches") as bar:
        for batch, batch_labels in batches:
            out = (
                model.anomaly_score(batch)
                if batch_labels is None
                else model.anomaly_score(batch, labels=batch_labels)
            )
            parts.append(np.asarray(out, np.float64).reshape(-1))
            bar.update()
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)
