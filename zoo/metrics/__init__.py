"""Evaluation metrics for the zoo (numpy only; matplotlib for plots).

>>> from zoo.calibration import calibrate_threshold
>>> from zoo.metrics import evaluate_scores, plot_scores
>>> threshold = calibrate_threshold(normal_val_scores, target_fpr=0.01)
>>> report = evaluate_scores(test_scores, test_labels, threshold)
>>> print(report)
>>> plot_scores(test_scores, test_labels, threshold, "runs/conv_ae/scores.png")

Sample quality of generative models: the metrics on feature arrays (:mod:`.quality`), the
feature spaces (:mod:`.features`), the report (:mod:`.quality_report`), scoring generated
samples (:mod:`.quality_evaluation`) and the training callback (:mod:`.quality_callback`,
the one module that imports Keras; it is not imported here).
"""

from zoo.metrics.anomaly import (
    AnomalyReport,
    GroupResult,
    auroc,
    average_precision,
    confusion_matrix,
    evaluate_groups,
    evaluate_scores,
    f1_score,
    plot_scores,
    precision_recall_curve,
    roc_curve,
)
from zoo.metrics.features import (
    FEATURE_EXTRACTORS,
    FeatureExtractorUnavailableError,
    InceptionV3Features,
    get_feature_extractor,
)
from zoo.metrics.quality import (
    class_histogram,
    class_kl_to_uniform,
    density_coverage,
    frechet_distance,
    frechet_distance_from_stats,
    inception_score,
    kernel_inception_distance,
    mmd2_unbiased,
    precision_recall,
)
from zoo.metrics.quality_evaluation import (
    SampleQualityEvaluator,
    evaluate_samples,
    generate_samples,
    sample_quality_report,
)
from zoo.metrics.quality_report import QualityMetrics, SampleQualityReport

__all__ = [
    "FEATURE_EXTRACTORS",
    "AnomalyReport",
    "FeatureExtractorUnavailableError",
    "GroupResult",
    "InceptionV3Features",
    "QualityMetrics",
    "SampleQualityEvaluator",
    "SampleQualityReport",
    "auroc",
    "average_precision",
    "class_histogram",
    "class_kl_to_uniform",
    "confusion_matrix",
    "density_coverage",
    "evaluate_groups",
    "evaluate_samples",
    "evaluate_scores",
    "f1_score",
    "frechet_distance",
    "frechet_distance_from_stats",
    "generate_samples",
    "get_feature_extractor",
    "inception_score",
    "kernel_inception_distance",
    "mmd2_unbiased",
    "plot_scores",
    "precision_recall",
    "precision_recall_curve",
    "roc_curve",
    "sample_quality_report",
]
