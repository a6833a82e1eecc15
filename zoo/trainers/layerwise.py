"""Greedy layer-wise pre-training of a stacked autoencoder (Bengio et al., 2007;
Hinton & Salakhutdinov, 2006), before end-to-end fine-tuning.

Works on dense autoencoders built by :func:`zoo.networks.dense_encoder` /
:func:`zoo.networks.dense_decoder`, whose layers ``encoder_dense_<i>`` and
``decoder_dense_<i>`` form one shallow autoencoder per depth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.data.batches import unpack_batch
from zoo.trainers.autoencoder import Autoencoder
from zoo.trainers.base import Trainer


def layer_pairs(model: Autoencoder) -> list[tuple[keras.layers.Dense, keras.layers.Dense]]:
    """(encoder layer i, decoder layer i) for i = 1..depth; a clear error otherwise."""
    pairs = []
    i = 1
    while True:
        try:
            pairs.append(
                (
                    model.encoder.get_layer(f"encoder_dense_{i}"),
                    model.decoder.get_layer(f"decoder_dense_{i}"),
                )
            )
        except ValueError:
            break
        i += 1
    if not pairs:
        raise ValueError(
            f"{model.name} has no encoder_dense_<i>/decoder_dense_<i> layers; layer-wise "
            "pre-training needs a dense stacked autoencoder such as zoo.load('stacked_ae')"
        )
    return pairs


class ShallowAutoencoder(Trainer):
    """One depth's shallow autoencoder ``h -> decoder_layer(encoder_layer(h))``, trained
    by mean squared error (the mean over features, as Keras's ``"mse"``, and over the
    batch) through :meth:`Trainer.train_step`, so under ``tf.distribute`` and mixed
    precision it is scaled like every other trainer. A training aid, not saved."""

    def __init__(self, encoder_layer: keras.layers.Layer, decoder_layer: keras.layers.Layer,
                 width: int, **kwargs: Any):  # fmt: skip
        super().__init__(**kwargs)
        inputs = keras.Input((width,))
        self.network = keras.Model(inputs, decoder_layer(encoder_layer(inputs)))
        self.build()

    def call(self, h: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.network(h, training=training)

    def step_losses(self, h: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        error = ops.mean(ops.square(h - self.network(h, training=training)), axis=-1)
        return {"loss": losses.average(error)}


def greedy_layerwise_pretrain(
    model: Autoencoder,
    dataset: tf.data.Dataset,
    *,
    epochs: int,
    make_optimizer: Callable[[], keras.optimizers.Optimizer] = lambda: keras.optimizers.Adam(1e-3),
    callbacks: Callable[[int], list[keras.callbacks.Callback]] | None = None,
    verbose: int | str = "auto",
    steps_per_epoch: int | None = None,
    fit_of: Callable[[keras.Model], Callable[..., Any]] | None = None,
) -> dict[int, dict[str, list[float]]]:
    """Train each depth's shallow autoencoder on the codes of the (frozen) layers below.

    Layer i learns ``decoder_dense_i(encoder_dense_i(h_{i-1})) ~ h_{i-1}`` by mean squared
    error, with h_0 the flattened input. The layers are the model's own, so their
    weights carry into fine-tuning. ``callbacks(i)`` gives the callbacks for depth i
    (for per-phase logging). ``steps_per_epoch`` goes to ``fit`` (give it for a dataset
    that holds every epoch in one pass). ``fit_of(shallow)`` gives the function that fits a depth's
    model with ``fit``'s arguments (default its own ``fit``; the runner passes the
    multi-worker loop, ``zoo.recipes.distributed_loop.fit_for``). Returns each depth's
    history. Under ``tf.distribute`` call it inside the strategy's scope (each depth's
    optimizer is created and built here).
    """
    histories = {}
    flatten = keras.layers.Flatten()
    below: list[keras.layers.Dense] = []
    for depth, (enc, dec) in enumerate(layer_pairs(model), start=1):
        frozen = list(below)

        def features(batch, frozen=frozen):
            h = flatten(unpack_batch(batch)[0])
            for layer in frozen:
                h = layer(h)
            return h, h

        width = enc.input.shape[-1] if hasattr(enc, "input") else None
        shallow = ShallowAutoencoder(enc, dec, width, name=f"pretrain_layer_{depth}")
        shallow.compile(optimizer=make_optimizer())
        fit = fit_of(shallow) if fit_of is not None else shallow.fit
        history = fit(
            dataset.map(features),
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            verbose=verbose,
            callbacks=callbacks(depth) if callbacks else None,
            shuffle=False,  # a dataset: shuffled (or not) by whoever batched it
            check_inputs=False,  # codes of checked inputs
        )
        histories[depth] = history.history
        below.append(enc)
    return histories
