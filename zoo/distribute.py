"""Training under ``tf.distribute``: which strategy a run uses, and which process writes.

- :func:`make_strategy` builds the strategy a recipe's ``[distribute]`` table names:
  ``default`` (one device), ``mirrored`` (``tf.distribute.MirroredStrategy`` over the
  given devices, else every GPU, else the CPU) or ``multi_worker``
  (``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``, with a
  collective timeout so a dead peer fails the run instead of hanging it).
- :func:`cluster_role` / :func:`is_chief` read ``TF_CONFIG``: the chief is the task of type
  ``chief``, or worker 0 when the cluster has no ``chief`` (TensorFlow's convention).
- :func:`write_dir` / :func:`remove_write_dir`: only the chief writes the run folder; every
  other worker writes into a temporary folder that is removed at the end. Every worker must
  still *call* the saves, because ``CheckpointManager.save`` is a collective operation under
  ``MultiWorkerMirroredStrategy`` (TensorFlow's multi-worker checkpointing guide).

The batch size a recipe gives is the GLOBAL batch: each of N replicas gets 1/N of it
(:func:`check_global_batch`). TensorFlow is imported only inside the functions that need it,
so recipes are checked against :data:`STRATEGIES` without loading TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")
#: Seconds a collective operation (gradient all-reduce, checkpoint) may wait for a peer
#: under ``multi_worker`` before the run fails (``CommunicationOptions.timeout_seconds``).
DEFAULT_TIMEOUT_SECONDS = 300
#: Strategies already built in this process, by (kind, devices, timeout): see make_strategy.
_BUILT: dict[tuple[Any, ...], Any] = {}


class DistributeError(ValueError):
    """A strategy that cannot be built; the message names the problem and the fix."""


class ClusterRole(NamedTuple):
    """This process's task in ``TF_CONFIG`` (``chief`` is True for the one that writes)."""

    task_type: str
    index: int
    chief: bool
    num_workers: int


def _tf_config() -> dict[str, Any] | None:
    """``TF_CONFIG`` parsed and checked (None when it is unset or empty)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({error}); {example}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise DistributeError(f"TF_CONFIG needs a 'cluster' table and a 'task' table; {example}")
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise DistributeError(
                f"TF_CONFIG cluster.{kind} must be a list of 'host:port' strings; got {hosts!r}"
            )
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        raise DistributeError(
            f"TF_CONFIG task.type {kind!r} is not in the cluster ({', '.join(cluster)}); {example}"
        )
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise DistributeError(
            f"TF_CONFIG task.index {index!r} is out of range: cluster.{kind} has "
            f"{len(cluster[kind])} task(s), so the index is 0 to {len(cluster[kind]) - 1}"
        )
    return config


def cluster_role() -> ClusterRole:
    """This process's role from ``TF_CONFIG``; a process without it is a lone chief."""
    config = _tf_config()
    if config is None:
        return ClusterRole("chief", 0, True, 1)
    cluster, task = config["cluster"], config["task"]
    kind, index = task["type"], int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return ClusterRole(kind, index, chief, workers)


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run folder: always under a single-process strategy,
    else as :func:`cluster_role` says."""
    if strategy is not None and not is_multi_worker(strategy):
        return True
    return cluster_role().chief


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans processes (its collectives need every worker)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def check_choice(kind: str) -> None:
    """Raise :class:`DistributeError` unless ``kind`` is one of :data:`STRATEGIES`."""
    if kind not in STRATEGIES:
        raise DistributeError(f"unknown strategy {kind!r}; choose one of: {', '.join(STRATEGIES)}")


def make_strategy(
    kind: str = "default",
    devices: list[str] | tuple[str, ...] | None = None,
    *,
    timeout_seconds: float | None = DEFAULT_TIMEOUT_SECONDS,
) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named ``kind`` (one of :data:`STRATEGIES`).

    ``mirrored`` mirrors over ``devices`` (e.g. ``["/gpu:0", "/gpu:1"]``, or the logical
    CPUs ``["/cpu:0", "/cpu:1"]``), by default every GPU, else the CPU. ``multi_worker``
    reads the cluster from ``TF_CONFIG`` and must be built before TensorFlow runs any op;
    a collective waiting longer than ``timeout_seconds`` for a peer fails the run.

    ``default`` is ``tf.distribute.get_strategy()``; the others are built once per process
    and the same arguments give the same object (a second ``MultiWorkerMirroredStrategy``
    cannot be built at all). Mirrored over CPUs
    only, the all-reduce is :class:`tf.distribute.ReductionToOneDevice`: TensorFlow 2.21
    starts the collective keys of every ``MirroredStrategy`` at the same value, so two
    CPU strategies using collective ops in one process fail with "Shape mismatch in the
    collective instance"; this way the zoo's never collides with the user's.
    """
    check_choice(kind)
    if kind == "default":  # the current one (a user's, inside their scope): never kept
        return _build_strategy(kind, list(devices or ()), timeout_seconds)
    key = (kind, tuple(_device_name(d) for d in devices or ()), timeout_seconds)
    if key not in _BUILT:
        _BUILT[key] = _build_strategy(kind, list(devices or ()), timeout_seconds)
    return _BUILT[key]


def _build_strategy(
    kind: str, devices: list[str], timeout_seconds: float | None
) -> tf.distribute.Strategy:
    """A new strategy (:func:`make_strategy` builds each one once)."""
    import tensorflow as tf

    if kind == "default":
        if devices:
            raise DistributeError(
                f"devices {list(devices)} need a multi-device strategy; pass --strategy mirrored"
            )
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if not devices:
            gpus = tf.config.list_logical_devices("GPU")
            if gpus:
                return tf.distribute.MirroredStrategy([d.name for d in gpus])
            devices = [tf.config.list_logical_devices("CPU")[0].name]
        known = {_device_name(d.name): d.name for d in tf.config.list_logical_devices()}
        names = [_device_name(d) for d in devices]
        missing = [d for d, n in zip(devices, names, strict=True) if n not in known]
        if missing:
            raise DistributeError(
                f"unknown device(s) {', '.join(missing)}; this machine has "
                f"{', '.join(sorted(known)) or 'none'} (e.g. --devices /gpu:0,/gpu:1)"
            )
        if len(set(names)) != len(names):
            raise DistributeError(f"devices {list(devices)} name a device twice")
        chosen = [known[n] for n in names]
        if all(":CPU:" in name.upper() for name in chosen):
            # Sum on one device, not with collective ops: TensorFlow restarts the collective
            # keys for every MirroredStrategy over CPUs, so a second one in the process (the
            # user's, a test's) fails its first all-reduce with "Shape mismatch in the
            # collective instance". GPUs use NCCL, which has no such keys.
            cross = tf.distribute.ReductionToOneDevice(reduce_to_device=chosen[0])
            return tf.distribute.MirroredStrategy(chosen, cross_device_ops=cross)
        return tf.distribute.MirroredStrategy(chosen)
    if devices:
        raise DistributeError(
            "multi_worker uses every local GPU (else the CPU) of each worker; drop --devices "
            "(or distribute.devices) and set CUDA_VISIBLE_DEVICES per worker to choose GPUs"
        )
    if _tf_config() is None:
        raise DistributeError(
            "strategy multi_worker needs TF_CONFIG, the cluster and this process's task, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' on the first worker (index 1 on the '
            "second); for one machine use --strategy mirrored"
        )
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _device_name(device: str) -> str:
    """``/gpu:0``, ``GPU:0`` or ``/device:GPU:0`` as ``/gpu:0``."""
    name = device.strip().lower().replace("/device:", "/")
    return name if name.startswith("/") else f"/{name}"


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    """The global ``batch_size`` must split evenly over the strategy's replicas."""
    replicas = int(strategy.num_replicas_in_sync)
    if batch_size % replicas:
        lower = batch_size - batch_size % replicas
        fix = f"{lower} or {lower + replicas}" if lower else str(replicas)
        raise DistributeError(
            f"data.batch_size = {batch_size} is the GLOBAL batch and must split evenly over the "
            f"{replicas} replicas of the strategy; use a multiple of {replicas}, e.g. {fix}"
        )


def write_dir(run_dir: str | os.PathLike, strategy: tf.distribute.Strategy | None = None) -> Path:
    """Where this process writes a run: ``run_dir`` on the chief, a new temporary folder on
    any other worker (remove it with :func:`remove_write_dir` when the run ends)."""
    run_dir = Path(run_dir)
    if is_chief(strategy):
        return run_dir
    role = cluster_role()
    return Path(tempfile.mkdtemp(prefix=f"zoo-{role.task_type}{role.index}-{run_dir.name}-"))


def remove_write_dir(path: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Remove a non-chief worker's temporary folder (the chief's run folder is kept)."""
    if Path(path).resolve() != Path(run_dir).resolve():
        shutil.rmtree(path, ignore_errors=True)
