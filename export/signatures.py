"""Serving signatures per model family: ``tf.function``s with explicit input signatures
that take and return dicts of plain tensors (DESIGN §4).

The signature key is TF Serving's ``signature_name``; argument names and dict keys are
the tensor names in requests and responses.

==============  ===========================================  =====================================
family          signatures                                    serving_default
==============  ===========================================  =====================================
gan             generate, sample (SavedModel only)            generate
autoencoder     reconstruct, encode, score, score_with_threshold   score
vae             reconstruct, encode, decode, generate,        score
                sample (SavedModel only), score, score_with_threshold
==============  ===========================================  =====================================

``sample`` draws z with ``tf.random.stateless_normal`` (Philox) from one int64 seed per
image, so image ``i`` depends only on ``seed[i]``; random ops cannot be converted to
ONNX, so ONNX graphs take the noise ``z`` as an input instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from zoo.trainers import GAN, VAE, Autoencoder

__all__ = ["FAMILIES", "Signature", "SignatureSet", "build_signatures", "family_of"]

FAMILIES = ("gan", "autoencoder", "vae")


@dataclass(frozen=True)
class Signature:
    """One serving signature: its ``tf.function`` and whether it goes to ONNX."""

    name: str
    function: Any  # a tf.function with an input_signature
    onnx: bool
    description: str
    #: SavedModel output key -> ONNX output name, where ONNX needs another name (an ONNX
    #: graph cannot have an input and an output with the same name).
    onnx_renames: dict[str, str] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.function.input_signature]

    @property
    def output_names(self) -> list[str]:
        return sorted(self.function.get_concrete_function().structured_outputs)

    def onnx_output_name(self, key: str) -> str:
        return self.onnx_renames.get(key, key)

    def onnx_function(self) -> Any:
        """The function to convert to ONNX: ``function`` with outputs renamed if needed."""
        if not self.onnx_renames:
            return self.function
        function, renames = self.function, dict(self.onnx_renames)

        def renamed(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            return {renames.get(k, k): v for k, v in function(*args).items()}

        return tf.function(renamed, input_signature=function.input_signature)

    def reference(self, **inputs: Any) -> dict[str, Any]:
        """The same computation run eagerly through Keras (the parity reference)."""
        return self.function.python_function(**inputs)


@dataclass(frozen=True)
class SignatureSet:
    """Every signature of one model, the aliases (``serving_default``) and what it tracks."""

    family: str
    signatures: dict[str, Signature]
    aliases: dict[str, str]
    networks: list[keras.Model] = field(default_factory=list)
    score_definition: str | None = None

    def endpoint_names(self) -> list[str]:
        """Every signature key written to the SavedModel, aliases included."""
        return [*self.signatures, *self.aliases]

    def resolve(self, name: str) -> Signature:
        return self.signatures[self.aliases.get(name, name)]


def family_of(model: keras.Model) -> str:
    """``gan``, ``autoencoder`` or ``vae`` (as in the registry); others raise ``TypeError``."""
    if isinstance(model, GAN):
        return "gan"
    if isinstance(model, VAE):
        return "vae"
    if isinstance(model, Autoencoder):
        return "autoencoder"
    raise TypeError(
        f"cannot export {type(model).__name__}: zoo.export knows the trainers GAN, "
        "Autoencoder and VAE (see zoo.trainers)"
    )


_RECONSTRUCTION_WORDS = {
    "mse": "mean squared reconstruction error per pixel",
    "mae": "mean absolute reconstruction error per pixel",
    "bce": "mean binary cross-entropy of the image under its reconstruction, per pixel",
}


def score_definition(model: keras.Model) -> str | None:
    """What the anomaly score measures, in words (recorded in the export metadata)."""
    family = family_of(model)
    if family == "autoencoder":
        return _RECONSTRUCTION_WORDS.get(
            model.reconstruction_loss, f"{model.reconstruction_loss} reconstruction error per pixel"
        )
    if family == "vae":
        return (
            f"negative ELBO in nats at the posterior mean ({model.likelihood} likelihood): "
            "-log p(x|z=mean) summed over pixels + KL(q(z|x) || N(0, I)) summed over latent dims"
        )
    return None


def _score_outputs(score: tf.Tensor, threshold: tf.Tensor) -> dict[str, tf.Tensor]:
    score = tf.cast(tf.reshape(score, [-1]), tf.float32)
    threshold = tf.broadcast_to(tf.cast(threshold, tf.float32), tf.shape(score))
    return {"anomaly_score": score, "threshold": threshold, "is_anomaly": score > threshold}


def _sample_z(seed: tf.Tensor, latent_dim: int) -> tf.Tensor:
    """One standard-normal latent vector per int64 seed (Philox, device-independent)."""

    def one(s: tf.Tensor) -> tf.Tensor:
        key = tf.stack([s, tf.constant(0, tf.int64)])
        return tf.random.stateless_normal([latent_dim], seed=key, alg="philox")

    return tf.map_fn(one, seed, fn_output_signature=tf.TensorSpec([latent_dim], tf.float32))


def build_signatures(model: keras.Model, threshold: float | None = None) -> SignatureSet:
    """The family's signatures for ``model``; ``threshold`` (required for autoencoders
    and VAEs) is baked into ``score`` as a constant."""
    family = family_of(model)
    latent = int(model.latent_dim)
    image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
    z_spec = tf.TensorSpec([None, latent], tf.float32, name="z")
    seed_spec = tf.TensorSpec([None], tf.int64, name="seed")
    # Scalar or one threshold per example: the rank is left open on purpose.
    threshold_spec = tf.TensorSpec(None, tf.float32, name="threshold")
    sigs: dict[str, Signature] = {}

    def add(
        name: str,
        fn: Callable[..., Any],
        spec: list,
        onnx: bool,
        doc: str,
        renames: dict[str, str] | None = None,
    ) -> None:
        fn.__name__ = name
        function = tf.function(fn, input_signature=spec)
        sigs[name] = Signature(name, function, onnx, doc, dict(renames or {}))

    if family == "gan":

        def generate(z):
            return {"images": tf.cast(model.generate(z), tf.float32)}

        def sample(seed):
            return {"images": tf.cast(model.generate(_sample_z(seed, latent)), tf.float32)}

        add("generate", generate, [z_spec], True, "z [N, latent] -> images [N, H, W, C] in [0, 1]")
        add("sample", sample, [seed_spec], False, "seed [N] int64 -> images, z ~ N(0, I) per seed")
        return SignatureSet(family, sigs, {"serving_default": "generate"}, [model.generator])

    if threshold is None or not math.isfinite(float(threshold)):
        raise ValueError(f"{family} signatures need a finite threshold; got {threshold!r}")
    calibrated = float(threshold)  # a Python float: a Const node, not a captured tensor

    def reconstruct(images):
        return {"reconstructions": tf.cast(model.reconstruct(images), tf.float32)}

    def score(images):
        return _score_outputs(model.anomaly_score(images), tf.constant(calibrated, tf.float32))

    def score_with_threshold(images, threshold):
        return _score_outputs(model.anomaly_score(images), threshold)

    add("reconstruct", reconstruct, [image_spec], True, "images -> reconstructions")
    if family == "autoencoder":

        def encode(images):
            return {"codes": tf.cast(model.encode(images), tf.float32)}

        add("encode", encode, [image_spec], True, "images -> codes [N, latent]")
    else:

        def encode(images):
            mean, log_variance = model.encode(images)
            return {"mean": mean, "log_variance": log_variance}

        def decode(z):
            return {"images": tf.cast(model.decode(z), tf.float32)}

        def generate(z):
            return {"images": tf.cast(model.decode(z), tf.float32)}

        def sample(seed):
            return {"images": tf.cast(model.decode(_sample_z(seed, latent)), tf.float32)}

        add("encode", encode, [image_spec], True, "images -> posterior mean, log_variance")
        add("decode", decode, [z_spec], True, "z -> likelihood-mean images in [0, 1]")
        add("generate", generate, [z_spec], True, "z -> images (same as decode)")
        add("sample", sample, [seed_spec], False, "seed [N] int64 -> images, z ~ N(0, I) per seed")
    add(
        "score",
        score,
        [image_spec],
        True,
        "images -> anomaly_score [N], threshold [N] (calibrated), is_anomaly = score > threshold",
    )
    add(
        "score_with_threshold",
        score_with_threshold,
        [image_spec, threshold_spec],
        True,
        "images, threshold (scalar or [N]) -> anomaly_score, threshold, is_anomaly",
        renames={"threshold": "threshold_out"},
    )
    networks = [model.encoder, model.decoder]
    return SignatureSet(
        family, sigs, {"serving_default": "score"}, networks, score_definition(model)
    )
