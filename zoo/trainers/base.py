"""What every trainer shares: seeded randomness, loss trackers, optimizers per role,
config round trips and ``.keras`` save/load of the whole trainer."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import keras
import tensorflow as tf


def images_of(data: Any) -> tf.Tensor:
    """The images in a batch given as ``images`` or ``(images, labels, ...)``."""
    return data[0] if isinstance(data, (tuple, list)) else data


class Trainer(keras.Model):
    """Base class: a Keras model that owns its networks, optimizers and ``train_step``.

    Subclasses declare:
    - ``NETWORKS``: constructor arguments that are sub-networks (serialised in the config);
    - ``OPTIMIZERS``: compile argument -> network it updates (``None`` = all weights);
    - ``TRACKERS``: names of the ``keras.metrics.Mean`` trackers ``train_step`` updates.
    """

    NETWORKS: ClassVar[tuple[str, ...]] = ()
    OPTIMIZERS: ClassVar[dict[str, str | None]] = {"optimizer": None}
    TRACKERS: ClassVar[tuple[str, ...]] = ("loss",)

    def __init__(
        self, *, seed: int | None = None, trackers: tuple[str, ...] | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        names = trackers or self.TRACKERS
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    # -- metrics -----------------------------------------------------------------------
    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def record(self, values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Update the trackers with this step's values and return every tracker's result."""
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    # -- building ----------------------------------------------------------------------
    def build(self, input_shape: Any = None) -> None:
        """The networks are functional models, built at construction."""
        self.built = True

    def network_variables(self, network: str | None) -> list[keras.Variable]:
        if network is None:
            return self.trainable_variables
        return getattr(self, network).trainable_variables

    # -- optimizers --------------------------------------------------------------------
    def compile(self, **kwargs: Any) -> None:
        """Compile with one optimizer per role in ``OPTIMIZERS`` (Keras names or objects).

        Extra Keras arguments (``jit_compile``, ``steps_per_execution``, ...) pass through.
        """
        given = {role: kwargs.pop(role, None) for role in self.OPTIMIZERS}
        optimizers = {
            role: keras.optimizers.get(opt if opt is not None else self.default_optimizer(role))
            for role, opt in given.items()
        }
        roles = list(optimizers)
        # Keras' own ``optimizer`` is the first role; the others are attributes.
        super().compile(optimizer=optimizers[roles[0]], **kwargs)
        for role in roles:
            setattr(self, role, optimizers[role])
        self._compile_config = keras.src.saving.serialization_lib.SerializableDict(
            **optimizers, **kwargs
        )

    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(1e-3)

    def build_optimizers(self) -> None:
        """Create every optimizer's slots now (needed before restoring a checkpoint)."""
        for role, network in self.OPTIMIZERS.items():
            optimizer = getattr(self, role)
            if not optimizer.built:
                optimizer.build(self.network_variables(network))

    def compile_from_config(self, config: dict[str, Any]) -> None:
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.build_optimizers()

    @property
    def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {role: getattr(self, role) for role in self.OPTIMIZERS}

    # -- config ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = {"seed": self.seed, "name": self.name}
        for network in self.NETWORKS:
            config[network] = keras.saving.serialize_keras_object(getattr(self, network))
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Trainer:
        config = copy.deepcopy(config)  # deserialisation consumes the nested dicts
        for network in cls.NETWORKS:
            config[network] = keras.saving.deserialize_keras_object(config[network])
        model = cls(**config)
        model.build()
        return model

    # -- training: one objective, one optimizer (adversarial trainers override) --------
    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One gradient step on ``self.step_losses(images, training=True)["loss"]``.

        Single-objective subclasses only define ``step_losses(images, training)``,
        returning a dict with a ``"loss"`` entry and one entry per tracker.
        """
        images = images_of(data)
        with tf.GradientTape() as tape:
            values = self.step_losses(images, training=True)
        grads = tape.gradient(values["loss"], self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.record(values)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        return self.record(self.step_losses(images_of(data), training=False))

    # -- sampling helpers --------------------------------------------------------------
    def normal(self, shape: Any) -> tf.Tensor:
        """Standard normal noise from this trainer's seed generator."""
        return keras.random.normal(shape, seed=self.seed_generator)
