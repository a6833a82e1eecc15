"""Feature spaces for the sample-quality metrics: images -> (features, class probabilities).

TF-GAN no longer imports on current TensorFlow and Inception weights cannot always be
downloaded, so the default feature space is the zoo's own MNIST classifier
(:mod:`zoo.metrics.classifier`, weights committed). ``"inception_v3"`` selects ImageNet
InceptionV3 pool features (the usual FID) for users who are online or have its weights
cached; it fails fast with a clear error offline. Importing this module loads neither
TensorFlow nor Keras.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Protocol

import numpy as np

__all__ = [
    "FEATURE_EXTRACTORS",
    "INCEPTION_WEIGHTS",
    "FeatureExtractor",
    "FeatureExtractorUnavailableError",
    "InceptionV3Features",
    "get_feature_extractor",
]

FEATURE_EXTRACTORS = ("mnist_classifier", "inception_v3")


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
        """2048-d pool features, ``(n, 2048)`` float64."""
        return np.concatenate(
            [np.asarray(self.model(b, training=False), np.float64) for b in self._batches(images)]
        )

    def probabilities(self, images: Any) -> np.ndarray:
        """ImageNet class probabilities of the full classifier, ``(n, 1000)`` float64."""
        top = self._classifier()
        return np.concatenate(
            [np.asarray(top(b, training=False), np.float64) for b in self._batches(images)]
        )

    def embed(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(features, probabilities)``."""
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
