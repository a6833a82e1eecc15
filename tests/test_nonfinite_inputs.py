"""A NaN or infinite input is never called normal: the exported ``score`` flags it in the
graph (SavedModel, the TF1 loader TF Serving uses, ONNX Runtime) and so does
``AnomalyDetector.predict``. Without the rule a NaN score compares False with the
threshold and the input would pass as normal."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import run_tf1_session
from zoo.export import export_model

import zoo
from zoo.anomaly import AnomalyDetector
from zoo.calibration import RULE, is_anomaly


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    x[1, 3, 3, 0] = np.nan  # one NaN pixel
    x[2, 5, 5, 0] = np.inf  # one infinite pixel
    return x


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = zoo.load("conv_ae_tiny")
    out = tmp_path_factory.mktemp("nonfinite")
    return model, export_model(model, out, "ae", threshold=1e6)  # nothing finite exceeds it


def test_numpy_rule_flags_nan_and_inf_scores():
    scores = np.array([0.1, np.nan, np.inf, -np.inf, 5.0])
    np.testing.assert_array_equal(is_anomaly(scores, 1.0), [False, True, True, True, True])


def test_every_backend_flags_nonfinite_inputs(exported, images):
    import onnxruntime as ort

    _, result = exported
    want = np.array([False, True, True, False])
    score = tf.saved_model.load(str(result.version_dir)).signatures["score"]
    np.testing.assert_array_equal(score(images=tf.constant(images))["is_anomaly"], want)
    inputs = {"images": images, "threshold": np.full([4], 1e6, np.float32)}
    _, runs = run_tf1_session(result.version_dir, lambda names: {n: inputs[n] for n in names})
    for signature in ("score", "score_with_threshold", "serving_default"):
        np.testing.assert_array_equal(runs[signature][1]["is_anomaly"], want)
    session = ort.InferenceSession(str(result.onnx_paths["score"]))
    (flags,) = session.run(["is_anomaly"], {"images": images})
    np.testing.assert_array_equal(flags, want)
    with_threshold = tf.saved_model.load(str(result.version_dir)).signatures["score_with_threshold"]
    out = with_threshold(images=tf.constant(images), threshold=tf.fill([4], 1e6))
    np.testing.assert_array_equal(out["is_anomaly"], want)
    assert result.metadata["threshold"]["rule"] == RULE
    assert "never called normal" in result.model_card.read_text()


def test_detector_predict_flags_nonfinite_inputs(exported, images):
    model, _ = exported
    detector = AnomalyDetector(model, threshold=1e6)
    np.testing.assert_array_equal(detector.predict(images), [False, True, True, False])
