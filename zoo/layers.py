"""Custom layers: GAN stabilisers (spectral normalisation, minibatch standard deviation),
one-hot labels, and the MemAE memory module.

Every layer is registered for serialisation (``package="zoo"``), returns its
constructor arguments from ``get_config`` and loads from ``.keras`` in safe mode.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from zoo import losses


def _l2_normalize(x: Any, epsilon: float = 1e-12) -> Any:
    return x / (ops.sqrt(ops.sum(ops.square(x))) + epsilon)


@keras.saving.register_keras_serializable(package="zoo")
class SpectralNorm(layers.Wrapper):
    """Spectral normalisation (Miyato et al., 2018) of a layer's kernel (``Dense``,
    ``Conv2D``, ``Conv2DTranspose``, ``Embedding``, ...).

    The wrapped layer keeps its unconstrained kernel ``W`` (the trainable variable) and
    runs with ``W / sigma(W)``, where ``sigma`` is the largest singular value of ``W``
    reshaped to ``[-1, out]``, estimated by power iteration. As in the paper, the
    gradient flows through ``sigma`` (``u``, ``v`` held constant).

    The power-iteration vector ``u`` is a non-trainable weight (saved with the model);
    ``power_iterations`` steps update it on every ``training=True`` call, and inference
    reuses the stored ``u`` with no side effect. At build, ``init_iterations`` steps
    start ``u`` near the top singular vector (as PyTorch does), so an untrained layer is
    already normalised.

    Why not ``keras.layers.SpectralNormalization`` (it exists in Keras 3.15): it
    overwrites the kernel variable in place with ``W / sigma`` on every training call,
    so the gradient ignores ``sigma``, and a discriminator called with ``training=True``
    in the generator's step has its weights changed by that step.
    """

    def __init__(
        self,
        layer: layers.Layer,
        power_iterations: int = 1,
        init_iterations: int = 15,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(layer, **kwargs)
        if power_iterations < 1:
            raise ValueError(f"power_iterations must be >= 1; got {power_iterations}")
        if init_iterations < 0:
            raise ValueError(f"init_iterations must be >= 0; got {init_iterations}")
        self.power_iterations = int(power_iterations)
        self.init_iterations = int(init_iterations)
        self.seed = seed

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        kernel = self.kernel
        self.vector_u = self.add_weight(
            shape=(int(kernel.shape[-1]),),
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=self.seed),
            trainable=False,
            name="vector_u",
        )
        u = self.vector_u.value
        for _ in range(self.init_iterations):
            u, _ = self._power_step(u)
        self.vector_u.assign(u)
        self.built = True

    @property
    def kernel(self) -> keras.Variable:
        """The wrapped layer's unconstrained kernel (or embedding matrix)."""
        for attr in ("kernel", "embeddings"):
            if hasattr(self.layer, attr):
                return getattr(self.layer, attr)
        raise ValueError(
            f"SpectralNorm wraps layers with a `kernel` or `embeddings` weight; "
            f"{type(self.layer).__name__} has neither"
        )

    def _matrix(self) -> Any:
        kernel = self.kernel
        return ops.reshape(kernel, (-1, int(kernel.shape[-1])))

    def _power_step(self, u: Any) -> tuple[Any, Any]:
        """One power-iteration step on W ([fan_in, out]): v = Wu/|Wu|, u = W'v/|W'v|."""
        w = ops.stop_gradient(self._matrix())
        v = _l2_normalize(ops.matmul(w, u))
        u = _l2_normalize(ops.matmul(ops.transpose(w), v))
        return u, v

    def sigma(self, training: bool = False) -> Any:
        """The estimate of W's largest singular value; ``training`` first updates ``u``."""
        u = self.vector_u.value
        if training:
            for _ in range(self.power_iterations):
                u, _ = self._power_step(u)
            self.vector_u.assign(u)
        w = self._matrix()
        u = ops.stop_gradient(u)
        v = ops.stop_gradient(_l2_normalize(ops.matmul(w, u)))
        return ops.sum(v * ops.matmul(w, u))  # v' W u, differentiable in W

    def normalized_kernel(self, training: bool = False) -> Any:
        """``W / sigma(W)`` in the kernel's own shape."""
        return self.kernel / ops.cast(self.sigma(training), self.kernel.dtype)

    def call(self, inputs: Any, training: bool = False) -> Any:
        kernel = self.kernel
        normalized = self.normalized_kernel(training=bool(training))
        # Inside the scope, reads of the kernel variable return ``normalized``: the wrapped
        # layer's own ``call`` runs unchanged, on the normalised kernel.
        with keras.StatelessScope(state_mapping=[(kernel, normalized)]):
            return self.layer(inputs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "power_iterations": self.power_iterations,
            "init_iterations": self.init_iterations,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="zoo")
class MinibatchStdDev(layers.Layer):
    """Minibatch standard deviation (Karras et al., 2018, sec. 3): the standard deviation
    of each feature (at each position) over the minibatch, averaged over all features
    and positions into one value, appended as one constant extra channel (last axis).

    Lets the discriminator see the variety of a batch, which discourages mode collapse.
    The whole batch is one group; real and fake batches are scored separately. The
    standard deviation is the population one, ``sqrt(mean((x - mean)^2) + epsilon)``.
    Under ``tf.distribute`` the group is the GLOBAL batch (means by
    :func:`zoo.losses.global_mean`), so N replicas see the value one device sees.
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs: Any):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        mean = losses.global_mean(x, axis=0)
        std = ops.sqrt(losses.global_mean(ops.square(x - mean), axis=0) + self.epsilon)
        value = ops.cast(ops.mean(std), inputs.dtype)
        extra = ops.ones_like(inputs[..., :1]) * value
        return ops.concatenate([inputs, extra], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        *rest, channels = input_shape
        return (*rest, None if channels is None else channels + 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="zoo")
class OneHot(layers.Layer):
    """Integer class labels ``[batch]`` (or ``[batch, 1]``) -> one-hot ``[batch, num_classes]``."""

    def __init__(self, num_classes: int, **kwargs: Any):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.num_classes = int(num_classes)

    def call(self, labels: Any) -> Any:
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return ops.one_hot(labels, self.num_classes, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (input_shape[0], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="zoo")
class MemoryAddressing(layers.Layer):
    """The memory module of MemAE (Gong et al., 2019, "Memorizing Normality to Detect
    Anomaly", ICCV): a code z [batch, d] is replaced by a convex combination of ``items``
    learned memory rows m_i [d], so the decoder can only rebuild what the memory holds
    (normal patterns) and an anomaly's reconstruction is pulled towards normal ones.

    Addressing weights: w = softmax(s cos(z, m_i)) over the rows (eqs. 4-5: cosine
    similarity, ``sharpness`` s = 1 in the paper; a plain dot product saturates the
    softmax on one row when codes are large, and training then collapses). Hard
    shrinkage (eq. 7): w_i <- max(w_i - lambda, 0) w_i / (|w_i - lambda| + eps), lambda =
    ``shrink_threshold``, then L1 re-normalisation; the output is w M (eq. 3). In
    training, ``entropy_weight`` times the mean entropy of w (eq. 9) is added to the
    model's losses, which sharpens the addressing.
    """

    def __init__(
        self,
        items: int = 50,
        shrink_threshold: float = 0.0025,
        entropy_weight: float = 2e-4,
        sharpness: float = 1.0,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not sharpness > 0:
            raise ValueError(
                f"sharpness must be > 0 (softmax inverse temperature); got {sharpness}"
            )
        if items < 1:
            raise ValueError(f"items must be >= 1 (memory rows); got {items}")
        if not 0.0 <= shrink_threshold < 1.0:
            raise ValueError(f"shrink_threshold must be in [0, 1); got {shrink_threshold}")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0; got {entropy_weight}")
        self.items = int(items)
        self.shrink_threshold = float(shrink_threshold)
        self.entropy_weight = float(entropy_weight)
        self.sharpness = float(sharpness)
        self.seed = seed

    def build(self, input_shape: Any) -> None:
        dim = int(input_shape[-1])
        bound = 1.0 / dim**0.5
        self.memory = self.add_weight(
            shape=(self.items, dim),
            initializer=keras.initializers.RandomUniform(-bound, bound, seed=self.seed),
            name="memory",
        )

    def addressing(self, codes: Any) -> Any:
        """The (shrunk, re-normalised) addressing weights w [batch, items]."""
        unit_codes = codes / (ops.norm(codes, axis=-1, keepdims=True) + 1e-12)
        unit_rows = self.memory / (ops.norm(self.memory, axis=-1, keepdims=True) + 1e-12)
        cosine = ops.matmul(unit_codes, ops.transpose(unit_rows))
        weights = ops.softmax(self.sharpness * cosine, axis=-1)
        if self.shrink_threshold:
            shifted = weights - self.shrink_threshold
            weights = ops.relu(shifted) * weights / (ops.abs(shifted) + 1e-12)
            weights = weights / (ops.sum(weights, axis=-1, keepdims=True) + 1e-12)
        return weights

    def call(self, codes: Any, training: bool = False) -> Any:
        weights = self.addressing(codes)
        if training and self.entropy_weight:
            entropy = -ops.sum(weights * ops.log(weights + 1e-12), axis=-1)
            self.add_loss(self.entropy_weight * ops.mean(entropy))
        return ops.matmul(weights, self.memory)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "items": self.items,
            "shrink_threshold": self.shrink_threshold,
            "entropy_weight": self.entropy_weight,
            "sharpness": self.sharpness,
            "seed": self.seed,
        }
