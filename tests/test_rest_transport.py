"""The REST transport of ``zoo serve`` (serving/rest_server.py) behaves like TF Serving's.

Keep-alive without delayed-ACK stalls, a listen backlog that holds 64 waiting clients,
chunked bodies, 408 for a stalled body, JSON for every method and every error
(including aiohttp's own), TF Serving's path rules (400 "Malformed request" under
/v1/, case-insensitive keywords, :classify on a predict signature), the default batch
limit, and Prometheus metrics at the monitoring config's path. The model is the model
manager tests' toy (``y = x + version``).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("aiohttp")

from model_manager_helpers import MODEL, export_version, write_config
from prometheus_client.parser import text_string_to_metric_families
from zoo.serving.model_server import ModelServer
from zoo.serving.rest_server import ServingHTTPServer
from zoo.serving.servable import DEFAULT_MAX_BATCH_SIZE
from zoo.serving.server import build_arg_parser, make_server

SERVING_DIR = Path(__file__).resolve().parents[1] / "serving"
PREDICT = f"/v1/models/{MODEL}:predict"
ONE = json.dumps({"instances": [[1.0, 2.0]]}).encode()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("transport")
    export_version(root / "models" / MODEL / "1", 10.0)
    ms = ModelServer(
        write_config(root, "latest { num_versions: 1 }"),
        root / "models",
        file_system_poll_wait_seconds=0,
    )
    yield ms
    ms.close()


class Running:
    """A :class:`ServingHTTPServer` on a free port, served from a thread."""

    def __init__(self, model_server: ModelServer, *, start: bool = True, **options) -> None:
        self.server = ServingHTTPServer(("127.0.0.1", 0), model_server, **options)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        if start:
            self.thread.start()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(model_server):
    with Running(model_server, metrics_path="/metrics") as running:
        yield running.server


def request(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) on a fresh connection."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def error_of(headers, body) -> str:
    assert headers["Content-Type"].startswith("application/json"), headers["Content-Type"]
    payload = json.loads(body)
    assert set(payload) == {"error"}
    return payload["error"]


def raw_exchange(server, data: bytes, *, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """Send raw bytes; return (status line and headers, body) of the one response."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk
            body += chunk
    return head, body


def assert_still_serving(server) -> None:
    status, _, body = request(server, "POST", PREDICT, ONE)
    assert status == 200 and json.loads(body) == {"predictions": [[11.0, 12.0]]}


# --------------------------------------------------------------------------- connections


def test_keep_alive_reuses_one_connection_without_stalls(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.connect()
    sock = conn.sock
    latencies = []
    for i in range(25):
        start = time.perf_counter()
        conn.request("GET", f"/v1/models/{MODEL}")
        response = conn.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - start)
        assert response.status == 200 and json.loads(body)["model_version_status"]
        if i % 5 == 0:
            conn.request("POST", PREDICT, body=ONE)
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["predictions"]
    assert conn.sock is sock  # every request went over the first connection
    conn.close()
    # A delayed-ACK stall (headers and body in separate segments, Nagle on) costs ~40 ms.
    median = statistics.median(latencies[5:])
    print(f"status GET on a reused connection: median {median * 1000:.2f} ms")
    assert median < 0.010


def test_backlog_holds_64_clients_until_the_server_accepts(model_server):
    """64 clients connect before the server accepts anything (a backlog of 5 drops
    their SYNs); once it serves, every one is answered."""
    with Running(model_server, start=False) as running:
        srv = running.server
        socks = [socket.create_connection(srv.server_address[:2], timeout=1.0) for _ in range(64)]
        for sock in socks:
            sock.sendall(
                b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(ONE)).encode() + b"\r\n\r\n" + ONE
            )
        running.thread.start()
        answers = []
        for sock in socks:
            sock.settimeout(30)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            sock.close()
            answers.append(data)
    assert len(answers) == 64
    for data in answers:
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"predictions": [[11.0, 12.0]]}


def test_chunked_request_body_is_accepted(server):
    parts = [b'{"instances": ', b"[[1.0, 2.0],", b" [3.0, 4.0]]}"]
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("POST", PREDICT, body=iter(parts), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read()) == {"predictions": [[11.0, 12.0], [13.0, 14.0]]}
    conn.close()


def test_stalled_body_gets_408_after_the_timeout(model_server):
    with Running(model_server, timeout_ms=300) as running:
        srv = running.server
        start = time.perf_counter()
        head, body = raw_exchange(
            srv,
            b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"instances": [',
        )
        elapsed = time.perf_counter() - start
        assert head.startswith(b"HTTP/1.1 408")
        assert b"application/json" in head and b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert "300 ms" in error and "--rest_api_timeout_in_ms" in error
        assert 0.25 < elapsed < 5
        assert_still_serving(srv)


def test_oversized_chunked_body_gets_413_and_100_continue_is_answered(server):
    limit = 2048
    with Running(server.model_server, max_request_bytes=limit) as running:
        srv = running.server
        chunk = b"x" * 1000
        data = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
        head, body = raw_exchange(
            srv,
            b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + data,
        )
        assert head.startswith(b"HTTP/1.1 413")
        assert f"at most {limit} bytes (--max_request_bytes)" in json.loads(body)["error"]
        with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
            sock.sendall(
                b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: " + str(len(ONE)).encode() + b"\r\n\r\n"
            )
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(ONE)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_client_disconnecting_mid_request_hurts_nobody(server, capfd):
    head = b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: "
    for data in (
        head + b"500\r\n\r\n" + b'{"instances": [[1.0',  # body cut off
        head + str(len(ONE)).encode() + b"\r\n\r\n" + ONE,  # gone before the answer
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost",  # headers cut off
    ):
        sock = socket.create_connection(server.server_address[:2], timeout=10)
        sock.sendall(data)
        sock.close()
    assert_still_serving(server)
    time.sleep(0)  # let the loop log whatever it logs
    assert_still_serving(server)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


# --------------------------------------------------------------------------- TF Serving's rules


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
def test_other_methods_get_json_405_with_allow(server, method):
    for path, allow in ((f"/v1/models/{MODEL}", "GET"), (PREDICT, "POST")):
        status, headers, body = request(server, method, path)
        assert status == 405 and headers["Allow"] == allow
        assert f"takes {allow}, not {method}" in error_of(headers, body)
    status, headers, body = request(server, method, "/elsewhere")
    assert status == 404 and "Not found" in error_of(headers, body)


def test_head_gets_405_headers_without_a_body(server):
    status, headers, body = request(server, "HEAD", f"/v1/models/{MODEL}")
    assert (status, headers["Allow"], body) == (405, "GET", b"")
    assert headers["Content-Type"].startswith("application/json")
    # GET and POST swapped: the path exists, so 405 names the method it takes.
    status, headers, body = request(server, "GET", PREDICT)
    assert status == 405 and headers["Allow"] == "POST" and error_of(headers, body)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", f"/V1/MODELS/{MODEL}/VERSIONS/1", 200),
        ("GET", f"/v1/Models/{MODEL}/Versions/1/metadata", 200),
        ("POST", f"/V1/models/{MODEL}/Versions/1:predict", 200),
        ("GET", f"/v1/models/{MODEL.upper()}", 404),  # model names keep their case
        ("POST", f"/v1/models/{MODEL}:PREDICT", 400),  # API names are lower case
        ("GET", f"/v1/models/{MODEL}/METADATA", 400),
    ],
)
def test_paths_match_case_insensitively_like_tf_serving(server, method, path, expected):
    status, _headers, body = request(server, method, path, ONE if method == "POST" else None)
    assert status == expected, body
    if expected == 200:
        payload = json.loads(body)
        assert (
            "predictions" in payload
            or "model_version_status" in payload
            or (payload["model_spec"]["version"] == "1")
        )


@pytest.mark.parametrize(
    ("method", "path", "fragment"),
    [
        (
            "POST",
            f"/v1/models/{MODEL}:explain",
            f"Malformed request: POST /v1/models/{MODEL}:explain",
        ),
        ("GET", f"/v1/models/{MODEL}/versions/x", "Malformed request: GET"),
        ("POST", f"/v1/models/{MODEL}/versions/-1:predict", "Malformed request: POST"),
        ("GET", "/v1/models/", "Malformed request: GET /v1/models/"),
        ("GET", f"/v1/models/{MODEL}/versions/1/labels/a", "Malformed request"),
        ("GET", "/v1/whatever", "Malformed request: GET /v1/whatever"),
        ("GET", "/v1/models", "Missing model name in request."),
        ("GET", f"/v1/models/{MODEL}/versions/99999999999999999999", "Failed to convert version"),
    ],
)
def test_malformed_paths_get_400(server, method, path, fragment):
    status, headers, body = request(server, method, path, ONE if method == "POST" else None)
    assert status == 400 and fragment in error_of(headers, body)


def test_paths_outside_v1_get_json_404(server):
    status, headers, body = request(server, "GET", "/v2/models/toy")
    assert status == 404 and "/v1/models/{name}" in error_of(headers, body)


@pytest.mark.parametrize("api", ["classify", "regress"])
def test_classify_and_regress_on_a_predict_signature_get_400(server, api):
    status, headers, body = request(server, "POST", f"/v1/models/{MODEL}:{api}", ONE)
    error = error_of(headers, body)
    assert status == 400
    assert f"tensorflow/serving/{api}" in error and "tensorflow/serving/predict" in error
    assert "serving_default" in error and f"/v1/models/{MODEL}:predict" in error
    status, headers, body = request(server, "POST", f"/v1/models/nope:{api}", ONE)
    assert status == 404 and "Servable not found" in error_of(headers, body)


def test_batch_size_has_a_default_limit(server):
    assert server.max_batch_size == DEFAULT_MAX_BATCH_SIZE == 1024
    big = json.dumps({"instances": [[0.0, 0.0]] * (DEFAULT_MAX_BATCH_SIZE + 1)}).encode()
    status, headers, body = request(server, "POST", PREDICT, big)
    error = error_of(headers, body)
    assert status == 400 and "larger than max_batch_size 1024" in error
    assert "--max_batch_size" in error
    ok = json.dumps({"instances": [[0.0, 0.0]] * DEFAULT_MAX_BATCH_SIZE}).encode()
    assert request(server, "POST", PREDICT, ok)[0] == 200


@pytest.mark.parametrize("number", ["1e400", "-1E+309", "9" * 400 + ".5"])
def test_number_beyond_a_double_is_a_json_parse_error(server, number):
    body = ('{"instances": [[' + number + ", 1e308]]}").encode()
    status, headers, payload = request(server, "POST", PREDICT, body)
    assert status == 400
    assert error_of(headers, payload).startswith(
        "JSON Parse error: Number too big to be stored in double"
    )
    tiny = b'{"instances": [[1e-400, 2.5e+2]]}'  # underflow is 0, as in a double
    status, _, payload = request(server, "POST", PREDICT, tiny)
    assert status == 200 and json.loads(payload) == {"predictions": [[10.0, 260.0]]}


@pytest.mark.parametrize(
    "data",
    [
        b"NOT A REQUEST LINE\r\n\r\n",
        b"GET /v1/models/toy HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n",
        b"GET /v1/models/toy HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
        b"BREW /v1/models/toy HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
    ids=["request_line", "header_too_long", "bad_header", "bad_content_length", "unknown_method"],
)
def test_protocol_errors_are_json_too(server, data, capfd):
    head, body = raw_exchange(server, data)
    assert re.match(rb"HTTP/1\.[01] 400 ", head), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"].startswith("Bad Request")
    assert_still_serving(server)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


# --------------------------------------------------------------------------- metrics


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_by_model_api_signature_and_status(model_server):
    with Running(model_server, metrics_path="/monitoring/prometheus/metrics") as running:
        srv = running.server
        for _ in range(3):
            assert request(srv, "POST", PREDICT, ONE)[0] == 200
        bad = json.dumps({"signature_name": "checked", "instances": [[-1.0, 0.0]]}).encode()
        assert request(srv, "POST", PREDICT, bad)[0] == 400
        assert request(srv, "GET", f"/v1/models/{MODEL}")[0] == 200
        assert request(srv, "GET", "/v1/models/unknown_model")[0] == 404
        status, headers, body = request(srv, "GET", "/monitoring/prometheus/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = _samples(body.decode())

    def labels(api, sig, status, model=MODEL):
        return tuple(
            sorted(
                {
                    "model_name": model,
                    "API": api,
                    "signature_name": sig,
                    "entrypoint": "REST",
                    "status": str(status),
                }.items()
            )
        )

    count = ":tensorflow:serving:request_count_total"
    latency = ":tensorflow:serving:request_latency"
    assert samples[(count, labels("predict", "serving_default", 200))] == 3
    assert samples[(count, labels("predict", "checked", 400))] == 1
    assert samples[(count, labels("status", "", 200))] == 1
    assert samples[(count, labels("status", "", 404, model=""))] == 1  # unknown: no label
    assert samples[(latency + "_count", labels("predict", "serving_default", 200))] == 3
    assert samples[(latency + "_sum", labels("predict", "serving_default", 200))] > 0  # in µs
    inf = (*labels("predict", "serving_default", 200), ("le", "+Inf"))
    assert samples[(latency + "_bucket", tuple(sorted(inf)))] == 3


def test_metrics_path_comes_from_the_monitoring_config(model_server, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_server.config_path.read_text())
    off = tmp_path / "off.config"
    off.write_text('prometheus_config { enable: false path: "/m" }\n')
    for monitoring, path in (
        (SERVING_DIR / "monitoring.config", "/monitoring/prometheus/metrics"),
        (off, None),
        (None, None),
    ):
        srv = make_server(
            config,
            models_root=model_server.models_root,
            port=0,
            monitoring_config_file=monitoring,
        )
        srv.server_close()
        assert srv.metrics_path == path


def test_without_monitoring_config_there_is_no_metrics_path(model_server):
    with Running(model_server) as running:
        srv = running.server
        status, headers, body = request(srv, "GET", "/monitoring/prometheus/metrics")
    assert status == 404 and error_of(headers, body)


# --------------------------------------------------------------------------- CLI


def test_serve_help_lists_the_flags_and_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for flag in (
        "--rest_api_num_threads",
        "--rest_api_timeout_in_ms",
        "--max_request_bytes",
        "--max_batch_size",
        "--monitoring_config_file",
    ):
        assert flag in text
    assert "(default: 30000)" in text and f"(default: {32 * 1024 * 1024})" in text
    assert f"None: {DEFAULT_MAX_BATCH_SIZE}" in text
    args = build_arg_parser().parse_args(["--model_config_file=m", "--rest_api_num_threads=3"])
    assert (args.rest_api_num_threads, args.rest_api_timeout_in_ms) == (3, 30000)
