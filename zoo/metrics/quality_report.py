"""The sample-quality report: every metric of generated samples beside the real-versus-real
floor, as markdown, JSON-ready dicts and TensorBoard scalars.

Every metric is reported beside its **floor** (a held-out real split against the
reference split, same sample sizes), because none of them is 0 (or 1) for perfect
samples at finite n. The metrics themselves are in :mod:`zoo.metrics.quality`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = ["METRICS", "QualityMetrics", "SampleQualityReport", "log_report"]

#: name -> (label, which direction is better)
METRICS = {
    "fid": ("FID (Fréchet distance)", "lower"),
    "kid": ("KID (MMD², cubic kernel)", "lower"),
    "inception_score": ("IS-style score", "higher"),
    "precision": ("precision (k-NN)", "higher"),
    "recall": ("recall (k-NN)", "higher"),
    "density": ("density", "≈ real"),
    "coverage": ("coverage", "higher"),
    "class_kl": ("class KL to uniform (nats)", "lower"),
}


@dataclass(eq=False)
class QualityMetrics:
    """Every metric of one sample set against the real reference set."""

    fid: float
    kid: float
    kid_std: float
    inception_score: float
    precision: float
    recall: float
    density: float
    coverage: float
    class_kl: float
    class_histogram: np.ndarray
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats, the histogram as a list, ``n`` as an int."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "class_histogram":
                out[field.name] = [float(v) for v in np.asarray(value)]
            elif field.name == "n":
                out[field.name] = int(value)
            else:
                out[field.name] = float(value)
        return out


@dataclass(eq=False)
class SampleQualityReport:
    """Metrics of generated samples beside the real-versus-real floor.

    ``generated``: generated images against the real reference split. ``floor``: the
    held-out real split against the same reference, the best a generator can expect at
    this sample size (for IS and coverage it is a ceiling, for class KL the real data's
    own imbalance). Compare ``generated`` with ``floor`` rather than with 0 or 1.
    """

    generated: QualityMetrics
    floor: QualityMetrics
    feature_extractor: str
    n_reference: int
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings and both metric sets."""
        return {
            "feature_extractor": self.feature_extractor,
            "n_reference": int(self.n_reference),
            "settings": dict(self.settings),
            "generated": self.generated.to_dict(),
            "floor": self.floor.to_dict(),
        }

    def scalars(self) -> dict[str, float]:
        """``quality/<metric>`` and ``quality_floor/<metric>`` (TensorBoard tag -> value)."""
        out = {}
        for prefix, metrics in (("quality", self.generated), ("quality_floor", self.floor)):
            for name in (*METRICS, "kid_std"):
                out[f"{prefix}/{name}"] = float(getattr(metrics, name))
        return out

    def to_markdown(self) -> str:
        """A markdown table of every metric beside its floor, then the class histograms."""
        g, f = self.generated, self.floor
        k = len(np.asarray(g.class_histogram))
        rows = []
        for name, (label, better) in METRICS.items():
            gv, fv = getattr(g, name), getattr(f, name)
            if name == "kid":
                cell_g, cell_f = f"{gv:.4g} ± {g.kid_std:.2g}", f"{fv:.4g} ± {f.kid_std:.2g}"
            else:
                cell_g, cell_f = f"{gv:.4g}", f"{fv:.4g}"
            if name == "class_kl":
                better = f"lower (collapse: log {k} = {math.log(k):.3f})"
            elif name == "inception_score":
                better = f"higher (max {k})"
            rows.append(f"| {label} | {cell_g} | {cell_f} | {better} |")
        s = self.settings
        lines = [
            f"Feature space: `{self.feature_extractor}`. Reference: {self.n_reference} real "
            f"images; generated: {g.n}; floor: {f.n} held-out real images against the same "
            f"reference. k = {s.get('k')} (precision/recall), {s.get('k_dc')} (density/"
            f"coverage); KID over {s.get('kid_subsets')} subsets of {s.get('kid_subset_size')}.",
            "",
            "| metric | generated | real vs real (floor) | better |",
            "|---|---:|---:|---|",
            *rows,
            "",
            "Class histogram (share of samples per predicted class):",
            "",
            "| | " + " | ".join(str(i) for i in range(k)) + " |",
            "|---|" + "---:|" * k,
            "| generated | " + " | ".join(f"{v:.3f}" for v in g.class_histogram) + " |",
            "| real held-out | " + " | ".join(f"{v:.3f}" for v in f.class_histogram) + " |",
        ]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        lines = [f"Sample quality ({self.feature_extractor}): generated vs floor"]
        for name, (label, _) in METRICS.items():
            gv, fv = getattr(self.generated, name), getattr(self.floor, name)
            lines.append(f"  {label:<28} {gv:>10.4g}   floor {fv:>10.4g}")
        return "\n".join(lines)


def log_report(report: SampleQualityReport, log_dir: str | os.PathLike[str], step: int) -> None:
    """Write :meth:`SampleQualityReport.scalars` as TensorBoard scalars at ``step``."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(), tf.summary.record_if(True):  # whatever a TensorBoard callback set
        for tag, value in report.scalars().items():
            tf.summary.scalar(tag, value, step=int(step))
    writer.flush()
