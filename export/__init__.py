"""Export zoo models for TF Serving and ONNX Runtime: named signatures, a calibrated
anomaly threshold (with score normalisation), warmup records, a parity check and a
model card, written atomically as
``<out>/<name>/<version>/`` (SavedModel) and ``<out>/<name>/onnx/<version>/<signature>.onnx``.

>>> from zoo.export import export_model
>>> result = export_model(model, "models", "conv_ae", calibration_images=normal_images)
>>> result.version_dir, result.parity["max_abs_diff"]

See docs/ARCHITECTURE.md ("Export") for the facts this follows (ExportArchive, the
TF1 loader, tf2onnx limits).
"""

from zoo.export.exporter import ExportPathError, ExportResult, export_model
from zoo.export.onnx_export import OnnxConversionError
from zoo.export.parity import ParityError
from zoo.export.run_export import (
    CalibrationError,
    calibration_data,
    export_cli,
    synthetic_calibration,
)

from zoo.calibration import (
    ScoreNormalization,
    Threshold,
    calibrate_threshold,
    calibrate_threshold_f1,
)

__all__ = [
    "CalibrationError",
    "ExportPathError",
    "ExportResult",
    "OnnxConversionError",
    "ParityError",
    "ScoreNormalization",
    "Threshold",
    "calibrate_threshold",
    "calibrate_threshold_f1",
    "calibration_data",
    "export_cli",
    "export_model",
    "synthetic_calibration",
]
