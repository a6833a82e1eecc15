"""Serving signatures as data: what a task declaration hands the exporter.

A :class:`Signature` is a ``tf.function`` with an explicit input signature that takes and
returns dicts of plain tensors (the signature key is TF Serving's ``signature_name``, the
argument names and dict keys its tensor names), whether ONNX can express it, and the
parity tolerance it is checked to. :class:`SignatureBuilder` holds the pieces every
declaration shares: labels masked per example, seeded sampling of z, and the anomaly
``score`` / ``score_with_threshold`` pair. Nothing here knows a model class.

Every input and output is batch first, one row per example, and no op fails because of
one example's values: TF Serving's batching session (``--enable_batching``) merges
concurrent requests into one batch, refuses inputs without a batch dimension or whose
first dimensions disagree, and fails every merged request when an op fails. So a label
outside [0, K) gives NaN float outputs for its own example (:func:`class_ids`,
:func:`nan_rows`) instead of a failing assertion, and ``score_with_threshold`` takes one
threshold per example.

Signatures take, compute and return float32 whatever precision the model was trained in
(:mod:`zoo.precision`): float inputs must be declared float32, and a model built under a
mixed dtype policy is traced with its layers computing in float32
(:func:`zoo.precision.float32_compute`), so its SavedModel and ONNX graphs match float32
Keras to the usual tolerances.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from zoo.precision import compute_dtype, float32_compute

__all__ = [
    "SAMPLE_NOT_ONNX",
    "Signature",
    "SignatureBuilder",
    "SignatureSet",
    "Tolerance",
    "sample_z",
]

#: Why ``sample`` has no ONNX file (recorded in the export metadata).
SAMPLE_NOT_ONNX = (
    "draws z with StatelessRandomNormalV2, which tf2onnx cannot convert; the ONNX graphs "
    "take the noise as an input instead (use 'generate' with z)"
)

Body = Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]


@dataclass(frozen=True)
class Tolerance:
    """Parity tolerance of one signature: ``|backend - keras| <= atol + rtol * |keras|``
    (numpy.isclose's rule). A one-pass network holds the default; an iterative sampler
    that compounds round-off over many steps states a looser one."""

    atol: float = 1e-4
    rtol: float = 1e-5

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}


@dataclass(frozen=True)
class Signature:
    """One serving signature: its ``tf.function``, whether it goes to ONNX, its tolerance."""

    name: str
    function: Any  # a tf.function with an input_signature
    onnx: bool
    description: str
    #: SavedModel output key -> ONNX output name, where ONNX needs another name (an ONNX
    #: graph cannot have an input and an output with the same name).
    onnx_renames: dict[str, str] = field(default_factory=dict)
    #: Why the signature is not converted to ONNX (``onnx=False``), for the metadata.
    savedmodel_only_reason: str | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)

    @property
    def input_specs(self) -> list[tf.TensorSpec]:
        return list(self.function.input_signature)

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

    signatures: dict[str, Signature]
    aliases: dict[str, str]
    networks: list[Any] = field(default_factory=list)
    #: ``(mean, std)`` baked into ``normalized_score``, or None when not calibrated.
    normalization: tuple[float, float] | None = None

    def endpoint_names(self) -> list[str]:
        """Every signature key written to the SavedModel, aliases included."""
        return [*self.signatures, *self.aliases]

    def resolve(self, name: str) -> Signature:
        return self.signatures[self.aliases.get(name, name)]


def sample_z(seed: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
    """One standard-normal tensor of ``shape`` per int64 seed (Philox, device-independent):
    example ``i`` depends only on ``seed[i]``."""

    def one(s: tf.Tensor) -> tf.Tensor:
        key = tf.stack([s, tf.constant(0, tf.int64)])
        return tf.random.stateless_normal(list(shape), seed=key, alg="philox")

    return tf.map_fn(one, seed, fn_output_signature=tf.TensorSpec(list(shape), tf.float32))


#: The per-example label rule, in words (descriptions, model card, README).
LABEL_RULE = "a label outside [0, {k}) gives NaN float outputs for that example"


def class_ids(labels: tf.Tensor, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``labels`` [N] int64 -> ``(ids, valid)``: ``valid[i]`` is whether ``labels[i]`` is a
    class id in [0, num_classes), and ``ids`` holds class 0 where it is not (a placeholder
    that computes; :func:`nan_rows` then hides that example's outputs). No assertion: in a
    batch merged by TF Serving, a failing op would fail every request in it."""
    valid = (labels >= 0) & (labels < num_classes)
    return tf.where(valid, labels, tf.zeros_like(labels)), valid


def nan_rows(outputs: dict[str, tf.Tensor], valid: tf.Tensor) -> dict[str, tf.Tensor]:
    """``outputs`` (batch first) with every float output NaN in the rows where ``valid``
    [N] is False; the other rows and non-float outputs are returned unchanged."""
    masked = {}
    for key, value in outputs.items():
        if value.dtype.is_floating:
            rows = tf.reshape(valid, [-1] + [1] * (value.shape.rank - 1))
            value = tf.where(rows, value, tf.constant(math.nan, value.dtype))
        masked[key] = value
    return masked


def in_float32(signature: Signature, networks: list[Any]) -> Signature:
    """``signature`` with its function (traced graph and eager reference alike) running
    with every layer of ``networks`` computing in float32."""
    body = signature.function.python_function

    def float32_body(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        with float32_compute(networks):
            return body(*args)

    float32_body.__name__ = signature.name
    function = tf.function(float32_body, input_signature=signature.function.input_signature)
    return dataclasses.replace(signature, function=function)


def one_per_example(threshold: tf.Tensor, score: tf.Tensor) -> tf.Tensor:
    """``threshold`` [M] checked to hold one value per example of ``score`` [N] (M == N).

    The check can fail only for a request whose own inputs disagree: TF Serving's
    batching session refuses such a request before merging it, and without batching the
    failure is that request's (a 400 naming the sizes)."""
    m, n = tf.size(threshold), tf.size(score)
    message = "threshold needs one value per example, shape [N]; got thresholds, examples:"
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(m, n), [message, m, n])]):
        return tf.identity(threshold)


def check_normalization(
    normalization: tuple[float, float] | None,
) -> tuple[float, float] | None:
    if normalization is None:
        return None
    mean, std = (float(v) for v in normalization)
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"normalization needs a finite mean and std > 0; got {normalization}")
    return mean, std


def score_outputs(
    score: tf.Tensor,
    threshold: tf.Tensor,
    normalization: tuple[float, float] | None,
    extra: dict[str, tf.Tensor] | None = None,
) -> dict[str, tf.Tensor]:
    """The float outputs of a score signature: ``anomaly_score``, ``threshold`` [N] and,
    when calibrated, ``normalized_score = (score - mean) / std``; ``extra`` outputs are
    added as float32 (e.g. a sequence model's ``step_scores``). :func:`with_verdicts`
    adds ``is_anomaly`` once labels have been masked."""
    score = tf.cast(tf.reshape(score, [-1]), tf.float32)
    threshold = tf.broadcast_to(tf.cast(threshold, tf.float32), tf.shape(score))
    outputs = {"anomaly_score": score, "threshold": threshold}
    if normalization is not None:
        # Python floats -> Const nodes built here, inside the traced function: a tensor
        # captured from outside would become an extra (unfed) ONNX graph input.
        mean, std = normalization
        outputs["normalized_score"] = (score - tf.constant(mean, tf.float32)) / tf.constant(
            std, tf.float32
        )
    for key, value in (extra or {}).items():
        outputs[key] = tf.cast(value, tf.float32)
    return outputs


def with_verdicts(outputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """``outputs`` plus ``is_anomaly = score > threshold or score not finite``
    (:data:`zoo.calibration.RULE`), so an example whose label made its score NaN is
    flagged too."""
    score, threshold = outputs["anomaly_score"], outputs["threshold"]
    # a NaN score compares False with any threshold: flag non-finite scores explicitly,
    # in the graph, so TF Serving and ONNX Runtime never call a NaN/inf input normal
    not_finite = tf.math.is_nan(score) | tf.math.is_inf(score)
    return {**outputs, "is_anomaly": (score > threshold) | not_finite}


class SignatureBuilder:
    """Collects one model's signatures. ``num_classes`` > 0 makes every signature that
    names a ``labels`` input mask its examples per label (:data:`LABEL_RULE`)."""

    def __init__(self, num_classes: int = 0):
        self.num_classes = int(num_classes)
        self.signatures: dict[str, Signature] = {}

    @property
    def label_specs(self) -> list[tf.TensorSpec]:
        """``[labels [N] int64]`` for a conditional model, else ``[]``."""
        return [tf.TensorSpec([None], tf.int64, name="labels")] if self.num_classes else []

    @property
    def with_labels(self) -> str:
        """The labels input in words, for descriptions (empty when unconditional)."""
        if not self.num_classes:
            return ""
        return f", labels [N] int64 in [0, {self.num_classes}) ({self.label_rule})"

    @property
    def label_rule(self) -> str:
        """:data:`LABEL_RULE` for this model's number of classes."""
        return LABEL_RULE.format(k=self.num_classes)

    def add(
        self,
        name: str,
        body: Body,
        specs: list[tf.TensorSpec],
        *,
        onnx: bool,
        description: str,
        onnx_renames: dict[str, str] | None = None,
        savedmodel_only_reason: str | None = None,
        tolerance: Tolerance | None = None,
        derive: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None = None,
    ) -> None:
        """Register ``body`` (a dict of input tensors by name -> dict of outputs) as a
        signature taking ``specs``' tensors positionally. With a ``labels`` input, the body
        sees valid class ids and the float outputs of out-of-range labels' examples are NaN
        (:func:`class_ids`, :func:`nan_rows`); ``derive`` then adds outputs computed from
        the masked ones (e.g. :func:`with_verdicts`)."""
        names = [s.name for s in specs]
        num_classes = self.num_classes
        for spec in specs:
            if spec.dtype.is_floating and spec.dtype != tf.float32:
                raise ValueError(
                    f"signature {name!r}: input {spec.name!r} is {spec.dtype.name}; "
                    "exported float inputs are float32 whatever the training precision "
                    "(declare tf.float32; the networks cast to their compute dtype)"
                )

        def positional(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            inputs = dict(zip(names, args, strict=True))
            valid = None
            if "labels" in inputs:
                inputs["labels"], valid = class_ids(inputs["labels"], num_classes)
            outputs = body(inputs)
            if valid is not None:
                outputs = nan_rows(outputs, valid)
            return derive(outputs) if derive is not None else outputs

        positional.__name__ = name
        function = tf.function(positional, input_signature=specs)
        self.signatures[name] = Signature(
            name,
            function,
            onnx,
            description,
            dict(onnx_renames or {}),
            savedmodel_only_reason,
            tolerance or Tolerance(),
        )

    def add_generator(
        self,
        generate: Callable[[tf.Tensor, tf.Tensor | None], tf.Tensor],
        latent_shape: int | tuple[int, ...],
        tolerance: Tolerance | None = None,
        method: str = "",
    ) -> None:
        """``generate`` (z [N, *latent_shape] -> images) and ``sample`` (one int64 seed per
        image -> images; SavedModel only), both with labels when conditional. ``tolerance``:
        ``generate``'s parity tolerance (an iterative sampler states a looser one);
        ``method``: how z becomes images, for the descriptions."""
        shape = (int(latent_shape),) if isinstance(latent_shape, int) else tuple(latent_shape)
        z_spec = tf.TensorSpec([None, *shape], tf.float32, name="z")
        z_text = "[N, " + ", ".join(map(str, shape)) + "]" if len(shape) > 1 else "[N, latent]"
        seed_spec = tf.TensorSpec([None], tf.int64, name="seed")
        labels, with_labels = self.label_specs, self.with_labels

        def images(z: tf.Tensor, y: tf.Tensor | None) -> dict[str, tf.Tensor]:
            return {"images": tf.cast(generate(z, y), tf.float32)}

        self.add(
            "generate",
            lambda i: images(i["z"], i.get("labels")),
            [z_spec, *labels],
            onnx=True,
            description=f"z {z_text}{with_labels} -> images [N, H, W, C] in [0, 1]{method}",
            tolerance=tolerance,
        )
        self.add(
            "sample",
            lambda i: images(sample_z(i["seed"], shape), i.get("labels")),
            [seed_spec, *labels],
            onnx=False,
            description=f"seed [N] int64{with_labels} -> images, z ~ N(0, I) per seed",
            savedmodel_only_reason=SAMPLE_NOT_ONNX,
        )

    def add_anomaly_score(
        self,
        example_spec: tf.TensorSpec,
        scores: Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, dict[str, tf.Tensor]]],
        threshold: float | None,
        normalization: tuple[float, float] | None,
        extra_description: str = "",
    ) -> None:
        """``score`` (the calibrated ``threshold`` baked in as a constant) and
        ``score_with_threshold`` (``threshold`` [N], one per example, batch first so TF
        Serving's batching can merge and split it). ``scores(inputs)`` -> (anomaly_score
        [N], extra outputs)."""
        if threshold is None or not math.isfinite(float(threshold)):
            raise ValueError(f"anomaly signatures need a finite threshold; got {threshold!r}")
        calibrated = float(threshold)  # a Python float: a Const node, not a captured tensor
        key = example_spec.name
        specs = [example_spec, *self.label_specs]
        threshold_spec = tf.TensorSpec([None], tf.float32, name="threshold")
        normalized = ", normalized_score = (score - mean) / std" if normalization else ""

        def score(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            value, extra = scores(i)
            return score_outputs(value, tf.constant(calibrated, tf.float32), normalization, extra)

        def score_with_threshold(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            value, extra = scores(i)
            given = one_per_example(i["threshold"], value)
            return score_outputs(value, given, normalization, extra)

        self.add(
            "score",
            score,
            specs,
            onnx=True,
            description=f"{key}{self.with_labels} -> anomaly_score [N], threshold [N] "
            f"(calibrated), is_anomaly = score > threshold or score not finite{normalized}"
            f"{extra_description}",
            derive=with_verdicts,
        )
        self.add(
            "score_with_threshold",
            score_with_threshold,
            [*specs, threshold_spec],
            onnx=True,
            description=f"{key}{self.with_labels}, threshold [N] (one per example) -> "
            f"anomaly_score, threshold, is_anomaly{normalized}{extra_description}",
            onnx_renames={"threshold": "threshold_out"},
            derive=with_verdicts,
        )

    def build(
        self,
        serving_default: str,
        networks: list[Any],
        normalization: tuple[float, float] | None = None,
    ) -> SignatureSet:
        if serving_default not in self.signatures:
            raise ValueError(f"serving_default {serving_default!r} is not a signature")
        signatures = dict(self.signatures)
        if compute_dtype(networks) != "float32":  # trained under a mixed dtype policy
            signatures = {k: in_float32(s, networks) for k, s in signatures.items()}
        return SignatureSet(
            signatures,
            {"serving_default": serving_default},
            list(networks),
            normalization,
        )
