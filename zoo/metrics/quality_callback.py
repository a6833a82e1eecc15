"""The Keras training callback that scores a generator's samples every N epochs and writes
the sample-quality scalars to TensorBoard (recipes turn it on with
``logging.quality_every_epochs``). Importing this module imports Keras; the rest of
:mod:`zoo.metrics` does not."""

from __future__ import annotations

import os
import sys
from typing import Any

import keras

from zoo.metrics.features import FeatureExtractor
from zoo.metrics.quality_evaluation import (
    SampleQualityEvaluator,
    default_real_sets,
    generate_samples,
)
from zoo.metrics.quality_report import METRICS, SampleQualityReport, log_report

__all__ = ["SampleQualityCallback"]


class SampleQualityCallback(keras.callbacks.Callback):
    """Every ``every_n_epochs`` epochs: generate ``n_samples`` images from latent points
    fixed at the start (numpy ``seed``; the trainer's RNG is untouched), score them with
    a :class:`SampleQualityEvaluator` and write ``quality/fid``, ``quality/kid``,
    ``quality/inception_score``, ``quality/precision``, ``quality/recall``,
    ``quality/density``, ``quality/coverage``, ``quality/class_kl`` (and
    ``quality_floor/*``) to TensorBoard in ``log_dir`` at step = epoch number.

    ``real_reference``/``real_heldout`` default to the bundled sample's train/test
    splits; the reference is embedded once, at the first evaluation. Reports are kept
    in ``self.reports`` as ``(epoch, report)`` pairs. ``add_to_logs`` also puts
    ``quality_<metric>`` into the epoch logs (seen by later callbacks).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        every_n_epochs: int = 5,
        n_samples: int = 1000,
        *,
        seed: int = 0,
        real_reference: Any = None,
        real_heldout: Any = None,
        feature_extractor: str | FeatureExtractor = "mnist_classifier",
        evaluator: SampleQualityEvaluator | None = None,
        add_to_logs: bool = False,
        verbose: bool = False,
    ):
        super().__init__()
        if every_n_epochs < 1 or n_samples < 6:
            raise ValueError(
                f"need every_n_epochs >= 1 and n_samples >= 6; got {every_n_epochs}, {n_samples}"
            )
        self.log_dir = str(log_dir)
        self.every_n_epochs, self.n_samples, self.seed = (
            int(every_n_epochs), int(n_samples), int(seed),
        )  # fmt: skip
        self.real_reference, self.real_heldout = real_reference, real_heldout
        self.feature_extractor = feature_extractor
        self.evaluator = evaluator
        self.add_to_logs, self.verbose = add_to_logs, verbose
        self.reports: list[tuple[int, SampleQualityReport]] = []

    def _evaluator(self) -> SampleQualityEvaluator:
        if self.evaluator is None:
            reference, heldout = self.real_reference, self.real_heldout
            if reference is None or heldout is None:
                default_reference, default_heldout = default_real_sets()
                reference = default_reference if reference is None else reference
                heldout = default_heldout if heldout is None else heldout
            self.evaluator = SampleQualityEvaluator(
                reference, heldout, feature_extractor=self.feature_extractor, seed=self.seed
            )
        return self.evaluator

    def evaluate_now(self, step: int) -> SampleQualityReport:
        """Generate, score, log at ``step`` and keep the report; returns it."""
        images = generate_samples(self.model, self.n_samples, seed=self.seed)
        report = self._evaluator().evaluate(images)
        log_report(report, self.log_dir, step)
        self.reports.append((step, report))
        if self.verbose:
            print(f"\nepoch {step}: {report}", file=sys.stderr)
        return report

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        report = self.evaluate_now(epoch + 1)
        if self.add_to_logs and logs is not None:
            for name in METRICS:
                logs[f"quality_{name}"] = float(getattr(report.generated, name))
