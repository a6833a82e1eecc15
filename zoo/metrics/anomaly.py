"""Anomaly-detection metrics, a report and a diagnostic plot (numpy + matplotlib only).

Conventions (the same as :mod:`zoo.calibration`): a *higher* score is more
anomalous, labels are ``1``/``True`` for an anomaly and ``0``/``False`` for a normal
example, and an example is flagged when ``score > threshold`` (strictly).

Tied scores are one step everywhere: they are flagged together by every threshold, so
the ROC curve crosses a tie diagonally (it counts 1/2 in the AUROC, as in the
Mann-Whitney U statistic) and average precision takes one precision value per tie.

Importing this module loads neither TensorFlow nor pyplot; matplotlib is imported by
:func:`plot_scores` only, and draws through an explicit Agg canvas.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from zoo.calibration import Threshold
from zoo.fileio import atomic_path

__all__ = [
    "AnomalyReport",
    "auroc",
    "average_precision",
    "confusion_matrix",
    "evaluate_scores",
    "f1_score",
    "plot_scores",
    "precision_recall_curve",
    "roc_curve",
]


# --------------------------------------------------------------------------- validation


def _as_scores(scores: Any) -> np.ndarray:
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"scores must be real numbers (one anomaly score per example); {err}"
        ) from err
    if array.ndim != 1:
        raise ValueError(
            f"scores must be a 1-D array with one score per example; got shape {array.shape}. "
            "Reduce per-pixel or per-feature scores to one number per example first "
            "(e.g. a mean or max), or np.ravel() an (n, 1) column"
        )
    if array.size == 0:
        raise ValueError("scores are empty; pass at least one score")
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"scores contain {bad.size} non-finite value(s) (NaN or inf), first at index "
            f"{bad[:5].tolist()}; drop or fix those examples (a diverged model often "
            "yields NaN reconstruction errors)"
        )
    return array


def _as_binary(values: Any, what: str, n: int, against: str = "scores") -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{what} must be a 1-D array with one entry per example; got shape {array.shape}"
        )
    if array.size != n:
        raise ValueError(
            f"got {n} {against} but {array.size} {what}; they must have the same length "
            "(one entry per example, in the same order)"
        )
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"{what} must be 0/1 or booleans (1/True = anomaly); got dtype {array.dtype}"
        )
    binary = (array == 0) | (array == 1)
    if not binary.all():
        bad = np.unique(array[~binary])[:5].tolist()
        raise ValueError(
            f"{what} must be 0 (normal) or 1 (anomaly); found other values such as {bad}. "
            "Map your classes to 0/1 first, e.g. labels = (classes != normal_class)"
        )
    return array == 1


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(scores float64, positive bool)``, both 1-D and of equal length."""
    scores = _as_scores(scores)
    return scores, _as_binary(labels, "labels", scores.size)


def _need_both_classes(positive: np.ndarray, what: str) -> None:
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        only = "anomalies (1)" if n_pos else "normal examples (0)"
        raise ValueError(
            f"{what} needs both normal (0) and anomalous (1) examples, but the labels hold "
            f"only {only}, {positive.size} of them; evaluate on a set that mixes held-out "
            "normal data with known anomalies"
        )


def _counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative ``(tp, fp, thresholds)`` as the threshold sweeps down through the scores.

    Point 0 flags nothing (threshold = the highest score); point ``k`` flags every score
    down to the ``k``-th distinct value, i.e. ``score > thresholds[k]`` where
    ``thresholds[k]`` is the next lower distinct score (just below the minimum for the
    last point, which flags everything). Thresholds are strictly decreasing.
    """
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    hits = positive[order].astype(np.int64)
    ends = np.append(np.flatnonzero(np.diff(ordered)), ordered.size - 1)  # last index per tie
    tp = np.cumsum(hits)[ends]
    fp = ends + 1 - tp
    below = np.append(ordered[ends[:-1] + 1], np.nextafter(ordered[-1], -np.inf))
    zero = np.zeros(1, dtype=np.int64)
    return (
        np.concatenate([zero, tp]),
        np.concatenate([zero, fp]),
        np.concatenate([ordered[:1], below]),
    )


def _threshold_value(threshold: Any) -> tuple[float, str]:
    """``(value, method)`` of a number (method ``"given"``) or a calibration ``Threshold``."""
    if isinstance(threshold, Threshold):
        value, method = float(threshold.value), str(threshold.method)
    elif isinstance(threshold, numbers.Real) and not isinstance(threshold, (bool, np.bool_)):
        value, method = float(threshold), "given"
    else:
        raise TypeError(
            "threshold must be a number or a zoo.calibration.Threshold (from "
            f"calibrate_threshold / calibrate_threshold_f1); got {type(threshold).__name__}"
        )
    if not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number; got {value}")
    return value, method


# --------------------------------------------------------------------------- curves


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: ``(fpr, tpr, thresholds)``, one point per distinct score plus (0, 0).

    ``thresholds`` is strictly decreasing and point ``i`` is the false/true-positive
    rate of ``score > thresholds[i]``: ``thresholds[0]`` is the highest score (nothing
    flagged, point (0, 0)) and ``thresholds[-1]`` lies just below the lowest score
    (everything flagged, point (1, 1)). Tied scores move the curve in one diagonal step.
    Needs both classes.
    """
    scores, positive = _check(scores, labels)
    _need_both_classes(positive, "roc_curve")
    tp, fp, thresholds = _counts(scores, positive)
    return fp / fp[-1], tp / tp[-1], thresholds


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (trapezoids, so ties count 1/2).

    Equals the Mann-Whitney ``U / (n_anomalous * n_normal)``: the probability that a
    random anomaly scores higher than a random normal example, plus half the probability
    of a tie. 0.5 is chance, 1.0 perfect separation, 0.0 perfectly reversed scores.
    Needs both classes.
    """
    scores, positive = _check(scores, labels)
    _need_both_classes(positive, "auroc")
    tp, fp, _ = _counts(scores, positive)
    return _auroc_from_counts(tp, fp)


def _auroc_from_counts(tp: np.ndarray, fp: np.ndarray) -> float:
    twice_area = int(np.sum(np.diff(fp) * (tp[1:] + tp[:-1])))  # exact integer trapezoids
    return twice_area / (2 * int(tp[-1]) * int(fp[-1]))


def precision_recall_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The precision-recall curve: ``(precision, recall, thresholds)``, all the same length.

    Point ``i`` is ``score > thresholds[i]`` with the same decreasing ``thresholds`` as
    :func:`roc_curve`. Point 0 flags nothing: recall 0 and, by the usual plotting
    convention, precision 1. The last point flags everything (recall 1, precision =
    prevalence). Needs both classes.
    """
    scores, positive = _check(scores, labels)
    _need_both_classes(positive, "precision_recall_curve")
    tp, fp, thresholds = _counts(scores, positive)
    precision, recall = _pr_from_counts(tp, fp)
    return precision, recall, thresholds


def _pr_from_counts(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    precision = np.ones(tp.size)
    precision[1:] = tp[1:] / (tp[1:] + fp[1:])  # every point after the first flags >= 1 example
    return precision, tp / tp[-1]


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision, the step-wise area under the PR curve: ``sum (R_n - R_{n-1}) P_n``.

    Each distinct score is one step (ties share one precision), with no interpolation.
    A random scorer gets about the prevalence of anomalies; a perfect one gets 1.0.
    Needs both classes.
    """
    scores, positive = _check(scores, labels)
    _need_both_classes(positive, "average_precision")
    tp, fp, _ = _counts(scores, positive)
    return _ap_from_counts(tp, fp)


def _ap_from_counts(tp: np.ndarray, fp: np.ndarray) -> float:
    precision, recall = _pr_from_counts(tp, fp)
    return float(np.sum(np.diff(recall) * precision[1:]))


# --------------------------------------------------------------------------- verdicts


def confusion_matrix(labels: Any, predictions: Any) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]`` as int64: rows are the true class, columns the prediction."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"labels must be a 1-D array with one entry per example; got shape {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError("labels are empty; pass at least one example")
    actual = _as_binary(labels, "labels", labels.size)
    predicted = _as_binary(predictions, "predictions", labels.size, against="labels")
    tp = int(np.sum(actual & predicted))
    fp = int(np.sum(~actual & predicted))
    fn = int(np.sum(actual & ~predicted))
    tn = actual.size - tp - fp - fn
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_score(labels: Any, predictions: Any) -> float:
    """F1 of the anomaly class: ``2 tp / (2 tp + fp + fn)``.

    Returns 0.0 whenever there is no true positive, which includes the cases where F1
    is undefined (no anomaly predicted and none present, so ``0 / 0``) and where
    precision is undefined (nothing predicted as anomalous).
    """
    (_, fp), (fn, tp) = confusion_matrix(labels, predictions)
    return _f1(int(tp), int(fp), int(fn))


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class GroupResult:
    """One kind of anomaly (e.g. an injected spike, or a digit) against all the normal
    examples: how many there are, the AUROC of that contrast, and the share flagged."""

    group: str
    n: int
    auroc: float
    recall: float


def evaluate_groups(
    scores: Any, labels: Any, groups: Any, threshold: float | Threshold
) -> tuple[GroupResult, ...]:
    """Per group of anomalies (``groups[i]`` names example i's kind; normal examples'
    entries are ignored): AUROC of that group's anomalies against *all* normal examples,
    and recall at ``threshold`` (``score > threshold``). Groups in sorted order."""
    value, _ = _threshold_value(threshold)
    scores, positive = _check(scores, labels)
    names = np.asarray(groups).astype(str)
    if names.shape != scores.shape:
        raise ValueError(
            f"groups must name one kind per example: got shape {names.shape} for "
            f"{scores.size} scores"
        )
    _need_both_classes(positive, "evaluate_groups")
    normal = scores[~positive]
    out = []
    for name in sorted(set(names[positive].tolist())):
        mine = scores[positive & (names == name)]
        both = np.concatenate([normal, mine])
        flags = np.concatenate([np.zeros(normal.size, bool), np.ones(mine.size, bool)])
        out.append(
            GroupResult(name, int(mine.size), auroc(both, flags), float(np.mean(mine > value)))
        )
    return tuple(out)


@dataclass(eq=False)
class AnomalyReport:
    """Threshold-free (AUROC, AUPR) and thresholded metrics of one set of scores.

    ``precision``, ``recall``, ``f1``, ``fpr`` and ``confusion`` (``[[tn, fp], [fn, tp]]``)
    are for ``score > threshold``. ``precision`` is 0.0 when nothing is flagged.
    Compare reports through :meth:`to_dict` (``==`` is identity, as ``confusion`` is an
    array).
    """

    auroc: float
    aupr: float
    f1: float
    precision: float
    recall: float
    fpr: float
    confusion: np.ndarray
    threshold: float
    threshold_method: str
    n_normal: int
    n_anomalous: int
    groups: tuple[GroupResult, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, ints, strings and a nested list: ``json.dumps`` takes it as is."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "groups":
                out[field.name] = [asdict(g) for g in value]
            elif field.name == "confusion":
                out[field.name] = np.asarray(value).astype(int).tolist()
            elif isinstance(value, str):
                out[field.name] = value
            elif field.name.startswith("n_"):
                out[field.name] = int(value)
            else:
                out[field.name] = float(value)
        return out

    def to_markdown(self) -> str:
        """A metrics table and the confusion matrix as GitHub-flavoured Markdown."""
        (tn, fp), (fn, tp) = np.asarray(self.confusion).tolist()
        rows = [
            ("AUROC", f"{self.auroc:.4f}"),
            ("AUPR (average precision)", f"{self.aupr:.4f}"),
            ("F1", f"{self.f1:.4f}"),
            ("precision", f"{self.precision:.4f}"),
            ("recall (TPR)", f"{self.recall:.4f}"),
            ("FPR", f"{self.fpr:.4f}"),
            ("threshold (flag score > t)", f"{self.threshold:.6g} ({self.threshold_method})"),
            ("normal / anomalous examples", f"{self.n_normal} / {self.n_anomalous}"),
        ]
        lines = ["| metric | value |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        lines += [
            "",
            "| | predicted normal | predicted anomalous |",
            "|---|---:|---:|",
            f"| **actual normal** | {tn} | {fp} |",
            f"| **actual anomalous** | {fn} | {tp} |",
        ]
        if self.groups:
            lines += [
                "",
                "| anomaly kind | examples | AUROC (against all normal) | recall at threshold |",
                "|---|---:|---:|---:|",
            ]
            lines += [
                f"| {g.group} | {g.n} | {g.auroc:.4f} | {g.recall:.4f} |" for g in self.groups
            ]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        (tn, fp), (fn, tp) = np.asarray(self.confusion).tolist()
        width = max(len(str(v)) for v in (tn, fp, fn, tp, "anomalous"))
        return "\n".join(
            [
                f"Anomaly detection: {self.n_normal} normal, {self.n_anomalous} anomalous",
                f"  AUROC {self.auroc:.4f}   AUPR {self.aupr:.4f}",
                f"  threshold {self.threshold:.6g} ({self.threshold_method}), "
                "flag score > threshold",
                f"  precision {self.precision:.4f}   recall {self.recall:.4f}   "
                f"F1 {self.f1:.4f}   FPR {self.fpr:.4f}",
                f"  {'':<18}{'normal':>{width}}  {'anomalous':>{width}}   <- predicted",
                f"  {'actual normal':<18}{tn:>{width}}  {fp:>{width}}",
                f"  {'actual anomalous':<18}{fn:>{width}}  {tp:>{width}}",
                *(["  per kind of anomaly, against all normal examples:"] if self.groups else []),
                *(
                    f"  {g.group:<18}{g.n:>5} anomalies  AUROC {g.auroc:.4f}  recall {g.recall:.4f}"
                    for g in self.groups
                ),
            ]
        )


def evaluate_scores(
    scores: Any, labels: Any, threshold: float | Threshold, groups: Any = None
) -> AnomalyReport:
    """Evaluate anomaly ``scores`` against ``labels`` at ``threshold``; with ``groups``
    (the kind of each example, e.g. of injected anomaly) also per kind
    (:func:`evaluate_groups`).

    ``threshold`` is a number (reported as method ``"given"``) or a ``Threshold`` from
    :func:`zoo.calibration.calibrate_threshold` (a quantile of held-out normal
    scores) or :func:`~zoo.calibration.calibrate_threshold_f1`. The verdict is
    ``score > threshold``, the calibration convention. Needs both classes.
    """
    value, method = _threshold_value(threshold)
    scores, positive = _check(scores, labels)
    _need_both_classes(positive, "evaluate_scores")
    tp_curve, fp_curve, _ = _counts(scores, positive)
    confusion = confusion_matrix(positive, scores > value)
    (tn, fp), (fn, tp) = confusion.tolist()
    n_anomalous, n_normal = tp + fn, tn + fp
    return AnomalyReport(
        auroc=_auroc_from_counts(tp_curve, fp_curve),
        aupr=_ap_from_counts(tp_curve, fp_curve),
        f1=_f1(tp, fp, fn),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / n_anomalous,
        fpr=fp / n_normal,
        confusion=confusion,
        threshold=value,
        threshold_method=method,
        n_normal=n_normal,
        n_anomalous=n_anomalous,
        groups=() if groups is None else evaluate_groups(scores, positive, groups, value),
    )


# --------------------------------------------------------------------------- plot


def plot_scores(
    scores: Any,
    labels: Any,
    threshold: float | Threshold,
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> str:
    """Write one PNG: score histograms per class beside the ROC curve; returns ``str(path)``.

    Left: normal and anomalous score densities over shared bins, with the threshold as a
    vertical line. Right: the ROC curve (AUROC in the legend), the chance diagonal and
    the operating point of ``score > threshold``. ``path`` must end in ``.png``; parent
    folders are created and the file is written atomically (``zoo.fileio.atomic_path``).
    Uses a private Agg canvas, so
    pyplot and the global backend are untouched.
    """
    value, method = _threshold_value(threshold)
    scores, positive = _check(scores, labels)
    _need_both_classes(positive, "plot_scores")
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(f"plot_scores writes PNG; give a path ending in .png, got {str(path)!r}")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tp, fp, _ = _counts(scores, positive)
    fpr, tpr = fp / fp[-1], tp / tp[-1]
    area = _auroc_from_counts(tp, fp)
    normal, anomalous = scores[~positive], scores[positive]

    fig = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_hist, ax_roc = fig.subplots(1, 2, width_ratios=[1.4, 1])

    n_bins = int(min(100, max(10, math.isqrt(scores.size))))
    edges = np.histogram_bin_edges(scores, bins=n_bins)  # shared by both classes
    style = {"bins": edges, "density": True, "histtype": "stepfilled", "alpha": 0.5}
    ax_hist.hist(normal, color="tab:blue", label=f"normal (n={normal.size})", **style)
    ax_hist.hist(anomalous, color="tab:red", label=f"anomalous (n={anomalous.size})", **style)
    ax_hist.axvline(value, color="black", linestyle="--", label=f"threshold {value:.4g} ({method})")
    ax_hist.set_xlabel("anomaly score (higher = more anomalous)")
    ax_hist.set_ylabel("density")
    ax_hist.set_title("scores by class")
    ax_hist.legend(loc="best")

    point_fpr, point_tpr = float(np.mean(normal > value)), float(np.mean(anomalous > value))
    ax_roc.plot(fpr, tpr, color="tab:purple", linewidth=2, label=f"ROC (AUROC = {area:.4f})")
    ax_roc.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance (0.5)")
    ax_roc.plot(
        [point_fpr],
        [point_tpr],
        "o",
        color="black",
        label=f"threshold: FPR {point_fpr:.3f}, TPR {point_tpr:.3f}",
    )
    ax_roc.set_xlim(-0.01, 1.01)
    ax_roc.set_ylim(-0.01, 1.01)
    ax_roc.set_aspect("equal")
    ax_roc.set_xlabel("false-positive rate")
    ax_roc.set_ylabel("true-positive rate")
    ax_roc.set_title("ROC")
    ax_roc.legend(loc="lower right")
    if title:
        fig.suptitle(title)

    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return str(target)
