"""Export zoo models for TF Serving and ONNX Runtime: named signatures, a calibrated
anomaly threshold, warmup records and a parity check, written atomically as
``<out>/<name>/<version>/`` (SavedModel) and ``<out>/<name>/onnx/<version>/<signature>.onnx``.

>>> from zoo.export import export_model
>>> result = export_model(model, "models", "conv_ae", calibration_images=normal_images)
>>> result.version_dir, result.parity["max_abs_diff"]

See DESIGN §4 for the facts this follows (ExportArchive, TF1 loader, tf2onnx limits).
"""

from zoo.export.calibration import Threshold, calibrate_threshold, calibrate_threshold_f1
from zoo.export.exporter import ExportResult, export_cli, export_model
from zoo.export.onnx_export import OnnxConversionError
from zoo.export.parity import ParityError

__all__ = [
    "ExportResult",
    "OnnxConversionError",
    "ParityError",
    "Threshold",
    "calibrate_threshold",
    "calibrate_threshold_f1",
    "export_cli",
    "export_model",
]
