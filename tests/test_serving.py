"""The local server speaks TF Serving's REST API; the REST and gRPC clients.

A tiny SavedModel (two versions) is exported with ``keras.export.ExportArchive``
and served from a TF Serving ``models.config`` by ``make_server(port=0)``. Request
and response pairs follow TF Serving's documented formats (api_rest.md); values
are compared with calling the SavedModel's signatures directly.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from zoo.serving import server as server_mod  # noqa: E402
from zoo.serving.client import GrpcServingClient, ServingClient, ServingError  # noqa: E402
from zoo.serving.model_server import ModelServer  # noqa: E402
from zoo.serving.servable import RequestError  # noqa: E402
from zoo.serving.server import ServingHTTPServer, make_server  # noqa: E402

SERVING_DIR = Path(__file__).resolve().parents[1] / "serving"
MAX_BATCH = 16
MAX_BODY = 64 * 1024
THRESHOLD = 0.05


def _export_toy(path: Path, seed: int) -> None:
    """Export generate/score/strings signatures (serving_default = generate) to ``path``."""
    keras.utils.set_random_seed(seed)
    decoder = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="sigmoid"),
            keras.layers.Reshape((4, 4, 1)),
        ]
    )
    encoder = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(8)]
    )
    archive = keras.export.ExportArchive()
    archive.track(decoder)
    archive.track(encoder)

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="z")])
    def generate(z):
        return {"images": decoder(z)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32, name="images")])
    def score(images):
        errors = tf.reduce_mean(tf.square(decoder(encoder(images)) - images), axis=[1, 2, 3])
        threshold = tf.fill(tf.shape(errors), tf.constant(THRESHOLD))
        return {"anomaly_score": errors, "threshold": threshold, "is_anomaly": errors > threshold}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.int32, name="n"),
        ]
    )
    def strings(text, n):
        length = tf.strings.length(text) + n
        return {"length": length, "text_bytes": text, "half": tf.cast(length, tf.bfloat16) / 2}

    archive.add_endpoint("generate", generate)
    archive.add_endpoint("score", score)
    archive.add_endpoint("strings", strings)
    archive.add_endpoint("serving_default", generate)
    archive.write_out(str(path), verbose=False)


CONFIG = """
model_config_list {
  config {
    name: "toy"
    base_path: "/models/toy"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
"""


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """models.config + models root with toy versions 1 and 2, and the SavedModels loaded."""
    root = tmp_path_factory.mktemp("serving")
    models = root / "models"
    for version, seed in ((1, 1), (2, 2)):
        _export_toy(models / "toy" / str(version), seed)
    (models / "toy" / "3").mkdir()  # a half-written export: no saved_model.pb
    config = root / "models.config"
    config.write_text(CONFIG)
    loaded = {v: tf.saved_model.load(str(models / "toy" / str(v))) for v in (1, 2)}
    return {"config": config, "models": models, "loaded": loaded}


@pytest.fixture(scope="session")
def server(toy):
    srv = make_server(
        toy["config"],
        models_root=toy["models"],
        port=0,
        max_batch_size=MAX_BATCH,
        max_request_bytes=MAX_BODY,
    )
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(server, path, payload=None, *, method=None, raw=None):
    """(status, JSON body) of a request to the test server."""
    data = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
    request = urllib.request.Request(server.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def reference(toy, signature, version=2, **inputs):
    fn = toy["loaded"][version].signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def rng_z(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


def rng_images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 4, 4, 1)).astype(np.float32)


def assert_good_request_works(server, toy):
    z = rng_z(2, seed=99)
    status, body = call(server, "/v1/models/toy:predict", {"instances": z.tolist()})
    assert status == 200, body
    np.testing.assert_array_equal(
        np.asarray(body["predictions"], np.float32), reference(toy, "generate", z=z)["images"]
    )


# --------------------------------------------------------------------------- status & metadata


def test_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")
    args = server_mod.build_arg_parser().parse_args(["--model_config_file", "m.config"])
    assert args.rest_api_host == "127.0.0.1"


def test_status_lists_loaded_versions_latest_first(server):
    status, body = call(server, "/v1/models/toy")
    assert status == 200
    ok = {"error_code": "OK", "error_message": ""}
    assert body == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": ok},
            {"version": "1", "state": "AVAILABLE", "status": ok},
        ]
    }


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/toy/versions/1", "1"),
        ("/v1/models/toy/labels/stable", "1"),
        ("/v1/models/toy/labels/canary", "2"),
    ],
)
def test_status_of_one_version_or_label(server, path, version):
    status, body = call(server, path)
    assert status == 200
    assert [s["version"] for s in body["model_version_status"]] == [version]
    assert body["model_version_status"][0]["state"] == "AVAILABLE"


def test_metadata_follows_tf_serving_shape(server):
    status, body = call(server, "/v1/models/toy/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "toy", "signature_name": "", "version": "2"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert {"generate", "score", "strings", "serving_default"} <= set(sigs)
    z = sigs["generate"]["inputs"]["z"]
    assert z["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in z["tensor_shape"]["dim"]] == ["-1", "8"]
    assert z["tensor_shape"]["unknown_rank"] is False
    assert isinstance(z["name"], str) and z["name"].endswith(":0")
    assert sigs["generate"]["method_name"] == "tensorflow/serving/predict"
    images = sigs["generate"]["outputs"]["images"]
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "4", "4", "1"]
    score_out = sigs["score"]["outputs"]
    assert score_out["is_anomaly"]["dtype"] == "DT_BOOL"
    assert score_out["anomaly_score"]["dtype"] == "DT_FLOAT"
    assert set(score_out) == {"anomaly_score", "threshold", "is_anomaly"}
    assert sigs["strings"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert sigs["strings"]["inputs"]["n"]["dtype"] == "DT_INT32"


def test_metadata_by_label_and_version(server):
    assert call(server, "/v1/models/toy/labels/stable/metadata")[1]["model_spec"]["version"] == "1"
    assert call(server, "/v1/models/toy/versions/2/metadata")[1]["model_spec"]["version"] == "2"


# --------------------------------------------------------------------------- predict


def test_row_format_single_input_bare_values(server, toy):
    z = rng_z()
    status, body = call(server, "/v1/models/toy:predict", {"instances": z.tolist()})
    assert status == 200
    assert set(body) == {"predictions"}
    got = np.asarray(body["predictions"], np.float32)
    np.testing.assert_array_equal(got, reference(toy, "generate", z=z)["images"])


def test_row_format_single_input_as_objects(server, toy):
    z = rng_z()
    payload = {"signature_name": "generate", "instances": [{"z": row} for row in z.tolist()]}
    status, body = call(server, "/v1/models/toy:predict", payload)
    assert status == 200
    got = np.asarray(body["predictions"], np.float32)
    np.testing.assert_array_equal(got, reference(toy, "generate", z=z)["images"])


def test_columnar_format_bare_value_and_named(server, toy):
    z = rng_z(4, seed=1)
    expected = reference(toy, "generate", z=z)["images"]
    status, body = call(server, "/v1/models/toy:predict", {"inputs": z.tolist()})
    assert status == 200
    assert set(body) == {"outputs"}
    np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32), expected)
    status, body = call(server, "/v1/models/toy:predict", {"inputs": {"z": z.tolist()}})
    assert status == 200
    # A single output drops its name in TF Serving's columnar response too.
    np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32), expected)


def test_row_format_several_outputs_is_a_list_of_objects(server, toy):
    images = rng_images(3)
    payload = {"signature_name": "score", "instances": images.tolist()}
    status, body = call(server, "/v1/models/toy:predict", payload)
    assert status == 200
    preds = body["predictions"]
    assert isinstance(preds, list) and len(preds) == 3
    assert all(set(p) == {"anomaly_score", "threshold", "is_anomaly"} for p in preds)
    assert all(isinstance(p["is_anomaly"], bool) for p in preds)  # JSON true/false
    ref = reference(toy, "score", images=images)
    np.testing.assert_array_equal(
        np.asarray([p["anomaly_score"] for p in preds], np.float32), ref["anomaly_score"]
    )
    assert [p["is_anomaly"] for p in preds] == ref["is_anomaly"].tolist()


def test_columnar_format_several_outputs_is_an_object(server, toy):
    images = rng_images(2, seed=3)
    payload = {"signature_name": "score", "inputs": {"images": images.tolist()}}
    status, body = call(server, "/v1/models/toy:predict", payload)
    assert status == 200
    out = body["outputs"]
    assert set(out) == {"anomaly_score", "threshold", "is_anomaly"}
    ref = reference(toy, "score", images=images)
    np.testing.assert_array_equal(
        np.asarray(out["anomaly_score"], np.float32), ref["anomaly_score"]
    )
    assert out["threshold"] == pytest.approx([THRESHOLD] * 2)
    assert out["is_anomaly"] == ref["is_anomaly"].tolist()


def test_strings_b64_ints_and_bytes_outputs(server):
    payload = {
        "signature_name": "strings",
        "instances": [
            {"text": "héllo", "n": 1},
            {"text": {"b64": base64.b64encode(b"\x00\xffab").decode()}, "n": 10},
        ],
    }
    status, body = call(server, "/v1/models/toy:predict", payload)
    assert status == 200, body
    preds = body["predictions"]
    assert [p["length"] for p in preds] == [len("héllo".encode()) + 1, 4 + 10]
    assert all(isinstance(p["length"], int) for p in preds)
    assert [p["half"] for p in preds] == [3.5, 7.0]  # bfloat16 outputs as JSON numbers
    # Outputs named *_bytes come back base64-encoded, as TF Serving does.
    assert [base64.b64decode(p["text_bytes"]["b64"]) for p in preds] == [
        "héllo".encode(),
        b"\x00\xffab",
    ]


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/toy/versions/1:predict", 1),
        ("/v1/models/toy/versions/2:predict", 2),
        ("/v1/models/toy/labels/stable:predict", 1),
        ("/v1/models/toy/labels/canary:predict", 2),
        ("/v1/models/toy:predict", 2),
    ],
)
def test_version_and_label_paths_pick_that_version(server, toy, path, version):
    z = rng_z(2, seed=5)
    status, body = call(server, path, {"signature_name": "generate", "inputs": {"z": z.tolist()}})
    assert status == 200
    got = np.asarray(body["outputs"], np.float32)
    np.testing.assert_array_equal(got, reference(toy, "generate", version, z=z)["images"])
    other = reference(toy, "generate", 3 - version, z=z)["images"]
    assert not np.allclose(got, other)  # the two versions really differ


def test_concurrent_requests(server, toy):
    def one(i):
        z = rng_z(2, seed=100 + i)
        status, body = call(server, "/v1/models/toy:predict", {"inputs": {"z": z.tolist()}})
        return status, np.asarray(body["outputs"], np.float32), z

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(16)))
    for status, got, z in results:
        assert status == 200
        np.testing.assert_array_equal(got, reference(toy, "generate", z=z)["images"])


# --------------------------------------------------------------------------- errors


Z2 = np.zeros((2, 8)).tolist()
BAD_REQUESTS = {
    "invalid_json": ("/v1/models/toy:predict", b'{"instances": [1, 2', 400, ["JSON Parse error"]),
    "empty_body": ("/v1/models/toy:predict", b"", 400, ["JSON Parse error"]),
    "not_an_object": ("/v1/models/toy:predict", [1, 2], 400, ["JSON object"]),
    "both": (
        "/v1/models/toy:predict",
        {"instances": Z2, "inputs": Z2},
        400,
        ["only one of 'inputs'", "'instances'"],
    ),
    "neither": (
        "/v1/models/toy:predict",
        {"signature_name": "generate"},
        400,
        ["Missing 'inputs' or 'instances'", "'z' (shape [-1, 8] and dtype float32)"],
    ),
    "wrong_shape": (
        "/v1/models/toy:predict",
        {"inputs": {"z": np.zeros((2, 7)).tolist()}},
        400,
        ["input 'z' expects shape [-1, 8] and dtype float32; got shape [2, 7]"],
    ),
    "wrong_rank": (
        "/v1/models/toy:predict",
        {"instances": [1.0, 2.0]},
        400,
        ["input 'z' expects shape [-1, 8] and dtype float32; got shape [2]"],
    ),
    "strings_for_float": (
        "/v1/models/toy:predict",
        {"instances": [["a"] * 8]},
        400,
        ["input 'z' expects shape [-1, 8] and dtype float32; got strings"],
    ),
    "floats_for_int": (
        "/v1/models/toy:predict",
        {"signature_name": "strings", "inputs": {"text": ["a"], "n": [1.5]}},
        400,
        ["input 'n'", "dtype int32", "non-integer numbers"],
    ),
    "missing_input": (
        "/v1/models/toy:predict",
        {"signature_name": "strings", "inputs": {"text": ["a"]}},
        400,
        ["missing input(s) 'n'", "'text' (shape [-1] and dtype string)"],
    ),
    "unknown_input": (
        "/v1/models/toy:predict",
        {"signature_name": "score", "instances": [{"imgs": np.zeros((4, 4, 1)).tolist()}]},
        400,
        ["missing input(s) 'images'", "unknown input(s) 'imgs'"],
    ),
    "ragged_instances": (
        "/v1/models/toy:predict",
        {"instances": [[0.0] * 8, [0.0] * 7]},
        400,
        ["ragged", "instances[1] has shape [7] but instances[0] has shape [8]"],
    ),
    "ragged_inputs": (
        "/v1/models/toy:predict",
        {"inputs": {"z": [[0.0] * 8, [[0.0] * 8]]}},
        400,
        ["ragged", "inputs['z'][1] has shape [1, 8] but inputs['z'][0] has shape [8]"],
    ),
    "empty_instances": ("/v1/models/toy:predict", {"instances": []}, 400, ["non-empty"]),
    "signature_name_not_string": (
        "/v1/models/toy:predict",
        {"signature_name": 3, "instances": Z2},
        400,
        ["'signature_name' key must be a string"],
    ),
    "batch_too_large_row": (
        "/v1/models/toy:predict",
        {"instances": np.zeros((MAX_BATCH + 1, 8)).tolist()},
        400,
        [f"batch size {MAX_BATCH + 1} is larger than max_batch_size {MAX_BATCH}"],
    ),
    "batch_too_large_columnar": (
        "/v1/models/toy:predict",
        {"inputs": {"z": np.zeros((MAX_BATCH + 5, 8)).tolist()}},
        400,
        [f"batch size {MAX_BATCH + 5} is larger than max_batch_size {MAX_BATCH}"],
    ),
    "unknown_model": (
        "/v1/models/nope:predict",
        {"instances": Z2},
        404,
        ["Servable not found for request: Latest(nope)", "toy"],
    ),
    "unknown_model_status": ("/v1/models/nope", None, 404, ["nope", "toy"]),
    "unknown_version": (
        "/v1/models/toy/versions/3:predict",
        {"instances": Z2},
        404,
        ["Specific(toy, 3)", "loaded versions of 'toy': 1, 2"],
    ),
    "unknown_version_status": ("/v1/models/toy/versions/7", None, 404, ["Specific(toy, 7)"]),
    "bad_version": ("/v1/models/toy/versions/x:predict", {"instances": Z2}, 400, ["version"]),
    # TF Serving answers INVALID_ARGUMENT (HTTP 400) for unknown labels and signatures.
    "unknown_label": (
        "/v1/models/toy/labels/nope:predict",
        {"instances": Z2},
        400,
        ["Unrecognized servable version label: nope", "canary -> 2", "stable -> 1"],
    ),
    "unknown_signature": (
        "/v1/models/toy:predict",
        {"signature_name": "sample", "instances": Z2},
        400,
        [
            'Serving signature name: "sample" not found in signature def',
            "generate, score, serving_default, strings",
        ],
    ),
    "unknown_path": ("/v2/whatever", None, 404, ["/v1/models/{name}"]),
    # TF Serving: every path under /v1/ is its REST API's; one naming no API is 400.
    "unknown_verb": (
        "/v1/models/toy:explain",
        {"instances": Z2},
        400,
        ["Malformed request: POST /v1/models/toy:explain"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_4xx_and_server_keeps_serving(server, toy, case):
    path, payload, expected_status, fragments = BAD_REQUESTS[case]
    raw = payload if isinstance(payload, bytes) else None
    status, body = call(server, path, None if raw is not None else payload, raw=raw)
    assert status == expected_status, body
    assert set(body) == {"error"}
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])
    assert_good_request_works(server, toy)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/v1/models/toy:predict", "POST"), ("POST", "/v1/models/toy", "GET")],
)
def test_wrong_method_is_405(server, toy, method, path, allow):
    request = urllib.request.Request(
        server.url + path, data=b"{}" if method == "POST" else None, method=method
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 405
    assert info.value.headers["Allow"] == allow
    assert "error" in json.loads(info.value.read())
    assert_good_request_works(server, toy)


def test_body_over_max_request_bytes_gets_413(server, toy):
    body = json.dumps({"instances": rng_z(1000).tolist()}).encode()
    assert len(body) > MAX_BODY
    status, payload = call(server, "/v1/models/toy:predict", raw=body)
    assert status == 413
    assert f"at most {MAX_BODY} bytes" in payload["error"]
    assert str(len(body)) in payload["error"]
    assert_good_request_works(server, toy)


def test_oversized_body_is_refused_before_it_is_read(server, toy):
    # Announce 10 GB and send almost nothing: a server that read the body first
    # would wait for it; this one answers from Content-Length alone.
    head = (
        "POST /v1/models/toy:predict HTTP/1.1\r\nHost: test\r\n"
        "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    )
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(head.encode() + b'{"instances": [')
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        headers, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", headers).group(1))
        while len(rest) < length:
            rest += sock.recv(4096)
    assert headers.startswith(b"HTTP/1.1 413")
    assert b"Connection: close" in headers
    assert "at most" in json.loads(rest[:length])["error"]
    assert_good_request_works(server, toy)


def test_no_traceback_for_client_errors(toy, capfd):
    srv = ServingHTTPServer(("127.0.0.1", 0), _shared_model_server(toy), max_batch_size=2)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        for payload in ({"instances": [[1] * 8] * 3}, {"inputs": "x"}, {"instances": [{}]}):
            assert call(srv, "/v1/models/toy:predict", payload)[0] == 400
        assert call(srv, "/v1/models/toy:predict", raw=b"\xff\xfe")[0] == 400
    finally:
        srv.shutdown()
        srv.server_close()
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


_MODEL_SERVER: list[ModelServer] = []


def _shared_model_server(toy) -> ModelServer:
    if not _MODEL_SERVER:
        _MODEL_SERVER.append(ModelServer(toy["config"], toy["models"]))
    return _MODEL_SERVER[0]


def test_model_server_loads_versions_per_policy_and_labels(toy):
    ms = _shared_model_server(toy)
    model = ms.models["toy"]
    assert sorted(model.versions) == [1, 2]  # "3" has no saved_model.pb: ignored
    assert model.labels == {"stable": 1, "canary": 2}
    assert set(model.latest.signatures) == {"generate", "score", "strings", "serving_default"}
    assert "toy v2,1" in ms.summary() and "generate" in ms.summary()


def test_label_on_unloaded_version_refuses_to_start(toy, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(CONFIG.replace("num_versions: 2", "num_versions: 1"))
    with pytest.raises(ValueError, match="allow_version_labels_for_unavailable_models"):
        ModelServer(config, toy["models"])


def _with_pending(tmp_path, labels: str = "") -> Path:
    """The toy config plus a model "pending" whose base path holds no version yet."""
    pending = (
        '  config { name: "pending" base_path: "/models/pending" model_platform: "tensorflow" '
        f"model_version_policy {{ latest {{ num_versions: 2 }} }} {labels}}}\n"
    )
    config = tmp_path / "models.config"
    config.write_text(CONFIG.rstrip()[:-1] + pending + "}\n")  # inside model_config_list
    return config


def test_model_without_versions_does_not_stop_the_server(toy, tmp_path, caplog):
    """TF Serving keeps waiting for a configured model with no version folder; the local
    server starts anyway, serves the others and answers for that one with TF Serving's
    404s (it reads versions at startup only)."""
    with caplog.at_level("WARNING", logger="zoo.serving"):
        ms = ModelServer(_with_pending(tmp_path), toy["models"])
    assert sorted(ms.models) == ["pending", "toy"]
    assert "found no integer-named version folder" in caplog.text
    assert "pending (no versions under" in ms.summary() and "toy v2,1" in ms.summary()
    assert ms.status("toy")["model_version_status"][0]["version"] == "2"
    for call_it, status, message in [
        (lambda: ms.status("pending"), 404, "Could not find any versions of model pending"),
        (lambda: ms.metadata("pending"), 404, "Servable not found for request: Latest(pending)"),
        (
            lambda: ms.predict("pending", {"inputs": {"z": [[0.0] * 8]}}),
            404,
            "Servable not found for request: Latest(pending)",
        ),
        (lambda: ms.predict("pending", {"inputs": []}, version=1), 404, "Specific(pending, 1)"),
        (lambda: ms.resolve("pending", label="stable"), 400, "no version labels"),
    ]:
        with pytest.raises(RequestError) as info:
            call_it()
        assert info.value.status == status and message in info.value.message


def test_labels_on_a_model_without_versions_refuse_to_start(toy, tmp_path):
    config = _with_pending(tmp_path, 'version_labels { key: "stable" value: 1 } ')
    assert 'name: "pending"' in config.read_text()
    with pytest.raises(ValueError, match=r"'pending'.*version_labels need loaded versions"):
        ModelServer(config, toy["models"])
    ms = ModelServer(config, toy["models"], allow_version_labels_for_unavailable_models=True)
    assert ms.models["pending"].labels == {"stable": 1} and not ms.models["pending"].versions


def test_rest_server_starts_with_a_model_without_versions(toy, tmp_path):
    config = _with_pending(tmp_path)
    server = make_server(config, models_root=toy["models"], port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert call(server, "/v1/models/pending")[0] == 404
        status, body = call(server, "/v1/models/toy")
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- REST client


def test_client_generate_and_score_match_the_model(server, toy):
    client = ServingClient(server.url, model="toy")
    z = rng_z(3, seed=7)
    images = client.generate(z)
    assert isinstance(images, np.ndarray) and images.dtype == np.float32
    np.testing.assert_array_equal(images, reference(toy, "generate", z=z)["images"])
    scores, verdicts = client.score(images)
    ref = reference(toy, "score", images=images)
    assert scores.dtype == np.float32 and verdicts.dtype == np.bool_
    np.testing.assert_array_equal(scores, ref["anomaly_score"])
    np.testing.assert_array_equal(verdicts, ref["is_anomaly"])


@pytest.mark.parametrize("columnar", [True, False])
def test_client_predict_row_and_columnar(server, toy, columnar):
    client = ServingClient(server.url, model="toy")
    images = rng_images(2, seed=8)
    out = client.predict({"images": images}, "score", version=1, columnar=columnar)
    ref = reference(toy, "score", version=1, images=images)
    assert set(out) == set(ref)
    for key, value in ref.items():
        assert out[key].dtype == value.dtype
        np.testing.assert_array_equal(out[key], value)


def test_client_strings_and_labels(server):
    client = ServingClient(server.url, model="toy")
    out = client.predict(
        {"text": np.array([b"ab", b"\x00\xff\x01"], dtype=object), "n": np.array([1, 2], np.int32)},
        "strings",
        label="stable",
    )
    assert out["length"].tolist() == [3, 5] and out["length"].dtype == np.int32
    assert out["text_bytes"].tolist() == [b"ab", b"\x00\xff\x01"]


def test_client_status_metadata_and_wait(server):
    client = ServingClient(server.url, model="toy", timeout=5)
    assert client.wait_until_available(timeout=5)["model_version_status"][0]["version"] == "2"
    assert client.status(label="stable")["model_version_status"][0]["version"] == "1"
    assert client.metadata(version=1)["model_spec"]["version"] == "1"


@pytest.mark.parametrize(
    ("model", "kwargs", "status", "fragment"),
    [
        ("nope", {}, 404, "Servable not found"),
        ("toy", {"version": 9}, 404, "Specific(toy, 9)"),
        ("toy", {"label": "nope"}, 400, "Unrecognized servable version label"),
        ("toy", {"signature_name": "nope"}, 400, "not found in signature def"),
    ],
)
def test_client_raises_serving_error_with_status(server, model, kwargs, status, fragment):
    client = ServingClient(server.url, model=model)
    with pytest.raises(ServingError) as info:
        client.predict({"z": rng_z(1)}, **kwargs)
    assert info.value.status == status
    assert fragment in info.value.message


def test_client_shape_error_carries_server_text(server):
    with pytest.raises(ServingError) as info:
        ServingClient(server.url, model="toy").generate(np.zeros((2, 5)))
    assert info.value.status == 400
    assert "expects shape [-1, 8]" in info.value.message and "[2, 5]" in info.value.message


def test_client_unreachable_server(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    client = ServingClient(f"http://127.0.0.1:{port}", model="toy", timeout=2)
    with pytest.raises(ConnectionError):
        client.status()
    with pytest.raises(TimeoutError, match="not AVAILABLE"):
        client.wait_until_available(timeout=0.3, interval=0.1)


# --------------------------------------------------------------------------- gRPC client


def test_grpc_request_building():
    client = GrpcServingClient("127.0.0.1:8500", model="dcgan")
    z = rng_z(2)
    labels = np.array([3, 7], np.int32)
    request = client.build_request({"z": z, "labels": labels}, "generate", version=4)
    assert request.model_spec.name == "dcgan"
    assert request.model_spec.signature_name == "generate"
    assert request.model_spec.version.value == 4
    assert request.model_spec.WhichOneof("version_choice") == "version"
    assert set(request.inputs) == {"z", "labels"}
    assert request.inputs["z"].dtype == tf.float32.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["z"]), z)
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["labels"]), labels)
    by_label = client.build_request({"z": z}, label="stable")
    assert by_label.model_spec.version_label == "stable"
    assert by_label.model_spec.signature_name == "serving_default"
    assert client.build_request({"z": z}).model_spec.WhichOneof("version_choice") is None
    with pytest.raises(ValueError, match="not both"):
        client.build_request({"z": z}, version=1, label="stable")


def _predict_response(outputs):
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "conv_ae"
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


def test_grpc_response_parsing_and_score():
    scores = np.array([0.1, 0.9], np.float32)
    verdicts = np.array([False, True])
    response = _predict_response(
        {"anomaly_score": scores, "is_anomaly": verdicts, "threshold": np.full(2, 0.5, np.float32)}
    )
    parsed = GrpcServingClient.parse_response(response)
    np.testing.assert_array_equal(parsed["anomaly_score"], scores)
    assert parsed["is_anomaly"].dtype == np.bool_

    sent = []

    class FakeStub:
        def Predict(self, request, timeout):
            sent.append((request, timeout))
            return response

    client = GrpcServingClient(model="conv_ae", timeout=3.0)
    client._stub = FakeStub()
    images = rng_images(2)
    got_scores, got_verdicts = client.score(images)
    np.testing.assert_array_equal(got_scores, scores)
    np.testing.assert_array_equal(got_verdicts, verdicts)
    request, timeout = sent[0]
    assert timeout == 3.0 and request.model_spec.signature_name == "score"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), images)


def test_grpc_score_sequences_sends_sequences_and_returns_step_scores():
    steps = np.array([[0.1, 0.0], [0.4, 0.6]], np.float32)
    response = _predict_response(
        {
            "anomaly_score": steps.mean(axis=1),
            "is_anomaly": np.array([False, True]),
            "threshold": np.full(2, 0.3, np.float32),
            "step_scores": steps,
        }
    )
    sent = []

    class FakeStub:
        def Predict(self, request, timeout):
            sent.append(request)
            return response

    client = GrpcServingClient(model="recurrent_ae")
    client._stub = FakeStub()
    sequences = np.zeros((2, 2, 3), np.float64)  # sent as float32
    scores, verdicts, step_scores = client.score_sequences(sequences, version=2)
    np.testing.assert_array_equal(step_scores, steps)
    assert verdicts.tolist() == [False, True] and scores.dtype == np.float32
    (request,) = sent
    assert request.model_spec.signature_name == "score" and request.model_spec.version.value == 2
    assert list(request.inputs) == ["sequences"]
    assert request.inputs["sequences"].dtype == tf.float32.as_datatype_enum


def test_grpc_errors_become_serving_errors():
    import grpc

    class Error(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.NOT_FOUND

        def details(self):
            return "Servable not found for request: Latest(dcgan)"

    class FailingStub:
        def Predict(self, request, timeout):
            raise Error()

    client = GrpcServingClient(model="dcgan")
    client._stub = FailingStub()
    with pytest.raises(ServingError) as info:
        client.generate(rng_z(1))
    assert info.value.status == 404 and info.value.grpc_code == "NOT_FOUND"
    assert "Servable not found" in info.value.message


# --------------------------------------------------------------------------- main()


def test_main_arg_parsing_defaults_and_required():
    parser = server_mod.build_arg_parser()
    args = parser.parse_args(["--model_config_file", "serving/models.config"])
    assert args.rest_api_port == 8501
    assert args.rest_api_host == "127.0.0.1"
    assert args.models_root is None
    assert args.max_batch_size is None
    assert args.max_request_bytes == server_mod.DEFAULT_MAX_REQUEST_BYTES
    args = parser.parse_args(
        ["--model_config_file=x", "--rest_api_port=0", "--max_batch_size=8", "--models_root=/m"]
    )
    assert (args.rest_api_port, args.max_batch_size, args.models_root) == (0, 8, "/m")
    with pytest.raises(SystemExit):
        parser.parse_args([])


def test_main_reports_config_errors_without_traceback(tmp_path, capsys):
    assert server_mod.main(["--model_config_file", str(tmp_path / "missing.config")]) == 2
    err = capsys.readouterr().err
    assert "missing.config" in err and "not found" in err and "Traceback" not in err
    config = tmp_path / "models.config"
    config.write_text(CONFIG)
    assert server_mod.main(["--model_config_file", str(config), "--rest_api_port", "0"]) == 2
    err = capsys.readouterr().err
    assert "model 'toy'" in err and "saved_model.pb" in err


def test_main_serves_and_prints_one_line(toy):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [
        sys.executable,
        "-m",
        "zoo.serving.server",
        f"--model_config_file={toy['config']}",
        f"--models_root={toy['models']}",
        "--rest_api_port=0",
        "--port=0",
        "--enable_batching",
        f"--batching_parameters_file={SERVING_DIR / 'batching_parameters.txt'}",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    try:
        line = proc.stdout.readline()
        assert "toy v2,1" in line and "generate, score, serving_default, strings" in line
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        client = ServingClient(url, model="toy")
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
        # --enable_batching applied the batching file's max_batch_size (64).
        with pytest.raises(ServingError, match="max_batch_size 64"):
            client.generate(np.zeros((65, 8), np.float32))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
