"""The model manager follows TF Serving's: version lifecycle with warmup, base-path
polling under the version policy, availability-preserving hot swaps.

Versions are tiny SavedModels answering ``x + value`` (tests/model_manager_helpers.py),
so every answer says which version served it. Waits are on the manager's condition
(``ModelServer.wait_until``) or events, with timeouts, never fixed sleeps.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from model_manager_helpers import MODEL, export_version, write_config
from zoo.serving import versions
from zoo.serving.model_server import ModelServer
from zoo.serving.servable import RequestError
from zoo.serving.server import make_server

X = np.array([[1.0, 2.0]], np.float32)
GOOD_WARMUP = {"serving_default": {"x": X}, "checked": {"x": X * 3}}
BAD_WARMUP = {"checked": {"x": -X}}  # the in-graph check refuses negative inputs
TIMEOUT = 120.0


def answer(ms: ModelServer, **where) -> float:
    """``x + value`` minus x: the value of the version that served the request."""
    out = ms.predict(MODEL, {"instances": X.tolist()}, **where)
    return out["predictions"][0][0] - float(X[0, 0])


def states(ms: ModelServer) -> dict[int, str]:
    return {int(s["version"]): s["state"] for s in ms.status(MODEL)["model_version_status"]}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "models" / MODEL


def manager(tmp_path: Path, policy: str, labels: str = "", **options) -> ModelServer:
    options.setdefault("file_system_poll_wait_seconds", 0)
    config = write_config(tmp_path, policy, labels)
    return ModelServer(config, tmp_path / "models", **options)


# --------------------------------------------------------------------------- 1. lifecycle, warmup


def test_warmup_records_are_replayed_before_the_version_is_available(tmp_path, base, monkeypatch):
    export_version(base / "1", value=1.0, warmup=GOOD_WARMUP)
    replayed = []
    real_call = versions.call_signature

    def counting(fn, arrays, specs, sig):
        replayed.append((sig, arrays["x"].tolist()))
        return real_call(fn, arrays, specs, sig)

    monkeypatch.setattr(versions, "call_signature", counting)
    ms = manager(tmp_path, "latest { num_versions: 1 }")
    assert sorted(replayed) == [("checked", (X * 3).tolist()), ("serving_default", X.tolist())]
    assert ms.status(MODEL) == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert answer(ms) == 1.0


def test_failing_warmup_fails_the_load_and_the_previous_version_keeps_serving(tmp_path, base):
    export_version(base / "1", value=1.0, warmup=GOOD_WARMUP)
    ms = manager(tmp_path, "latest { num_versions: 1 }")
    export_version(base / "2", value=2.0, warmup=BAD_WARMUP)
    ms.poll()
    body = ms.status(MODEL)["model_version_status"]
    assert [(s["version"], s["state"]) for s in body] == [("2", "END"), ("1", "AVAILABLE")]
    error = body[0]["status"]
    assert error["error_code"] == "INVALID_ARGUMENT"
    assert "warmup record 0 of" in error["error_message"]
    assert "x must be >= 0" in error["error_message"]
    assert answer(ms) == 1.0  # latest is still version 1
    with pytest.raises(RequestError) as info:
        answer(ms, version=2)
    assert info.value.status == 404 and "Specific(toy, 2)" in info.value.message
    ms.poll()  # a failed version is not retried while its folder stays
    assert states(ms) == {2: "END", 1: "AVAILABLE"}


def test_requests_never_reach_a_version_before_its_warmup_finished(tmp_path, base, monkeypatch):
    export_version(base / "1", value=1.0)
    ms = manager(tmp_path, "latest { num_versions: 1 }")
    export_version(base / "2", value=2.0, warmup=GOOD_WARMUP)
    warming, release = threading.Event(), threading.Event()
    real_warm_up = versions.warm_up

    def held_warm_up(servable):
        warming.set()
        assert release.wait(TIMEOUT)
        return real_warm_up(servable)

    monkeypatch.setattr(versions, "warm_up", held_warm_up)
    poller = threading.Thread(target=ms.poll)
    poller.start()
    try:
        assert warming.wait(TIMEOUT)
        assert states(ms) == {2: "LOADING", 1: "AVAILABLE"}
        assert [answer(ms) for _ in range(3)] == [1.0] * 3  # latest is still 1
        with pytest.raises(RequestError, match=r"Specific\(toy, 2\)"):
            answer(ms, version=2)
    finally:
        release.set()
        poller.join(TIMEOUT)
    assert states(ms) == {2: "AVAILABLE", 1: "END"}
    assert answer(ms) == 2.0


# --------------------------------------------------------------------------- 2. polling, policies


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("latest { num_versions: 2 }", {3: "AVAILABLE", 2: "AVAILABLE", 1: "END"}),
        ("specific { versions: 1 versions: 3 }", {3: "AVAILABLE", 1: "AVAILABLE"}),
        ("all {}", {3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"}),
    ],
)
def test_polling_applies_the_version_policy(tmp_path, base, policy, expected):
    export_version(base / "1", value=1.0)
    ms = manager(tmp_path, policy)
    assert states(ms) == {1: "AVAILABLE"}
    export_version(base / "2", value=2.0)
    export_version(base / "3", value=3.0)
    ms.poll()
    assert states(ms) == expected
    assert answer(ms) == 3.0


def test_labels_keep_working_and_a_label_on_an_unloaded_version_answers_404(tmp_path, base):
    export_version(base / "1", value=1.0)
    export_version(base / "2", value=2.0)
    labels = 'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
    ms = manager(tmp_path, "latest { num_versions: 2 }", labels)
    assert answer(ms, label="stable") == 1.0 and answer(ms, label="canary") == 2.0
    export_version(base / "3", value=3.0)
    ms.poll()
    assert states(ms) == {3: "AVAILABLE", 2: "AVAILABLE", 1: "END"}
    assert answer(ms, label="canary") == 2.0
    with pytest.raises(RequestError) as info:  # TF Serving: the label names version 1
        answer(ms, label="stable")
    assert info.value.status == 404
    assert "Servable not found for request: Specific(toy, 1)" in info.value.message
    # GetModelStatus resolves the label to its version and reports that version's state
    assert ms.status(MODEL, label="stable")["model_version_status"][0]["state"] == "END"
    with pytest.raises(RequestError) as info:
        ms.status(MODEL, label="nope")
    assert info.value.status == 400 and "Unrecognized servable version label: nope" in (
        info.value.message
    )


def test_a_model_without_versions_becomes_available_when_a_complete_one_appears(tmp_path, base):
    ms = manager(tmp_path, "latest { num_versions: 1 }")
    with pytest.raises(RequestError, match="Could not find any versions of model toy"):
        ms.status(MODEL)
    (base / "1" / "variables").mkdir(parents=True)  # an export still being written
    ms.poll()
    with pytest.raises(RequestError, match=r"Latest\(toy\)"):
        answer(ms)
    (base / "1" / "variables").rmdir()
    (base / "1").rmdir()
    export_version(base / "1", value=1.0)
    ms.poll()
    assert states(ms) == {1: "AVAILABLE"} and answer(ms) == 1.0


def test_the_poll_thread_picks_up_a_new_version_and_close_stops_it(tmp_path, base):
    export_version(base / "1", value=1.0)
    ms = manager(tmp_path, "latest { num_versions: 1 }", file_system_poll_wait_seconds=0.05)
    assert ms._poller is not None and ms._poller.is_alive()
    export_version(base / "2", value=2.0)
    assert ms.wait_until(lambda: ms.state(MODEL, 1) == "END", TIMEOUT)
    assert states(ms) == {2: "AVAILABLE", 1: "END"}
    ms.close()
    assert not ms._poller.is_alive()
    ms.close()  # idempotent


def test_poll_wait_zero_reads_the_base_path_once(tmp_path, base):
    export_version(base / "1", value=1.0)
    ms = manager(tmp_path, "latest { num_versions: 1 }", file_system_poll_wait_seconds=0)
    assert ms._poller is None
    export_version(base / "2", value=2.0)
    assert not ms.wait_until(lambda: ms.state(MODEL, 2) is not None, 0.2)
    assert answer(ms) == 1.0


# --------------------------------------------------------------------------- 3. hot swap


def swap_under_load(send, ms: ModelServer, base: Path, clients: int = 4) -> dict[str, object]:
    """Clients send requests to the latest version without pause while version 2 is
    renamed into the base path; returns failures and values each client saw."""
    stop = threading.Event()
    all_running = threading.Barrier(clients + 1, timeout=TIMEOUT)  # each has one answer
    seen: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []

    def client(i: int) -> None:
        while not stop.is_set() or 2.0 not in seen[i]:
            try:
                seen[i].append(send())
            except Exception as err:
                failures.append(repr(err))
                all_running.abort()
                return
            if len(seen[i]) == 1:
                all_running.wait()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    all_running.wait()
    export_version(base / "2", value=2.0, warmup=GOOD_WARMUP)
    swapped = ms.wait_until(lambda: ms.state(MODEL, 1) == "END", TIMEOUT)
    stop.set()
    for thread in threads:
        thread.join(TIMEOUT)
    return {"swapped": swapped, "failures": failures, "seen": seen}


def check_swap(result: dict, ms: ModelServer) -> None:
    assert result["swapped"] and result["failures"] == []
    for values in result["seen"]:
        assert values[0] == 1.0 and values[-1] == 2.0 and set(values) == {1.0, 2.0}
        first_new = values.index(2.0)
        assert set(values[first_new:]) == {2.0}, "an answer went back to the old version"
    assert states(ms) == {2: "AVAILABLE", 1: "END"}


def test_hot_swap_through_the_model_server_fails_no_request(tmp_path, base):
    export_version(base / "1", value=1.0, warmup=GOOD_WARMUP)
    ms = manager(tmp_path, "latest { num_versions: 1 }", file_system_poll_wait_seconds=0.05)
    try:
        result = swap_under_load(lambda: answer(ms), ms, base)
    finally:
        ms.close()
    check_swap(result, ms)


def test_hot_swap_through_the_rest_server_fails_no_request(tmp_path, base):
    export_version(base / "1", value=1.0, warmup=GOOD_WARMUP)
    config = write_config(tmp_path, "latest { num_versions: 1 }")
    server = make_server(config, models_root=tmp_path / "models", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    body = json.dumps({"instances": X.tolist()}).encode()

    def send() -> float:
        request = urllib.request.Request(f"{server.url}/v1/models/{MODEL}:predict", data=body)
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            return json.loads(response.read())["predictions"][0][0] - float(X[0, 0])

    ms = server.model_server
    try:
        assert send() == 1.0
        result = swap_under_load(send, ms, base)
    finally:
        server.shutdown()
        server.server_close()
        ms.close()
    check_swap(result, ms)


# --------------------------------------------------------------------------- zoo serve flags


def test_zoo_serve_flags_reach_the_model_server(tmp_path, base):
    from zoo.serving import server as server_mod
    from zoo.serving.batching import BatchingOptions

    parse = server_mod.build_arg_parser().parse_args
    args = parse(["--model_config_file", "m.config"])
    assert args.file_system_poll_wait_seconds == 1  # TF Serving's default
    assert server_mod._batching(args) is None
    batching_file = Path(server_mod.__file__).parent / "batching_parameters.txt"
    args = parse(
        [
            "--model_config_file=m.config",
            "--enable_batching",
            f"--batching_parameters_file={batching_file}",
        ]
    )
    options = server_mod._batching(args)
    assert options == BatchingOptions(
        max_batch_size=64, batch_timeout_micros=2000, num_batch_threads=2, max_enqueued_batches=100
    )
    export_version(base / "1", value=1.0)
    config = write_config(tmp_path, "latest { num_versions: 1 }")
    server = make_server(
        config,
        models_root=tmp_path / "models",
        port=0,
        file_system_poll_wait_seconds=0.05,
        batching=options,
    )
    ms = server.model_server
    poller = ms._poller
    assert ms.batcher is not None and ms.batcher.options == options
    assert poller is not None and poller.is_alive()
    server.server_close()  # closes the model server: polling stops
    assert not poller.is_alive()


@pytest.mark.parametrize(
    ("current", "aspired", "action"),
    [
        ({1: "AVAILABLE"}, {2}, ("load", 2)),  # keep 1 until 2 is AVAILABLE
        ({1: "AVAILABLE", 2: "AVAILABLE"}, {2}, ("unload", 1)),
        ({1: "AVAILABLE", 2: "AVAILABLE"}, {3}, ("unload", 1)),  # two unselected: lowest goes
        ({1: "AVAILABLE"}, set(), ("unload", 1)),  # nothing selected (folder removed)
        ({1: "AVAILABLE", 2: "END!"}, {2}, None),  # 2 failed: 1 keeps serving, no retry
        ({1: "END", 3: "AVAILABLE"}, {1, 3}, ("load", 1)),  # unloaded earlier, selected again
        ({2: "AVAILABLE"}, {1, 2, 3}, ("load", 3)),  # highest new version first
    ],
)
def test_next_action_is_tf_serving_availability_preserving_policy(current, aspired, action):
    states = {
        v: versions.VersionStatus("END", "UNKNOWN", "x")
        if s == "END!"
        else versions.VersionStatus(s)
        for v, s in current.items()
    }
    assert versions.next_action(states, aspired) == action
