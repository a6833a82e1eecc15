"""Scoring generated samples: :class:`SampleQualityEvaluator` (the real sets embedded once,
then any number of generated sets), :func:`sample_quality_report` (one set) and
:func:`evaluate_samples` (a loaded generator model: sample, score, write the report).

>>> from zoo.metrics import sample_quality_report
>>> report = sample_quality_report(generated, real_train_images, real_test_images)
>>> print(report.to_markdown())

Images: uint8 or floats in [0, 1], (N, H, W[, C]).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.fileio import atomic_write_text
from zoo.metrics.features import FeatureExtractor, get_feature_extractor
from zoo.metrics.quality import (
    KernelCache,
    Manifold,
    as_features,
    class_histogram,
    class_kl_to_uniform,
    feature_statistics,
    frechet_distance_from_stats,
    inception_score,
    kid_from_kernels,
    manifold_metrics,
    sqrt_psd,
)
from zoo.metrics.quality_report import QualityMetrics, SampleQualityReport, log_report

__all__ = [
    "SampleQualityEvaluator",
    "default_real_sets",
    "evaluate_samples",
    "generate_samples",
    "sample_quality_report",
]


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
        self.reference = as_features(features, "reference features", max(self.k, self.k_dc) + 1)
        self.mu, self.sigma = feature_statistics(self.reference)
        self.sqrt_sigma = sqrt_psd(self.sigma)
        self.manifold = Manifold.of(self.reference, self.k, self.k_dc)
        self.kernel = KernelCache(self.reference)
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
        x = as_features(features, "sample features", max(self.k, self.k_dc) + 1)
        mu, sigma = feature_statistics(x)
        kid, kid_std = kid_from_kernels(
            self.kernel, KernelCache(x), self.kid_subsets, self.kid_subset_size, self.seed
        )
        manifold = manifold_metrics(self.manifold, x, self.k, self.k_dc)
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
        """Every metric of ``generated_images`` beside the precomputed floor."""
        return SampleQualityReport(
            generated=self.metrics(*self.extractor.embed(generated_images)),
            floor=self.floor,
            feature_extractor=self.extractor.name,
            n_reference=len(self.reference),
            settings=self.settings,
        )


def sample_quality_report(
    generated_images: Any, real_reference: Any, real_heldout: Any, **settings: Any
) -> SampleQualityReport:
    """Every metric of ``generated_images`` against ``real_reference`` (e.g. the training
    split), beside the floor of ``real_heldout`` (e.g. the test split) against the same
    reference; ``settings`` are :class:`SampleQualityEvaluator`'s keywords
    (``feature_extractor``, ``k``, ``k_dc``, ``kid_subsets``, ``kid_subset_size``,
    ``seed``). Give ``generated_images`` as many images as ``real_heldout`` so the floor
    has the same sample-size bias. Images: uint8 or floats in [0, 1], (N, H, W[, C])."""
    evaluator = SampleQualityEvaluator(real_reference, real_heldout, **settings)
    return evaluator.evaluate(generated_images)


# --------------------------------------------------------------------------- models


def _check_generator(model: Any) -> None:
    """Raise ``TypeError`` unless ``model`` declares the Generator task (z -> images)."""
    from zoo.tasks import Generator, declaration_of

    declaration = declaration_of(model)
    if not declaration.implements(Generator):
        raise TypeError(
            f"{model.name} ({declaration.family}) is not a generator (it declares no "
            "Generator task); sample quality applies to GANs and VAEs. For models that score "
            "anomalies use `zoo evaluate --task anomaly`"
        )


def generate_samples(model: Any, n: int, *, seed: int = 0, batch_size: int = 250) -> np.ndarray:
    """``n`` images in [0, 1] from ``model.generate(z)`` with ``z ~ N(0, I)`` drawn by
    ``numpy.random.default_rng(seed)`` (the model's own RNG is untouched). Conditional
    models get labels ``i mod num_classes`` (every class equally often)."""
    _check_generator(model)
    from zoo.tasks import declaration_of

    declaration = declaration_of(model)
    z = np.random.default_rng(seed).standard_normal((int(n), *declaration.latent_shape))
    z = z.astype(np.float32)
    num_classes = declaration.num_classes
    labels = np.arange(int(n), dtype=np.int32) % num_classes if num_classes else None
    out = []
    for start in range(0, int(n), batch_size):
        chunk = z[start : start + batch_size]
        if labels is None:
            out.append(np.asarray(model.generate(chunk)))
        else:
            out.append(np.asarray(model.generate(chunk, labels[start : start + batch_size])))
    return np.concatenate(out)


def default_real_sets() -> tuple[np.ndarray, np.ndarray]:
    """The bundled MNIST sample's ``(train, test)`` images: the default reference and
    held-out real sets."""
    from zoo.data import load_sample

    return load_sample("train")[0], load_sample("test")[0]


def evaluate_samples(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    n: int = 1000,
    seed: int = 0,
    feature_extractor: str | FeatureExtractor = "mnist_classifier",
    real_reference: Any = None,
    real_heldout: Any = None,
    source: str | None = None,
) -> tuple[SampleQualityReport, Path]:
    """Sample quality of a loaded generator: generate ``n`` samples from fixed-seed latent
    points (:func:`generate_samples`), compare them with ``real_reference`` beside the
    floor of ``real_heldout`` (default: the bundled sample's train and test splits), and
    write ``sample_quality.md``/``.json``, a grid ``samples.png`` and TensorBoard scalars
    (``quality/*``, ``quality_floor/*``) into ``out_dir``. ``source`` names the run the
    model came from (report line ``Run: ...`` and JSON ``"run"``); without it the report
    says ``Model: <name>`` and ``"run"`` is null. Returns ``(report, out_dir)``."""
    from zoo.data import image_grid, save_png

    name = getattr(model, "name", type(model).__name__)
    generated = generate_samples(model, n, seed=seed)
    if real_reference is None or real_heldout is None:
        reference, heldout = default_real_sets()
        real_reference = reference if real_reference is None else real_reference
        real_heldout = heldout if real_heldout is None else real_heldout
    report = sample_quality_report(
        generated, real_reference, real_heldout, feature_extractor=feature_extractor, seed=seed
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"# Sample quality: {name}\n\n"
    origin = f"Run: `{source}`" if source is not None else f"Model: `{name}`"
    header = f"{origin}; {n} samples, latent seed {seed}.\n\n"
    atomic_write_text(out / "sample_quality.md", title + header + report.to_markdown())
    atomic_write_text(
        out / "sample_quality.json",
        json.dumps({"run": source, "n": n, "seed": seed, **report.to_dict()}, indent=1),
    )
    save_png(image_grid(generated[:64]), out / "samples.png")
    log_report(report, out, step=0)
    return report, out
