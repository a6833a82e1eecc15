"""Task declarations of the autoencoders: reconstruct, encode, [denoise], anomaly score.

Images: ``reconstruct``, ``encode``, ``denoise`` (when trained with corruption), ``score``
and ``score_with_threshold`` (``serving_default`` = ``score``). Sequences take
``sequences`` [N, T, F] and add ``step_scores`` [N, T] to the score outputs.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from zoo.tasks import (
    AnomalyScorer,
    Images,
    Reconstructor,
    Sequences,
    SignatureBuilder,
    SignatureSet,
    TaskDeclaration,
)

__all__ = ["AutoencoderTasks", "SequenceAutoencoderTasks"]

_PER_VALUE = {
    "l2": ("mean squared reconstruction error per value (l2)", "(x - reconstruction)^2"),
    "l1": ("mean absolute reconstruction error per value (l1)", "|x - reconstruction|"),
}
_PER_STEP = {"l2": "squared", "l1": "absolute"}


class AutoencoderTasks(TaskDeclaration):
    """An image autoencoder: reconstructs, encodes and scores by reconstruction error."""

    family = "autoencoder"
    tasks = (Reconstructor, AnomalyScorer)
    evaluations = ("anomaly",)

    @property
    def examples(self) -> Images:
        return Images(tuple(int(d) for d in self.model.image_shape))

    def scores(self, inputs: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict]:
        """(anomaly_score [N], extra score outputs) of one request."""
        return self.model.anomaly_score(inputs[self.input_key]), {}

    extra_description = ""

    def signatures(
        self,
        threshold: float | None = None,
        normalization: tuple[float, float] | None = None,
    ) -> SignatureSet:
        model, key = self.model, self.input_key
        builder = SignatureBuilder(self.num_classes)
        spec = tf.TensorSpec([None, *self.examples.shape], tf.float32, name=key)
        shape = "[N, " + ", ".join(map(str, self.examples.shape)) + "]"
        builder.add(
            "reconstruct",
            lambda i: {"reconstructions": tf.cast(model.reconstruct(i[key]), tf.float32)},
            [spec],
            onnx=True,
            description=f"{key} {shape} -> reconstructions {shape}",
        )
        builder.add(
            "encode",
            lambda i: {"codes": tf.cast(model.encode(i[key]), tf.float32)},
            [spec],
            onnx=True,
            description=f"{key} -> codes [N, latent]",
        )
        if model.corruption:
            builder.add(
                "denoise",
                lambda i: {key: tf.cast(model.denoise(i[key]), tf.float32)},
                [spec],
                onnx=True,
                onnx_renames={key: f"{key}_out"},
                description=f"{key} (noisy) -> {key}: the clean estimate (the model "
                f"was trained with {model.corruption} corruption)",
            )
        builder.add_anomaly_score(
            spec, self.scores, threshold, normalization, self.extra_description
        )
        # autoencoders need only their networks in the artifact
        return builder.build("score", [model.encoder, model.decoder], normalization)

    def score_definition(self) -> str:
        model = self.model
        words, term = _PER_VALUE[model.score]
        values = " x ".join(str(d) for d in model.image_shape)
        if getattr(model, "score_blur", 0.0):
            term = term.replace(
                "x - reconstruction",
                f"blur(x - reconstruction), blur = Gaussian of sigma {model.score_blur:g} px "
                "per channel with zero padding",
            )
        top = model.score_top_count
        if top is not None and top < math.prod(model.image_shape):
            return f"{words}: the mean of the largest {top} of the {values} values of {term}"
        return f"{words}: the mean over the {values} input values of {term}"

    def use_notes(self) -> list[str]:
        shape = ", ".join(map(str, self.examples.shape))
        return [
            f"- Scores images [{shape}], float32 in [0, 1], by reconstruction error: high "
            "where the model cannot reproduce the input.",
            "- Autoencoders can reconstruct some anomalies well (e.g. simple or blank "
            "images) and then miss them: check on the anomalies you care about.",
            *self.denoise_notes(),
        ]

    def denoise_notes(self) -> list[str]:
        model = self.model
        if not model.corruption:
            return []
        return [
            f"- `denoise` returns the clean estimate (the reconstruction). The model was "
            f"trained to undo {model.corruption} corruption at level {model.noise_level:.6g}; "
            "other noise kinds or levels are out of scope."
        ]


class SequenceAutoencoderTasks(AutoencoderTasks):
    """A sequence autoencoder: as :class:`AutoencoderTasks` on ``sequences`` [N, T, F],
    with padding masked and per-step scores."""

    family = "sequence_autoencoder"
    extra_description = ", step_scores [N, T] (0 at padding)"

    @property
    def examples(self) -> Sequences:
        shape = tuple(int(d) for d in self.model.sequence_shape)
        return Sequences(shape, mask_value=float(self.model.mask_value))

    def scores(self, inputs: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict]:
        x = inputs[self.input_key]
        steps = self.model.step_scores(x)  # shares its reconstruction with the score
        return self.model.sequence_scores(steps, x), {"step_scores": steps}

    def score_definition(self) -> str:
        model = self.model
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

    def use_notes(self) -> list[str]:
        shape = ", ".join(map(str, self.examples.shape))
        return [
            f"- Scores multivariate sequences [T, F] = [{shape}] for being unlike the "
            "calibration data; `step_scores` [N, T] show *where* in time the reconstruction "
            "fails.",
            f"- Pad shorter sequences with mask_value = {self.model.mask_value:.6g} in "
            "**every** feature; such steps are ignored (step score 0). A real step whose "
            "features all equal mask_value is treated as padding too.",
            "- Inputs must be on the scale and preprocessing the model was trained on.",
            *self.denoise_notes(),
        ]

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["sequence_shape"] = list(self.examples.shape)
        out["mask_value"] = float(self.model.mask_value)
        return out
