"""Bad requests never break the REST server: a corpus of malformed HTTP and JSON.

Every request is sent as raw bytes over a socket (so framing, headers and encodings
are exactly what the case says) to a server made by ``make_server(port=0)`` over a
tiny exported model. Each must get a 4xx answer with ``Content-Type: application/json``
and a body ``{"error": "..."}``, and a good request right after it must still work.
A body that stops short of its announced length gets 408 after the server's body
timeout (1 s here).

The corpus (:func:`bad_requests`) and the checks (:func:`exchange`, :func:`problem`)
need only the standard library; ``bench/serving_load.py`` sends the same corpus to a
server under load.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

MODEL = "toy"
INPUT = "z"
WIDTH = 8
MAX_BATCH = 16
MAX_BODY = 64 * 1024
DEEP = 600  # nesting depth TF Serving refuses with 400; the old server answered 500
STALL_MS = 1000  # the server's --rest_api_timeout_in_ms: a body that stops arriving gets 408

CONFIG = f"""
model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "/models/{MODEL}"
    model_platform: "tensorflow"
  }}
}}
"""


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class BadRequest:
    """One bad request: its id and the exact bytes sent."""

    id: str
    data: bytes


def http(
    method: str,
    path: str,
    body: bytes | str | None = None,
    *,
    headers: Iterable[str] = (),
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    """A request in bytes: request line, Host, the given headers, Content-Length of
    ``body`` (unless ``length`` is False) and the body."""
    data = body.encode() if isinstance(body, str) else body
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1", *headers]
    if data is not None and length:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (data or b"")


def chunked(*chunks: bytes, end: bytes = b"0\r\n\r\n") -> bytes:
    """A chunked body made of ``chunks``, then ``end`` (the last chunk and trailers)."""
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + end


def good_body(width: int = WIDTH, rows: int = 1) -> str:
    """A valid predict body for a ``[None, width]`` float input."""
    return json.dumps({"instances": [[0.25] * width] * rows})


def bad_requests(
    model: str = MODEL,
    input_name: str = INPUT,
    width: int = WIDTH,
    *,
    max_request_bytes: int = MAX_BODY,
    max_batch_size: int = MAX_BATCH,
) -> list[BadRequest]:
    """The corpus, for a model whose ``serving_default`` takes one float input
    ``input_name`` of shape ``[None, width]``. Every request is wrong whatever the
    server's leniency (e.g. case-insensitive paths still name an unknown model). Three
    bodies stop short of their length and wait for the server's body timeout."""
    status, predict = f"/v1/models/{model}", f"/v1/models/{model}:predict"
    good = good_body(width)
    row = [0.25] * width
    cases: list[BadRequest] = []

    def add(id: str, data: bytes) -> None:
        cases.append(BadRequest(id, data))

    def post(id: str, body: bytes | str, path: str = predict, **kw) -> None:
        add(id, http("POST", path, body, **kw))

    def post_json(id: str, payload: object) -> None:
        post(id, json.dumps(payload))

    # Request lines.
    for id, line in [
        ("line-garbage", b"GARBAGE"),
        ("line-method-only", b"GET"),
        ("line-http09", b"GET /v1/models/nope"),
        ("line-version-9.9", b"GET /v1/models/nope HTTP/9.9"),
        ("line-version-garbage", b"GET /v1/models/nope HTTP/x.y"),
        ("line-version-lowercase", b"GET /v1/models/nope http/1.1"),
        ("line-extra-token", b"GET /v1/models/nope HTTP/1.1 extra"),
        ("line-leading-space", b" GET /v1/models/nope HTTP/1.1"),
        ("line-double-spaces", b"GET  /v1/models/nope  HTTP/1.1"),
        ("line-tabs", b"GET\t/v1/models/nope\tHTTP/1.1"),
        ("line-lowercase-method", b"get /v1/models/nope HTTP/1.1"),
        ("line-no-leading-slash", b"GET v1/models/nope HTTP/1.1"),
        ("line-nul", b"GET /v1/models/\x00 HTTP/1.1"),
        ("line-non-utf8", b"GET /v1/models/\xff\xfe HTTP/1.1"),
        ("line-long-uri", b"GET /v1/models/" + b"a" * 20000 + b" HTTP/1.1"),
        ("line-http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM"),
    ]:
        add(id, line + b"\r\nHost: 127.0.0.1\r\n\r\n")
    add("line-crlf-then-garbage", b"\r\n\r\nBLAH\r\n\r\n")
    add("line-tls-hello", bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\r\n\r\n")
    add("line-absolute-uri", http("GET", "http://127.0.0.1/v1/models/nope"))
    add("line-asterisk", http("GET", "*"))
    add("line-http10", http("GET", "/v1/models/nope", version="HTTP/1.0"))

    # Paths (GET), including mixed case that names nothing served.
    for path in [
        "/",
        "/v1",
        "/v1/models",
        "/v1/models/",
        "/v2/models/toy",
        "/v1/models//versions/1",
        f"{status}/versions/",
        f"{status}/versions/abc",
        f"{status}/versions/-1",
        f"{status}/versions/1.5",
        f"{status}/versions/99999999999999999999999999",
        f"{status}/versions/%D9%A3",  # an Arabic-Indic digit three
        f"{status}/versions/7",
        f"{status}/labels/",
        f"{status}/labels/nope",
        f"{status}/versions/1/labels/stable",
        f"{status}/metadata/extra",
        f"{status}/versions/1/metadata/metadata",
        f"{status}%00",
        "/v1/models/nope/metadata",
        "/v1/models/../../etc/passwd",
        "/v1/models/%zz",
        "/v1/models/nope?x=%ff",
        f"/V1/MODELS/{model.upper()}",
        f"/v1/Models/{model.title()}/Metadata",
        f"{status}/VERSIONS/9",
        f"{status}/Labels/NOPE",
        f"{status}/versions/1:predict/x",
        predict,  # GET on predict
        f"{status}/metadata:predict",
    ]:
        add(f"path-get-{path}", http("GET", path))

    # Verbs (POST with a good body unless the path is the problem).
    for verb in ["classify", "regress", "foo", "", ":predict", "predict:predict", "Classify"]:
        post(f"verb-:{verb}", good, f"{status}:{verb}")
    post("verb-:PREDICT-empty-body", "", f"{status}:PREDICT")
    post("verb-version-classify", good, f"{status}/versions/1:classify")
    post("verb-unknown-label", good, f"{status}/labels/nope:predict")
    post("verb-unknown-version", good, f"{status}/versions/9:predict")
    post("verb-unknown-model", good, "/v1/models/nope:predict")
    post("verb-mixed-case-model", good, f"/V1/Models/{model.upper()}:predict")
    post("verb-on-metadata", good, f"{status}/metadata:predict")
    post("verb-status-path", good, status)

    # Every other HTTP method, on the status path and on predict.
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "PROPFIND"]:
        add(f"method-{method}-status", http(method, status))
        add(f"method-{method}-predict", http(method, predict, good))
    add("method-HEAD-predict", http("HEAD", predict))
    add("method-HEAD-unknown", http("HEAD", "/v1/models/nope"))
    add("method-CONNECT", http("CONNECT", "127.0.0.1:443"))
    add("method-OPTIONS-asterisk", http("OPTIONS", "*"))

    # JSON that does not parse.
    for id, body in [
        ("json-empty", ""),
        ("json-whitespace", " \r\n\t "),
        ("json-truncated", '{"instances": [[0.1, '),
        ("json-open-brace", "{"),
        ("json-close-brace", "}"),
        ("json-trailing-garbage", good + "x"),
        ("json-two-documents", good + good),
        ("json-single-quotes", good.replace('"', "'")),
        ("json-lowercase-nan", '{"instances": [[nan]]}'),
        ("json-inf-token", '{"instances": [[Inf]]}'),
        ("json-raw-control-char", '{"signature_name": "\x01", "instances": [[0.1]]}'),
        ("json-deep-arrays", '{"instances": ' + "[" * DEEP + "]" * DEEP + "}"),
        ("json-deep-objects", '{"a": ' * DEEP + "1" + "}" * DEEP),
        ("json-very-deep", "[" * 20000 + "]" * 20000),
        ("json-5000-digit-number", '{"instances": [[' + "1" * 5000 + "]]}"),
    ]:
        post(id, body)
    for id, body in [
        ("utf8-invalid-body", b"\xff\xfe\xfd"),
        ("utf8-invalid-in-string", b'{"signature_name": "\xc3\x28", "instances": [[0.1]]}'),
        ("utf8-latin1-body", '{"signature_name": "caf\xe9"}'.encode("latin-1")),
    ]:
        post(id, body)

    # JSON that parses but is not a valid predict request.
    for id, payload in [
        ("req-top-level-array", [row]),
        ("req-top-level-string", "instances"),
        ("req-top-level-null", None),
        ("req-top-level-number", 42),
        ("req-neither-key", {}),
        ("req-misspelt-key", {"instance": [row]}),
        ("req-only-signature", {"signature_name": "serving_default"}),
        ("req-both-keys", {"instances": [row], "inputs": [row]}),
        ("req-instances-null", {"instances": None}),
        ("req-instances-string", {"instances": "abc"}),
        ("req-instances-number", {"instances": 5}),
        ("req-instances-object", {"instances": {input_name: [row]}}),
        ("req-inputs-null", {"inputs": None}),
        ("req-inputs-unknown-name", {"inputs": {"nope": [row]}}),
        ("req-inputs-wrong-width", {"inputs": {input_name: [[*row, 0.1]]}}),
        ("req-unknown-signature", {"signature_name": "nope", "instances": [row]}),
        ("req-signature-not-string", {"signature_name": 42, "instances": [row]}),
        ("req-signature-lone-surrogate", {"signature_name": "\ud800", "instances": [row]}),
        ("req-float-1e39", {"instances": [[1e39] * width]}),
        ("req-float-minus-1e39", {"instances": [[-1e39] * width]}),
        ("req-strings-for-floats", {"instances": [[str(v) for v in row]]}),
        ("req-nulls-for-floats", {"instances": [[None] * width]}),
        ("req-objects-for-floats", {"instances": [[{}] * width]}),
        ("req-lists-for-floats", {"instances": [[[]] * width]}),
        ("req-b64-for-floats", {"instances": [{"b64": "AAAA"}]}),
        ("req-b64-garbage", {"instances": [{input_name: {"b64": "!!not base64!!"}}]}),
        ("req-ragged", {"instances": [row, row[:-1]]}),
        ("req-too-wide", {"instances": [[*row, 0.1]]}),
        ("req-too-narrow", {"instances": [row[:-1]]}),
        ("req-rank-1", {"instances": row}),
        ("req-rank-3", {"instances": [[row]]}),
        ("req-empty-rows", {"instances": [[]]}),
        ("req-row-objects-missing-input", {"instances": [{"nope": row}]}),
        ("req-row-objects-mixed-keys", {"instances": [{input_name: row}, {"nope": row}]}),
        ("req-rows-mixed-kinds", {"instances": [{input_name: row}, row]}),
        ("req-batch-too-large", {"instances": [row] * (max_batch_size + 1)}),
    ]:
        post_json(id, payload)
    post("req-nan-instances", '{"instances": NaN}')
    post("req-nan-wrong-width", '{"instances": [[NaN]]}')
    post("req-float-1e400", '{"instances": [[' + ", ".join(["1e400"] * width) + "]]}")
    rows = max_request_bytes // len(json.dumps(row)) + 1
    post("req-body-too-large", good_body(width, rows))

    # Framing: Content-Length and Transfer-Encoding.
    bad = '{"instances": [[0.1]]}'
    for id, value in [
        ("length-letters", "abc"),
        ("length-negative", "-5"),
        ("length-fraction", "1.5"),
        ("length-hex", "0x10"),
        ("length-plus", f"+{len(bad)}"),
        ("length-list", f"{len(bad)}, {len(bad)}"),
    ]:
        add(id, http("POST", predict, headers=[f"Content-Length: {value}"]) + bad.encode())
    add(
        "length-duplicate-different",
        http("POST", predict, headers=["Content-Length: 3", "Content-Length: 5"]) + b"{}{}}",
    )
    add(
        "length-huge",
        http("POST", predict, headers=["Content-Length: 99999999999999999999"]) + b"{",
    )
    add(
        "length-above-limit-short-body",
        http("POST", predict, headers=[f"Content-Length: {max_request_bytes + 1}"]) + b"{",
    )
    add(
        "length-longer-than-body",
        http("POST", predict, headers=["Content-Length: 100"]) + b'{"instances": ',
    )
    add(
        "length-shorter-than-body",
        http("POST", predict, headers=["Content-Length: 5"]) + good.encode(),
    )
    add("length-missing", http("POST", predict, headers=[]) + good.encode())
    te = "Transfer-Encoding: chunked"
    head = http("POST", predict, headers=[te])
    for id, body in [
        ("chunked-bad-json", chunked(b'{"instances": ', b"[[0.1")),
        ("chunked-wrong-width", chunked(bad.encode())),
        ("chunked-above-limit", chunked(*[good.encode()] * rows)),
        ("chunked-bad-size", b"zz\r\n" + good.encode() + b"\r\n0\r\n\r\n"),
        ("chunked-negative-size", b"-1\r\n{}\r\n0\r\n\r\n"),
        ("chunked-size-beyond-data", b"ffff\r\n" + good.encode()),
        ("chunked-no-last-chunk", chunked(good.encode(), end=b"")),
        ("chunked-garbage-extension", chunked(end=b"0;;;=\x01\r\n\r\n")),
        ("chunked-garbage-trailer", chunked(bad.encode(), end=b"0\r\nno colon\r\n\r\n")),
        ("chunked-missing-crlf", b"5\r\n{}{}}XX0\r\n\r\n"),
    ]:
        add(id, head + body)
    for id, headers in [
        ("te-and-length", [te, f"Content-Length: {len(good)}"]),
        ("te-gzip", ["Transfer-Encoding: gzip"]),
        ("te-unknown", ["Transfer-Encoding: xchunked"]),
        ("te-chunked-not-last", ["Transfer-Encoding: chunked, gzip"]),
    ]:
        add(id, http("POST", predict, headers=headers) + chunked(good.encode()))

    # Header garbage (each on a path or body that is wrong anyway).
    nope = "/v1/models/nope"
    for id, header in [
        ("header-no-colon", b"NoColonHere"),
        ("header-space-before-colon", b"Host : 127.0.0.1"),
        ("header-nul-in-value", b"X-Test: a\x00b"),
        ("header-name-with-space", b"Bad Header: x"),
        ("header-non-utf8-value", b"X-Test: \xff\xfe"),
        ("header-non-utf8-name", b"X-\xff: 1"),
        ("header-obs-fold", b"X-Test: a\r\n  folded"),
        ("header-lone-cr", b"X-Test: a\rb"),
        ("header-very-long", b"X-Test: " + b"a" * 20000),
        ("header-empty-name", b": value"),
    ]:
        add(id, b"GET " + nope.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    add("header-too-many", http("GET", nope, headers=[f"X-H{i}: {i}" for i in range(1000)]))
    add("header-bare-lf", f"GET {nope} HTTP/1.1\nHost: x\n\n".encode())
    add("header-expect-unknown", http("POST", predict, bad, headers=["Expect: teapot"]))
    add(
        "header-expect-continue-too-large",
        http(
            "POST",
            predict,
            headers=["Expect: 100-continue", f"Content-Length: {max_request_bytes * 2}"],
        ),
    )
    add("header-upgrade-h2c", http("GET", nope, headers=["Connection: Upgrade", "Upgrade: h2c"]))
    add(
        "header-upgrade-websocket",
        http(
            "GET",
            nope,
            headers=[
                "Connection: Upgrade",
                "Upgrade: websocket",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ],
        ),
    )
    add("header-content-type-garbage", http("POST", predict, headers=["Content-Type: \x01"]))
    return cases


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class Response:
    """An HTTP response read off a raw socket (``status`` 0: none arrived)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    note: str = ""


def _read_chunked(buffer: bytes, more) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in buffer:
            buffer += more()
        size_line, buffer = buffer.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        while len(buffer) < size + 2:
            buffer += more()
        body, buffer = body + buffer[:size], buffer[size + 2 :]


def exchange(address: tuple[str, int], data: bytes, *, timeout: float = 10.0) -> Response:
    """Send ``data`` on a new connection and read one final (non-1xx) response."""
    response = Response()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(data)
        except OSError as err:  # the server may answer and close before reading it all
            response.note = f"send: {type(err).__name__}"

        def more() -> bytes:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            return chunk

        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    buffer += more()
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                if status >= 200:
                    break
            response.status = status
            response.headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:])
            }
            if data.startswith(b"HEAD ") or status in (204, 304):
                return response
            if "chunked" in response.headers.get("transfer-encoding", "").lower():
                response.body = _read_chunked(buffer, more)
            elif "content-length" in response.headers:
                length = int(response.headers["content-length"])
                while len(buffer) < length:
                    buffer += more()
                response.body = buffer[:length]
            else:
                try:
                    while True:
                        buffer += more()
                except EOFError:
                    response.body = buffer
        except (EOFError, OSError, ValueError, IndexError) as err:
            what = "no status line" if buffer[:5] not in (b"", b"HTTP/") else type(err).__name__
            response.note += f" read: {what}, got {buffer[:80]!r}"
    return response


def problem(response: Response, *, head: bool = False) -> str | None:
    """What is wrong with the answer to a bad request, or None: it must be a 4xx with
    ``Content-Type: application/json`` and (except for HEAD) the body ``{"error": str}``."""
    if not response.status:
        return f"no HTTP response ({response.note.strip()})"
    if not 400 <= response.status < 500:
        return f"status {response.status}"
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return f"status {response.status}, Content-Type {content_type!r}: {response.body[:80]!r}"
    if head:
        return None if not response.body else "HEAD answer has a body"
    try:
        body = json.loads(response.body)
    except ValueError:
        return f"status {response.status}, body is not JSON: {response.body[:80]!r}"
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)):
        return f"status {response.status}, body is not {{'error': str}}: {response.body[:80]!r}"
    return None


def good_answer(address: tuple[str, int], model: str = MODEL, width: int = WIDTH) -> str | None:
    """None if a good predict on a new connection gets 200 with one prediction."""
    response = exchange(address, http("POST", f"/v1/models/{model}:predict", good_body(width)))
    if response.status != 200:
        return f"good request after it got {response.status} {response.body[:120]!r}"
    if len(json.loads(response.body).get("predictions", [])) != 1:
        return f"good request after it got {response.body[:120]!r}"
    return None


# --------------------------------------------------------------------------- tests

CORPUS = bad_requests()


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    """A REST server (make_server, port 0) over the toy model of test_serving."""
    pytest.importorskip("tensorflow")
    from test_serving import _export_toy  # the toy exporter lives with the serving tests
    from zoo.serving.server import make_server

    root = tmp_path_factory.mktemp("fuzz")
    _export_toy(root / "models" / MODEL / "1", seed=1)
    (root / "models.config").write_text(CONFIG)
    server = make_server(
        root / "models.config",
        models_root=root / "models",
        port=0,
        max_batch_size=MAX_BATCH,
        max_request_bytes=MAX_BODY,
        timeout_ms=STALL_MS,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    yield host.strip("[]"), int(port)
    server.shutdown()
    server.server_close()


def test_corpus_is_large_and_distinct():
    assert len(CORPUS) >= 100
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    assert len({case.data for case in CORPUS}) == len(CORPUS)
    # The corpus follows its limits: the refused body and batch are just past them.
    by_id = {case.id: case for case in CORPUS}
    body = by_id["req-body-too-large"].data.split(b"\r\n\r\n", 1)[1]
    assert MAX_BODY < len(body) < 2 * MAX_BODY
    batch = json.loads(by_id["req-batch-too-large"].data.split(b"\r\n\r\n", 1)[1])
    assert len(batch["instances"]) == MAX_BATCH + 1


def test_good_request_works(address):
    assert good_answer(address) is None


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_bad_request_gets_json_4xx_and_server_lives(address, case):
    response = exchange(address, case.data)
    assert problem(response, head=case.data.startswith(b"HEAD ")) is None
    assert good_answer(address) is None


def test_problem_names_what_is_wrong():
    json_400 = {"content-type": "application/json"}
    assert problem(Response(400, json_400, b'{"error": "bad"}')) is None
    assert problem(Response(0, note="read: EOFError")).startswith("no HTTP response")
    assert problem(Response(500, json_400, b'{"error": "x"}')) == "status 500"
    assert problem(Response(200, json_400, b"{}")) == "status 200"
    html = Response(501, {"content-type": "text/html"}, b"<html>")
    assert problem(html) == "status 501"
    html.status = 405
    assert "Content-Type 'text/html'" in problem(html)
    assert "not JSON" in problem(Response(400, json_400, b"oops"))
    assert "not {'error': str}" in problem(Response(400, json_400, b'{"error": 1}'))
    assert problem(Response(405, json_400), head=True) is None


def test_load_bench_counts_errors_and_checks_targets():
    from bench.serving_load import Cell, Tally

    tally = Tally(seconds=2.0)
    for ms in range(1, 101):
        tally.answered(200, ms / 1000)
    tally.answered(503, 0.5)
    tally.answered(400, 0.1)
    tally.failures["ServerDisconnectedError"] += 2
    assert (tally.requests, tally.errors, tally.server_errors) == (104, 4, 1)
    assert tally.rate == 52.0
    assert tally.percentile_ms(50) == pytest.approx(50.5)  # over the 200s only
    assert tally.what_failed() == "400 x1, 503 x1, ServerDisconnectedError x2"
    cell = Cell("dcgan", "generate", 1, 128, True, tally, in_process_ms=0.5)
    assert cell.overhead_ms == pytest.approx(50.0)
    assert cell.misses() == ["4 errors (1 5xx: 400 x1, 503 x1, ServerDisconnectedError x2)"]
    slow = Tally(seconds=1.0)
    slow.answered(200, 1.5)
    assert Cell("dcgan", "generate", 1, 128, False, slow, 0.5).misses() == [
        "p99 1500 ms >= 1000 (queueing: 128 clients / 1 req/s = 128000 ms each)"
    ]
    assert Cell("dcgan", "generate", 1, 32, False, slow, 0.5).misses() == []
