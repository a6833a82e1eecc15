"""zoo.metrics.anomaly against hand-computed examples and brute-force definitions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from zoo.calibration import Threshold, calibrate_threshold, calibrate_threshold_f1
from zoo.metrics import (
    AnomalyReport,
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

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def brute_mann_whitney(scores: np.ndarray, labels: np.ndarray) -> float:
    """U / (n_pos * n_neg) over every (anomaly, normal) pair, a tie counting 1/2."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (pos.size * neg.size)


def brute_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over anomalies of the precision of flagging every score >= the anomaly's score."""
    precisions = [np.mean(labels[scores >= s]) for s in scores[labels == 1]]
    return float(np.mean(precisions))


@pytest.fixture
def tied_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = (rng.random(150) < 0.3).astype(int)
    scores = rng.integers(0, 8, size=150) + 2 * labels  # few distinct values: many ties
    return scores.astype(float), labels


@pytest.fixture
def mixed_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normal, anomalous, labels-for-concatenation) with overlapping score distributions."""
    rng = np.random.default_rng(3)
    normal = rng.normal(0.0, 1.0, size=400)
    anomalous = rng.normal(2.0, 1.0, size=60)
    labels = np.r_[np.zeros(normal.size, int), np.ones(anomalous.size, int)]
    return normal, anomalous, labels


# --------------------------------------------------------------------------- AUROC


def test_auroc_hand_computed():
    # anomalies 0.9, 0.7, 0.6 vs normals 0.8, 0.5, 0.4: 3 + 2 + 2 = 7 of 9 pairs won
    assert auroc([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 1, 1, 0, 0]) == pytest.approx(7 / 9)
    # anomalies 3, 2 vs normals 2, 1: 3>2, 3>1, 2=2 (1/2), 2>1 -> 3.5 / 4
    assert auroc([3, 2, 2, 1], [1, 1, 0, 0]) == pytest.approx(0.875)


def test_auroc_equals_brute_force_mann_whitney_with_ties(tied_data):
    scores, labels = tied_data
    assert np.unique(scores).size < 12  # the data really has ties
    assert auroc(scores, labels) == pytest.approx(brute_mann_whitney(scores, labels), abs=1e-12)
    # permuting the examples changes nothing
    perm = np.random.default_rng(1).permutation(scores.size)
    assert auroc(scores[perm], labels[perm]) == pytest.approx(auroc(scores, labels), abs=1e-12)


def test_auroc_extremes():
    labels = [0, 0, 0, 1, 1]
    assert auroc([0.1, 0.2, 0.3, 0.8, 0.9], labels) == 1.0
    assert auroc([0.9, 0.8, 0.7, 0.2, 0.1], labels) == 0.0
    assert auroc([0.5] * 5, labels) == 0.5
    # bool labels, float32 scores
    assert auroc(np.float32([1, 2, 3, 4]), np.array([False, False, True, True])) == 1.0


# --------------------------------------------------------------------------- AP


def test_average_precision_hand_computed():
    # scores descending, labels 1,0,1,1,0: anomalies found at ranks 1, 3, 4
    scores, labels = [5, 4, 3, 2, 1], [1, 0, 1, 1, 0]
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # a tie is one step: anomaly 3; then {2 (anomaly), 2 (normal)} together
    # -> 0.5 * 1 + 0.5 * 2/3
    assert average_precision([3, 2, 2, 1], [1, 1, 0, 0]) == pytest.approx(5 / 6)
    assert average_precision([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0


def test_average_precision_equals_brute_force(tied_data, mixed_data):
    scores, labels = tied_data
    assert average_precision(scores, labels) == pytest.approx(
        brute_average_precision(scores, labels), abs=1e-12
    )
    normal, anomalous, labels = mixed_data
    scores = np.r_[normal, anomalous]
    assert average_precision(scores, labels) == pytest.approx(
        brute_average_precision(scores, labels), abs=1e-12
    )


def test_average_precision_of_random_scores_is_about_the_prevalence():
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.2).astype(int)
    ap = average_precision(rng.random(5000), labels)
    assert abs(ap - labels.mean()) < 0.03


# --------------------------------------------------------------------------- curves


def test_roc_curve_shape_and_area(tied_data):
    scores, labels = tied_data
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert fpr.shape == tpr.shape == thresholds.shape == (np.unique(scores).size + 1,)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) < 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(scores, labels), abs=1e-12)
    # point i is exactly the rate of `score > thresholds[i]`
    for f, t, th in zip(fpr, tpr, thresholds, strict=True):
        flagged = scores > th
        assert f == pytest.approx(flagged[labels == 0].mean())
        assert t == pytest.approx(flagged[labels == 1].mean())


def test_roc_curve_hand_example():
    fpr, tpr, thresholds = roc_curve([3, 2, 2, 1], [1, 1, 0, 0])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])  # the tie at 2 is one diagonal step
    assert thresholds[:3].tolist() == [3.0, 2.0, 1.0]
    assert thresholds[3] < 1.0 and thresholds[3] == np.nextafter(1.0, -np.inf)


def test_precision_recall_curve(tied_data):
    scores, labels = tied_data
    precision, recall, thresholds = precision_recall_curve(scores, labels)
    assert precision.shape == recall.shape == thresholds.shape
    assert (precision[0], recall[0]) == (1.0, 0.0)  # nothing flagged: plotting convention
    assert recall[-1] == 1.0 and precision[-1] == pytest.approx(labels.mean())
    assert np.all(np.diff(recall) >= 0)
    for p, r, th in list(zip(precision, recall, thresholds, strict=True))[1:]:
        flagged = scores > th
        assert p == pytest.approx(labels[flagged].mean())
        assert r == pytest.approx(flagged[labels == 1].mean())
    ap = float(np.sum(np.diff(recall) * precision[1:]))
    assert ap == pytest.approx(average_precision(scores, labels), abs=1e-12)
    np.testing.assert_array_equal(thresholds, roc_curve(scores, labels)[2])


# --------------------------------------------------------------------------- verdicts


def test_confusion_matrix_and_f1_small_example():
    labels = [1, 1, 0, 0, 1, 0]
    predictions = [1, 0, 0, 1, 1, 0]  # tp at 0 and 4, fn at 1, fp at 3, tn at 2 and 5
    cm = confusion_matrix(labels, predictions)
    assert cm.dtype.kind == "i"
    assert cm.tolist() == [[2, 1], [1, 2]]
    assert f1_score(labels, predictions) == pytest.approx(2 / 3)
    as_bool = confusion_matrix(np.array(labels, bool), np.array(predictions, bool))
    assert as_bool.tolist() == cm.tolist()


def test_f1_without_positive_predictions_is_zero():
    assert f1_score([1, 0, 1], [0, 0, 0]) == 0.0
    assert f1_score([0, 0, 0], [0, 0, 0]) == 0.0  # 0/0: undefined, reported as 0.0
    assert f1_score([0, 0, 1], [1, 1, 0]) == 0.0
    assert f1_score([1, 1], [1, 1]) == 1.0


# --------------------------------------------------------------------------- report


def test_evaluate_with_quantile_threshold_keeps_the_fpr(mixed_data):
    normal, anomalous, labels = mixed_data
    scores = np.r_[normal, anomalous]
    for target in (0.01, 0.05, 0.2):
        threshold = calibrate_threshold(normal, target_fpr=target)
        report = evaluate_scores(scores, labels, threshold)
        assert report.fpr <= target
        assert report.fpr == pytest.approx(threshold.observed_fpr)
        assert report.threshold == threshold.value
        assert report.threshold_method == "quantile"
        assert (report.n_normal, report.n_anomalous) == (normal.size, anomalous.size)
        assert report.confusion.sum() == scores.size
        assert report.auroc == pytest.approx(auroc(scores, labels))
        assert report.aupr == pytest.approx(average_precision(scores, labels))
    # ties in the normal scores can only lower the FPR
    coarse = np.round(normal, 1)
    threshold = calibrate_threshold(coarse, target_fpr=0.05)
    report = evaluate_scores(np.r_[coarse, anomalous], labels, threshold)
    assert report.fpr <= 0.05


def test_evaluate_with_best_f1_threshold_matches_calibration(mixed_data, tied_data):
    for scores, labels in ((np.r_[mixed_data[0], mixed_data[1]], mixed_data[2]), tied_data):
        threshold = calibrate_threshold_f1(scores, labels)
        report = evaluate_scores(scores, labels, threshold)
        assert report.threshold_method == "best_f1"
        assert report.f1 == pytest.approx(threshold.f1)
        assert report.precision == pytest.approx(threshold.precision)
        assert report.recall == pytest.approx(threshold.recall)
        assert report.fpr == pytest.approx(threshold.observed_fpr)
        # the calibration's candidates are the curve's thresholds: its F1 is the curve's best
        precision, recall, _ = precision_recall_curve(scores, labels)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
        assert f1.max() == pytest.approx(threshold.f1)


def test_evaluate_with_a_plain_number_is_strict():
    scores = [0.1, 0.2, 0.5, 0.5, 0.9]
    labels = [0, 0, 1, 0, 1]
    report = evaluate_scores(scores, labels, 0.5)  # the two 0.5s are not flagged
    assert report.threshold_method == "given"
    assert report.confusion.tolist() == [[3, 0], [1, 1]]
    assert (report.precision, report.recall, report.fpr) == (1.0, 0.5, 0.0)
    assert report.f1 == pytest.approx(2 / 3)
    same = evaluate_scores(scores, labels, Threshold.given(0.5))
    assert same.to_dict() == report.to_dict()
    nothing = evaluate_scores(scores, labels, 5.0)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)


def test_report_serialisations(mixed_data):
    normal, anomalous, labels = mixed_data
    report = evaluate_scores(np.r_[normal, anomalous], labels, np.float32(1.5))
    assert isinstance(report, AnomalyReport)
    data = report.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["confusion"] == report.confusion.tolist()
    assert isinstance(data["threshold"], float) and isinstance(data["n_normal"], int)
    assert set(data) == {
        "auroc",
        "aupr",
        "f1",
        "precision",
        "recall",
        "fpr",
        "confusion",
        "threshold",
        "threshold_method",
        "n_normal",
        "n_anomalous",
        "groups",
    }
    assert data["groups"] == []
    (tn, fp), (fn, tp) = report.confusion.tolist()
    markdown = report.to_markdown()
    assert f"| AUROC | {report.auroc:.4f} |" in markdown
    assert f"| **actual normal** | {tn} | {fp} |" in markdown
    assert f"| **actual anomalous** | {fn} | {tp} |" in markdown
    text = str(report)
    assert len(text.splitlines()) >= 5
    assert f"AUROC {report.auroc:.4f}" in text and "1.5 (given)" in text
    assert f"{tn}" in text and f"{tp}" in text


def test_groups_contrast_each_kind_with_all_normal_examples():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.5, 2.5])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    groups = np.array(["normal"] * 4 + ["spike", "spike", "shift", "shift"])
    shift, spike = evaluate_groups(scores, labels, groups, 4.5)  # sorted by name
    assert (spike.group, spike.n, spike.auroc, spike.recall) == ("spike", 2, 1.0, 0.5)
    # Mann-Whitney: 0.5 beats 1 of 4 normal scores, 2.5 beats 3 of 4 -> 4 / 8
    assert (shift.group, shift.n, shift.auroc, shift.recall) == ("shift", 2, 0.5, 0.0)
    assert shift.auroc == auroc(scores[[0, 1, 2, 3, 6, 7]], labels[[0, 1, 2, 3, 6, 7]])
    report = evaluate_scores(scores, labels, 4.5, groups=groups)
    assert report.groups == (shift, spike)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["groups"][1] == {"group": "spike", "n": 2, "auroc": 1.0, "recall": 0.5}
    assert "| spike | 2 | 1.0000 | 0.5000 |" in report.to_markdown()
    assert "shift" in str(report) and "recall 0.0000" in str(report)
    with pytest.raises(ValueError, match=r"one kind per example: got shape \(3,\) for 8"):
        evaluate_groups(scores, labels, groups[:3], 4.5)


# --------------------------------------------------------------------------- plot


def test_plot_scores_writes_a_png_atomically(tmp_path, mixed_data):
    normal, anomalous, labels = mixed_data
    scores = np.r_[normal, anomalous]
    threshold = calibrate_threshold(normal, target_fpr=0.05)
    out = tmp_path / "plots" / "scores.png"  # parent is created
    result = plot_scores(scores, labels, threshold, out, title="conv_ae on MNIST")
    assert result == str(out)
    data = out.read_bytes()
    assert len(data) > 5000 and data[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > height
    assert os.listdir(out.parent) == ["scores.png"]  # no temporary file left behind
    # overwriting works and a plain number is accepted
    plot_scores(scores.tolist(), labels.tolist(), 0.0, str(out))
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert os.listdir(out.parent) == ["scores.png"]


def test_plot_scores_rejects_bad_input_without_writing(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        plot_scores([1, 2], [0, 1], 1.5, tmp_path / "scores.jpg")
    with pytest.raises(ValueError, match="both normal"):
        plot_scores([1, 2], [1, 1], 1.5, tmp_path / "scores.png")
    assert list(tmp_path.iterdir()) == []


def test_import_and_plot_leave_pyplot_and_tensorflow_alone(tmp_path):
    out = str(tmp_path / "p.png")
    code = textwrap.dedent(
        f"""
        import sys
        import zoo.metrics
        assert "tensorflow" not in sys.modules and "matplotlib" not in sys.modules
        zoo.metrics.plot_scores([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.5, {out!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_SIGNATURE


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "func", [auroc, average_precision, roc_curve, precision_recall_curve], ids=lambda f: f.__name__
)
def test_curve_errors(func):
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        func([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match=r"both normal \(0\) and anomalous \(1\).*only anomalies"):
        func([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match=r"only normal examples"):
        func([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match=r"1 non-finite value.*index \[1\]"):
        func([0.1, np.nan, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="non-finite"):
        func([0.1, np.inf, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match=r"must be 0 \(normal\) or 1 \(anomaly\).*2"):
        func([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="1-D"):
        func(np.zeros((3, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        func([], [])


def test_report_and_verdict_errors():
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        confusion_matrix([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="predictions must be 0"):
        f1_score([0, 1], [0, 0.5])
    with pytest.raises(ValueError, match="both normal"):
        evaluate_scores([0.1, 0.2], [0, 0], 0.15)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_scores([0.1, np.nan], [0, 1], 0.15)
    with pytest.raises(ValueError, match="finite"):
        evaluate_scores([0.1, 0.2], [0, 1], float("nan"))
    with pytest.raises(TypeError, match="Threshold"):
        evaluate_scores([0.1, 0.2], [0, 1], "0.15")
    with pytest.raises(ValueError, match="dtype"):
        auroc([0.1, 0.2], ["normal", "anomaly"])


def test_inputs_are_not_modified(tied_data):
    scores, labels = tied_data
    before = scores.copy(), labels.copy()
    roc_curve(scores, labels)
    evaluate_scores(scores, labels, 3.0)
    np.testing.assert_array_equal(scores, before[0])
    np.testing.assert_array_equal(labels, before[1])
