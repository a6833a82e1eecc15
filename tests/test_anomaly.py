"""zoo.anomaly: fit on normal data, calibrate, decide, evaluate; and `zoo evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.anomaly import AnomalyDetector, anomaly_evaluation_data, corrupt_images
from zoo.cli import main


@pytest.fixture(scope="module")
def trained_threes():
    """A tiny conv AE trained briefly on threes only (one-class)."""
    from zoo.data import load_sample

    images, labels = load_sample("train")
    x = images[labels == 3].astype("float32") / 255.0
    detector = AnomalyDetector(zoo.load("conv_ae_tiny"))
    detector.fit(x, epochs=8, batch_size=32)
    return detector


def test_calibrate_predict_and_evaluate(trained_threes, tmp_path):
    detector = trained_threes
    data = anomaly_evaluation_data(detector.model, normal_classes=[3])
    assert len(data.calibration) == 50 and data.labels.sum() == 900  # 100 threes in the test split
    threshold = detector.calibrate(data.calibration, target_fpr=0.05)
    calibration_scores = detector.score(data.calibration)
    assert np.mean(calibration_scores > threshold.value) <= 0.05
    assert threshold.method == "quantile" and threshold.n == 50
    np.testing.assert_array_equal(
        detector.predict(data.test), detector.score(data.test) > threshold.value
    )
    report = detector.evaluate(data.test, data.labels, out_dir=tmp_path, title="threes")
    assert 0.5 < report.auroc <= 1.0  # even briefly trained, other digits reconstruct worse
    assert report.confusion.sum() == len(data.test)
    assert report.n_anomalous == 900 and report.n_normal == 50
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["auroc"] == pytest.approx(report.auroc)
    assert saved["threshold_detail"]["method"] == "quantile"
    assert Image.open(tmp_path / "scores.png").size[0] > 0


def test_f1_calibration_uses_labels(trained_threes):
    data = anomaly_evaluation_data(trained_threes.model, normal_classes=[3])
    threshold = trained_threes.calibrate_f1(data.test, data.labels)
    assert threshold.method == "best_f1"
    report = trained_threes.evaluate(data.test, data.labels)
    assert report.f1 == pytest.approx(threshold.f1)


def test_detector_errors_are_clear(digits):
    with pytest.raises(TypeError, match=r"GAN \(gan\) scores no anomalies"):
        AnomalyDetector(zoo.load("dcgan_tiny"))
    with pytest.raises(ValueError, match="no threshold yet"):
        AnomalyDetector(zoo.load("conv_ae_tiny")).predict(digits[:2])
    detector = AnomalyDetector(zoo.load("conv_ae_tiny"), threshold=0.1)
    assert detector.threshold.method == "given"


def test_vae_scores_are_negative_elbo(digits):
    detector = AnomalyDetector(zoo.load("vae_tiny"))
    np.testing.assert_allclose(
        detector.score(digits[:4]), np.asarray(detector.model.anomaly_score(digits[:4])), rtol=1e-6
    )


def test_corrupted_images_differ_and_stay_in_range(digits):
    bad = corrupt_images(digits[:4])
    assert bad.shape == digits[:4].shape and bad.min() >= 0.0 and bad.max() <= 1.0
    assert np.abs(bad - digits[:4]).mean() > 0.1


def test_sequence_protocol_uses_injected_anomalies():
    model = zoo.load("recurrent_ae_tiny")
    data = anomaly_evaluation_data(model)
    assert data.test.shape[1:] == model.sequence_shape
    assert data.labels.mean() == pytest.approx(0.3)
    assert data.calibration.shape == (1000, *model.sequence_shape)
    assert AnomalyDetector(model).score(data.test).shape == (1000,)
    assert sorted(set(data.groups[data.labels == 1])) == ["level_shift", "pattern_change", "spike"]
    assert set(data.groups[data.labels == 0]) == {"normal"}


def test_zoo_evaluate_command(tiny_recipe, tmp_path, capsys):
    recipe = tiny_recipe("conv_ae_tiny", epochs=1)
    assert main(["train", str(recipe), "--logdir", str(tmp_path), "--set", "data.classes=[1]"]) == 0
    run = tmp_path / "tiny"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--target-fpr", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out or "auroc" in out
    assert "normal digits [1]" in out  # the recipe's one-class setting is picked up
    assert "digit 0" in out and "digit 1 " not in out  # recall and AUROC per anomalous digit
    report = json.loads((run / "evaluation" / "report.json").read_text())
    assert [g["group"] for g in report["groups"]] == [f"digit {d}" for d in range(10) if d != 1]
    assert (run / "evaluation" / "report.md").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "evaluation").iterdir())
    assert main(["evaluate", "dcgan_tiny", "--task", "anomaly"]) == 2
