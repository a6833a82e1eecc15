"""A small MNIST digit classifier whose penultimate layer is the feature space of the
sample-quality metrics (FID, KID, precision/recall, ...) in :mod:`zoo.metrics.quality`.

TF-GAN no longer imports on current TensorFlow and Inception weights need a download,
so the zoo ships its own domain classifier (the approach of e.g. the MNIST "FID" used in
many GAN papers): a four-layer convnet trained on the bundled sample's train split
(4,000 digits) with the weights committed next to this module
(``zoo/metrics/classifier/mnist_classifier.weights.h5``, see the README there).

>>> from zoo.metrics.classifier import load_classifier
>>> clf = load_classifier()
>>> clf.features(images).shape        # (N, 128), the layer named "features"
>>> clf.probabilities(images).shape   # (N, 10)

Rebuild the weights (deterministic; prints the test accuracy and the weights digest)::

    python -m zoo.metrics.classifier --retrain [--check]

Importing this module loads neither TensorFlow nor Keras; they are imported on use.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.fileio import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "BUNDLED_TEST_ACCURACY",
    "BUNDLED_WEIGHTS_DIGEST",
    "DEFAULT_WEIGHTS",
    "FEATURE_LAYER",
    "IMAGE_SHAPE",
    "MnistClassifier",
    "TrainingResult",
    "build_classifier",
    "load_classifier",
    "prepare_images",
    "train_mnist_classifier",
    "weights_digest",
]

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
FEATURE_DIM = 128
FEATURE_LAYER = "features"
DEFAULT_WEIGHTS = Path(__file__).parent / "classifier" / "mnist_classifier.weights.h5"

# Training recipe of the bundled weights (``train_mnist_classifier`` defaults).
EPOCHS = 40
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
MAX_SHIFT = 2  # random translation of +-2 pixels (zero padding) as augmentation
NOISE_FRACTION = 0.5  # share of training images per epoch that get pixel noise (see _noise)

#: Accuracy of the bundled weights on the sample's 1,000-digit test split (seed 0).
BUNDLED_TEST_ACCURACY = 0.981
#: ``weights_digest`` of the bundled weights (``--retrain --check`` compares against it).
BUNDLED_WEIGHTS_DIGEST = "1693b1f8a114c715"

OFFLINE_HINT = (
    "for other images use feature_extractor='inception_v3' (ImageNet InceptionV3, needs "
    "its weights downloaded once) or train a classifier for your domain"
)


# --------------------------------------------------------------------------- inputs


def prepare_images(images: Any, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Images as float32 in [0, 1] with shape ``(N, *image_shape)``.

    Takes uint8 (0-255) or floats in [0, 1] (numpy arrays or tensors), ``(N, H, W)`` or
    ``(N, H, W, C)``. Values a little outside [0, 1] (round-off) are clipped; anything
    else outside it is an error, as it usually means [-1, 1] or 0-255 floats.
    """
    from zoo.data.images import as_image_batch

    array = as_image_batch(images)
    if tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"the MNIST classifier's feature space is for {'x'.join(map(str, image_shape))} "
            f"digits; got images of shape {'x'.join(map(str, array.shape[1:]))}. " + OFFLINE_HINT
        )
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind not in "fiub":
        raise ValueError(f"images must be uint8 or floats in [0, 1]; got dtype {array.dtype}")
    array = array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("images contain NaN or inf; check the generator's output")
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(
            f"float images must be in [0, 1]; got values in [{lo:g}, {hi:g}]. Scale them first "
            "((x + 1) / 2 for tanh outputs in [-1, 1], x / 255 for 0-255 floats)"
        )
    return np.clip(array, 0.0, 1.0)


# --------------------------------------------------------------------------- network


def build_classifier(seed: int = 0, feature_dim: int = FEATURE_DIM) -> keras.Model:
    """The convnet: three conv stages (32, 64, 128 filters, 3x3, ReLU, 2x2 max-pool after
    the first two), global average pooling, a ``feature_dim``-unit ReLU layer named
    ``"features"`` (the metrics' feature space), dropout 0.3 and 10 logits.

    110,474 parameters (0.44 MB of float32 weights).
    """
    import keras
    from keras import layers

    def init(i: int) -> keras.initializers.Initializer:
        return keras.initializers.HeUniform(seed=seed * 1009 + i)

    inputs = keras.Input(IMAGE_SHAPE, name="images")
    x = inputs
    for i, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(
            filters, 3, padding="same", activation="relu", kernel_initializer=init(i),
            name=f"conv{i + 1}",
        )(x)  # fmt: skip
        if i < 2:
            x = layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(
        feature_dim, activation="relu", kernel_initializer=init(3), name=FEATURE_LAYER
    )(x)
    x = layers.Dropout(0.3, seed=seed, name="dropout")(x)
    logits = layers.Dense(
        NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1009 + 4),
        name="logits",
    )(x)  # fmt: skip
    return keras.Model(inputs, logits, name="mnist_classifier")


class MnistClassifier:
    """A trained classifier with the two views the metrics need.

    ``features`` are the activations of the layer named ``"features"`` (N x 128),
    ``probabilities`` the softmax of the logits (N x 10). Both take uint8 or [0, 1]
    float digits of shape (N, 28, 28[, 1]) and run in inference mode (no dropout).
    """

    name = "mnist_classifier"
    image_shape = IMAGE_SHAPE
    num_classes = NUM_CLASSES

    def __init__(self, model: keras.Model, batch_size: int = 500):
        import keras
        import tensorflow as tf

        self.model = model
        self.batch_size = int(batch_size)
        both = keras.Model(model.inputs, [model.get_layer(FEATURE_LAYER).output, model.outputs[0]])
        self._both = tf.function(lambda x: both(x, training=False), reduce_retracing=True)

    @property
    def feature_dim(self) -> int:
        return int(self.model.get_layer(FEATURE_LAYER).units)

    def embed(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(features, probabilities)`` in one pass, as float64 numpy arrays."""
        x = prepare_images(images, self.image_shape)
        feats, logits = [], []
        for start in range(0, len(x), self.batch_size):
            f, lg = self._both(x[start : start + self.batch_size])
            feats.append(np.asarray(f, np.float64))
            logits.append(np.asarray(lg, np.float64))
        logit = np.concatenate(logits)
        logit -= logit.max(axis=1, keepdims=True)
        probs = np.exp(logit)
        probs /= probs.sum(axis=1, keepdims=True)
        return np.concatenate(feats), probs

    def features(self, images: Any) -> np.ndarray:
        """Penultimate-layer activations, shape ``(N, feature_dim)``."""
        return self.embed(images)[0]

    def probabilities(self, images: Any) -> np.ndarray:
        """Class probabilities ``p(y | x)``, shape ``(N, 10)``."""
        return self.embed(images)[1]

    def predict(self, images: Any) -> np.ndarray:
        """The most probable digit per image (int64)."""
        return np.argmax(self.probabilities(images), axis=1).astype(np.int64)

    def accuracy(self, images: Any, labels: Any) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels)))


def weights_digest(model: keras.Model) -> str:
    """SHA-256 (first 16 hex digits) of the weights' float32 little-endian bytes, in order."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight, dtype="<f4").tobytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _load(path: str) -> MnistClassifier:
    model = build_classifier()
    model.load_weights(path)
    return MnistClassifier(model)


def load_classifier(path: str | os.PathLike[str] | None = None) -> MnistClassifier:
    """The trained classifier (by default the committed weights); cached per path."""
    target = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not target.is_file():
        raise FileNotFoundError(
            f"no classifier weights at {target}; rebuild the bundled ones with "
            "`python -m zoo.metrics.classifier --retrain` (about a minute on a CPU)"
        )
    return _load(str(target.resolve()))


# --------------------------------------------------------------------------- training


@dataclass
class TrainingResult:
    classifier: MnistClassifier
    test_accuracy: float
    train_accuracy: float
    epochs: int
    digest: str


def _shift(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Translate each image by a random integer offset in [-max_shift, max_shift]^2."""
    if max_shift <= 0:
        return images
    n, h, w, _ = images.shape
    pad = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    out = np.empty_like(images)
    for oy in range(2 * max_shift + 1):
        for ox in range(2 * max_shift + 1):
            idx = np.flatnonzero((dy == oy) & (dx == ox))
            out[idx] = pad[idx, oy : oy + h, ox : ox + w]
    return out


def _noise(images: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Corrupt a ``fraction`` of the images: half of them with salt noise (each pixel set
    to a uniform value with probability ~ U(0, 0.1)), half with Gaussian noise
    (sigma ~ U(0, 0.3)), clipped to [0, 1]. Generators' samples are often noisy; without
    this a clean-digit classifier files noisy digits of every class under "8", and the
    class histogram would report a mode collapse that is not there."""
    if fraction <= 0:
        return images
    out = images.copy()
    n = len(images)
    chosen = np.flatnonzero(rng.random(n) < fraction)
    salt, gauss = chosen[: len(chosen) // 2], chosen[len(chosen) // 2 :]
    shape = images.shape[1:]
    p = rng.uniform(0.0, 0.1, (len(salt), 1, 1, 1))
    mask = rng.random((len(salt), *shape)) < p
    out[salt] = np.where(mask, rng.random((len(salt), *shape)), out[salt])
    sigma = rng.uniform(0.0, 0.3, (len(gauss), 1, 1, 1))
    out[gauss] = out[gauss] + sigma * rng.standard_normal((len(gauss), *shape))
    return np.clip(out, 0.0, 1.0).astype(images.dtype)


def train_mnist_classifier(
    seed: int = 0,
    *,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    max_shift: int = MAX_SHIFT,
    noise_fraction: float = NOISE_FRACTION,
    deterministic: bool = True,
    out: str | os.PathLike[str] | None = None,
    verbose: int = 0,
    limit: int | None = None,
) -> TrainingResult:
    """Train the classifier on the bundled sample's train split (4,000 digits, split seed 0)
    and measure it on the 1,000-digit test split (used for nothing else).

    Adam with cosine learning-rate decay, sparse softmax cross-entropy, batch 64, random
    +-2 pixel shifts and, on ``noise_fraction`` of the images, salt or Gaussian pixel noise
    (redrawn every epoch); the data order, shifts and noise come from
    ``numpy.random.default_rng(seed)``.
    ``deterministic`` calls ``keras.utils.set_random_seed(seed)`` and
    ``tf.config.experimental.enable_op_determinism()`` (process-wide), so a seed
    rebuilds the same weights on the same software stack. ``out`` saves the weights;
    ``limit`` trains on the first ``limit`` training digits only (quick checks).
    """
    import keras
    import tensorflow as tf

    from zoo.data import load_sample

    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    train_x, train_y = load_sample("train")
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    test_x, test_y = load_sample("test")
    train_x = prepare_images(train_x)
    rng = np.random.default_rng(seed)

    model = build_classifier(seed)
    steps = (len(train_x) // batch_size) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    usable = (len(train_x) // batch_size) * batch_size
    for epoch in range(epochs):
        order = rng.permutation(len(train_x))[:usable]
        x = _noise(_shift(train_x[order], rng, max_shift), rng, noise_fraction)
        model.fit(
            x, train_y[order], batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch,
            shuffle=False, verbose=verbose,
        )  # fmt: skip
    classifier = MnistClassifier(model)
    result = TrainingResult(
        classifier=classifier,
        test_accuracy=classifier.accuracy(test_x, test_y),
        train_accuracy=classifier.accuracy(train_x, train_y),
        epochs=epochs,
        digest=weights_digest(model),
    )
    if out is not None:
        save_weights(model, out)
    return result


def save_weights(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Write the network's weights only (no optimizer slots), atomically."""
    clean = build_classifier()  # uncompiled: ``save_weights`` skips the optimizer
    clean.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        clean.save_weights(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.metrics.classifier",
        description="Rebuild (or check) the bundled MNIST feature classifier.",
    )
    parser.add_argument("--retrain", action="store_true", help="train and write the weights")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS), help="weights file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument(
        "--check", action="store_true", help="fail unless the weights digest matches the bundled"
    )
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.retrain:
        from zoo.data import load_sample

        clf = load_classifier()
        test_x, test_y = load_sample("test")
        print(f"bundled weights: {DEFAULT_WEIGHTS}")
        print(f"test accuracy:   {clf.accuracy(test_x, test_y):.4f}")
        print(f"weights digest:  {weights_digest(clf.model)}")
        print("pass --retrain to rebuild them")
        return 0
    result = train_mnist_classifier(
        args.seed, epochs=args.epochs, out=args.out, verbose=args.verbose
    )
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")
    print(f"train accuracy: {result.train_accuracy:.4f}")
    print(f"test accuracy:  {result.test_accuracy:.4f} (1,000 held-out digits)")
    print(f"weights digest: {result.digest}")
    if args.check and result.digest != BUNDLED_WEIGHTS_DIGEST:
        print(
            f"digest differs from the bundled weights ({BUNDLED_WEIGHTS_DIGEST}); a different "
            "TensorFlow/Keras version or CPU kernel can change the last bits",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
