"""Server-side batching (zoo.serving.batching), as TF Serving's ``--enable_batching``.

Requests are merged per (servable version, signature), padded to allowed batch sizes,
split back per request; what TF Serving's batching session refuses is refused before
enqueuing; a full queue is a 503. Merging is made deterministic without sleeping: the
batch timeout is long and a batch closes when it holds ``max_batch_size`` rows.

Isolation: with one merged call per batch, a signature that marks a bad row (NaN for
an out-of-range label) keeps the other clients' answers; one that asserts in the graph
fails every request of the batch.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from model_manager_helpers import export_version, write_config  # noqa: E402
from zoo.serving.batching import BatchingOptions, BatchScheduler  # noqa: E402
from zoo.serving.model_server import ModelServer  # noqa: E402
from zoo.serving.servable import InputSpec, RequestError  # noqa: E402

LONG_WAIT = 30_000_000  # micros: batches here close because they are full, not by timeout
NUM_CLASSES = 3


@dataclass
class ToyServable:
    """A servable whose signatures are plain callables (what BatchScheduler needs)."""

    signatures: dict[str, Any]
    inputs: dict[str, dict[str, InputSpec]]
    name: str = "toy"
    version: int = 1
    seen: list[int] = field(default_factory=list)  # rows of every call


def doubling(**extra_specs: tuple) -> ToyServable:
    specs = {"x": InputSpec("x", tf.float32, (None, 2))}
    specs.update({k: InputSpec(k, tf.float32, shape) for k, shape in extra_specs.items()})
    servable = ToyServable({}, {"double": specs})

    def double(x, **_):
        servable.seen.append(int(x.shape[0]))
        return {"y": x * 2.0}

    servable.signatures["double"] = double
    return servable


def rows(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + 2 * n, dtype=np.float32).reshape(n, 2)


def run_concurrently(scheduler, servable, sig, requests):
    """Answers (or RequestErrors) of ``requests`` sent at once from one thread each."""

    def one(arrays):
        try:
            return scheduler.run(servable, sig, arrays)
        except RequestError as err:
            return err

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def test_concurrent_requests_are_merged_into_one_call_and_split_back():
    servable = doubling()
    n = 6
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=n, batch_timeout_micros=LONG_WAIT))
    try:
        requests = [{"x": rows(1, start=10 * i)} for i in range(n)]
        answers = run_concurrently(scheduler, servable, "double", requests)
    finally:
        scheduler.close()
    assert scheduler.requests == n and scheduler.calls == 1 and servable.seen == [n]
    for request, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer["y"], request["x"] * 2.0)  # as if called alone


def test_batch_is_padded_to_an_allowed_size_and_the_padding_dropped():
    servable = doubling()
    options = BatchingOptions(
        max_batch_size=8, batch_timeout_micros=0, allowed_batch_sizes=(2, 4, 8)
    )
    scheduler = BatchScheduler(options)
    try:
        answer = scheduler.run(servable, "double", {"x": rows(3)})
    finally:
        scheduler.close()
    assert servable.seen == [4] and list(scheduler.batch_sizes) == [(3, 4)]
    np.testing.assert_array_equal(answer["y"], rows(3) * 2.0)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": rows(2), "t": np.float32(0.5)},
            "Batching Run() input tensors must have at least one dimension; input(s) ['t']",
        ),
        (
            {"x": rows(2), "t": np.zeros(3, np.float32)},
            "Batching Run() input tensors must have equal 0th-dimension size; got 't': 3, 'x': 2",
        ),
        ({"x": rows(5)}, "Task size 5 is larger than maximum input batch size 4"),
    ],
    ids=["rank0", "first_dims_disagree", "too_large"],
)
def test_refused_before_enqueuing_as_tf_serving_batching_session(arrays, message):
    servable = doubling(t=(None,))
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
    try:
        with pytest.raises(RequestError) as info:
            scheduler.run(servable, "double", arrays)
    finally:
        scheduler.close()
    assert info.value.status == 400 and message in info.value.message
    assert servable.seen == [] and scheduler.requests == 0


def test_large_batch_splitting_cuts_a_request_into_execution_batches():
    servable = doubling()
    options = BatchingOptions(
        max_batch_size=8,
        batch_timeout_micros=0,
        enable_large_batch_splitting=True,
        max_execution_batch_size=3,
        num_batch_threads=1,
    )
    scheduler = BatchScheduler(options)
    try:
        answer = scheduler.run(servable, "double", {"x": rows(7)})
        with pytest.raises(RequestError, match="Task size 9 is larger"):
            scheduler.run(servable, "double", {"x": rows(9)})
    finally:
        scheduler.close()
    assert sorted(servable.seen) == [1, 3, 3]
    np.testing.assert_array_equal(answer["y"], rows(7) * 2.0)


def test_an_output_without_batch_dimension_fails_the_batch():
    servable = ToyServable(
        {"total": lambda x: {"sum": tf.reduce_sum(x)}},
        {"total": {"x": InputSpec("x", tf.float32, (None, 2))}},
    )
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
    try:
        with pytest.raises(RequestError) as info:
            scheduler.run(servable, "total", {"x": rows(2)})
    finally:
        scheduler.close()
    assert info.value.status == 400
    assert "Batched output tensor has 0 dimensions (output 'sum')" in info.value.message


def test_full_queue_answers_503_like_tf_serving_unavailable():
    started, release = threading.Event(), threading.Event()
    servable = doubling()
    plain = servable.signatures["double"]

    def blocking(x):
        started.set()
        assert release.wait(60)
        return plain(x)

    servable.signatures["double"] = blocking
    options = BatchingOptions(
        max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1
    )
    scheduler = BatchScheduler(options)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(scheduler.run, servable, "double", {"x": rows(1)})
        assert started.wait(60)  # the only batch thread is busy with the first request
        queued = pool.submit(scheduler.run, servable, "double", {"x": rows(1, start=2)})
        never = threading.Event()
        for _ in range(6000):  # up to 60 s for the second request to wait in the one batch
            if scheduler.queued() == 1:
                break
            never.wait(0.01)
        assert scheduler.queued() == 1 and not queued.done()
        with pytest.raises(RequestError) as info:
            scheduler.run(servable, "double", {"x": rows(1, start=4)})
        release.set()
        np.testing.assert_array_equal(running.result(60)["y"], rows(1) * 2.0)
        np.testing.assert_array_equal(queued.result(60)["y"], rows(1, start=2) * 2.0)
    scheduler.close()
    assert info.value.status == 503
    assert "The batch scheduling queue to which this task was submitted is full" in (
        info.value.message
    )


# --------------------------------------------------------------------------- isolation


def labelled_signature(*, assert_in_graph: bool):
    """A generator-like signature taking a class id per example, as an exported
    conditional model does: out-of-range labels give NaN rows, or fail an assertion."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="z"),
            tf.TensorSpec([None], tf.int64, name="labels"),
        ]
    )
    def generate(z, labels):
        valid = (labels >= 0) & (labels < NUM_CLASSES)
        if assert_in_graph:
            tf.debugging.assert_equal(valid, True, message="label out of range")
        shift = tf.where(valid, tf.cast(labels, tf.float32), tf.constant(np.nan, tf.float32))
        return {"images": z * 2.0 + shift[:, None]}

    specs = {
        "z": InputSpec("z", tf.float32, (None, 2)),
        "labels": InputSpec("labels", tf.int64, (None,)),
    }
    return ToyServable({"generate": generate.get_concrete_function()}, {"generate": specs})


def clients_with_one_bad_label(n: int = 5, bad: int = 2) -> list[dict[str, np.ndarray]]:
    requests = [{"z": rows(2, start=4 * i), "labels": np.array([i % 3, 1])} for i in range(n)]
    requests[bad]["labels"] = np.array([7, 0])  # out of range (3 classes)
    return requests


def test_a_bad_label_gives_nan_rows_for_that_client_only():
    servable = labelled_signature(assert_in_graph=False)
    requests = clients_with_one_bad_label()
    rows_total = sum(len(r["z"]) for r in requests)
    options = BatchingOptions(max_batch_size=rows_total, batch_timeout_micros=LONG_WAIT)
    scheduler = BatchScheduler(options)
    try:
        answers = run_concurrently(scheduler, servable, "generate", requests)
    finally:
        scheduler.close()
    assert scheduler.calls == 1  # all five clients shared one signature call
    for i, (request, answer) in enumerate(zip(requests, answers, strict=True)):
        assert not isinstance(answer, RequestError), answer
        expected = request["z"] * 2.0 + request["labels"][:, None].astype(np.float32)
        if i == 2:
            assert np.isnan(answer["images"][0]).all()
            np.testing.assert_array_equal(answer["images"][1], expected[1])
        else:
            np.testing.assert_array_equal(answer["images"], expected)


def test_an_in_graph_assertion_fails_every_merged_request():
    """Why exported signatures mark bad rows instead of asserting: in TF Serving (and
    here) one failing assertion fails the whole merged batch."""
    servable = labelled_signature(assert_in_graph=True)
    requests = clients_with_one_bad_label()
    rows_total = sum(len(r["z"]) for r in requests)
    options = BatchingOptions(max_batch_size=rows_total, batch_timeout_micros=LONG_WAIT)
    scheduler = BatchScheduler(options)
    try:
        answers = run_concurrently(scheduler, servable, "generate", requests)
    finally:
        scheduler.close()
    assert scheduler.calls == 1
    assert all(isinstance(a, RequestError) and a.status == 400 for a in answers)
    assert all("label out of range" in a.message for a in answers)
    alone = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
    try:  # each good request alone passes the same assertion
        assert "images" in alone.run(servable, "generate", requests[0])
    finally:
        alone.close()


# --------------------------------------------------------------------------- ModelServer


def test_model_server_runs_predict_through_the_batch_scheduler(tmp_path: Path):
    export_version(tmp_path / "models" / "toy" / "1", value=1.0)
    config = write_config(tmp_path, "latest { num_versions: 1 }")
    n = 4
    options = BatchingOptions(max_batch_size=n, batch_timeout_micros=LONG_WAIT)
    ms = ModelServer(config, tmp_path / "models", file_system_poll_wait_seconds=0, batching=options)
    try:  # three REST bodies and one gRPC-style call, merged into one signature call
        bodies = [{"instances": rows(1, start=2 * i).tolist()} for i in range(n - 1)]
        with ThreadPoolExecutor(n) as pool:
            grpc_like = pool.submit(ms.predict_arrays, "toy", "", {"x": rows(1, start=20)})
            answers = list(pool.map(lambda b: ms.predict("toy", b), bodies))
            grpc_outputs = grpc_like.result(60)[2]
    finally:
        ms.close()
    assert ms.batcher is not None and ms.batcher.requests == n and ms.batcher.calls == 1
    for body, answer in zip(bodies, answers, strict=True):
        assert answer["predictions"] == [[v + 1.0 for v in body["instances"][0]]]
    np.testing.assert_array_equal(grpc_outputs["y"], rows(1, start=20) + 1.0)


def test_real_cvae_export_isolates_a_bad_label_under_batching(tmp_path: Path):
    """A ``cvae_tiny`` export (labels outside [0, 10) give NaN for that example): five
    clients merged into one ``generate`` call; the one with a bad label gets NaN, the
    others exactly what calling alone gives. Loading also replays its warmup records."""
    from zoo.export import export_model
    from zoo.serving.servable import call_signature

    import zoo

    export_model(
        zoo.load("cvae_tiny"), tmp_path / "models", "toy", threshold=544.0, formats="savedmodel"
    )
    config = write_config(tmp_path, "latest { num_versions: 1 }")
    n, bad = 5, 2
    options = BatchingOptions(max_batch_size=n, batch_timeout_micros=LONG_WAIT)
    ms = ModelServer(config, tmp_path / "models", file_system_poll_wait_seconds=0, batching=options)
    z = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    requests = [{"z": z[i : i + 1], "labels": np.array([i], np.int64)} for i in range(n)]
    requests[bad]["labels"] = np.array([99], np.int64)
    try:
        with ThreadPoolExecutor(n) as pool:
            answers = list(pool.map(lambda r: ms.predict_arrays("toy", "generate", r)[2], requests))
    finally:
        ms.close()
    assert ms.batcher is not None and ms.batcher.calls == 1
    servable = ms.resolve("toy")
    specs = servable.inputs["generate"]
    for i, (request, got) in enumerate(zip(requests, answers, strict=True)):
        (images,) = got.values()
        if i == bad:
            assert np.isnan(images).all()
            continue
        alone = call_signature(servable.signatures["generate"], request, specs, "generate")
        np.testing.assert_allclose(images, next(iter(alone.values())), rtol=1e-6, atol=1e-6)
        assert np.isfinite(images).all()
