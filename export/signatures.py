"""Serving signatures per model family: ``tf.function``s with explicit input signatures
that take and return dicts of plain tensors (docs/ARCHITECTURE.md, "Export").

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

Conditional models (``cgan``, ``cvae``) take ``labels``, int64 class ids [N], in every
signature right after the examples, ``z`` or ``seed``; ids outside [0, num_classes) fail
the request (an in-graph check) instead of silently selecting no class. A GAN exports
the generator it samples with: the EMA copy when ``ema_decay`` is set.

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
    "num_classes_of",
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
_PER_STEP = {"l2": "squared", "l1": "absolute"}


def score_definition(model: keras.Model) -> str | None:
    """What the anomaly score measures, in words (recorded in the metadata and model card)."""
    family = family_of(model)
    if family == "autoencoder":
        words, term = _PER_VALUE[model.score]
        values = " x ".join(str(d) for d in model.image_shape)
        if getattr(model, "score_blur", 0.0):
            term = term.replace(
                "x - reconstruction",
                f"blur(x - reconstruction), blur = Gaussian of sigma {model.score_blur:g} px "
                "per channel with zero padding",
            )
        top = getattr(model, "score_top_count", None)
        if top is not None and top < math.prod(model.image_shape):
            return f"{words}: the mean of the largest {top} of the {values} values of {term}"
        return f"{words}: the mean over the {values} input values of {term}"
    if family == "sequence_autoencoder":
        kind, f = _PER_STEP[model.score], model.score_top_fraction
        steps = (
            f"step_scores[t] = mean {kind} error over the {model.sequence_shape[-1]} features "
            f"at step t (0 at padding steps, whose features all equal mask_value="
            f"{model.mask_value:g})"
        )
        if f < 1.0:
            return (
                f"mean {kind} error per valid timestep, averaged over the sequence's largest "
                f"{f:g} share of valid steps ({model.score}): {steps}; anomaly_score = mean of "
                "the k largest step_scores, "
                f"k = max(1, floor({f:g} x number of valid steps + 0.5))"
            )
        return (
            f"mean {kind} error per valid timestep, averaged over the sequence ({model.score}): "
            f"{steps}; anomaly_score = sum_t step_scores[t] / number of valid steps"
        )
    if family == "vae":
        if num_classes_of(model):
            return (
                f"negative ELBO in nats at the posterior mean ({model.likelihood} likelihood), "
                "conditioned on each example's label y: -log p(x|z=mean, y) summed over pixels "
                "+ KL(q(z|x, y) || N(0, I)) summed over latent dims"
            )
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


def num_classes_of(model: keras.Model) -> int:
    """How many classes a conditional model takes as ``labels`` (0 = unconditional)."""
    return int(getattr(model, "num_classes", 0)) if getattr(model, "conditional", False) else 0


def _class_ids(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """``labels`` [N] int64, checked in the graph to be class ids in [0, num_classes): an
    out-of-range id would otherwise select no class (one-hot) or fail deep in a lookup."""
    valid = tf.reduce_all((labels >= 0) & (labels < num_classes))
    message = f"labels must be class ids in [0, {num_classes}); got"
    with tf.control_dependencies([tf.debugging.Assert(valid, [message, labels])]):
        return tf.identity(labels)


def build_signatures(
    model: keras.Model,
    threshold: float | None = None,
    normalization: tuple[float, float] | None = None,
) -> SignatureSet:
    """The family's signatures for ``model``; ``threshold`` (required for autoencoders
    and VAEs) is baked into ``score`` as a constant, and so are ``normalization``'s
    ``(mean, std)`` (optional: without it there is no ``normalized_score`` output).

    Conditional models (a GAN with ``num_classes`` > 0, a CVAE) take ``labels`` (int64
    class ids [N]) in every signature after the examples, ``z`` or ``seed``."""
    family = family_of(model)
    latent = int(model.latent_dim)
    key = input_key(family)
    example_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name=key)
    z_spec = tf.TensorSpec([None, latent], tf.float32, name="z")
    seed_spec = tf.TensorSpec([None], tf.int64, name="seed")
    # Scalar or one threshold per example: the rank is left open on purpose.
    threshold_spec = tf.TensorSpec(None, tf.float32, name="threshold")
    num_classes = num_classes_of(model)
    label_specs = [tf.TensorSpec([None], tf.int64, name="labels")] if num_classes else []
    with_labels = f", labels [N] int64 in [0, {num_classes})" if num_classes else ""
    sigs: dict[str, Signature] = {}

    def add(
        name: str,
        body: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]],
        spec: list,
        onnx: bool,
        doc: str,
        renames: dict[str, str] | None = None,
        not_onnx: str | None = None,
    ) -> None:
        """Register ``body`` (a dict of input tensors by name -> dict of outputs) as a
        signature taking ``spec``'s tensors positionally, with labels checked."""
        names = [s.name for s in spec]

        def positional(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            inputs = dict(zip(names, args, strict=True))
            if "labels" in inputs:
                inputs["labels"] = _class_ids(inputs["labels"], num_classes)
            return body(inputs)

        positional.__name__ = name
        function = tf.function(positional, input_signature=spec)
        sigs[name] = Signature(name, function, onnx, doc, dict(renames or {}), not_onnx)

    def generator_signatures(decode: Callable[[tf.Tensor, tf.Tensor | None], tf.Tensor]) -> None:
        """``generate`` (z) and ``sample`` (seed), both with labels when conditional."""
        add("generate", lambda i: {"images": decode(i["z"], i.get("labels"))},
            [z_spec, *label_specs], True,
            f"z [N, latent]{with_labels} -> images [N, H, W, C] in [0, 1]")  # fmt: skip
        add("sample", lambda i: {"images": decode(_sample_z(i["seed"], latent), i.get("labels"))},
            [seed_spec, *label_specs], False,
            f"seed [N] int64{with_labels} -> images, z ~ N(0, I) per seed",
            not_onnx=SAMPLE_NOT_ONNX)  # fmt: skip

    if family == "gan":
        generator_signatures(lambda z, y: tf.cast(model.generate(z, y), tf.float32))
        return SignatureSet(
            family,
            sigs,
            {"serving_default": "generate"},
            [model.sampling_generator],  # the EMA generator when there is one
            input_key="z",
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

    def conditioned(method: Callable[..., Any], x: tf.Tensor, labels: tf.Tensor | None) -> Any:
        return method(x) if labels is None else method(x, labels=labels)

    def scores(i: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor | None]:
        """(anomaly_score [N], step_scores [N, T] or None) from one reconstruction."""
        x = i[key]
        if not sequences:
            return conditioned(model.anomaly_score, x, i.get("labels")), None
        steps = model.step_scores(x)  # SequenceAutoencoder.anomaly_score, sharing its pass
        return model.sequence_scores(steps, x), steps

    def score(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        value, steps = scores(i)
        return _score_outputs(value, tf.constant(calibrated, tf.float32), normalization, steps)

    def score_with_threshold(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        value, steps = scores(i)
        return _score_outputs(value, i["threshold"], normalization, steps)

    examples = [example_spec, *label_specs]
    shape = "[N, T, F]" if sequences else "[N, H, W, C]"
    add("reconstruct",
        lambda i: {"reconstructions": tf.cast(
            conditioned(model.reconstruct, i[key], i.get("labels")), tf.float32)},
        examples, True, f"{key} {shape}{with_labels} -> reconstructions {shape}")  # fmt: skip
    if family in ("autoencoder", "sequence_autoencoder"):
        add("encode", lambda i: {"codes": tf.cast(model.encode(i[key]), tf.float32)},
            examples, True, f"{key} -> codes [N, latent]")  # fmt: skip
        if getattr(model, "corruption", None):
            add("denoise", lambda i: {key: tf.cast(model.denoise(i[key]), tf.float32)},
                examples, True,
                f"{key} (noisy) -> {key}: the clean estimate (the model was trained with "
                f"{model.corruption} corruption)", renames={key: f"{key}_out"})  # fmt: skip
    else:

        def encode(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            mean, log_variance = conditioned(model.encode, i[key], i.get("labels"))
            return {"mean": mean, "log_variance": log_variance}

        def decode(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            images = tf.cast(model.decode(i["z"], i.get("labels")), tf.float32)
            outputs = {"images": images}
            if model.likelihood == "gaussian_learned":
                outputs["scale"] = tf.broadcast_to(model.scale(), tf.shape(images))
            return outputs

        add("encode", encode, examples, True,
            f"images{with_labels} -> posterior mean, log_variance")  # fmt: skip
        learned = model.likelihood == "gaussian_learned"
        add("decode", decode, [z_spec, *label_specs], True,
            f"z{with_labels} -> likelihood-mean images in [0, 1]"
            + (", scale (the learned per-pixel std)" if learned else ""))  # fmt: skip
        generator_signatures(lambda z, y: tf.cast(model.generate(z, y), tf.float32))
    extra = ", step_scores [N, T] (0 at padding)" if sequences else ""
    normalized = ", normalized_score = (score - mean) / std" if normalization else ""
    add(
        "score",
        score,
        examples,
        True,
        f"{key}{with_labels} -> anomaly_score [N], threshold [N] (calibrated), is_anomaly = "
        f"score > threshold{normalized}{extra}",
    )
    add(
        "score_with_threshold",
        score_with_threshold,
        [*examples, threshold_spec],
        True,
        f"{key}{with_labels}, threshold (scalar or [N]) -> anomaly_score, threshold, is_anomaly"
        f"{normalized}{extra}",
        renames={"threshold": "threshold_out"},
    )
    # A VAE's likelihood may own variables outside its networks (gaussian_learned's
    # log_scale), so the whole trainer is tracked; autoencoders need only their networks.
    networks = [model] if family == "vae" else [model.encoder, model.decoder]
    return SignatureSet(
        family,
        sigs,
        {"serving_default": "score"},
        networks,
        score_definition(model),
        input_key=key,
        normalization=normalization,
    )
