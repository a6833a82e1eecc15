"""Reconstruction trainer: an encoder, a decoder and a reconstruction loss."""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from zoo import losses
from zoo.trainers.base import Trainer


@keras.saving.register_keras_serializable(package="zoo")
class Autoencoder(Trainer):
    """x -> encoder -> code -> decoder -> x_hat, trained to minimise a reconstruction loss.

    The loss is summed over pixels and averaged over the batch. ``anomaly_score``
    is the per-example reconstruction error averaged over pixels (so it does not
    grow with image size). Reference: Hinton & Salakhutdinov (2006).
    """

    NETWORKS = ("encoder", "decoder")
    TRACKERS = ("loss", "reconstruction")

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        reconstruction_loss: str = "mse",
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(seed=seed, **kwargs)
        if reconstruction_loss not in losses.RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"unknown reconstruction_loss {reconstruction_loss!r}; choose one of "
                f"{', '.join(losses.RECONSTRUCTION_LOSSES)}"
            )
        self.encoder, self.decoder = encoder, decoder
        self.reconstruction_loss = reconstruction_loss

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.encoder.input_shape[1:])

    @property
    def latent_dim(self) -> int:
        return int(self.decoder.input_shape[-1])

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.decoder(self.encoder(images, training=training), training=training)

    def encode(self, images: tf.Tensor) -> tf.Tensor:
        return self.encoder(images, training=False)

    def decode(self, codes: tf.Tensor) -> tf.Tensor:
        return self.decoder(codes, training=False)

    def reconstruct(self, images: tf.Tensor) -> tf.Tensor:
        return self(images, training=False)

    def anomaly_score(self, images: tf.Tensor) -> tf.Tensor:
        """Per-example mean reconstruction error (the trainer's loss kind, per pixel)."""
        per_example = losses.reconstruction_error(
            images, self.reconstruct(images), self.reconstruction_loss
        )
        return per_example / float(math.prod(self.image_shape))

    def step_losses(self, images: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        error = losses.reconstruction_error(
            images, self(images, training=training), self.reconstruction_loss
        )
        loss = losses.average(error)
        regulariser = sum(self.losses) if self.losses else 0.0
        return {"loss": loss + regulariser, "reconstruction": loss}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reconstruction_loss": self.reconstruction_loss}
