"""TF Serving's gRPC API beside the REST API (issue 15): one contract, two clients.

One ``make_server(port=0, grpc_port=0)`` serves the toy model of tests/test_serving.py
over REST and gRPC. The ``client`` fixture runs every contract test with
:class:`ServingClient` (columnar and row requests) and :class:`GrpcServingClient`:
values equal the SavedModel's, and every refusal has the same HTTP-equivalent status
and message under both. Raw stub tests cover what only gRPC has (Classify, Regress,
MultiInference, GetModelStatus protos, unknown methods, message size).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
grpc = pytest.importorskip("grpc")

from test_serving import (  # noqa: E402
    MAX_BATCH,
    MAX_BODY,
    SERVING_DIR,
    THRESHOLD,
    reference,
    rng_images,
    rng_z,
    toy,  # noqa: F401  (fixture)
)
from zoo.serving import server as server_mod  # noqa: E402
from zoo.serving.client import GrpcServingClient, ServingClient, ServingError  # noqa: E402
from zoo.serving.server import make_server  # noqa: E402


@pytest.fixture(scope="module")
def servers(toy):  # noqa: F811
    """REST and gRPC on one ModelServer, both on free ports."""
    srv = make_server(
        toy["config"],
        models_root=toy["models"],
        port=0,
        grpc_port=0,
        max_batch_size=MAX_BATCH,
        max_request_bytes=MAX_BODY,
        monitoring_config_file=SERVING_DIR / "monitoring.config",
    )
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class RowClient(ServingClient):
    """The REST client sending row-format (``instances``) requests."""

    def predict(self, inputs, signature_name="serving_default", version=None, label=None):
        return super().predict(inputs, signature_name, version, label, columnar=False)


CLIENTS = {
    "rest": lambda srv, model: ServingClient(srv.url, model=model),
    "rest-rows": lambda srv, model: RowClient(srv.url, model=model),
    "grpc": lambda srv, model: GrpcServingClient(srv.grpc_server.target, model=model),
}


@pytest.fixture(params=sorted(CLIENTS))
def client(request, servers):
    made = CLIENTS[request.param](servers, "toy")
    yield made
    if isinstance(made, GrpcServingClient):
        made.close()


@pytest.fixture
def rest(servers):
    return ServingClient(servers.url, model="toy")


@pytest.fixture
def grpc_client(servers):
    made = GrpcServingClient(servers.grpc_server.target, model="toy")
    yield made
    made.close()


# --------------------------------------------------------------------------- contract: values


def test_generate_and_score_equal_the_saved_model(client, toy):  # noqa: F811
    z = rng_z(3, seed=1)
    np.testing.assert_allclose(
        client.generate(z), reference(toy, "generate", z=z)["images"], rtol=1e-6, atol=1e-7
    )
    images = rng_images(4, seed=2)
    scores, verdicts = client.score(images)
    want = reference(toy, "score", images=images)
    assert scores.dtype == np.float32 and verdicts.dtype == np.bool_
    np.testing.assert_allclose(scores, want["anomaly_score"], rtol=1e-6)
    np.testing.assert_array_equal(verdicts, want["anomaly_score"] > THRESHOLD)


def test_default_signature_and_all_outputs(client, toy):  # noqa: F811
    z = rng_z(2, seed=3)
    out = client.predict({"z": z})
    assert set(out) == {"images"}
    np.testing.assert_allclose(out["images"], reference(toy, "generate", z=z)["images"], rtol=1e-6)
    images = rng_images(2, seed=4)
    out = client.predict({"images": images}, "score")
    assert set(out) == {"anomaly_score", "threshold", "is_anomaly"}
    np.testing.assert_allclose(out["threshold"], [THRESHOLD, THRESHOLD])


def test_strings_and_bytes_round_trip(client):
    text = np.array([b"abc", b"\xff\x00 binary", "héllo".encode()], dtype=object)
    out = client.predict({"text": text, "n": np.array([1, 2, 3], np.int32)}, "strings")
    assert out["text_bytes"].tolist() == text.tolist()
    assert out["length"].tolist() == [4, 11, 9]  # bytes, not characters, plus n
    np.testing.assert_allclose(np.asarray(out["half"], np.float32), [2.0, 5.5, 4.5])


@pytest.mark.parametrize(
    ("version", "label", "answers"), [(1, None, 1), (None, "stable", 1), (None, "canary", 2)]
)
def test_versions_and_labels_pick_the_same_model(client, toy, version, label, answers):  # noqa: F811
    z = rng_z(2, seed=5)
    got = client.generate(z, version=version, label=label)
    np.testing.assert_allclose(
        got, reference(toy, "generate", version=answers, z=z)["images"], rtol=1e-6
    )


def test_wait_until_available_returns_the_status(client):
    status = client.wait_until_available(timeout=10)
    assert [s["state"] for s in status["model_version_status"]] == ["AVAILABLE", "AVAILABLE"]


# --------------------------------------------------------------------------- contract: agreement


@pytest.mark.parametrize(
    ("version", "label"), [(None, None), (1, None), (None, "canary"), (None, "stable")]
)
def test_status_and_metadata_agree_between_rest_and_grpc(rest, grpc_client, version, label):
    assert grpc_client.status(version, label) == rest.status(version, label)
    via_grpc = grpc_client.metadata(version, label)
    assert via_grpc == rest.metadata(version, label)
    assert via_grpc["model_spec"]["version"] == ("1" if version == 1 or label == "stable" else "2")
    defs = via_grpc["metadata"]["signature_def"]["signature_def"]
    assert defs["generate"]["inputs"]["z"]["dtype"] == "DT_FLOAT"
    assert defs["strings"]["method_name"] == "tensorflow/serving/predict"


def _refusal(call):
    with pytest.raises(ServingError) as info:
        call()
    return info.value


Z = rng_z(2)
REFUSALS = {
    "unknown model": ("nope", lambda c: c.predict({"z": Z})),
    "unknown model status": ("nope", lambda c: c.status()),
    "unknown model metadata": ("nope", lambda c: c.metadata()),
    "unknown version": ("toy", lambda c: c.predict({"z": Z}, version=7)),
    "unknown version status": ("toy", lambda c: c.status(version=7)),
    "unknown version metadata": ("toy", lambda c: c.metadata(version=7)),
    "unknown label": ("toy", lambda c: c.predict({"z": Z}, label="beta")),
    "unknown label status": ("toy", lambda c: c.status(label="beta")),
    "unknown signature": ("toy", lambda c: c.predict({"z": Z}, "sample")),
    "missing input": (
        "toy",
        lambda c: c.predict({"text": np.array([b"a"], object)}, "strings"),
    ),
    "wrong shape": ("toy", lambda c: c.predict({"z": np.zeros((2, 5), np.float32)})),
    "wrong rank": ("toy", lambda c: c.predict({"z": np.zeros((2, 8, 1), np.float32)})),
    "batch too large": ("toy", lambda c: c.predict({"z": rng_z(MAX_BATCH + 1)})),
    "wrong dtype": ("toy", lambda c: c.predict({"z": np.full((1, 8), b"x", object)})),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_refusal_is_the_same_under_rest_and_grpc(servers, case):
    model, call = REFUSALS[case]
    grpc_client = GrpcServingClient(servers.grpc_server.target, model=model)
    try:
        via_grpc = _refusal(lambda: call(grpc_client))
    finally:
        grpc_client.close()
    via_rest = _refusal(lambda: call(ServingClient(servers.url, model=model)))
    assert via_grpc.status == via_rest.status != 500
    assert via_grpc.grpc_code in ("INVALID_ARGUMENT", "NOT_FOUND")
    if case == "missing input":  # the REST codec says where: 'inputs: missing input(s) ...'
        assert via_rest.message == f"inputs: {via_grpc.message}"
    elif case == "wrong dtype":  # JSON has no dtypes: REST says what the values were
        prefix = "input 'z' expects shape [-1, 8] and dtype float32; got "
        assert via_rest.message.startswith(prefix) and via_grpc.message.startswith(prefix)
    else:
        assert via_grpc.message == via_rest.message
    assert via_grpc.message  # never an empty detail


def test_refusal_texts_name_the_problem(servers):
    messages = {}
    for case in ("unknown model", "unknown label", "batch too large", "wrong dtype"):
        model, call = REFUSALS[case]
        made = GrpcServingClient(servers.grpc_server.target, model=model)
        messages[case] = _refusal(lambda made=made, call=call: call(made)).message
        made.close()
    assert messages["unknown model"].startswith("Servable not found for request: Latest(nope)")
    assert "Unrecognized servable version label: beta" in messages["unknown label"]
    assert f"larger than max_batch_size {MAX_BATCH}" in messages["batch too large"]
    assert messages["wrong dtype"].endswith("got dtype object")


# --------------------------------------------------------------------------- gRPC only: raw stubs


@pytest.fixture
def stubs(servers):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(servers.grpc_server.target)
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
        channel,
    )
    channel.close()


def _rpc_error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


def test_predict_response_model_spec_is_filled_as_tf_serving(stubs):
    from tensorflow_serving.apis import predict_pb2

    prediction, _, _ = stubs
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.signature_name = ""  # empty: serving_default
    request.inputs["z"].CopyFrom(tf.make_tensor_proto(rng_z(1)))
    response = prediction.Predict(request, timeout=30)
    assert response.model_spec.name == "toy"
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 2
    request.model_spec.version_label = "stable"
    assert prediction.Predict(request, timeout=30).model_spec.version.value == 1


def test_predict_output_filter(stubs):
    from tensorflow_serving.apis import predict_pb2

    prediction, _, _ = stubs
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.signature_name = "score"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(rng_images(2)))
    request.output_filter.append("is_anomaly")
    assert list(prediction.Predict(request, timeout=30).outputs) == ["is_anomaly"]
    request.output_filter.append("nope")
    code, details = _rpc_error(prediction.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("output tensor alias not found in signature: nope")


def test_classify_regress_and_multi_inference_refuse_predict_signatures(stubs):
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        regression_pb2,
    )

    prediction, _, _ = stubs
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "toy"
    code, details = _rpc_error(prediction.Classify, classify)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "toy"
    regress.model_spec.signature_name = "score"
    code, details = _rpc_error(prediction.Regress, regress)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("Expected regression signature method_name to be")
    classify.model_spec.signature_name = "nope"
    code, details = _rpc_error(prediction.Classify, classify)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("No signature was found with the name: nope")
    classify.model_spec.name = "missing"
    assert _rpc_error(prediction.Classify, classify)[0] == grpc.StatusCode.NOT_FOUND
    assert _rpc_error(prediction.Classify, classification_pb2.ClassificationRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )

    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.name = "toy"
    task.method_name = "tensorflow/serving/classify"
    code, details = _rpc_error(prediction.MultiInference, multi)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("Expected classification signature method_name")
    task.method_name = "tensorflow/serving/predict"
    code, details = _rpc_error(prediction.MultiInference, multi)
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert details == "Unsupported signature method_name: tensorflow/serving/predict"


@pytest.mark.parametrize(
    ("api", "kind"), [("classify", "classification"), ("regress", "regression")]
)
@pytest.mark.parametrize("signature", ["score", "nope"])
def test_classify_and_regress_refusals_match_rest(servers, stubs, api, kind, signature):
    import json

    from tensorflow_serving.apis import classification_pb2, regression_pb2

    prediction, _, _ = stubs
    body = json.dumps({"signature_name": signature, "examples": [{"x": 1.0}]}).encode()
    request = urllib.request.Request(f"{servers.url}/v1/models/toy:{api}", data=body)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    rest_status, rest_message = info.value.code, json.loads(info.value.read())["error"]
    proto = (
        classification_pb2.ClassificationRequest
        if api == "classify"
        else regression_pb2.RegressionRequest
    )()
    proto.model_spec.name = "toy"
    proto.model_spec.signature_name = signature
    code, details = _rpc_error(getattr(prediction, api.capitalize()), proto)
    assert rest_status == 400 and code == grpc.StatusCode.INVALID_ARGUMENT
    # One text, as TF Serving's; only where to send the request instead differs.
    head = (
        f"Expected {kind} signature method_name to be tensorflow/serving/{api}. Was: "
        "tensorflow/serving/predict (signature 'score' of model 'toy'); "
        if signature == "score"
        else "No signature was found with the name: nope; model 'toy' version 2 has signatures: "
    )
    assert rest_message.startswith(head) and details.startswith(head)
    if signature == "score":
        assert rest_message.endswith("POST /v1/models/toy:predict instead")
        assert details.endswith("call Predict for it instead")
    else:
        assert rest_message == details


def test_get_model_status_proto_and_reload_config(stubs):
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_management_pb2,
    )

    _, model, _ = stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "toy"
    response = model.GetModelStatus(request, timeout=30)
    got = [(s.version, s.state, s.status.error_code) for s in response.model_version_status]
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert got == [(2, available, 0), (1, available, 0)]
    request.model_spec.version.value = 9
    code, details = _rpc_error(model.GetModelStatus, request)
    assert code == grpc.StatusCode.NOT_FOUND and "Specific(toy, 9)" in details
    code, details = _rpc_error(
        model.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()
    )
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert "HandleReloadConfigRequest is not supported" in details and "restart" in details


def test_metadata_needs_the_signature_def_field(stubs):
    from tensorflow_serving.apis import get_model_metadata_pb2

    prediction, _, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "toy"
    code, details = _rpc_error(prediction.GetModelMetadata, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least one metadata_field" in details
    request.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == "toy" and response.model_spec.version.value == 2
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    assert sig_map.signature_def["score"].outputs["is_anomaly"].dtype == tf.bool.as_datatype_enum
    request.metadata_field.append("graph")
    code, details = _rpc_error(prediction.GetModelMetadata, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("Metadata field graph is not supported")


def test_unknown_methods_are_unimplemented(stubs):
    _, _, channel = stubs
    for method in ("/tensorflow.serving.PredictionService/Nope", "/no.such.Service/Predict"):
        call = channel.unary_unary(method)
        code, _ = _rpc_error(call, b"")
        assert code == grpc.StatusCode.UNIMPLEMENTED


def test_a_message_over_the_request_limit_is_resource_exhausted(grpc_client):
    text = np.array([b"x" * (MAX_BODY + 1)], dtype=object)
    with pytest.raises(ServingError) as info:
        grpc_client.predict({"text": text, "n": np.array([1], np.int32)}, "strings")
    assert info.value.grpc_code == "RESOURCE_EXHAUSTED" and info.value.status == 429
    assert grpc_client.generate(rng_z(1)).shape == (1, 4, 4, 1)  # still serving


def test_unreachable_grpc_server_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    made = GrpcServingClient(f"127.0.0.1:{port}", model="toy", timeout=2)
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        made.status()
    with pytest.raises(TimeoutError, match="not AVAILABLE"):
        made.wait_until_available(timeout=0.3, interval=0.1)
    made.close()


# --------------------------------------------------------------------------- make_server, CLI


def test_grpc_requests_are_counted_with_entrypoint_grpc(servers, grpc_client):
    grpc_client.generate(rng_z(1))
    with pytest.raises(ServingError):
        grpc_client.predict({"z": rng_z(1)}, version=7)
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(servers.url + "/monitoring/prometheus/metrics") as response:
        families = text_string_to_metric_families(response.read().decode())
    counts = {
        (s.labels["API"], s.labels["signature_name"], s.labels["status"]): s.value
        for family in families
        for s in family.samples
        if s.name == ":tensorflow:serving:request_count_total"
        and s.labels["entrypoint"] == "GRPC"
        and s.labels["model_name"] == "toy"
    }
    assert counts[("predict", "generate", "200")] >= 1
    assert counts[("predict", "serving_default", "404")] >= 1


def test_shutdown_stops_both_apis_and_a_taken_port_is_an_error(toy, capsys):  # noqa: F811
    srv = make_server(toy["config"], models_root=toy["models"], port=0, grpc_port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    target = srv.grpc_server.target
    made = GrpcServingClient(target, model="toy", timeout=5)
    assert made.status()["model_version_status"][0]["state"] == "AVAILABLE"
    argv = [f"--model_config_file={toy['config']}", f"--models_root={toy['models']}"]
    argv += ["--rest_api_port=0", f"--port={srv.grpc_server.port}"]
    assert server_mod.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"zoo serve: error: cannot bind the gRPC port {target}: Address already in use; "
        "choose another --port"
    )
    srv.shutdown()
    srv.server_close()
    thread.join(10)
    with pytest.raises(ConnectionError):
        made.status()
    made.close()
    assert make_server.__kwdefaults__["grpc_port"] is None  # gRPC only when asked for


def test_zoo_serve_port_flag_and_started_line(toy):  # noqa: F811
    args = server_mod.build_arg_parser().parse_args(["--model_config_file", "m.config"])
    assert args.port == 8500 and args.rest_api_port == 8501  # tensorflow_model_server's
    command = [
        sys.executable,
        "-m",
        "zoo.serving.server",
        f"--model_config_file={toy['config']}",
        f"--models_root={toy['models']}",
        "--rest_api_port=0",
        "--port=0",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    try:
        line = proc.stdout.readline()
        rest_url = re.search(r"REST API at (http://127\.0\.0\.1:\d+)/v1/models/<name>", line)
        grpc_target = re.search(r"gRPC API at (127\.0\.0\.1:\d+)", line)
        assert rest_url and grpc_target, line
        made = GrpcServingClient(grpc_target.group(1), model="toy")
        assert made.status() == ServingClient(rest_url.group(1), model="toy").status()
        made.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_servers_unavailable_is_a_serving_error_not_a_connection_error():
    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "The batch scheduling queue to which this task was submitted is full"

    class FullStub:
        def Predict(self, request, timeout):
            raise Unavailable()

    made = GrpcServingClient(model="toy")
    made._stub = FullStub()
    with pytest.raises(ServingError) as info:
        made.generate(rng_z(1))
    assert info.value.status == 503 and info.value.grpc_code == "UNAVAILABLE"
