"""Exponential moving average (EMA) of a network's weights, for sampling and export.

After every optimizer step of the live network ``w``, the average ``avg`` moves towards it:

    avg <- decay * avg + (1 - decay) * w        (trainable weights)
    avg <- w                                    (non-trainable state: batch-norm statistics)

Sampling from the average of the generator's recent weights instead of the last iterate
gives visibly better and more stable samples: Karras et al. (2018), "Progressive Growing
of GANs" (decay 0.999), and Yazici et al. (2019), "The Unusual Effectiveness of Averaging
in GAN Training", who show that the average converges where the iterates cycle. The same
holds for any generator trained by stochastic gradients (e.g. a VAE's decoder).

:class:`WeightAverage` pairs a live network with its average, a second network of the same
architecture (rebuilt from the live one's config, weights copied) that no optimizer updates.
The trainer that owns it assigns :attr:`WeightAverage.average` to one of its own attributes
(``ema_generator``, ``ema_decoder``): Keras tracks it there, so ``.keras`` files,
``tf.train.Checkpoint`` checkpoints and exported SavedModels hold the averaged weights.
"""

from __future__ import annotations

import keras

__all__ = ["WeightAverage", "averaged_copy", "check_decay"]


def check_decay(decay: float | None, key: str = "ema_decay") -> float | None:
    """``decay`` as a float in (0, 1), or None (no average); a ValueError naming ``key``."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"{key} must be in (0, 1) or None; got {decay}")
    return float(decay)


def averaged_copy(network: keras.Model, name: str) -> keras.Model:
    """A second ``network`` named ``name``: same architecture and weights, not trainable."""
    config = keras.saving.serialize_keras_object(network)
    config["config"]["name"] = name
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(network.get_weights())
    copy.trainable = False
    return copy


class WeightAverage:
    """The EMA of ``network``'s weights with decay ``decay`` (see the module docstring).

    ``average`` starts as a copy of ``network`` named ``name``; call :meth:`update` after
    each optimizer step of ``network``. Not a Keras layer itself: the owning trainer keeps
    ``average`` in one of its attributes, which is what checkpoints and ``.keras`` files
    save (so a trainer's file layout does not depend on this class).
    """

    def __init__(self, network: keras.Model, decay: float, name: str):
        self.network = network
        self.decay = check_decay(decay)
        if self.decay is None:
            raise ValueError("a WeightAverage needs a decay in (0, 1)")
        self.average = averaged_copy(network, name)

    def update(self, decay: float | None = None) -> None:
        """One EMA step (``decay`` overrides the configured one for this step):
        ``avg = decay * avg + (1 - decay) * w`` for the trainable weights; non-trainable
        state (batch-norm moving statistics, spectral-norm vectors) is copied."""
        decay = self.decay if decay is None else decay
        for avg, weight in zip(self.average.weights, self.network.weights, strict=True):
            if weight.trainable:
                avg.assign(decay * avg + (1.0 - decay) * weight)
            else:
                avg.assign(weight)

    def reset(self) -> None:
        """Set the average to the live weights (start averaging afresh)."""
        for avg, weight in zip(self.average.weights, self.network.weights, strict=True):
            avg.assign(weight)
