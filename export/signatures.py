"""Serving signatures per model family: ``tf.function``s with explicit input signatures
that take and return dicts of plain tensors (DESIGN §4).

The signature key is TF Serving's ``signature_name``; argument names and dict keys are
the tensor names in requests and responses.

====================  ==========================================  ===============
family                signatures                                   serving_default
====================  ==========================================  ===============
gan                   generate, sample (SavedModel only)           generate
autoencoder           reconstruct, encode, [denoise], score,       score
                      score_with_threshold
sequence_autoencoder  reconstruct, encode, [denoise], score,       score
                      score_with_threshold (input ``sequences``)
vae                   reconstruct, encode, decode, generate,       score
                      sample (SavedModel only), score,
                      score_with_threshold
====================  ==========================================  ===============

``denoise`` exists for autoencoders trained with input corruption (``model.corruption``).
``score`` returns ``anomaly_score``, ``threshold``, ``is_anomaly`` and, when the export
was calibrated, ``normalized_score = (anomaly_score - mean) / std`` with the calibration
mean and std baked in as graph constants; sequence models add ``step_scores`` [N, T].

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

from zoo.trainers import GAN, VAE, Autoencoder, SequenceAutoencoder

__all__ = [
    "FAMILIES",
    "Signature",
    "SignatureSet",
    "build_signatures",
    "family_of",
    "input_key",
    "score_definition",
]

FAMILIES = ("gan", "autoencoder", "sequence_autoencoder", "vae")
#: Why ``sample`` has no ONNX file (recorded in the export metadata).
SAMPLE_NOT_ONNX = (
    "draws z with StatelessRandomNormalV2, which tf2onnx cannot convert; the ONNX graphs "
    "take the noise as an input instead (use 'generate' with z)"
)


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
    #: Why the signature is not converted to ONNX (``onnx=False``), for the metadata.
    savedmodel_only_reason: str | None = None

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
        """The same computation run eagerly through Keras (the parity reference); inputs
        by tensor name (the parameters are bound in the input signature's order)."""
        return self.function.python_function(*(inputs[name] for name in self.input_names))


@dataclass(frozen=True)
class SignatureSet:
    """Every signature of one model, the aliases (``serving_default``) and what it tracks."""

    family: str
    signatures: dict[str, Signature]
    aliases: dict[str, str]
    networks: list[keras.Model] = field(default_factory=list)
    score_definition: str | None = None
    #: The request tensor holding the examples: ``images``, ``sequences`` (or ``z``).
    input_key: str = "images"
    #: ``(mean, std)`` baked into ``normalized_score``, or None when not calibrated.
    normalization: tuple[float, float] | None = None

    def endpoint_names(self) -> list[str]:
        """Every signature key written to the SavedModel, aliases included."""
        return [*self.signatures, *self.aliases]

    def resolve(self, name: str) -> Signature:
        return self.signatures[self.aliases.get(name, name)]


def family_of(model: keras.Model) -> str:
    """``gan``, ``autoencoder``, ``sequence_autoencoder`` or ``vae`` (as in the registry);
    others raise ``TypeError``."""
    if isinstance(model, GAN):
        return "gan"
    if isinstance(model, VAE):
        return "vae"
    if isinstance(model, SequenceAutoencoder):
        return "sequence_autoencoder"
    if isinstance(model, Autoencoder):
        return "autoencoder"
    raise TypeError(
        f"cannot export {type(model).__name__}: zoo.export knows the trainers GAN, "
        "Autoencoder and VAE (see zoo.trainers)"
    )


def input_key(family: str) -> str:
    """The request tensor holding the examples a family scores."""
    return {"gan": "z", "sequence_autoencoder": "sequences"}.get(family, "images")


_PER_VALUE = {
    "l2": ("mean squared reconstruction error per value (l2)", "(x - reconstruction)^2"),
    "l1": ("mean absolute reconstruction error per value (l1)", "|x - reconstruction|"),
}
_PER_STEP = {
    "l2": ("mean squared error per valid timestep, averaged over the sequence (l2)", "squared"),
    "l1": ("mean absolute error per valid timestep, averaged over the sequence (l1)", "absolute"),
}


def score_definition(model: keras.Model) -> str | None:
    """What the anomaly score measures, in words (recorded in the metadata and model card)."""
    family = family_of(model)
    if family == "autoencoder":
        words, term = _PER_VALUE[model.score]
        values = " x ".join(str(d) for d in model.image_shape)
        return f"{words}: the mean over the {values} input values of {term}"
    if family == "sequence_autoencoder":
        words, kind = _PER_STEP[model.score]
        return (
            f"{words}: step_scores[t] = mean {kind} error over the {model.sequence_shape[-1]} "
            f"features at step t (0 at padding steps, whose features all equal mask_value="
            f"{model.mask_value:g}); anomaly_score = sum_t step_scores[t] / number of valid steps"
        )
    if family == "vae":
        return (
            f"negative ELBO in nats at the posterior mean ({model.likelihood} likelihood): "
            "-log p(x|z=mean) summed over pixels + KL(q(z|x) || N(0, I)) summed over latent dims"
        )
    return None


def _score_outputs(
    score: tf.Tensor,
    threshold: tf.Tensor,
    normalization: tuple[float, float] | None,
    step_scores: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    score = tf.cast(tf.reshape(score, [-1]), tf.float32)
    threshold = tf.broadcast_to(tf.cast(threshold, tf.float32), tf.shape(score))
    outputs = {"anomaly_score": score, "threshold": threshold, "is_anomaly": score > threshold}
    if normalization is not None:
        # Python floats -> Const nodes built here, inside the traced function: a tensor
        # captured from outside would become an extra (unfed) ONNX graph input.
        mean, std = normalization
        outputs["normalized_score"] = (score - tf.constant(mean, tf.float32)) / tf.constant(
            std, tf.float32
        )
    if step_scores is not None:
        outputs["step_scores"] = tf.cast(step_scores, tf.float32)
    return outputs


def _sample_z(seed: tf.Tensor, latent_dim: int) -> tf.Tensor:
    """One standard-normal latent vector per int64 seed (Philox, device-independent)."""

    def one(s: tf.Tensor) -> tf.Tensor:
        key = tf.stack([s, tf.constant(0, tf.int64)])
        return tf.random.stateless_normal([latent_dim], seed=key, alg="philox")

    return tf.map_fn(one, seed, fn_output_signature=tf.TensorSpec([latent_dim], tf.float32))


def build_signatures(
    model: keras.Model,
    threshold: float | None = None,
    normalization: tuple[float, float] | None = None,
) -> SignatureSet:
    """The family's signatures for ``model``; ``threshold`` (required for autoencoders
    and VAEs) is baked into ``score`` as a constant, and so are ``normalization``'s
    ``(mean, std)`` (optional: without it there is no ``normalized_score`` output)."""
    family = family_of(model)
    latent = int(model.latent_dim)
    key = input_key(family)
    example_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name=key)
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
        not_onnx: str | None = None,
    ) -> None:
        fn.__name__ = name
        function = tf.function(fn, input_signature=spec)
        sigs[name] = Signature(name, function, onnx, doc, dict(renames or {}), not_onnx)

    if family == "gan":

        def generate(z):
            return {"images": tf.cast(model.generate(z), tf.float32)}

        def sample(seed):
            return {"images": tf.cast(model.generate(_sample_z(seed, latent)), tf.float32)}

        add("generate", generate, [z_spec], True, "z [N, latent] -> images [N, H, W, C] in [0, 1]")
        add("sample", sample, [seed_spec], False,
            "seed [N] int64 -> images, z ~ N(0, I) per seed", not_onnx=SAMPLE_NOT_ONNX)  # fmt: skip
        return SignatureSet(
            family, sigs, {"serving_default": "generate"}, [model.generator], input_key="z"
        )

    if threshold is None or not math.isfinite(float(threshold)):
        raise ValueError(f"{family} signatures need a finite threshold; got {threshold!r}")
    calibrated = float(threshold)  # a Python float: a Const node, not a captured tensor
    if normalization is not None:
        mean, std = (float(v) for v in normalization)
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"normalization needs a finite mean and std > 0; got {normalization}")
        normalization = (mean, std)
    sequences = family == "sequence_autoencoder"

    def scores(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        """(anomaly_score [N], step_scores [N, T] or None) from one reconstruction."""
        if not sequences:
            return model.anomaly_score(x), None
        steps = model.step_scores(x)  # SequenceAutoencoder.anomaly_score, sharing its pass
        valid = tf.maximum(tf.reduce_sum(model.valid_steps(x), axis=1), 1.0)
        return tf.reduce_sum(steps, axis=1) / valid, steps

    # The examples' parameter is ``x`` whatever the family: the TensorSpec names
    # (``images`` or ``sequences``) are the signature's input keys.
    def reconstruct(x):
        return {"reconstructions": tf.cast(model.reconstruct(x), tf.float32)}

    def score(x):
        value, steps = scores(x)
        return _score_outputs(value, tf.constant(calibrated, tf.float32), normalization, steps)

    def score_with_threshold(x, threshold):
        value, steps = scores(x)
        return _score_outputs(value, threshold, normalization, steps)

    shape = "[N, T, F]" if sequences else "[N, H, W, C]"
    add("reconstruct", reconstruct, [example_spec], True,
        f"{key} {shape} -> reconstructions {shape}")  # fmt: skip
    if family in ("autoencoder", "sequence_autoencoder"):

        def encode(x):
            return {"codes": tf.cast(model.encode(x), tf.float32)}

        add("encode", encode, [example_spec], True, f"{key} -> codes [N, latent]")
        if getattr(model, "corruption", None):

            def denoise(x):
                return {key: tf.cast(model.denoise(x), tf.float32)}

            add("denoise", denoise, [example_spec], True,
                f"{key} (noisy) -> {key}: the clean estimate (the model was trained with "
                f"{model.corruption} corruption)", renames={key: f"{key}_out"})  # fmt: skip
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

        add("encode", encode, [example_spec], True, "images -> posterior mean, log_variance")
        add("decode", decode, [z_spec], True, "z -> likelihood-mean images in [0, 1]")
        add("generate", generate, [z_spec], True, "z -> images (same as decode)")
        add("sample", sample, [seed_spec], False,
            "seed [N] int64 -> images, z ~ N(0, I) per seed", not_onnx=SAMPLE_NOT_ONNX)  # fmt: skip
    extra = ", step_scores [N, T] (0 at padding)" if sequences else ""
    normalized = ", normalized_score = (score - mean) / std" if normalization else ""
    add(
        "score",
        score,
        [example_spec],
        True,
        f"{key} -> anomaly_score [N], threshold [N] (calibrated), is_anomaly = score > "
        f"threshold{normalized}{extra}",
    )
    add(
        "score_with_threshold",
        score_with_threshold,
        [example_spec, threshold_spec],
        True,
        f"{key}, threshold (scalar or [N]) -> anomaly_score, threshold, is_anomaly"
        f"{normalized}{extra}",
        renames={"threshold": "threshold_out"},
    )
    networks = [model.encoder, model.decoder]
    return SignatureSet(
        family,
        sigs,
        {"serving_default": "score"},
        networks,
        score_definition(model),
        input_key=key,
        normalization=normalization,
    )
