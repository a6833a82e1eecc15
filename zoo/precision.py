"""Training precision: the Keras dtype policy every layer built afterwards takes.

Three choices (:data:`PRECISIONS`):

- ``float32``: everything in float32 (the default).
- ``mixed_float16``: layers compute in float16 and keep float32 variables
  (Micikevicius et al., 2018, "Mixed Precision Training"). float16 has 5 exponent bits,
  so small gradients underflow to zero: the loss must be scaled up before the gradient
  and the gradient scaled back down, with a scale that adapts to overflows. That is
  ``keras.optimizers.LossScaleOptimizer``; ``Trainer.compile`` wraps every optimizer
  role in one under this policy, and the trainers' steps scale their losses through it.
- ``mixed_bfloat16``: layers compute in bfloat16 and keep float32 variables. bfloat16
  has float32's 8 exponent bits (and 8 bits of precision), so gradients do not
  underflow and no loss scaling is needed (Kalamkar et al., 2019, "A Study of BFLOAT16
  for Deep Learning Training"). On CPUs with AMX-BF16 (Sapphire Rapids and later) bf16
  matmuls reach several times the fp32 peak (a 2048x2048 ``tf.matmul`` on 2 such cores:
  ~1,170 GFLOP/s in bf16, ~210 in fp32, ~200 in float16, so ``mixed_float16`` is for
  GPUs); small models are overhead-bound and gain far less, so measure first.

What stays float32 whatever the policy, in the networks of :mod:`zoo.networks` and
``zoo.models``: every network's output layer (logits, tanh/sigmoid pixels, codes and the
VAE's mean and log-variance, :data:`OUTPUT_DTYPE`), so losses, likelihoods and KL terms
are computed in float32 as the Keras mixed-precision guide advises; the MemAE memory
module (cosine similarities, a softmax, hard shrinkage and an entropy with 1e-12
guards that underflow in float16); batch, layer and group normalisation compute their
statistics in float32 by themselves. Exported signatures take and return float32 and
compute in float32 (:func:`float32_compute`), whatever the training precision.

This module imports no Keras at the top, so a recipe's precision can be checked
without TensorFlow (:func:`check_precision`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "OUTPUT_DTYPE",
    "PRECISIONS",
    "check_precision",
    "compute_dtype",
    "current_precision",
    "float32_compute",
    "precision",
    "set_precision",
]

#: The precisions :func:`set_precision` accepts (Keras dtype policy names).
PRECISIONS: tuple[str, ...] = ("float32", "mixed_float16", "mixed_bfloat16")

#: The dtype policy of every network's output layer, whatever the global policy.
OUTPUT_DTYPE = "float32"


def check_precision(name: str) -> str:
    """``name`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming them."""
    if name not in PRECISIONS:
        raise ValueError(
            f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)} "
            "(mixed_bfloat16 needs no loss scaling; mixed_float16 is scaled by "
            "Trainer.compile's LossScaleOptimizer)"
        )
    return name


def current_precision() -> str:
    """The name of Keras' global dtype policy (``float32`` unless set)."""
    import keras

    return keras.mixed_precision.dtype_policy().name


def compute_dtype(networks: Iterable[Any]) -> str:
    """The narrowest compute dtype of any layer in ``networks`` (``float32`` for a model
    built under the float32 policy, ``bfloat16`` or ``float16`` under a mixed one)."""
    found = set()
    for network in networks:  # Keras layers and models; anything else computes nothing
        flatten = getattr(network, "_flatten_layers", None)
        found.update(layer.compute_dtype for layer in (flatten() if flatten else ()))
    for dtype in ("float16", "bfloat16"):
        if dtype in found:
            return dtype
    return "float32"


@contextlib.contextmanager
def float32_compute(networks: Iterable[Any]) -> Iterator[None]:
    """Every layer of ``networks`` with a mixed dtype policy computes in float32 inside
    (its variables are float32 already), and in its own policy again on exit. The
    exported signatures of a model trained under a mixed policy are traced inside it, so
    the SavedModel and ONNX graphs compute in float32: portable to CPUs without fast
    16-bit floats and to ONNX Runtime, and equal to the float32 Keras model."""
    import keras

    float32 = keras.DTypePolicy("float32")
    changed = []
    for network in networks:
        flatten = getattr(network, "_flatten_layers", None)
        for layer in flatten() if flatten else ():
            if layer.dtype_policy.name.startswith("mixed_"):
                changed.append((layer, layer.dtype_policy))
                layer.dtype_policy = float32
    try:
        yield
    finally:
        for layer, policy in changed:
            layer.dtype_policy = policy


def set_precision(name: str) -> None:
    """Set Keras' global dtype policy to ``name`` (one of :data:`PRECISIONS`).

    It applies to layers built afterwards: build (``zoo.load``) after setting it. Prefer
    :func:`precision`, which restores the previous policy on exit.
    """
    import keras

    keras.mixed_precision.set_dtype_policy(check_precision(name))


@contextlib.contextmanager
def precision(name: str) -> Iterator[None]:
    """``with precision("mixed_bfloat16"): model = zoo.load(...); model.fit(...)``: the
    global dtype policy is ``name`` inside and the previous one again on exit, even on
    an error (so one test's policy never leaks into the next)."""
    import keras

    check_precision(name)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
