"""What every trainer shares: seeded randomness, loss trackers, optimizers per role,
config round trips, ``.keras`` save/load of the whole trainer and a check of the
inputs ``fit`` is given.

Under ``tf.distribute`` (``fit`` or ``strategy.run(model.train_step)``) the same step gives
the same update on N replicas as on one device holding the global batch:

- every gradient step goes through :meth:`Trainer.minimize`, which divides the objective
  by N (:func:`zoo.losses.scale_for_replicas`, the one home of that scaling) and multiplies
  it by the optimizer's loss scale (``LossScaleOptimizer`` under ``mixed_float16``);
- every random draw over the batch goes through :meth:`Trainer.draw`, which draws the
  global batch's values and keeps this replica's slice;
- the trackers are weighted by the local batch size (:meth:`Trainer.record`), so they read
  per-example means of the global batch, not 1/N of them;
- statistics of the whole batch (a sparse autoencoder's mean activation, minibatch standard
  deviation, a data-mean initialisation) use :func:`zoo.losses.global_mean`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.data.batches import unpack_batch
from zoo.data.core import DataError

# How far outside [0, 1] image values may stray (float rounding) before fit refuses them.
RANGE_TOLERANCE = 1e-3


def first_batch(data: Any, part: int = 0) -> np.ndarray | None:
    """The inputs (``part`` 1: the targets) of the first batch of ``fit``'s ``x`` (an array,
    a tensor, a tuple of them or a ``tf.data.Dataset``), or None for what cannot be read
    without consuming it (Python generators, ``PyDataset``) and for dicts and other
    structures."""
    if isinstance(data, tf.data.Dataset):
        data = next(iter(data.take(1)), None)
        if data is None:
            return None
    elif not isinstance(data, (tuple, list, np.ndarray)) and not tf.is_tensor(data):
        return None
    try:
        inputs = unpack_batch(data)[part]
    except ValueError:  # e.g. a long Python list: left for Keras to judge
        return None
    if isinstance(inputs, np.ndarray) or tf.is_tensor(inputs):
        return np.asarray(inputs[:256])
    return None


class Trainer(keras.Model):
    """Base class: a Keras model that owns its networks, optimizers and ``train_step``.

    Subclasses declare:
    - ``NETWORKS``: constructor arguments that are sub-networks (serialised in the config);
    - ``OPTIMIZERS``: compile argument -> network it updates (``None`` = all weights);
    - ``TRACKERS``: names of the ``keras.metrics.Mean`` trackers ``train_step`` updates;
    - ``declaration``: its :class:`zoo.tasks.TaskDeclaration` subclass, what the model can
      do and how it is served (read through :func:`zoo.tasks.declaration_of`).

    A subclass that writes its own ``train_step`` (two players, several objectives) takes
    every gradient step from :meth:`minimize`, every draw over the batch from :meth:`draw`
    (:meth:`normal`, :meth:`uniform`), batch statistics from :func:`zoo.losses.global_mean`,
    and reports through :meth:`record` with the local batch size: then it is right under
    ``tf.distribute`` and mixed precision (tests/test_distribute_equivalence.py checks it).
    """

    NETWORKS: ClassVar[tuple[str, ...]] = ()
    OPTIMIZERS: ClassVar[dict[str, str | None]] = {"optimizer": None}
    TRACKERS: ClassVar[tuple[str, ...]] = ("loss",)
    #: Image-to-image trainers: ``fit``'s targets (``y``, or a dataset's second element) are
    #: images too, checked like the inputs.
    TARGETS_ARE_IMAGES: ClassVar[bool] = False
    declaration: ClassVar[type | None] = None

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

    def record(self, values: dict[str, tf.Tensor], batch_size: Any) -> dict[str, tf.Tensor]:
        """Update the trackers with this step's values (local means over ``batch_size``
        examples) and return every tracker's result.

        Each value is weighted by ``batch_size``, so an uneven last batch counts per
        example. Keras's metric variables are sync-on-read (each replica keeps its own sums,
        added when read across replicas, as ``fit``'s epoch logs are); on N replicas the
        results returned here (``fit``'s per-batch logs) are read from the sums all-reduced
        over the replicas, so they too are the global batch's per-example means.
        """
        weight = ops.cast(batch_size, "float32")
        for name, value in values.items():
            self.trackers[name].update_state(ops.cast(value, "float32"), sample_weight=weight)
        if losses.replicas_in_sync() == 1:
            return {name: tracker.result() for name, tracker in self.trackers.items()}
        trackers = list(self.trackers.values())
        totals, counts = losses.global_sum(
            (
                ops.stack([t.total.value for t in trackers]),
                ops.stack([t.count.value for t in trackers]),
            )
        )
        results = ops.divide_no_nan(totals, counts)
        return {name: results[i] for i, name in enumerate(self.trackers)}

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
        Under the ``mixed_float16`` dtype policy every role's optimizer is wrapped in a
        ``keras.optimizers.LossScaleOptimizer`` (Keras wraps only its own ``optimizer``;
        ``auto_scale_loss=False`` opts out). Every optimizer is built here, so compiling
        inside ``strategy.scope()`` creates its slots there, as ``fit`` under
        ``tf.distribute`` requires.
        """
        given = {role: kwargs.pop(role, None) for role in self.OPTIMIZERS}
        scaled = kwargs.get("auto_scale_loss", True) and self.dtype_policy.name == "mixed_float16"
        optimizers = {
            role: loss_scaled(
                keras.optimizers.get(opt if opt is not None else self.default_optimizer(role)),
                scaled,
            )
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
        self.build_optimizers()

    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(1e-3)

    def build_optimizers(self) -> None:
        """Create every optimizer's slots now (``compile`` does; needed before restoring a
        checkpoint and before ``fit`` under ``tf.distribute``)."""
        for role, network in self.OPTIMIZERS.items():
            optimizer = getattr(self, role)
            if not optimizer.built:
                optimizer.build(self.network_variables(network))

    def compile_from_config(self, config: dict[str, Any]) -> None:
        self.compile(**keras.saving.deserialize_keras_object(config))

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
    def fit(self, x: Any = None, *args: Any, check_inputs: bool = True, **kwargs: Any) -> Any:
        """``keras.Model.fit``, after checking the first batch of ``x`` (and of
        ``validation_data``) with :meth:`check_inputs` unless ``check_inputs=False``.

        Image models take float images in [0, 1]: uint8 or 0-255 images are refused with
        a :class:`zoo.data.DataError` saying how to convert them (``images / 255``, or
        ``zoo.data.from_numpy``, which scales uint8), not converted silently.
        """
        if check_inputs:
            for what, data in (("x", x), ("validation_data", kwargs.get("validation_data"))):
                batch = first_batch(data) if data is not None else None
                if batch is not None:
                    self.check_inputs(batch, f"fit({what}=...)")
            if self.TARGETS_ARE_IMAGES:
                y = args[0] if args else kwargs.get("y")
                targets = np.asarray(y[:256]) if y is not None else first_batch(x, part=1)
                if targets is not None:
                    self.check_inputs(targets, "fit(targets)")
        return super().fit(x, *args, **kwargs)

    def check_inputs(self, inputs: np.ndarray, where: str = "inputs") -> None:
        """Raise :class:`zoo.data.DataError` unless ``inputs`` are finite floats, and for
        image models (``image_shape`` of rank 3) in [0, 1]."""
        images = len(getattr(self, "image_shape", ())) == 3
        if not np.issubdtype(inputs.dtype, np.floating):
            fix = (
                "pass images.astype('float32') / 255 for 0-255 images, or build the dataset "
                "with zoo.data.from_numpy(images), which scales uint8 to [0, 1]"
                if images
                else "pass them as float32"
            )
            raise DataError(
                f"{where}: {self.name} takes float32 {'images in [0, 1]' if images else 'inputs'}"
                f", got {inputs.dtype}; {fix}"
            )
        if not np.all(np.isfinite(inputs)):
            raise DataError(
                f"{where}: the first batch holds NaN or infinite values; clean the data first"
            )
        low, high = float(inputs.min()), float(inputs.max())
        if images and (low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE):
            fix = "divide by 255" if high > 1 + RANGE_TOLERANCE and low >= 0 else "rescale"
            raise DataError(
                f"{where}: {self.name} takes images in [0, 1], but the first batch spans "
                f"[{low:g}, {high:g}]; {fix} (zoo.data.from_numpy scales uint8 images)"
            )

    def minimize(
        self,
        objective: Callable[[], dict[str, tf.Tensor]],
        optimizer: keras.optimizers.Optimizer,
        variables: list[keras.Variable],
        key: str = "loss",
    ) -> dict[str, tf.Tensor]:
        """One gradient step of ``optimizer`` on ``variables`` for ``objective()[key]``;
        returns ``objective()``'s values (every train step's gradients come from here).

        Under the tape the objective (a mean over this replica's batch) is divided by the
        replica count (:func:`zoo.losses.scale_for_replicas`: Keras's optimizers sum the
        replicas' gradients) and multiplied by the optimizer's loss scale
        (``optimizer.scale_loss``: the dynamic scale of a ``LossScaleOptimizer``, whose
        ``apply`` divides the gradients by it and skips non-finite steps; 1 otherwise).
        """
        with tf.GradientTape() as tape:
            values = objective()
            loss = optimizer.scale_loss(losses.scale_for_replicas(values[key]))
        grads = tape.gradient(loss, variables)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            grads = finite_on_every_replica(grads)
        optimizer.apply(grads, variables)
        return values

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One gradient step on ``self.step_losses(images, training=True)["loss"]``.

        Single-objective subclasses only define ``step_losses(images, training)``,
        returning a dict with a ``"loss"`` entry and one entry per tracker.
        """
        images = unpack_batch(data)[0]
        values = self.minimize(
            lambda: self.step_losses(images, training=True),
            self.optimizer,
            self.trainable_variables,
        )
        return self.record(values, ops.shape(images)[0])

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        images = unpack_batch(data)[0]
        return self.record(self.step_losses(images, training=False), ops.shape(images)[0])

    # -- randomness --------------------------------------------------------------------
    def draw(
        self, sampler: Callable[..., tf.Tensor], shape: Any, batch_axis: int = 0, **kwargs: Any
    ) -> tf.Tensor:
        """``sampler(shape, seed=self.seed_generator, **kwargs)`` (a ``keras.random``
        function) for values whose ``batch_axis`` runs over the batch.

        On N > 1 replicas this draws the GLOBAL batch's values (the replicas' seed generators
        move in step) and returns this replica's slice, at its offset in the global batch
        (``tf.distribute`` gives replica i the i-th consecutive part): the noise is what one
        device would draw for the whole batch, not the same noise on every replica.
        """
        return draw_global_batch(sampler, shape, self.seed_generator, batch_axis, **kwargs)

    def normal(self, shape: Any, batch_axis: int = 0) -> tf.Tensor:
        """Standard normal noise from this trainer's seed generator (:meth:`draw`)."""
        return self.draw(keras.random.normal, shape, batch_axis)

    def uniform(self, shape: Any, batch_axis: int = 0, dtype: Any = "float32") -> tf.Tensor:
        """Uniform [0, 1) noise from this trainer's seed generator (:meth:`draw`)."""
        return self.draw(keras.random.uniform, shape, batch_axis, dtype=dtype)


def draw_global_batch(
    sampler: Callable[..., tf.Tensor],
    shape: Any,
    seed_generator: keras.random.SeedGenerator,
    batch_axis: int = 0,
    **kwargs: Any,
) -> tf.Tensor:
    """``sampler(shape, seed=seed_generator, **kwargs)``; on N > 1 replicas this replica's
    slice of the global batch's values (:meth:`Trainer.draw`; also used by layers that draw
    their own noise over the batch, such as the U-Net's dropout)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return sampler(shape, seed=seed_generator, **kwargs)
    shape = list(shape)
    local = ops.cast(shape[batch_axis], "int32")
    n, rank = context.num_replicas_in_sync, context.replica_id_in_sync_group
    mine = tf.one_hot(rank, n, dtype="float32") * ops.cast(local, "float32")
    sizes = ops.cast(losses.global_sum(mine), "int32")  # every replica's batch size
    offset = ops.sum(ops.where(ops.arange(n) < rank, sizes, 0))
    shape[batch_axis] = ops.sum(sizes)
    values = sampler(tuple(shape), seed=seed_generator, **kwargs)
    return tf.gather(values, offset + tf.range(local), axis=batch_axis)


def finite_on_every_replica(grads: list[Any]) -> list[Any]:
    """``grads``, or NaN everywhere if any replica's gradients are not finite (one device:
    unchanged). A ``LossScaleOptimizer`` decides to skip a step from the gradients it is
    given: under ``MirroredStrategy`` from the first replica's alone, under collective
    strategies from each replica's own, so one replica's overflow could be applied, or
    split the replicas' decisions. With this, every replica sees the same verdict."""
    n = losses.replicas_in_sync()
    if n == 1:
        return grads
    present = [g for g in grads if g is not None]
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in present]
    finite = ops.cast(ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in values])), "float32")
    everywhere = losses.global_sum(finite) > n - 0.5

    def agreed(g: Any) -> Any:
        if g is None:
            return None
        if isinstance(g, tf.IndexedSlices):
            return tf.IndexedSlices(agreed(g.values), g.indices, g.dense_shape)
        return ops.where(everywhere, g, ops.full_like(g, float("nan")))

    return [agreed(g) for g in grads]


def loss_scaled(optimizer: keras.optimizers.Optimizer, scaled: bool) -> keras.optimizers.Optimizer:
    """``optimizer`` wrapped in a ``keras.optimizers.LossScaleOptimizer`` when ``scaled`` and
    not wrapped already (mixed_float16: small float16 gradients would underflow)."""
    if not scaled or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)
