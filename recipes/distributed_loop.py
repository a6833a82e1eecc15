"""A distributed training loop for strategies ``keras.Model.fit`` cannot drive.

Keras 3's ``fit`` fails under ``tf.distribute.MultiWorkerMirroredStrategy`` (tensorflow#72388:
a GAN stops with "Invalid reduction dimension 0", even a ``Sequential`` at its automatic
build). :func:`fit_distributed` is the custom loop TensorFlow's multi-worker guide describes
(``strategy.run`` over ``strategy.experimental_distribute_dataset``), written to behave like
``fit`` for the zoo's runner: the model's own ``train_step`` / ``test_step``, the same
callbacks in the same order with the same logs, metrics reset per epoch, ``stop_training``
honoured and a ``History`` returned. So there is one trainer, not two to keep in step; the
loop works under any strategy, which is how it is tested against ``fit`` in one process.

A worker that dies makes the collectives of the others fail (after the strategy's
``CommunicationOptions(timeout_seconds=...)`` at the latest): the survivors raise
:class:`WorkerFailedError`, naming the worker and the epoch ``--resume`` continues from.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from zoo.checkpoints import CheckpointEveryEpoch
from zoo.distribute import check_global_batch, is_multi_worker
from zoo.trainers.base import first_batch

#: TensorFlow errors a collective raises when a peer is gone or too slow.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
)
#: What the messages of the last three say when a peer is the cause.
PEER_WORDS = re.compile(r"collective|heartbeat|unhealthy|peer|connection|/task:", re.IGNORECASE)


class WorkerFailedError(RuntimeError):
    """Another worker of a multi-worker run stopped responding; the run cannot go on."""

    def __init__(self, worker: str, resume_epoch: int, cause: str):
        self.worker, self.resume_epoch = worker, resume_epoch
        fix = (
            f"restart every worker with --resume to continue from the last checkpoint "
            f"(epoch {resume_epoch})"
            if resume_epoch
            else "no epoch finished, so restart every worker without --resume"
        )
        super().__init__(f"{worker} stopped responding; {fix}. Cause: {cause}")


def fit_for(model: keras.Model, strategy: tf.distribute.Strategy) -> Callable[..., Any]:
    """``model.fit``, or :func:`fit_distributed` bound to ``model`` and ``strategy`` when
    ``fit`` cannot run under ``strategy``; both take ``fit``'s keyword arguments."""
    if not is_multi_worker(strategy):
        return model.fit

    def fit(
        x: tf.data.Dataset, *, shuffle: bool = True, check_inputs: bool = True, **kwargs: Any
    ) -> keras.callbacks.History:
        # shuffle: fit ignores it for datasets too (zoo.data.batch shuffles per epoch)
        batch = first_batch(x) if check_inputs and hasattr(model, "check_inputs") else None
        if batch is not None:
            model.check_inputs(batch, "fit(x=...)")
        return fit_distributed(model, strategy, x, **kwargs)

    return fit


def fit_distributed(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    dataset: tf.data.Dataset,
    *,
    epochs: int = 1,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    validation_data: tf.data.Dataset | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | str = 0,
) -> keras.callbacks.History:
    """Train ``model`` under ``strategy`` as ``model.fit`` would with these arguments.

    ``dataset`` yields global batches (every worker builds the same one; each worker reads
    its own share of every batch: ``AutoShardPolicy.DATA``). With ``steps_per_epoch``, as
    for the runner's datasets, it continues from one epoch to the next and that many
    batches make an epoch; without, each epoch is one whole pass over it (its length must
    be known). ``validation_data`` is evaluated after every epoch; each of its batches, the
    last one too, must split evenly over the replicas (an empty replica batch fails), as
    the runner's do. Per-batch logs are the trackers' values over all replicas. The
    model's ``steps_per_execution`` steps run in one call, as in ``fit``; an epoch is
    exactly ``steps_per_epoch`` steps (``fit`` rounds it up to a multiple of
    ``steps_per_execution``).
    """
    _check_model(model, strategy)
    with strategy.scope():  # Keras builds optimizers lazily, which fails in replica context
        _build_optimizers(model)
    batch_size = _global_batch(dataset)
    distributed = _distribute(strategy, dataset, batch_size)
    train_iterator = iter(distributed)
    one_pass = steps_per_epoch is None  # a fresh iterator per epoch, as fit
    if one_pass:
        steps_per_epoch = int(dataset.cardinality())
        if steps_per_epoch < 0:
            raise ValueError(
                "fit_distributed: the dataset's length is unknown or infinite; pass "
                "steps_per_epoch (every worker must run the same number of steps)"
            )
    train_function = _step_function(model, strategy, model.train_step)
    test_function = _step_function(model, strategy, model.test_step)
    per_execution = max(1, int(getattr(model, "steps_per_execution", 1) or 1))

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    model.stop_training = False
    finished = initial_epoch  # the epoch a --resume would continue from
    training_logs: dict[str, Any] | None = None
    try:
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            if one_pass and epoch > initial_epoch:
                train_iterator = iter(distributed)
            callback_list.on_epoch_begin(epoch)
            logs: dict[str, Any] = {}
            step = 0
            while step < steps_per_epoch:
                count = min(per_execution, steps_per_epoch - step)
                callback_list.on_train_batch_begin(step)
                try:
                    logs = train_function(train_iterator, count)
                except tf.errors.OutOfRangeError:
                    _warn_out_of_data(steps_per_epoch, epochs)
                    model.stop_training = True
                    break
                step += count
                callback_list.on_train_batch_end(step - 1, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(logs)  # the trackers' running means: the epoch's values
            if validation_data is not None:
                val_logs = _evaluate(
                    model,
                    strategy,
                    validation_data,
                    test_function,
                    callback_list,
                    batch_size,
                    per_execution,
                )
                epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            finished = epoch + 1
            training_logs = epoch_logs
            if model.stop_training:
                break
        optimizer = getattr(model, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.Optimizer) and epochs > 0:
            optimizer.finalize_variable_values(model.trainable_weights)
        callback_list.on_train_end(logs=training_logs)
    except PEER_ERRORS as error:
        worker = _failed_worker(error, strategy) if is_multi_worker(strategy) else None
        if worker is None:
            raise
        epoch = _checkpointed_epoch(callback_list.callbacks, finished)
        raise WorkerFailedError(worker, epoch, _first_line(error)) from None
    return model.history


# -- pieces ----------------------------------------------------------------------------
def _check_model(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"{model.name} is not compiled; call model.compile(...) inside "
            "`with strategy.scope():` before fit_distributed"
        )
    variables = [v.value for v in model.weights]
    if variables and not strategy.extended.variable_created_in_scope(variables[0]):
        raise ValueError(
            f"{model.name}'s weights were not created under this strategy; build or load the "
            "model inside `with strategy.scope():` (zoo.load(...) included)"
        )


def _build_optimizers(model: keras.Model) -> None:
    build = getattr(model, "build_optimizers", None)  # zoo trainers: one per role
    if callable(build):
        build()
    elif not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _global_batch(dataset: tf.data.Dataset) -> int:
    """The batch size a batched dataset was built with (its static leading dimension)."""
    spec = tf.nest.flatten(dataset.element_spec)[0]
    size = spec.shape[0] if spec.shape.rank else None
    if size is None:
        raise ValueError(
            "fit_distributed needs datasets batched with drop_remainder=True (a static batch "
            "size); zoo.data.batch does that for training"
        )
    return int(size)


def _distribute(
    strategy: tf.distribute.Strategy, dataset: tf.data.Dataset, batch: int
) -> tf.distribute.DistributedDataset:
    """``dataset`` split over the replicas: each worker reads its share of every batch."""
    check_global_batch(batch, strategy)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _step_function(
    model: keras.Model, strategy: tf.distribute.Strategy, step: Callable[[Any], dict]
) -> Callable[[Any, int], dict[str, tf.Tensor]]:
    """``count`` calls of ``step`` on the iterator's next batches in one ``tf.function``
    (``steps_per_execution``); returns the last step's values, averaged over replicas
    (each replica's trackers hold the mean of an equal share of every batch)."""

    @tf.autograph.experimental.do_not_convert  # as fit: train_step runs unconverted
    def one_step(data: Any) -> dict[str, tf.Tensor]:
        outputs = strategy.run(step, args=(data,))
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in outputs.items()
        }

    if getattr(model, "run_eagerly", False):
        return lambda iterator, count: [one_step(next(iterator)) for _ in range(count)][-1]
    if getattr(model, "jit_compile", False):  # as fit: XLA compiles one step
        one_step = tf.function(one_step, jit_compile=True)

    @tf.function
    def run(iterator: Any, count: int) -> dict[str, tf.Tensor]:
        if count > 1:  # a Python int: traced once per distinct count (at most two)
            for _ in tf.range(count - 1):  # autograph: one while loop, not count copies
                one_step(next(iterator))
        return one_step(next(iterator))

    return run


def _evaluate(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    dataset: tf.data.Dataset,
    test_function: Callable[[Any, int], dict[str, tf.Tensor]],
    callback_list: keras.callbacks.CallbackList,
    batch_size: int,
    per_execution: int,
) -> dict[str, Any]:
    """One pass over ``dataset`` with ``test_step`` and the ``on_test_*`` callbacks, in
    calls of up to ``per_execution`` steps (as ``evaluate`` with ``steps_per_execution``)."""
    steps = int(dataset.cardinality())
    if steps < 0:
        steps = sum(1 for _ in dataset)
    model.reset_metrics()
    callback_list.on_test_begin()
    logs: dict[str, Any] = {}
    iterator = iter(_distribute(strategy, dataset, batch_size))
    for step in range(0, steps, per_execution):
        count = min(per_execution, steps - step)
        callback_list.on_test_batch_begin(step)
        logs = test_function(iterator, count)
        callback_list.on_test_batch_end(step + count - 1, logs)
    logs = {name: float(value) for name, value in logs.items()}
    callback_list.on_test_end(logs)
    return logs


def _warn_out_of_data(steps_per_epoch: int, epochs: int) -> None:
    warnings.warn(
        f"the training data ran out before {epochs} epochs of {steps_per_epoch} steps; "
        "training stopped (give a dataset covering every epoch, as zoo.data.batch(..., "
        "epochs=...) does)",
        stacklevel=3,
    )


def _checkpointed_epoch(callbacks: list[keras.callbacks.Callback], finished: int) -> int:
    """The epoch of the newest checkpoint (a peer may fail after the save, before the
    epoch's other callbacks end), else the last epoch whose callbacks all ran."""
    for callback in callbacks:
        if isinstance(callback, CheckpointEveryEpoch):
            return int(callback.state.epoch.numpy())
    return finished


def _first_line(error: BaseException) -> str:
    """The error's type and its first informative line (TensorFlow's start with
    "Graph execution error:" and a node trace)."""
    text = getattr(error, "message", None) or str(error)
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line.strip().startswith(("Graph execution", "Detected at", "[[", "File "))
    ]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _failed_worker(error: BaseException, strategy: tf.distribute.Strategy) -> str | None:
    """``worker N (host:port)`` for the peer the error names, or the other task of a
    two-task cluster; the list of peers when it cannot tell which one. None when the
    error is not a peer's (no peers, or a message that names none of their troubles)."""
    peer_error = isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError))
    if not peer_error and not PEER_WORDS.search(str(error)):
        return None
    resolver = getattr(strategy, "cluster_resolver", None)
    try:
        cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
        me = (resolver.task_type, int(resolver.task_id)) if resolver is not None else None
    except (AttributeError, TypeError, ValueError):
        cluster, me = {}, None
    tasks = [(job, i) for job in ("chief", "worker") for i in range(len(cluster.get(job, [])))]
    named = {
        (job, int(i)) for job, i in re.findall(r"job:(\w+)(?:/replica:\d+)?/task:(\d+)", str(error))
    }
    peers = [t for t in tasks if t != me]
    if not peers:
        return None
    candidates = [t for t in peers if t in named] or peers

    def describe(task: tuple[str, int]) -> str:
        return f"{task[0]} {task[1]} ({cluster[task[0]][task[1]]})"

    if len(candidates) == 1:
        return describe(candidates[0])
    return f"one of the other workers [{', '.join(describe(t) for t in candidates)}]"
