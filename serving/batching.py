"""Server-side batching, as TF Serving's ``--enable_batching`` does it.

:class:`BatchScheduler` merges the concurrent predict calls made on one servable
version and signature into one signature call: a batch closes when it holds
``max_batch_size`` rows (``max_execution_batch_size`` with large-batch splitting) or
``batch_timeout_micros`` after its first request, is padded up to the next of
``allowed_batch_sizes`` (padding rows repeat the batch's first row and are dropped
after), runs on one of ``num_batch_threads`` threads, and its outputs are split back
per request. At most ``max_enqueued_batches`` batches wait per queue; past that a
request gets 503 (TF Serving's UNAVAILABLE).

Before enqueuing, a request is refused with 400 for what TF Serving's batching session
refuses (same messages): an input with no batch dimension (rank 0), inputs whose first
dimensions disagree, more rows than ``max_batch_size`` (with
``enable_large_batch_splitting`` a request is cut into execution-sized pieces
instead). An output with no batch dimension, or not one row per input row, fails the
batch as in TF Serving.

One difference on purpose: TF Serving fails a whole batch when requests' non-batch
dimensions differ (unless ``pad_variable_length_inputs``); here such requests go to
separate batches, so one client's shape cannot fail another's request.

Isolation depends on the graph: every request of a merged batch shares the one
signature call, so an in-graph assertion that fails on one request's row fails every
request merged with it. Exported signatures therefore mark a bad row (NaN outputs for
an out-of-range label) instead of asserting.

Followed TF Serving files (tensorflow/serving): ``batching/batching_session.cc``
(merging, padding, splitting outputs), ``batching/batching_util.h``
(``ComputeTensorBatchSize``), ``servables/tensorflow/session_bundle_config.proto``
(``BatchingParameters`` and its defaults).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .servable import RequestError, Servable, call_signature

__all__ = ["BatchScheduler", "BatchingOptions", "batch_size"]


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's ``BatchingParameters`` (defaults as its session_bundle_config.proto)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> BatchingOptions:
        """From :func:`zoo.serving.config.validate_batching_parameters`'s dict."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in params.items() if k in names}
        if "allowed_batch_sizes" in values:
            values["allowed_batch_sizes"] = tuple(values["allowed_batch_sizes"])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> BatchingOptions:
        """Read and check a ``--batching_parameters_file``."""
        from .config import validate_batching_parameters

        return cls.from_parameters(validate_batching_parameters(path))

    @property
    def execution_batch_size(self) -> int:
        """The most rows one signature call runs on."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size


def batch_size(arrays: Mapping[str, np.ndarray]) -> int:
    """The rows of a request, or 400 as TF Serving's ``ComputeTensorBatchSize`` refuses it."""
    if not arrays:
        raise RequestError(400, "Batching Run() must have at least one input tensor")
    scalars = [k for k, a in arrays.items() if np.ndim(a) == 0]
    if scalars:
        raise RequestError(
            400,
            "Batching Run() input tensors must have at least one dimension; input(s) "
            f"{scalars} have none: send one value per example (shape [n, ...])",
        )
    sizes = {k: int(np.shape(a)[0]) for k, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise RequestError(
            400,
            "Batching Run() input tensors must have equal 0th-dimension size; got "
            + ", ".join(f"'{k}': {n}" for k, n in sorted(sizes.items())),
        )
    return next(iter(sizes.values()))


@dataclass
class _Task:
    arrays: dict[str, np.ndarray]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: RequestError | None = None


@dataclass
class _Batch:
    deadline: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0


@dataclass
class _Queue:
    servable: Servable
    sig: str
    batches: deque[_Batch] = field(default_factory=deque)


class BatchScheduler:
    """Merges concurrent signature calls per (servable version, signature) into batches.

    ``calls`` counts signature calls and ``requests`` the calls of :meth:`run`;
    ``batch_sizes`` holds the last executed batches as (rows, rows after padding).
    """

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self.calls = 0
        self.requests = 0
        self.batch_sizes: deque[tuple[int, int]] = deque(maxlen=1000)
        self._cond = threading.Condition()
        self._queues: dict[tuple[Any, ...], _Queue] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False

    # ---------------------------------------------------------------- callers

    def run(self, servable: Servable, sig: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """Run ``sig`` on ``arrays`` inside a merged batch; this request's outputs."""
        size = batch_size(arrays)
        limit = self.options.max_batch_size
        if size > limit:
            raise RequestError(
                400,
                f"Task size {size} is larger than maximum input batch size {limit}; send at "
                f"most {limit} examples per request (batching parameters: max_batch_size "
                f"{limit})",
            )
        if size == 0:
            return call_signature(servable.signatures[sig], arrays, servable.inputs[sig], sig)
        step = self.options.execution_batch_size
        pieces = [{k: a[i : i + step] for k, a in arrays.items()} for i in range(0, size, step)]
        tasks = [self._enqueue(servable, sig, piece) for piece in pieces]
        for task in tasks:
            task.done.wait()
        for task in tasks:
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            return tasks[0].outputs  # type: ignore[return-value]
        keys = tasks[0].outputs or {}
        return {k: np.concatenate([t.outputs[k] for t in tasks]) for k in keys}  # type: ignore[index]

    def _enqueue(self, servable: Servable, sig: str, arrays: dict[str, np.ndarray]) -> _Task:
        task = _Task({k: np.asarray(a) for k, a in arrays.items()}, batch_size(arrays))
        shapes = tuple((k, a.shape[1:], a.dtype.str) for k, a in sorted(task.arrays.items()))
        key = (id(servable), sig, shapes)
        limit = self.options.execution_batch_size
        with self._cond:
            if self._closed:
                raise RequestError(503, "the server is shutting down; retry on another replica")
            self._start_threads()
            queue = self._queues.setdefault(key, _Queue(servable, sig))
            batches = queue.batches
            if not batches or batches[-1].size + task.size > limit:
                if len(batches) >= self.options.max_enqueued_batches:
                    raise RequestError(
                        503,
                        "The batch scheduling queue to which this task was submitted is full; "
                        "retry later or raise max_enqueued_batches",
                    )
                timeout = self.options.batch_timeout_micros / 1e6
                batches.append(_Batch(deadline=time.monotonic() + timeout))
            batch = batches[-1]
            batch.tasks.append(task)
            batch.size += task.size
            self.requests += 1
            self._cond.notify()
        return task

    # ---------------------------------------------------------------- batch threads

    def _start_threads(self) -> None:
        while len(self._threads) < self.options.num_batch_threads:
            thread = threading.Thread(target=self._work, name="zoo-batching", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _take_ready(self, now: float) -> tuple[_Queue, _Batch] | float | None:
        """A closed batch to run (removed from its queue), else seconds until the next
        deadline (None: nothing queued)."""
        limit = self.options.execution_batch_size
        wait: float | None = None
        for key, queue in self._queues.items():
            first = queue.batches[0]
            if first.size >= limit or len(queue.batches) > 1 or now >= first.deadline:
                queue.batches.popleft()
                del self._queues[key]
                if queue.batches:  # to the back: queues take turns
                    self._queues[key] = queue
                return queue, first
            left = first.deadline - now
            wait = left if wait is None else min(wait, left)
        return wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    ready = self._take_ready(time.monotonic())
                    if isinstance(ready, tuple):
                        break
                    self._cond.wait(ready)
            self._process(*ready)

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        tasks, rows = batch.tasks, batch.size
        padded = next((n for n in self.options.allowed_batch_sizes if n >= rows), rows)
        arrays = {}
        for key in tasks[0].arrays:
            merged = np.concatenate([t.arrays[key] for t in tasks])
            if padded > rows:
                merged = np.concatenate([merged, np.repeat(merged[:1], padded - rows, axis=0)])
            arrays[key] = merged
        try:
            outputs = call_signature(
                queue.servable.signatures[queue.sig],
                arrays,
                queue.servable.inputs[queue.sig],
                queue.sig,
            )
            for name, value in outputs.items():
                if value.ndim == 0:
                    raise RequestError(
                        400, f"Batched output tensor has 0 dimensions (output '{name}')"
                    )
                if value.shape[0] != padded:
                    raise RequestError(
                        400,
                        "Batched output tensor's 0th dimension does not equal the sum of the "
                        f"0th dimension sizes of the input tensors (output '{name}': "
                        f"{value.shape[0]} rows for {padded})",
                    )
            start = 0
            for task in tasks:
                task.outputs = {k: v[start : start + task.size] for k, v in outputs.items()}
                start += task.size
        except RequestError as err:
            for task in tasks:
                task.error = err
        except Exception as err:  # every waiting request must get an answer
            failure = RequestError(500, f"signature '{queue.sig}' failed: {err}")
            for task in tasks:
                task.error = failure
        finally:
            with self._cond:
                self.calls += 1
                self.batch_sizes.append((rows, padded))
            for task in tasks:
                task.done.set()

    def queued(self) -> int:
        """How many requests wait in a batch that has not started."""
        with self._cond:
            return sum(len(b.tasks) for q in self._queues.values() for b in q.batches)

    def close(self) -> None:
        """Stop the batch threads; requests still queued get 503 (idempotent)."""
        with self._cond:
            self._closed = True
            pending = [t for q in self._queues.values() for b in q.batches for t in b.tasks]
            self._queues.clear()
            self._cond.notify_all()
        for task in pending:
            task.error = RequestError(503, "the server is shutting down; retry later")
            task.done.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
