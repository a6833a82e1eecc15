"""Task declaration of the VAE and CVAE: reconstruct, encode, decode, generate, sample,
and the negative ELBO as anomaly score (``serving_default`` = ``score``).

A CVAE takes ``labels`` in every signature. With ``likelihood="gaussian_learned"``
``decode`` also returns ``scale``, the learned per-pixel standard deviation, and the
whole trainer is tracked in the artifact (its ``log_scale`` lives outside the networks).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from zoo.tasks import (
    AnomalyScorer,
    Generator,
    Images,
    LikelihoodModel,
    Reconstructor,
    Sampler,
    SignatureBuilder,
    SignatureSet,
    TaskDeclaration,
)

__all__ = ["VAETasks"]


class VAETasks(TaskDeclaration):
    """A VAE (Kingma & Welling, 2014): generator, reconstructor, likelihood model and
    anomaly scorer by the negative ELBO."""

    family = "vae"
    tasks = (Sampler, Generator, Reconstructor, LikelihoodModel, AnomalyScorer)
    evaluations = ("likelihood", "anomaly", "samples")
    latent_plots = True

    @property
    def examples(self) -> Images:
        return Images(tuple(int(d) for d in self.model.image_shape))

    def signatures(
        self,
        threshold: float | None = None,
        normalization: tuple[float, float] | None = None,
    ) -> SignatureSet:
        model = self.model
        builder = SignatureBuilder(self.num_classes)
        labels, with_labels = builder.label_specs, builder.with_labels
        spec = tf.TensorSpec([None, *self.examples.shape], tf.float32, name="images")
        z_spec = tf.TensorSpec([None, int(model.latent_dim)], tf.float32, name="z")
        learned = model.likelihood == "gaussian_learned"

        def conditioned(method: Any, i: dict[str, tf.Tensor]) -> Any:
            labels = i.get("labels")
            return method(i["images"]) if labels is None else method(i["images"], labels=labels)

        def encode(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            mean, log_variance = conditioned(model.encode, i)
            return {"mean": mean, "log_variance": log_variance}

        def decode(i: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            images = tf.cast(model.decode(i["z"], i.get("labels")), tf.float32)
            outputs = {"images": images}
            if learned:
                outputs["scale"] = tf.broadcast_to(model.scale(), tf.shape(images))
            return outputs

        builder.add(
            "reconstruct",
            lambda i: {"reconstructions": tf.cast(conditioned(model.reconstruct, i), tf.float32)},
            [spec, *labels],
            onnx=True,
            description=f"images [N, H, W, C]{with_labels} -> reconstructions [N, H, W, C]",
        )
        builder.add(
            "encode",
            encode,
            [spec, *labels],
            onnx=True,
            description=f"images{with_labels} -> posterior mean, log_variance",
        )
        builder.add(
            "decode",
            decode,
            [z_spec, *labels],
            onnx=True,
            description=f"z{with_labels} -> likelihood-mean images in [0, 1]"
            + (", scale (the learned per-pixel std)" if learned else ""),
        )
        builder.add_generator(model.generate, model.latent_dim)
        builder.add_anomaly_score(
            spec, lambda i: (conditioned(model.anomaly_score, i), {}), threshold, normalization
        )
        # the likelihood may own variables outside the networks (gaussian_learned's
        # log_scale), so the whole trainer is tracked
        return builder.build("score", [model], normalization)

    def score_definition(self) -> str:
        likelihood = self.model.likelihood
        if self.num_classes:
            return (
                f"negative ELBO in nats at the posterior mean ({likelihood} likelihood), "
                "conditioned on each example's label y: -log p(x|z=mean, y) summed over pixels "
                "+ KL(q(z|x, y) || N(0, I)) summed over latent dims"
            )
        return (
            f"negative ELBO in nats at the posterior mean ({likelihood} likelihood): "
            "-log p(x|z=mean) summed over pixels + KL(q(z|x) || N(0, I)) summed over latent dims"
        )

    def use_notes(self) -> list[str]:
        shape = ", ".join(map(str, self.examples.shape))
        return [
            f"- Scores images [{shape}] in [0, 1] by their negative ELBO (nats).",
            "- Likelihood-based scores can rate some out-of-distribution inputs as *more* "
            "likely than the training data (Nalisnick et al., 2019): check on your anomalies.",
        ]
