"""Sample-quality metrics on feature arrays (numpy only).

Every function takes ``(n, d)`` features (or ``(n, K)`` class probabilities) from a
feature extractor (:mod:`zoo.metrics.features`):

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

:class:`KernelCache`, :class:`Manifold`, :func:`kid_from_kernels` and
:func:`manifold_metrics` are the same maths with the real set's work done once, for
:class:`zoo.metrics.quality_evaluation.SampleQualityEvaluator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FULL_KERNEL_MAX",
    "KernelCache",
    "Manifold",
    "as_features",
    "class_histogram",
    "class_kl_to_uniform",
    "density_coverage",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_stats",
    "inception_score",
    "kernel_inception_distance",
    "kid_from_kernels",
    "knn_radii",
    "manifold_metrics",
    "mmd2_unbiased",
    "polynomial_kernel",
    "precision_recall",
    "sqrt_psd",
]

# --------------------------------------------------------------------------- validation


def as_features(x: Any, what: str, min_rows: int = 2) -> np.ndarray:
    """``x`` as a finite float64 ``(n, d)`` array with at least ``min_rows`` rows; the
    error messages name ``what``."""
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
    x, y = as_features(a, f"{what} (first set)", min_rows), as_features(b, f"{what} (second)")
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
    x = as_features(features, "features")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
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
    root = sqrt_psd(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
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


class KernelCache:
    """A set's features and, when small enough, its full ``k(x, x)`` matrix."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.full = polynomial_kernel(x, x) if len(x) <= FULL_KERNEL_MAX else None


def _kid_values(
    a: KernelCache, b: KernelCache, num_subsets: int, size: int, seed: int
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
    return kid_from_kernels(KernelCache(a), KernelCache(b), num_subsets, subset_size, seed)


def kid_from_kernels(
    a: KernelCache, b: KernelCache, num_subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    """:func:`kernel_inception_distance` of two prepared sets (``(mean, std)``)."""
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
    x = as_features(features, "features")
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
class Manifold:
    """Real features with their k-NN radii for precision/recall and density/coverage."""

    features: np.ndarray
    sq: np.ndarray
    radii_pr: np.ndarray
    radii_dc: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray, k_pr: int, k_dc: int) -> Manifold:
        radii = knn_radii(features, [k_pr, k_dc])
        return cls(features, _sq_norms(features), radii[:, 0], radii[:, 1])


def manifold_metrics(
    real: Manifold, fake: np.ndarray, k_pr: int, k_dc: int, chunk: int = 1024
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
    m = manifold_metrics(Manifold.of(real, k, k), fake, k, k)
    return m["precision"], m["recall"]


def density_coverage(real_features: Any, fake_features: Any, *, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al., 2020), on real k-NN balls only.

    Density = ``1/(k M) sum_j #{i : fake_j in B(real_i, r_i)}`` (about 1 when the fakes
    are distributed like the reals; it can exceed 1); coverage = share of real points
    whose ball contains at least one fake sample.
    """
    real, fake = _pair(real_features, fake_features, "density_coverage")
    m = manifold_metrics(Manifold.of(real, k, k), fake, k, k)
    return m["density"], m["coverage"]
