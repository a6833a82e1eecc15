"""Evaluation metrics for the zoo (numpy only; matplotlib for plots).

>>> from zoo.export.calibration import calibrate_threshold
>>> from zoo.metrics import evaluate_scores, plot_scores
>>> threshold = calibrate_threshold(normal_val_scores, target_fpr=0.01)
>>> report = evaluate_scores(test_scores, test_labels, threshold)
>>> print(report)
>>> plot_scores(test_scores, test_labels, threshold, "runs/conv_ae/scores.png")
"""

from zoo.metrics.anomaly import (
    AnomalyReport,
    auroc,
    average_precision,
    confusion_matrix,
    evaluate_scores,
    f1_score,
    plot_scores,
    precision_recall_curve,
    roc_curve,
)

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
