"""Sample-quality metrics against closed forms, brute force and toy point clouds; the
bundled classifier; the report, run evaluation, callback and the Inception path offline."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from zoo.metrics import features, quality, quality_evaluation
from zoo.metrics.quality import (
    class_histogram,
    class_kl_to_uniform,
    density_coverage,
    frechet_distance,
    frechet_distance_from_stats,
    inception_score,
    kernel_inception_distance,
    knn_radii,
    mmd2_unbiased,
    polynomial_kernel,
    precision_recall,
)


def random_covariance(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --------------------------------------------------------------------------- Fréchet


def test_frechet_distance_commuting_covariances_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(
        expected, rel=1e-10
    )
    # the same pair in a rotated basis (still commuting, no longer diagonal)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance_from_stats(q @ mu1, s1, q @ mu2, s2) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_distance_symmetric_and_matches_trace_of_product_eigenvalues():
    rng = np.random.default_rng(1)
    d = 8
    s1, s2 = random_covariance(rng, d), random_covariance(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    forward = frechet_distance_from_stats(mu1, s1, mu2, s2)
    assert forward == pytest.approx(frechet_distance_from_stats(mu2, s2, mu1, s1), rel=1e-10)
    # independent route: tr((S1 S2)^1/2) = sum sqrt(eig(S1 S2)) (real, positive)
    eig = np.linalg.eigvals(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.sum(np.sqrt(eig.real))
    assert forward == pytest.approx(float(expected), rel=1e-9)


def test_frechet_distance_of_features_zero_for_identical_sets_and_grows_with_shift():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x + 2.0) == pytest.approx(16.0, rel=1e-9)  # |(2,2,2,2)|^2
    with pytest.raises(ValueError, match="features"):
        frechet_distance(x, x[:, :3])


# --------------------------------------------------------------------------- KID


def test_mmd2_unbiased_matches_brute_force():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)) + 0.5

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert polynomial_kernel(x, y)[1, 2] == pytest.approx(k(x[1], y[2]))


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    rng = np.random.default_rng(4)
    estimates, biased = [], []
    for _ in range(300):
        x, y = rng.standard_normal((40, 5)), rng.standard_normal((40, 5))
        estimates.append(mmd2_unbiased(x, y))
        kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())  # V-statistic, > 0 on average
    mean, stderr = np.mean(estimates), np.std(estimates) / math.sqrt(len(estimates))
    assert abs(mean) < 3 * stderr
    assert np.mean(biased) > 10 * stderr  # the biased estimator would fail this test


def test_kid_subsets_mean_and_std():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 4))
    same, same_std = kernel_inception_distance(x, rng.standard_normal((200, 4)), num_subsets=20)
    shifted, _ = kernel_inception_distance(x, rng.standard_normal((200, 4)) + 1.0, num_subsets=20)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 20 * same_std
    # cached full kernels (fast path) = one subset at a time, for every subset shape
    for sizes in ((300, 200, 1000), (300, 200, 150), (120, 300, 120)):
        a, b = x[: sizes[0]], rng.standard_normal((sizes[1], 4)) + 0.3
        fast = kernel_inception_distance(a, b, num_subsets=7, subset_size=sizes[2])
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(quality, "FULL_KERNEL_MAX", 0)
            slow = kernel_inception_distance(a, b, num_subsets=7, subset_size=sizes[2])
        np.testing.assert_allclose(fast, slow, rtol=1e-9)
    # deterministic for a seed
    again = kernel_inception_distance(x, x[:100] + 1.0, num_subsets=5, subset_size=50, seed=7)
    assert again == kernel_inception_distance(
        x, x[:100] + 1.0, num_subsets=5, subset_size=50, seed=7
    )


# --------------------------------------------------------------------------- IS / classes


def test_inception_score_bounds():
    confident = np.eye(10)[np.arange(1000) % 10]  # one-hot, every class equally often
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-12)
    assert inception_score(confident, splits=10) == pytest.approx(10.0, rel=1e-12)
    identical = np.tile(np.random.default_rng(6).dirichlet(np.ones(10)), (50, 1))
    assert inception_score(identical) == pytest.approx(1.0, rel=1e-12)
    collapsed = np.eye(10)[np.zeros(100, dtype=int)]
    assert inception_score(collapsed) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(np.ones((4, 10)))


def test_class_histogram_and_kl_signal_mode_collapse():
    collapsed = np.eye(10)[np.full(64, 3)]
    hist = class_histogram(collapsed)
    assert hist.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert class_kl_to_uniform(hist) == pytest.approx(math.log(10))
    balanced = class_histogram(np.arange(100) % 10, num_classes=10)
    assert class_kl_to_uniform(balanced) == pytest.approx(0.0, abs=1e-12)
    half = class_histogram(np.array([0, 1] * 10), num_classes=10)  # two modes of ten
    assert class_kl_to_uniform(half) == pytest.approx(math.log(10) - math.log(2))


# --------------------------------------------------------------------------- manifolds


def test_knn_radii_exclude_self():
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="k must be"):
        knn_radii(x, 4)


def test_precision_recall_density_coverage_on_toy_clouds():
    rng = np.random.default_rng(8)
    real = rng.standard_normal((300, 3))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    density, coverage = density_coverage(real, real, k=5)
    assert coverage == 1.0 and density >= 1.0  # every fake lies in its own ball at least
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    assert density_coverage(real, far, k=5) == (0.0, 0.0)
    # half the fakes on the real cloud, half far away: precision 1/2, recall ~1
    half = np.concatenate([real[:150] + 1e-6, far[:150]])
    precision, recall = precision_recall(real, half, k=3)
    assert precision == 0.5 and recall > 0.4
    # a collapsed generator (all fakes on one real point): precise, no recall/coverage
    collapsed = np.repeat(real[:1], 300, axis=0)
    precision, recall = precision_recall(real, collapsed, k=3)
    assert precision == 1.0 and recall <= 0.02
    assert density_coverage(real, collapsed, k=5)[1] <= 0.02


def test_precision_recall_chunking_matches_one_block():
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((90, 2)), rng.standard_normal((70, 2)) * 1.3
    manifold = quality.Manifold.of(real, 3, 5)
    whole = quality.manifold_metrics(manifold, fake, 3, 5, chunk=1000)
    assert quality.manifold_metrics(manifold, fake, 3, 5, chunk=16) == whole


# --------------------------------------------------------------------------- classifier


@pytest.fixture(scope="module")
def sample_splits():
    from zoo.data import load_sample

    return load_sample("train"), load_sample("test")


@pytest.fixture(scope="module")
def classifier():
    from zoo.metrics.classifier import load_classifier

    return load_classifier()


def test_bundled_classifier_weights_accuracy_and_feature_layer(classifier, sample_splits):
    from zoo.metrics import classifier as module

    (_, _), (test_x, test_y) = sample_splits
    assert module.DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    assert module.weights_digest(classifier.model) == module.BUNDLED_WEIGHTS_DIGEST
    accuracy = classifier.accuracy(test_x, test_y)
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(module.BUNDLED_TEST_ACCURACY, abs=1e-9)
    features, probs = classifier.embed(test_x[:20])
    assert features.shape == (20, 128) and probs.shape == (20, 10)
    assert classifier.model.get_layer("features").units == 128
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # uint8, floats in [0, 1] and (N, 28, 28) all give the same features
    as_float = classifier.features(test_x[:20].astype("float32") / 255.0)
    np.testing.assert_allclose(as_float, features, atol=1e-5)
    np.testing.assert_allclose(classifier.features(test_x[:20, ..., 0]), features, atol=1e-5)


def test_classifier_rejects_wrong_images(classifier):
    with pytest.raises(ValueError, match="inception_v3"):
        classifier.features(np.zeros((2, 64, 64, 3), "float32"))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        classifier.features(np.full((2, 28, 28, 1), -1.0, "float32"))


def test_classifier_training_is_deterministic():
    """Two trainings with one seed give identical weights. In a subprocess, because
    ``deterministic=True`` turns on TensorFlow's op determinism for the whole process."""
    code = textwrap.dedent(
        """
        from zoo.metrics.classifier import train_mnist_classifier
        a, b = (train_mnist_classifier(0, epochs=1, limit=128) for _ in range(2))
        assert a.digest == b.digest, (a.digest, b.digest)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- report


def test_report_floor_generated_and_collapse(classifier, sample_splits):
    (train_x, _), (test_x, test_y) = sample_splits
    evaluator = quality_evaluation.SampleQualityEvaluator(train_x, test_x, kid_subsets=10)
    floor = evaluator.floor
    assert floor.fid < 2.0 and abs(floor.kid) < 3 * floor.kid_std
    assert floor.precision > 0.6 and floor.recall > 0.6 and floor.coverage > 0.5
    assert floor.inception_score > 8.0 and floor.class_kl < 0.01
    # a "generator" that only makes ones: large FID, low recall, KL ~ log 10
    ones = test_x[test_y == 1][:100]
    report = evaluator.evaluate(np.concatenate([ones] * 5))
    g = report.generated
    assert g.fid > 10 * floor.fid and g.kid > 10 * max(floor.kid, 1e-3)
    assert g.recall < 0.2 and g.coverage < 0.2
    assert g.class_kl > 0.9 * math.log(10) and g.inception_score < 1.5
    markdown = report.to_markdown()
    assert "| metric | generated | real vs real (floor) | better |" in markdown
    assert "log 10 = 2.303" in markdown
    data = json.loads(json.dumps(report.to_dict()))
    assert data["generated"]["n"] == 500 and data["floor"]["n"] == len(test_x)
    assert set(report.scalars()) >= {"quality/fid", "quality/kid", "quality_floor/fid"}
    # the one-call API gives the evaluator's numbers
    small = quality_evaluation.SampleQualityEvaluator(train_x[:400], test_x[:100], kid_subsets=5)
    again = quality_evaluation.sample_quality_report(
        ones, train_x[:400], test_x[:100], kid_subsets=5
    )
    assert again.to_dict() == small.evaluate(ones).to_dict()


# --------------------------------------------------------------------------- selection


def test_feature_extractor_selection(classifier, monkeypatch):
    assert features.get_feature_extractor("mnist_classifier") is classifier
    with pytest.raises(ValueError, match=r"mnist_classifier.*inception_v3"):
        features.get_feature_extractor("inception")
    with pytest.raises(TypeError, match="embed"):
        features.get_feature_extractor(object())
    built = {}

    class FakeInception:
        name = "inception_v3"

        def __init__(self, **options):
            built.update(options)

    monkeypatch.setattr(features, "InceptionV3Features", FakeInception)
    assert isinstance(features.get_feature_extractor("inception_v3", timeout=3.0), FakeInception)
    assert built == {"timeout": 3.0}


def test_inception_path_fails_fast_and_clearly_offline(tmp_path, monkeypatch):
    """No cached weights and the network blocked: a clear error naming the offline
    alternative, within seconds (not a hang)."""
    import keras

    def blocked(*args, **kwargs):
        raise OSError("network blocked by the test")

    real_get_file = keras.utils.get_file
    seen = {}

    def get_file_in_empty_cache(fname, origin, **kwargs):
        seen["timeout"] = socket.getdefaulttimeout()
        return real_get_file(fname, origin, cache_dir=str(tmp_path), **kwargs)

    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(keras.utils, "get_file", get_file_in_empty_cache)
    start = time.perf_counter()
    with pytest.raises(
        features.FeatureExtractorUnavailableError, match="feature_extractor='mnist_classifier'"
    ):
        features.get_feature_extractor("inception_v3", timeout=2.0)
    assert time.perf_counter() - start < 10.0
    assert seen["timeout"] == 2.0  # the download ran under the socket timeout...
    assert socket.getdefaulttimeout() is None  # ...which was restored afterwards
    assert not list((tmp_path / "models").glob("*.h5"))


def test_inception_weight_constants_match_keras():
    from keras.src.applications import inception_v3

    assert features.INCEPTION_WEIGHTS["notop"][1] == inception_v3.WEIGHTS_PATH_NO_TOP
    assert features.INCEPTION_WEIGHTS["top"][1] == inception_v3.WEIGHTS_PATH


def test_importing_metrics_leaves_tensorflow_alone():
    code = textwrap.dedent(
        """
        import sys
        import zoo.metrics
        from zoo.metrics import sample_quality_report, frechet_distance
        import zoo.metrics.classifier
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- runs


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    import tensorflow as tf

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((int(event.step), number))
    return found


def test_evaluate_run_writes_report_json_grid_and_scalars(tmp_path, sample_splits):
    from zoo.recipes.evaluation import evaluate_samples_run

    import zoo

    (train_x, _), (test_x, _) = sample_splits
    model = zoo.load("dcgan_tiny")
    model.save(tmp_path / "model.keras")
    report, out = evaluate_samples_run(
        tmp_path / "model.keras", n=200, seed=1, out_dir=tmp_path / "eval",
        real_reference=train_x[:600], real_heldout=test_x[:200],
    )  # fmt: skip
    assert (out / "sample_quality.md").read_text().startswith("# Sample quality: dcgan")
    data = json.loads((out / "sample_quality.json").read_text())
    assert data["n"] == 200 and data["generated"]["fid"] == pytest.approx(report.generated.fid)
    assert (out / "samples.png").is_file()
    scalars = read_scalars(out)
    assert scalars["quality/fid"] == [(0, pytest.approx(report.generated.fid, rel=1e-6))]
    assert "quality_floor/recall" in scalars
    assert report.generated.fid > report.floor.fid  # an untrained generator


def test_generate_samples_refuses_non_generators_and_is_seeded():
    import zoo

    with pytest.raises(TypeError, match="not a generator"):
        quality_evaluation.generate_samples(zoo.load("dense_ae_tiny"), 4)
    model = zoo.load("dcgan_tiny")
    a = quality_evaluation.generate_samples(model, 7, seed=3, batch_size=4)
    assert a.shape == (7, 28, 28, 1)
    # other batch sizes may pick other CPU kernels: equal up to float32 round-off
    np.testing.assert_allclose(
        a, quality_evaluation.generate_samples(model, 7, seed=3), rtol=0, atol=1e-6
    )


def test_callback_logs_quality_scalars_every_n_epochs(tmp_path, sample_splits):
    import keras

    import zoo
    from zoo.metrics.quality_callback import SampleQualityCallback

    (train_x, _), (test_x, _) = sample_splits
    model = zoo.load("dcgan_tiny")
    model.compile()
    callback = SampleQualityCallback(
        tmp_path / "logs", every_n_epochs=2, n_samples=64, real_reference=train_x[:300],
        real_heldout=test_x[:64], add_to_logs=True,
    )  # fmt: skip
    assert isinstance(callback, keras.callbacks.Callback)
    images = (train_x[:64] / 255.0).astype("float32")
    history = model.fit(images, batch_size=32, epochs=4, verbose=0, callbacks=[callback])
    assert [epoch for epoch, _ in callback.reports] == [2, 4]
    scalars = read_scalars(tmp_path / "logs")
    for name in ("fid", "kid", "inception_score", "precision", "recall", "class_kl"):
        assert [step for step, _ in scalars[f"quality/{name}"]] == [2, 4]
    assert scalars["quality/fid"][1][1] == pytest.approx(callback.reports[1][1].generated.fid)
    assert "quality_fid" in history.history
