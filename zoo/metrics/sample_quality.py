"""Sample quality of generative models, in a classifier's feature space (numpy only).

TF-GAN no longer imports on current TensorFlow and Inception weights cannot always be
downloaded, so the default feature space is the zoo's own MNIST classifier
(:mod:`zoo.metrics.classifier`, weights committed). Metrics:

- **FID-style Fréchet distance** between Gaussians fitted to the features
  (Heusel et al., 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``, the
  matrix square root by eigendecomposition of the symmetric product (no scipy).
- **KID** (Bińkowski et al., 2018): unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets.
- **Inception-Score-style score** ``exp(E_x KL(p(y|x) || p(y)))`` from the classifier's
  probabilities (at most the number of classes).
- **Precision and recall** (Kynkäänniemi et al., 2019) and **density and coverage**
  (Naeem et al., 2020) on k-nearest-neighbour manifolds.
- **Class histogram** of the samples and its KL to uniform (mode collapse: ``log K``).

Every metric is reported beside its **real-versus-real floor** (a held-out real split
against the reference split, same sample sizes), because none of them is 0 (or 1) for
perfect samples at finite n:

>>> from zoo.metrics import sample_quality_report
>>> report = sample_quality_report(generated, real_train_images, real_test_images)
>>> print(report.to_markdown())

``feature_extractor="inception_v3"`` selects ImageNet InceptionV3 pool features (the
usual FID) for users who are online or have its weights cached; it fails fast with a
clear error offline. Importing this module loads neither TensorFlow nor Keras.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "FEATURE_EXTRACTORS",
    "FeatureExtractor",
    "FeatureExtractorUnavailableError",
    "InceptionV3Features",
    "QualityMetrics",
    "SampleQualityCallback",  # noqa: F822 (built on first access: keeps Keras out of the import)
    "SampleQualityEvaluator",
    "SampleQualityReport",
    "class_histogram",
    "class_kl_to_uniform",
    "density_coverage",
    "evaluate_run",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_stats",
    "generate_samples",
    "get_feature_extractor",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "log_report",
    "mmd2_unbiased",
    "polynomial_kernel",
    "precision_recall",
    "sample_quality_report",
]

FEATURE_EXTRACTORS = ("mnist_classifier", "inception_v3")

# --------------------------------------------------------------------------- validation


def _as_features(x: Any, what: str, min_rows: int = 2) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D array (n_samples, n_features); got shape {array.shape}"
        )
    if array.shape[0] < min_rows:
        raise ValueError(f"{what} needs at least {min_rows} rows; got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or inf; check the images and the extractor")
    return array


def _pair(a: Any, b: Any, what: str, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_features(a, f"{what} (first set)", min_rows), _as_features(b, f"{what} (second)")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{what}: the two sets have {x.shape[1]} and {y.shape[1]} features; embed both "
            "with the same feature extractor"
        )
    return x, y


def _as_probabilities(p: Any) -> np.ndarray:
    probs = np.asarray(p, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(
            f"probabilities must be a non-empty (n_samples, n_classes) array; got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise ValueError("probabilities must be finite and non-negative")
    sums = probs.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-4):
        raise ValueError(
            "each row of probabilities must sum to 1 (softmax outputs, not logits); got row "
            f"sums in [{sums.min():.4g}, {sums.max():.4g}]"
        )
    return probs / sums[:, None]


# --------------------------------------------------------------------------- Fréchet


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``n - 1``) covariance of ``(n, d)`` features, float64."""
    x = _as_features(features, "features")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh;
    round-off negative eigenvalues are clipped to 0)."""
    sym = (matrix + matrix.T) / 2.0
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_product(sqrt1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2)``: the product is similar to a
    symmetric PSD matrix, so the trace is the sum of the square roots of its eigenvalues."""
    inner = sqrt1 @ sigma2 @ sqrt1
    values = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(values, 0.0, None))))


def _check_stats(mu: Any, sigma: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(
            f"{which}: need a mean of shape (d,) and a covariance of shape (d, d); got "
            f"{mu.shape} and {sigma.shape}"
        )
    return mu, sigma


def frechet_distance_from_stats(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, sqrt_sigma1: np.ndarray | None = None
) -> float:
    """Squared 2-Wasserstein (Fréchet) distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1^1/2 sigma2 sigma1^1/2)^1/2)``.

    ``sqrt_sigma1`` may pass a precomputed symmetric square root of ``sigma1``. The
    result is clipped at 0 (round-off for identical inputs).
    """
    mu1, sigma1 = _check_stats(mu1, sigma1, "first Gaussian")
    mu2, sigma2 = _check_stats(mu2, sigma2, "second Gaussian")
    if mu1.size != mu2.size:
        raise ValueError(f"dimensions differ: {mu1.size} and {mu2.size}")
    root = _sqrt_psd(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
    diff = mu1 - mu2
    value = (
        float(diff @ diff)
        + float(np.trace(sigma1))
        + float(np.trace(sigma2))
        - 2.0 * _trace_sqrt_product(root, sigma2)
    )
    return max(value, 0.0)


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """FID-style Fréchet distance between Gaussians fitted to two ``(n, d)`` feature sets."""
    a, b = _pair(features_a, features_b, "frechet_distance")
    return frechet_distance_from_stats(*feature_statistics(a), *feature_statistics(b))


# --------------------------------------------------------------------------- KID


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel ``k(x, y) = (x.y / d + 1)^3`` for all pairs of rows."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(
    x: Any, y: Any, kernel: Callable[[np.ndarray, np.ndarray], np.ndarray] = polynomial_kernel
) -> float:
    """Unbiased estimate of MMD^2 (Gretton et al., 2012, eq. 3): the within-set means
    exclude the diagonal ``k(x_i, x_i)``. Its expectation is 0 when both sets come from
    the same distribution (so single estimates can be negative)."""
    x, y = _pair(x, y, "mmd2_unbiased")
    m, n = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


#: Sets up to this size get their full kernel matrix computed once (float64, n^2 * 8
#: bytes: 128 MB at 4,000); subsets then only index into it. Larger sets are handled one
#: subset at a time.
FULL_KERNEL_MAX = 5000


class _KernelCache:
    """A set's features and, when small enough, its full ``k(x, x)`` matrix."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.full = polynomial_kernel(x, x) if len(x) <= FULL_KERNEL_MAX else None


def _kid_values(
    a: _KernelCache, b: _KernelCache, num_subsets: int, size: int, seed: int
) -> np.ndarray:
    """MMD^2 of ``num_subsets`` random subset pairs; subset indices are drawn exactly as
    ``rng.choice(n, size, replace=False)`` for a, then b, whatever the strategy.

    With full kernel matrices, the sum of ``K[idx][:, idx]`` is ``m^T K m`` for the 0/1
    indicator ``m`` of ``idx``, so all subsets' sums come from one matrix product."""
    rng = np.random.default_rng(seed)
    na, nb = len(a.x), len(b.x)
    draws = [
        (rng.choice(na, size, replace=False), rng.choice(nb, size, replace=False))
        for _ in range(num_subsets)
    ]
    if a.full is None or b.full is None:
        return np.array([mmd2_unbiased(a.x[ia], b.x[ib]) for ia, ib in draws])
    ma, mb = np.zeros((na, num_subsets)), np.zeros((nb, num_subsets))
    for j, (ia, ib) in enumerate(draws):
        ma[ia, j] = 1.0
        mb[ib, j] = 1.0

    def within(kernel: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->j", m, kernel @ m) - np.diag(kernel) @ m

    between = np.einsum("ij,ij->j", ma, polynomial_kernel(a.x, b.x) @ mb)
    denominator = size * (size - 1)
    return (within(a.full, ma) + within(b.full, mb)) / denominator - 2.0 * between / size**2


def kernel_inception_distance(
    features_a: Any,
    features_b: Any,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: ``(mean, std)`` of :func:`mmd2_unbiased` with the cubic polynomial kernel over
    ``num_subsets`` random subsets of ``min(subset_size, n_a, n_b)`` rows of each set
    (drawn without replacement within a subset), as in Bińkowski et al. (2018).

    Sets of up to ``FULL_KERNEL_MAX`` rows have their kernel matrices computed once and
    indexed per subset (the same values, faster)."""
    a, b = _pair(features_a, features_b, "kernel_inception_distance")
    return _kid(_KernelCache(a), _KernelCache(b), num_subsets, subset_size, seed)


def _kid(
    a: _KernelCache, b: _KernelCache, num_subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1; got {num_subsets}")
    size = min(int(subset_size), len(a.x), len(b.x))
    if size < 2:
        raise ValueError(f"subset_size must be >= 2; got {subset_size}")
    values = _kid_values(a, b, num_subsets, size, seed)
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------- classes


def _entropy_terms(p: np.ndarray) -> np.ndarray:
    """``p log p`` with ``0 log 0 = 0``."""
    out = np.zeros_like(p)
    positive = p > 0
    out[positive] = p[positive] * np.log(p[positive])
    return out


def inception_score(probabilities: Any, *, splits: int = 1) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean prediction, averaged over
    ``splits`` equal parts (Salimans et al., 2016 used 10 with Inception). Between 1 (every
    sample gets the same prediction) and the number of classes (confident predictions
    spread evenly over the classes)."""
    probs = _as_probabilities(probabilities)
    if not 1 <= splits <= len(probs):
        raise ValueError(f"splits must be in [1, {len(probs)}]; got {splits}")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0)
        kl = _entropy_terms(part).sum(axis=1) - part @ np.log(np.where(marginal > 0, marginal, 1))
        scores.append(math.exp(float(kl.mean())))
    return float(np.mean(scores))


def class_histogram(predictions: Any, num_classes: int | None = None) -> np.ndarray:
    """Share of samples per predicted class (sums to 1). ``predictions`` are class
    probabilities ``(n, K)`` (arg-maxed) or integer labels ``(n,)`` with ``num_classes``."""
    array = np.asarray(predictions)
    if array.ndim == 2:
        probs = _as_probabilities(array)
        labels, k = np.argmax(probs, axis=1), probs.shape[1]
    elif array.ndim == 1 and array.size and array.dtype.kind in "iub":
        if num_classes is None:
            raise ValueError("pass num_classes with integer labels")
        labels, k = array.astype(np.int64), int(num_classes)
        if labels.min() < 0 or labels.max() >= k:
            raise ValueError(f"labels must be in [0, {k}); got [{labels.min()}, {labels.max()}]")
    else:
        raise ValueError(
            "class_histogram takes probabilities (n, K) or integer labels (n,); got "
            f"shape {array.shape} dtype {array.dtype}"
        )
    if num_classes is not None and int(num_classes) != k:
        raise ValueError(f"num_classes={num_classes} but the probabilities have {k} columns")
    return np.bincount(labels, minlength=k).astype(np.float64) / labels.size


def class_kl_to_uniform(histogram: Any) -> float:
    """``KL(h || uniform) = log K - H(h)`` in nats: 0 for balanced classes, ``log K`` when
    every sample falls into one class (mode collapse)."""
    h = np.asarray(histogram, dtype=np.float64)
    if h.ndim != 1 or h.size == 0 or h.min() < 0 or not math.isclose(h.sum(), 1.0, abs_tol=1e-6):
        raise ValueError("histogram must be a 1-D array of non-negative shares summing to 1")
    return max(float(np.log(h.size) + _entropy_terms(h).sum()), 0.0)


# --------------------------------------------------------------------------- manifolds


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _distances(a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    d2 = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(features: Any, k: int | Sequence[int], *, chunk: int = 1024) -> np.ndarray:
    """Distance from each row to its ``k``-th nearest *other* row (Euclidean); with a
    sequence of ``k`` values, one column per value (one pass over the distances)."""
    x = _as_features(features, "features")
    ks = [k] if isinstance(k, (int, np.integer)) else [int(v) for v in k]
    for value in ks:
        if not 1 <= value < len(x):
            raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} points; got {value}")
    sq = _sq_norms(x)
    radii = np.empty((len(x), len(ks)))
    for start in range(0, len(x), chunk):
        d = _distances(x[start : start + chunk], x, sq[start : start + chunk], sq)
        rows = np.arange(d.shape[0])
        d[rows, start + rows] = 0.0  # self, exactly (round-off)
        radii[start : start + chunk] = np.partition(d, sorted(set(ks)), axis=1)[:, ks]
    return radii[:, 0] if isinstance(k, (int, np.integer)) else radii  # index 0 is self


@dataclass
class _Manifold:
    """Real features with their k-NN radii for precision/recall and density/coverage."""

    features: np.ndarray
    sq: np.ndarray
    radii_pr: np.ndarray
    radii_dc: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray, k_pr: int, k_dc: int) -> _Manifold:
        radii = knn_radii(features, [k_pr, k_dc])
        return cls(features, _sq_norms(features), radii[:, 0], radii[:, 1])


def _manifold_metrics(
    real: _Manifold, fake: np.ndarray, k_pr: int, k_dc: int, chunk: int = 1024
) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real``."""
    fake_radii = knn_radii(fake, k_pr)
    fake_sq = _sq_norms(fake)
    in_real = np.zeros(len(fake), dtype=bool)  # precision: fake inside some real ball
    density_counts = np.zeros(len(fake))  # density: real balls (k_dc) containing the fake
    real_covered = np.zeros(len(real.features), dtype=bool)  # recall: real in a fake ball
    nearest_fake = np.full(len(real.features), np.inf)  # coverage: nearest fake per real
    for start in range(0, len(fake), chunk):
        stop = start + chunk
        d = _distances(fake[start:stop], real.features, fake_sq[start:stop], real.sq)
        in_real[start:stop] = np.any(d <= real.radii_pr[None, :], axis=1)
        density_counts[start:stop] = np.sum(d <= real.radii_dc[None, :], axis=1)
        real_covered |= np.any(d <= fake_radii[start:stop, None], axis=0)
        nearest_fake = np.minimum(nearest_fake, d.min(axis=0))
    return {
        "precision": float(in_real.mean()),
        "recall": float(real_covered.mean()),
        "density": float(density_counts.sum() / (k_dc * len(fake))),
        "coverage": float(np.mean(nearest_fake <= real.radii_dc)),
    }


def precision_recall(real_features: Any, fake_features: Any, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019).

    Each set's manifold is the union of balls around its points with radius the distance
    to the ``k``-th nearest neighbour in the same set. Precision = share of fake samples
    inside the real manifold; recall = share of real samples inside the fake manifold.
    """
    real, fake = _pair(real_features, fake_features, "precision_recall")
    m = _manifold_metrics(_Manifold.of(real, k, k), fake, k, k)
    return m["precision"], m["recall"]


def density_coverage(real_features: Any, fake_features: Any, *, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al., 2020), on real k-NN balls only.

    Density = ``1/(k M) sum_j #{i : fake_j in B(real_i, r_i)}`` (about 1 when the fakes
    are distributed like the reals; it can exceed 1); coverage = share of real points
    whose ball contains at least one fake sample.
    """
    real, fake = _pair(real_features, fake_features, "density_coverage")
    m = _manifold_metrics(_Manifold.of(real, k, k), fake, k, k)
    return m["density"], m["coverage"]


# --------------------------------------------------------------------------- extractors


class FeatureExtractor(Protocol):
    """What the metrics need from a feature space."""

    name: str

    def embed(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(features (n, d), class probabilities (n, K))`` as numpy arrays."""
        ...


class FeatureExtractorUnavailableError(RuntimeError):
    """The selected feature extractor cannot be built here (e.g. no weights offline)."""


# keras.applications.inception_v3's weight files (same names and hashes, so the file is
# cached where ``InceptionV3(weights="imagenet")`` looks for it).
_INCEPTION_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
INCEPTION_WEIGHTS = {
    "notop": (
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _INCEPTION_BASE + "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "top": (
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        _INCEPTION_BASE + "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "9a0d58056eeedaa3f26cb7ebd46da564",
    ),
}


def _fetch_inception_weights(kind: str, timeout: float) -> str:
    """Download (or find cached) an InceptionV3 weight file with ``keras.utils.get_file``,
    under a socket timeout, so a machine without network fails in seconds instead of
    hanging; any failure becomes a :class:`FeatureExtractorUnavailableError` naming the
    offline alternative."""
    import keras

    fname, origin, md5 = INCEPTION_WEIGHTS[kind]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return keras.utils.get_file(fname, origin, cache_subdir="models", file_hash=md5)
    except Exception as error:  # get_file raises a bare Exception on URL errors
        raise FeatureExtractorUnavailableError(
            f"feature_extractor='inception_v3' needs the ImageNet InceptionV3 weights "
            f"({fname}), which are not cached and could not be downloaded from {origin} "
            f"({type(error).__name__}: {error}). Offline, use "
            "feature_extractor='mnist_classifier' (the zoo's bundled MNIST classifier, no "
            "download), or copy the file into ~/.keras/models/ (or $KERAS_HOME/models/) on "
            "a machine that is online, or pass InceptionV3Features(weights=<path to .h5>)"
        ) from error
    finally:
        socket.setdefaulttimeout(previous)


class InceptionV3Features:
    """ImageNet InceptionV3 as the feature space (the usual FID/IS setting).

    Features: ``keras.applications.InceptionV3(weights="imagenet", include_top=False,
    pooling="avg")`` (2048-d pool features). Probabilities (for the Inception Score):
    the full classifier (``include_top=True``, 1000 ImageNet classes), loaded on first use.
    Images are tiled to RGB, resized to 299x299 (bilinear) and scaled to [-1, 1].
    Weight files are fetched with a ``timeout``-second socket timeout, so offline use
    fails fast with :class:`FeatureExtractorUnavailableError`; ``weights`` / ``top_weights``
    may name local ``.h5`` files instead. Note: Keras' InceptionV3 weights are not the
    2015 TF graph of the reference FID code, so values are comparable only within the zoo.
    """

    name = "inception_v3"
    size = 299

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        top_weights: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        batch_size: int = 32,
    ):
        import keras

        self.timeout, self.batch_size = float(timeout), int(batch_size)
        self._top_weights = top_weights
        self._top: Any = None
        if weights is None:
            _fetch_inception_weights("notop", self.timeout)  # fails fast offline
            weights = "imagenet"  # now cached: InceptionV3 finds it without the network
        self.model = keras.applications.InceptionV3(
            weights=str(weights) if weights != "imagenet" else "imagenet",
            include_top=False,
            pooling="avg",
        )

    def _classifier(self) -> Any:
        if self._top is None:
            import keras

            weights = self._top_weights
            if weights is None:
                _fetch_inception_weights("top", self.timeout)
                weights = "imagenet"
            self._top = keras.applications.InceptionV3(weights=str(weights), include_top=True)
        return self._top

    def _batches(self, images: Any) -> Any:
        import tensorflow as tf

        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"images must be (N, H, W[, 1 or 3]); got shape {x.shape}")
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        for start in range(0, len(x), self.batch_size):
            batch = tf.convert_to_tensor(x[start : start + self.batch_size])
            if batch.shape[-1] == 1:
                batch = tf.repeat(batch, 3, axis=-1)
            batch = tf.image.resize(batch, (self.size, self.size), method="bilinear")
            yield tf.clip_by_value(batch, 0.0, 1.0) * 2.0 - 1.0  # inception preprocessing

    def features(self, images: Any) -> np.ndarray:
        return np.concatenate(
            [np.asarray(self.model(b, training=False), np.float64) for b in self._batches(images)]
        )

    def probabilities(self, images: Any) -> np.ndarray:
        top = self._classifier()
        return np.concatenate(
            [np.asarray(top(b, training=False), np.float64) for b in self._batches(images)]
        )

    def embed(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.features(images), self.probabilities(images)


def get_feature_extractor(
    feature_extractor: str | FeatureExtractor = "mnist_classifier", **options: Any
) -> FeatureExtractor:
    """``"mnist_classifier"`` (default: the bundled classifier, offline), ``"inception_v3"``
    (ImageNet InceptionV3; ``options`` go to :class:`InceptionV3Features`) or any object
    with ``name`` and ``embed(images) -> (features, probabilities)``."""
    if not isinstance(feature_extractor, str):
        if not callable(getattr(feature_extractor, "embed", None)):
            raise TypeError(
                "feature_extractor must be one of "
                f"{FEATURE_EXTRACTORS} or an object with embed(images) -> (features, "
                f"probabilities); got {type(feature_extractor).__name__}"
            )
        return feature_extractor
    if feature_extractor == "mnist_classifier":
        from zoo.metrics.classifier import load_classifier

        return load_classifier(**options)
    if feature_extractor == "inception_v3":
        return InceptionV3Features(**options)
    raise ValueError(
        f"unknown feature_extractor {feature_extractor!r}; choose 'mnist_classifier' (bundled, "
        "offline, 28x28 digits) or 'inception_v3' (ImageNet weights, downloaded once)"
    )


# --------------------------------------------------------------------------- report

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


class SampleQualityEvaluator:
    """Embeds the real reference and held-out sets once (features, Gaussian statistics,
    k-NN radii, the floor), then scores any number of generated sets with
    :meth:`evaluate` (as the training callback does every N epochs)."""

    def __init__(
        self,
        real_reference: Any,
        real_heldout: Any,
        *,
        feature_extractor: str | FeatureExtractor = "mnist_classifier",
        k: int = 3,
        k_dc: int = 5,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ):
        self.extractor = get_feature_extractor(feature_extractor)
        self.k, self.k_dc = int(k), int(k_dc)
        self.kid_subsets, self.kid_subset_size, self.seed = (
            int(kid_subsets), int(kid_subset_size), int(seed),
        )  # fmt: skip
        features, _ = self.extractor.embed(real_reference)
        self.reference = _as_features(features, "reference features", max(self.k, self.k_dc) + 1)
        self.mu, self.sigma = feature_statistics(self.reference)
        self.sqrt_sigma = _sqrt_psd(self.sigma)
        self.manifold = _Manifold.of(self.reference, self.k, self.k_dc)
        self.kernel = _KernelCache(self.reference)
        self.floor = self.metrics(*self.extractor.embed(real_heldout))

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "k_dc": self.k_dc,
            "kid_subsets": self.kid_subsets,
            "kid_subset_size": self.kid_subset_size,
            "seed": self.seed,
        }

    def metrics(self, features: Any, probabilities: Any) -> QualityMetrics:
        """Every metric of already-embedded samples against the reference."""
        x = _as_features(features, "sample features", max(self.k, self.k_dc) + 1)
        mu, sigma = feature_statistics(x)
        kid, kid_std = _kid(
            self.kernel, _KernelCache(x), self.kid_subsets, self.kid_subset_size, self.seed
        )
        manifold = _manifold_metrics(self.manifold, x, self.k, self.k_dc)
        histogram = class_histogram(probabilities)
        return QualityMetrics(
            fid=frechet_distance_from_stats(
                self.mu, self.sigma, mu, sigma, sqrt_sigma1=self.sqrt_sigma
            ),
            kid=kid,
            kid_std=kid_std,
            inception_score=inception_score(probabilities),
            **manifold,
            class_kl=class_kl_to_uniform(histogram),
            class_histogram=histogram,
            n=len(x),
        )

    def evaluate(self, generated_images: Any) -> SampleQualityReport:
        return SampleQualityReport(
            generated=self.metrics(*self.extractor.embed(generated_images)),
            floor=self.floor,
            feature_extractor=self.extractor.name,
            n_reference=len(self.reference),
            settings=self.settings,
        )


def sample_quality_report(
    generated_images: Any,
    real_reference: Any,
    real_heldout: Any,
    *,
    feature_extractor: str | FeatureExtractor = "mnist_classifier",
    k: int = 3,
    k_dc: int = 5,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> SampleQualityReport:
    """Every metric of ``generated_images`` against ``real_reference`` (e.g. the training
    split), beside the floor of ``real_heldout`` (e.g. the test split) against the same
    reference. Give ``generated_images`` as many images as ``real_heldout`` so the floor
    has the same sample-size bias. Images: uint8 or floats in [0, 1], (N, H, W[, C])."""
    evaluator = SampleQualityEvaluator(
        real_reference, real_heldout, feature_extractor=feature_extractor, k=k, k_dc=k_dc,
        kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
    )  # fmt: skip
    return evaluator.evaluate(generated_images)


# --------------------------------------------------------------------------- models


def generate_samples(model: Any, n: int, *, seed: int = 0, batch_size: int = 250) -> np.ndarray:
    """``n`` images in [0, 1] from ``model.generate(z)`` with ``z ~ N(0, I)`` drawn by
    ``numpy.random.default_rng(seed)`` (the model's own RNG is untouched). Conditional
    models get labels ``i mod num_classes`` (every class equally often)."""
    if not callable(getattr(model, "generate", None)) or not hasattr(model, "latent_dim"):
        raise TypeError(
            f"{getattr(model, 'name', type(model).__name__)} is not a generator (it has no "
            "generate(z) and latent_dim); sample quality applies to GANs and VAEs. For "
            "autoencoders use `zoo evaluate --task anomaly`"
        )
    z = np.random.default_rng(seed).standard_normal((int(n), int(model.latent_dim)))
    z = z.astype(np.float32)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    labels = np.arange(int(n), dtype=np.int32) % num_classes if num_classes else None
    out = []
    for start in range(0, int(n), batch_size):
        chunk = z[start : start + batch_size]
        if labels is None:
            out.append(np.asarray(model.generate(chunk)))
        else:
            out.append(np.asarray(model.generate(chunk, labels[start : start + batch_size])))
    return np.concatenate(out)


def _default_real_sets() -> tuple[np.ndarray, np.ndarray]:
    from zoo.data import load_sample

    return load_sample("train")[0], load_sample("test")[0]


def log_report(report: SampleQualityReport, log_dir: str | os.PathLike[str], step: int) -> None:
    """Write :meth:`SampleQualityReport.scalars` as TensorBoard scalars at ``step``."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(), tf.summary.record_if(True):  # whatever a TensorBoard callback set
        for tag, value in report.scalars().items():
            tf.summary.scalar(tag, value, step=int(step))
    writer.flush()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def evaluate_run(
    path: str | os.PathLike[str],
    *,
    n: int = 1000,
    seed: int = 0,
    feature_extractor: str | FeatureExtractor = "mnist_classifier",
    out_dir: str | os.PathLike[str] | None = None,
    real_reference: Any = None,
    real_heldout: Any = None,
) -> tuple[SampleQualityReport, Path]:
    """``zoo evaluate --task samples``: load a run (``zoo.runs.load_run``), generate ``n``
    samples from fixed-seed latent points, compare them with the bundled sample's train
    split beside the test-split floor, and write ``sample_quality.md``/``.json``, a grid
    ``samples.png`` and TensorBoard scalars (``quality/*``, ``quality_floor/*``) into
    ``out_dir`` (default ``<run>/evaluation``). Returns ``(report, out_dir)``."""
    from zoo.data import image_grid, save_png
    from zoo.runs import load_run

    target = Path(path)
    model = load_run(target)
    generated = generate_samples(model, n, seed=seed)
    if real_reference is None or real_heldout is None:
        reference, heldout = _default_real_sets()
        real_reference = reference if real_reference is None else real_reference
        real_heldout = heldout if real_heldout is None else real_heldout
    report = sample_quality_report(
        generated, real_reference, real_heldout, feature_extractor=feature_extractor, seed=seed
    )
    out = (
        Path(out_dir)
        if out_dir
        else (target / "evaluation" if target.is_dir() else Path("evaluation"))
    )
    out.mkdir(parents=True, exist_ok=True)
    title = f"# Sample quality: {getattr(model, 'name', target.name)}\n\n"
    source = f"Run: `{target}`; {n} samples, latent seed {seed}.\n\n"
    _atomic_write(out / "sample_quality.md", title + source + report.to_markdown())
    _atomic_write(
        out / "sample_quality.json",
        json.dumps({"run": str(target), "n": n, "seed": seed, **report.to_dict()}, indent=1),
    )
    save_png(image_grid(generated[:64]), out / "samples.png")
    log_report(report, out, step=0)
    return report, out


# --------------------------------------------------------------------------- callback


def _callback_class() -> type:
    """Build the Keras callback class on first use (keeps Keras out of the import)."""
    cached = globals().get("_CALLBACK")
    if cached is not None:
        return cached
    import keras

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
                    f"need every_n_epochs >= 1 and n_samples >= 6; got {every_n_epochs}, "
                    f"{n_samples}"
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
                    default_reference, default_heldout = _default_real_sets()
                    reference = default_reference if reference is None else reference
                    heldout = default_heldout if heldout is None else heldout
                self.evaluator = SampleQualityEvaluator(
                    reference, heldout, feature_extractor=self.feature_extractor, seed=self.seed
                )
            return self.evaluator

        def evaluate_now(self, step: int) -> SampleQualityReport:
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

    globals()["_CALLBACK"] = SampleQualityCallback
    return SampleQualityCallback


def __getattr__(name: str) -> Any:
    if name == "SampleQualityCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _parse_args(argv: Sequence[str] | None) -> Any:  # pragma: no cover - thin CLI
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m zoo.metrics.sample_quality",
        description="Sample quality of a run (what `zoo evaluate --task samples` runs).",
    )
    parser.add_argument("run", help="run folder, .keras file or registered model name")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--feature-extractor", default="mnist_classifier", choices=FEATURE_EXTRACTORS
    )
    parser.add_argument("--out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - thin CLI
    args = _parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report, out = evaluate_run(
        args.run, n=args.n, seed=args.seed, feature_extractor=args.feature_extractor,
        out_dir=args.out,
    )  # fmt: skip
    print(report)
    print(f"report: {out / 'sample_quality.md'}  TensorBoard: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
