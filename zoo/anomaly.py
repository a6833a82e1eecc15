"""Anomaly detection as a product: fit on normal data, calibrate a threshold, score,
decide and evaluate — one API for image and sequence autoencoders and the VAE.

>>> detector = AnomalyDetector(zoo.load("conv_ae"))
>>> detector.fit(normal_train, epochs=20)
>>> detector.calibrate(normal_heldout, target_fpr=0.01)      # or calibrate_f1(x, labels)
>>> verdicts = detector.predict(x)
>>> report = detector.evaluate(x_test, labels_test, out_dir="runs/eval")

Scores (higher = more anomalous) come from the model's ``anomaly_score``: mean squared
(``score="l2"``) or absolute (``"l1"``) reconstruction error per value for
autoencoders, per valid timestep for sequence autoencoders, and the negative ELBO
(nats) for the VAE. Thresholds follow :mod:`zoo.calibration`, so what is
evaluated here is what the exported ``score`` signature decides.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.calibration import (
    ScoreNormalization,
    Threshold,
    anomaly_scores,
    calibrate_threshold,
    calibrate_threshold_f1,
    calibration_size_warning,
    is_anomaly,
    warn_if_calibration_too_small,
)
from zoo.metrics import AnomalyReport, evaluate_scores, plot_scores
from zoo.tasks import AnomalyScorer, declaration_of

__all__ = [
    "AnomalyDetector",
    "EvaluationData",
    "Threshold",
    "anomaly_evaluation_data",
    "anomaly_scores",
    "calibrate_threshold",
    "calibrate_threshold_f1",
    "corrupt_images",
]


def corrupt_images(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Synthetic image anomalies: an inverted central 12x12 patch plus N(0, 0.25) noise."""
    rng = np.random.default_rng(seed)
    out = np.array(images, dtype="float32", copy=True)
    height, width = out.shape[1:3]
    top, left = (height - 12) // 2, (width - 12) // 2
    out[:, top : top + 12, left : left + 12] = 1.0 - out[:, top : top + 12, left : left + 12]
    return np.clip(out + rng.normal(0.0, 0.25, size=out.shape).astype("float32"), 0.0, 1.0)


class AnomalyDetector:
    """A trained (or trainable) model, its threshold, and the decision ``score > threshold``."""

    def __init__(self, model: keras.Model, threshold: Threshold | float | None = None):
        declaration = declaration_of(model)
        if not declaration.implements(AnomalyScorer):
            raise TypeError(
                f"{type(model).__name__} ({declaration.family}) scores no anomalies; use a "
                "model that does, e.g. an autoencoder or VAE (zoo.list_models('*ae*'))"
            )
        self.model = model
        self.threshold = (
            Threshold.given(threshold) if isinstance(threshold, (int, float)) else threshold
        )
        self.normalization: ScoreNormalization | None = None

    def fit(self, normal: Any, **fit_kwargs: Any) -> keras.callbacks.History:
        """Train on normal data only (compiles with the trainer's default optimizer if needed)."""
        if not self.model.compiled:
            self.model.compile()
        fit_kwargs.setdefault("verbose", 0)
        return self.model.fit(normal, **fit_kwargs)

    def score(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Anomaly scores (float64) for an array or a dataset of inputs (progress on stderr)."""
        return anomaly_scores(self.model, x, batch_size=batch_size)

    def calibrate(self, normal_heldout: Any, *, target_fpr: float = 0.01) -> Threshold:
        """Threshold at ``target_fpr`` on held-out normal data; also fixes the normalisation.
        Warns (:class:`~zoo.calibration.CalibrationSizeWarning`) when the data are
        too few for ``target_fpr`` (fewer than ``10 / target_fpr`` examples)."""
        scores = anomaly_scores(self.model, normal_heldout, label="calibration scores")
        warn_if_calibration_too_small(scores.size, target_fpr)
        self.threshold = calibrate_threshold(scores, target_fpr=target_fpr)
        self.normalization = ScoreNormalization.from_scores(scores)
        return self.threshold

    def calibrate_f1(self, x: Any, labels: Any) -> Threshold:
        """Threshold with the best F1 on labelled validation data (1 = anomaly)."""
        self.threshold = calibrate_threshold_f1(self.score(x), labels)
        return self.threshold

    def predict(self, x: Any) -> np.ndarray:
        """Verdicts: True where ``score > threshold`` or the score is not finite
        (:data:`zoo.calibration.RULE`)."""
        if self.threshold is None:
            raise ValueError(
                "no threshold yet: call calibrate(normal_heldout) or calibrate_f1(x, labels)"
            )
        return is_anomaly(self.score(x), self.threshold.value)

    def evaluate(
        self,
        x: Any,
        labels: Any,
        *,
        groups: Any = None,
        out_dir: str | os.PathLike | None = None,
        title: str = "",
    ) -> AnomalyReport:
        """AUROC, AUPR, F1 at the threshold and the confusion matrix (and, with ``groups``
        naming each example's kind, AUROC and recall per kind of anomaly); with
        ``out_dir``, also ``report.json``, ``report.md`` and ``scores.png`` (histograms
        and ROC)."""
        if self.threshold is None:
            raise ValueError("no threshold yet: call calibrate(...) or calibrate_f1(...) first")
        scores = self.score(x)
        report = evaluate_scores(scores, labels, self.threshold, groups=groups)
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            plot_scores(scores, labels, self.threshold.value, out / "scores.png", title=title)
            payload = {**report.to_dict(), "threshold_detail": self.threshold.to_dict()}
            (out / "report.json").write_text(json.dumps(payload, indent=1))
            (out / "report.md").write_text(
                f"# {title or 'Anomaly evaluation'}\n\n{report.to_markdown()}\n"
            )
        return report


@dataclass
class EvaluationData:
    """Held-out normal data to calibrate on, and a labelled test set (1 = anomaly) with
    each test example's kind in ``groups`` when the protocol knows it."""

    calibration: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    description: str
    groups: np.ndarray | None = None
    #: Why the calibration set is too small for the target FPR (see
    #: :func:`zoo.calibration.calibration_size_warning`), or None.
    calibration_warning: str | None = None


def anomaly_evaluation_data(
    model: keras.Model,
    *,
    normal_classes: list[int] | None = None,
    seed: int = 0,
) -> EvaluationData:
    """The evaluation protocol for a model, from data the zoo ships or makes.

    - Sequence models: synthetic series (``zoo.data.synthetic_series``): normal series to
      calibrate; a fresh set with injected spikes, level shifts and pattern changes to test.
    - Image models with ``normal_classes``: the bundled test split; half of the normal
      digits calibrate, the other half plus every other digit (the anomalies) test.
    - Image models without: half of the held-out digits calibrate; the other half and
      their corrupted copies (``corrupt_images``) test.
    """
    declaration = declaration_of(model)
    kind = declaration.examples
    protocol = EVALUATION_PROTOCOLS.get(kind.key if kind is not None else "")
    if protocol is None:
        raise TypeError(
            f"no anomaly evaluation protocol for {model.name}'s inputs "
            f"({kind.key if kind else 'none'}); known: {', '.join(EVALUATION_PROTOCOLS)}"
        )
    return protocol(kind.shape, normal_classes, seed)


def sequence_evaluation_data(
    shape: tuple[int, ...], normal_classes: list[int] | None, seed: int
) -> EvaluationData:
    """Synthetic series: normal ones to calibrate; a fresh set with injected spikes, level
    shifts and pattern changes to test (``normal_classes`` does not apply)."""
    from zoo import data as zdata

    steps, features = shape
    # the generator is free: 1,000 normal series put the 1% quantile 10 scores deep
    normal = zdata.synthetic_series(n_series=1000, length=steps, n_features=features,
                                    anomaly_fraction=0.0, seed=seed + 1000)  # fmt: skip
    test = zdata.synthetic_series(n_series=1000, length=steps, n_features=features,
                                  anomaly_fraction=0.3, seed=seed + 2000)  # fmt: skip
    return EvaluationData(
        normal.series, test.series, test.labels.astype(int),
        "synthetic series: 1000 normal to calibrate; 1000 to test, 30% with one injected "
        "spike, level shift or pattern change",
        groups=np.array([kind or "normal" for kind in test.kinds]),
    )  # fmt: skip


def image_evaluation_data(
    shape: tuple[int, ...], normal_classes: list[int] | None, seed: int
) -> EvaluationData:
    """The bundled MNIST test split, resized to ``shape``: one-class (``normal_classes``)
    or normal digits against corrupted copies."""
    from zoo import data as zdata

    images, digit_labels = zdata.load_sample("test")
    x = np.stack([e.numpy() for e in zdata.from_numpy(images, image_shape=shape, resize=True)])
    rng = np.random.default_rng(seed)
    if normal_classes:
        is_normal = np.isin(digit_labels, normal_classes)
        normal_idx = rng.permutation(np.flatnonzero(is_normal))
        half = len(normal_idx) // 2
        calibration = x[normal_idx[:half]]
        test_idx = np.concatenate([normal_idx[half:], np.flatnonzero(~is_normal)])
        return EvaluationData(
            calibration, x[test_idx], (~is_normal[test_idx]).astype(int),
            f"bundled MNIST test split: normal digits {sorted(normal_classes)} (half calibrate, "
            "half test); every other digit is an anomaly",
            groups=np.array([f"digit {d}" for d in digit_labels[test_idx]]),
        )  # fmt: skip
    order = rng.permutation(len(x))
    half = len(order) // 2
    calibration, held = x[order[:half]], x[order[half:]]
    test = np.concatenate([held, corrupt_images(held, seed)])
    labels = np.concatenate([np.zeros(len(held), int), np.ones(len(held), int)])
    return EvaluationData(
        calibration, test, labels,
        "bundled MNIST test split: half calibrate; the other half and its corrupted copies "
        "(inverted 12x12 patch + noise) test",
    )  # fmt: skip


#: Anomaly evaluation protocol by the examples a model takes (its declaration's
#: ``examples.key``): data the zoo ships or makes.
EVALUATION_PROTOCOLS = {"images": image_evaluation_data, "sequences": sequence_evaluation_data}


def evaluate_model(
    model: keras.Model,
    out_dir: str | os.PathLike,
    *,
    normal_classes: list[int] | None = None,
    target_fpr: float = 0.01,
    seed: int = 0,
) -> tuple[AnomalyReport, Path, EvaluationData]:
    """``zoo evaluate``'s anomaly evaluation of a loaded model: calibrate on held-out
    normal data (:func:`anomaly_evaluation_data`) at ``target_fpr``, evaluate, write report
    and plot into ``out_dir`` and log the figures to TensorBoard there. For a run folder,
    :func:`zoo.recipes.evaluation.evaluate_anomaly_run` loads the model and takes
    ``normal_classes`` from its recipe."""
    import tensorflow as tf

    data = anomaly_evaluation_data(model, normal_classes=normal_classes, seed=seed)
    detector = AnomalyDetector(model)
    detector.calibrate(data.calibration, target_fpr=target_fpr)
    data.calibration_warning = calibration_size_warning(len(data.calibration), target_fpr)
    out = Path(out_dir)
    report = detector.evaluate(
        data.test, data.labels, groups=data.groups, out_dir=out,
        title=f"{model.name}: {data.description}",
    )  # fmt: skip
    with tf.summary.create_file_writer(str(out)).as_default():
        for key in ("auroc", "aupr", "f1", "precision", "recall", "fpr"):
            tf.summary.scalar(f"anomaly/{key}", getattr(report, key), step=0)
        for group in report.groups:
            name = group.group.replace(" ", "_")
            tf.summary.scalar(f"anomaly_by_kind/auroc_{name}", group.auroc, step=0)
            tf.summary.scalar(f"anomaly_by_kind/recall_{name}", group.recall, step=0)
        from PIL import Image

        plot = np.asarray(Image.open(out / "scores.png").convert("RGB"), "float32") / 255.0
        tf.summary.image("anomaly/scores_and_roc", plot[None], step=0)
    return report, out, data
