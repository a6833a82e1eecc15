"""TF Serving's REST API on aiohttp: routes, request reading, error mapping.

:class:`ServingHTTPServer` answers, from a :class:`~zoo.serving.model_server.ModelServer`:

- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``           model status
- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata``  signature defs
- ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict``   row or columnar predict
- ``GET  <prometheus path>``  metrics, when a monitoring config enables them

It runs aiohttp's low-level server (``aiohttp.web.Server``) on an asyncio loop in the
thread that calls :meth:`~ServingHTTPServer.serve_forever`: HTTP/1.1 keep-alive,
chunked request bodies, ``TCP_NODELAY`` and a listen backlog of
:data:`DEFAULT_BACKLOG`. The loop only reads requests and writes responses; JSON
decoding, the model call and JSON encoding run in a thread pool
(``--rest_api_num_threads``). The low-level server rather than ``web.Application``:
an application's middlewares never see the protocol's own errors (bad request line,
header too long), and only the connection handler's ``handle_error`` can answer those
in JSON too.

Routing follows TF Serving's REST handler (model_servers/http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc in tensorflow/serving):

- a path outside ``/v1/`` is 404; every path under ``/v1/`` is the REST API's;
- ``/v1/models``, ``/versions/`` and ``/labels/`` match case-insensitively (the
  handler's regexes are ``(?i)``); model names and labels keep their case and are
  percent-decoded; the API names ``:predict`` and ``/metadata`` are compared in lower
  case, so ``:PREDICT`` is malformed (TF Serving would answer ``/METADATA`` with the
  status; here it is malformed too);
- a path under ``/v1/`` that names no API is 400 "Malformed request: <method> <path>";
  ``GET /v1/models`` is 400 "Missing model name in request.";
- ``:classify`` and ``:regress`` exist in TF Serving; on the predict signatures served
  here they are 400 (the signature's method is not a classify/regress method);
- a method the path does not take is 405 with ``Allow`` (TF Serving answers 400
  "Malformed request" for those); HEAD gets the same 405 without a body;
- ``--rest_api_timeout_in_ms`` (TF Serving's flag, 30 s) bounds reading the request
  body here: a body that stops arriving is 408 (TF Serving applies the flag to the
  model run as a deadline; a TensorFlow call cannot be interrupted from Python).

Every answer is JSON ``{"error": ...}`` with ``Content-Type: application/json``,
including 404s, 405s, 413s and the protocol's own 400s. A client that disconnects
mid-request costs one debug log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from .metrics import ServingMetrics
from .model_server import ModelServer
from .servable import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_SIGNATURE,
    RequestError,
    refuse_classify_regress,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_NUM_THREADS",
    "DEFAULT_TIMEOUT_MS",
    "MethodNotAllowedError",
    "Route",
    "ServingHTTPServer",
    "parse_route",
]

log = logging.getLogger("zoo.serving")

#: Largest request body accepted (``--max_request_bytes``).
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: TF Serving's ``--rest_api_timeout_in_ms`` default.
DEFAULT_TIMEOUT_MS = 30_000
#: Pending connections the kernel queues before accepting (capped by net.core.somaxconn).
DEFAULT_BACKLOG = 1024
#: TF Serving's ``--rest_api_num_threads`` default: 4 threads per schedulable CPU. The
#: threads mostly wait (in TensorFlow kernels, which release the GIL, or in a batching
#: queue), so more threads than cores lets one request's JSON work overlap another's model
#: call and lets a batching queue gather requests from several clients.
DEFAULT_NUM_THREADS = 4 * len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 8
_KEEPALIVE_S = 75.0  # how long an idle keep-alive connection stays open
_SHUTDOWN_S = 10.0  # how long shutdown waits for requests in flight
_USAGE = (
    "expected GET /v1/models/{name}[/versions/{version}|/labels/{label}][/metadata] or "
    "POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict"
)
_MAX_VERSION = 2**63 - 1
#: A number that may not fit a double: a 3-digit exponent or 300 digits in a row.
_HUGE_NUMBER = re.compile(rb"[eE]\+?0*[1-9][0-9]{2}|[0-9]{300}")

_REST_API = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_SERVABLE = r"(?:/versions/([0-9]+)|/labels/([^/:]+))?"
_PREDICT = re.compile(rf"/v1/models/([^/:]+){_SERVABLE}:(classify|regress|predict)", re.IGNORECASE)
_STATUS = re.compile(rf"/v1/models(?:/([^/:]+))?{_SERVABLE}(?:/(metadata))?", re.IGNORECASE)


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """What a request path names: the API, the model and, optionally, a version or label."""

    api: str  # "predict", "classify", "regress", "status" or "metadata"
    name: str
    version: int | None = None
    label: str | None = None

    @property
    def method(self) -> str:
        """The HTTP method the API takes."""
        return "GET" if self.api in ("status", "metadata") else "POST"


def parse_route(method: str, raw_path: str) -> Route | None:
    """The :class:`Route` of a raw (still percent-encoded) path; None outside ``/v1/``.

    Raises :class:`RequestError` 400 for a malformed path under ``/v1/`` and 405 when
    the path names an API that takes another method.
    """
    if not _REST_API.fullmatch(raw_path):
        return None
    match = _PREDICT.fullmatch(raw_path)
    if match is not None:
        api = match.group(4)
    else:
        match = _STATUS.fullmatch(raw_path)
        api = (match.group(4) or "status") if match is not None else ""
    if match is None or api not in ("predict", "classify", "regress", "status", "metadata"):
        raise RequestError(400, f"Malformed request: {method} {raw_path}; {_USAGE}")
    name, version, label = match.group(1), match.group(2), match.group(3)
    route = Route(
        api,
        unquote(name or ""),
        None if version is None else int(version),
        None if label is None else unquote(label),
    )
    if method != route.method:
        raise MethodNotAllowedError(route.method, f"{raw_path} takes {route.method}, not {method}")
    if not route.name:
        raise RequestError(400, "Missing model name in request.")
    if route.version is not None and route.version > _MAX_VERSION:
        raise RequestError(400, f"Failed to convert version: {version} to numeric.")
    return route


class MethodNotAllowedError(RequestError):
    """405: the path names an API that takes the ``allow`` method."""

    def __init__(self, allow: str, message: str) -> None:
        super().__init__(405, message)
        self.allow = allow


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": message}).encode(),
        content_type="application/json",
        headers=headers,
    )


def _closing(response: web.Response) -> web.Response:
    """Close the connection after ``response`` (an unread or broken body is left behind)."""
    response.force_close()
    return response


class _JsonErrorConnection(RequestHandler):
    """aiohttp's connection handler, answering its own errors in JSON without a traceback."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of a response is out: nothing to add
            raise ConnectionError("response already started")
        detail = message or (f"{type(exc).__name__}: {exc}" if exc else HTTPStatus(status).phrase)
        (log.error if status >= 500 else log.debug)(
            "HTTP %s from %s: %s", status, request.remote, detail
        )
        text = detail if status < 500 else f"internal error: {detail}"
        return _closing(_json_error(status, f"{HTTPStatus(status).phrase}: {text}"))


class _Server(web.Server):
    """aiohttp's low-level server with :class:`_JsonErrorConnection` connections."""

    def __init__(self, handler: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(handler, loop=loop, **kwargs)
        self._connection_loop = loop
        self._connection_kwargs = kwargs

    def __call__(self) -> RequestHandler:
        return _JsonErrorConnection(self, loop=self._connection_loop, **self._connection_kwargs)


# --------------------------------------------------------------------------- server


class ServingHTTPServer:
    """TF Serving's REST API over aiohttp, bound at construction, run by :meth:`serve_forever`.

    Same life cycle as ``socketserver``: ``serve_forever()`` runs until another thread
    calls ``shutdown()``; ``server_close()`` releases the socket and the thread pool.
    ``metrics_path`` serves Prometheus metrics there (None: no metrics path);
    ``close_model_server`` closes the model server in :meth:`server_close`.
    """

    def __init__(
        self,
        server_address: tuple[str, int],
        model_server: ModelServer,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        num_threads: int = DEFAULT_NUM_THREADS,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        metrics_path: str | None = None,
        backlog: int = DEFAULT_BACKLOG,
        close_model_server: bool = False,
        verbose: bool = False,
    ) -> None:
        if num_threads < 1 or timeout_ms < 1 or max_request_bytes < 1:
            raise ValueError(
                "--rest_api_num_threads, --rest_api_timeout_in_ms and --max_request_bytes "
                f"must be positive; got {num_threads}, {timeout_ms} and {max_request_bytes}"
            )
        self.model_server = model_server
        self.max_request_bytes = int(max_request_bytes)
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.timeout_s = timeout_ms / 1000.0
        self.metrics_path = metrics_path
        self.metrics = ServingMetrics() if metrics_path else None
        self.verbose = verbose
        self.backlog = backlog
        self._close_model_server = close_model_server
        family = socket.AF_INET6 if ":" in server_address[0] else socket.AF_INET
        self.socket = socket.create_server(server_address, family=family, backlog=backlog)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server_address = self.socket.getsockname()
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="zoo-rest")
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8501``."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    # ---------------------------------------------------------------- life cycle

    def serve_forever(self) -> None:
        """Answer requests in this thread until :meth:`shutdown` is called."""
        self._stopped.clear()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            try:
                loop.run_until_complete(_cancel_other_tasks())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                with self._lock:
                    self._loop = self._stop = None
                self._stopped.set()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        access_log = log if self.verbose else None
        server = _Server(
            self._handle,
            loop=loop,
            access_log=access_log,
            keepalive_timeout=_KEEPALIVE_S,
            lingering_time=2.0,
        )
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_S)
        await runner.setup()
        try:
            await web.SockSite(runner, self.socket, backlog=self.backlog).start()
            with self._lock:
                self._loop, self._stop = loop, asyncio.Event()
                if self._stop_requested:
                    self._stop.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (from another thread) and wait until it has returned."""
        with self._lock:
            self._stop_requested = True
            loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
            self._stopped.wait()

    def server_close(self) -> None:
        """Release the listening socket and the thread pool (and the model server's
        threads when ``close_model_server``)."""
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._close_model_server:
            self.model_server.close()

    # ---------------------------------------------------------------- requests

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        start = time.perf_counter()
        raw_path = request.rel_url.raw_path
        if self.metrics_path is not None and request.path == self.metrics_path:
            return self._metrics(request)
        try:
            route = parse_route(request.method, raw_path)
        except RequestError as err:
            allow = {"Allow": err.allow} if isinstance(err, MethodNotAllowedError) else {}
            self._observe(None, "", err.status, start)
            return _json_error(err.status, err.message, **allow)
        if route is None:
            self._observe(None, "", 404, start)
            return _json_error(404, f"Not found: {request.method} {raw_path}; {_USAGE}")
        if route.method == "POST":
            body = await self._read_body(request)
            if isinstance(body, web.Response):
                self._observe(route, "", body.status, start)
                return body
        else:
            body = b""
        loop = asyncio.get_running_loop()
        status, payload, signature = await loop.run_in_executor(
            self._pool, self._answer, route, body
        )
        self._observe(route, signature, status, start)
        return web.Response(status=status, body=payload, content_type="application/json")

    async def _read_body(self, request: web.BaseRequest) -> bytes | web.Response:
        """The whole body, or the error response: 413 over the limit (from Content-Length
        before reading when it is given), 408 when it stops arriving, 400 when broken."""
        limit = self.max_request_bytes
        too_large = (
            f"request body is {{}} bytes; this server accepts at most {limit} bytes "
            "(--max_request_bytes); send fewer instances per request"
        )
        length = request.content_length
        if length is not None and length > limit:
            return _closing(_json_error(413, too_large.format(length)))
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        return _closing(_json_error(413, too_large.format(f"more than {limit}")))
                    chunks.append(chunk)
        except TimeoutError:
            return _closing(
                _json_error(
                    408,
                    f"the request body did not arrive within {self.timeout_s * 1000:.0f} ms "
                    f"(got {size} bytes; --rest_api_timeout_in_ms)",
                )
            )
        except (ConnectionError, RequestPayloadError) as err:
            log.debug("request body from %s broke off: %s", request.remote, err)
            return _closing(_json_error(400, f"the request body is incomplete: {err}"))
        return b"".join(chunks)

    def _answer(self, route: Route, body: bytes) -> tuple[int, bytes, str]:
        """(status, JSON bytes, signature label) of one API call (runs in the thread pool)."""
        signature = ""
        try:
            if route.method == "GET":
                call = (
                    self.model_server.status
                    if route.api == "status"
                    else self.model_server.metadata
                )
                payload = call(route.name, route.version, route.label)
            else:
                request = _decode_json(body)
                signature = _requested_signature(request)
                if route.api == "predict":
                    payload = self.model_server.predict(
                        route.name,
                        request,
                        route.version,
                        route.label,
                        max_batch_size=self.max_batch_size,
                    )
                else:
                    self._refuse_classify_regress(route, signature)
            status = 200
        except RequestError as err:
            status, payload = err.status, {"error": err.message}
        except Exception as err:  # a bug or a model failure: answer 500, keep serving
            log.error("internal error on %s: %s: %s", route, type(err).__name__, err)
            status, payload = 500, {"error": f"internal error: {type(err).__name__}: {err}"}
        return status, json.dumps(payload).encode(), self._signature_label(route, signature)

    def _refuse_classify_regress(self, route: Route, signature: str) -> None:
        """400 as TF Serving's Classify/Regress answer for a signature of another method."""
        servable = self.model_server.resolve(route.name, route.version, route.label)
        refuse_classify_regress(
            route.api,
            route.name,
            servable.version,
            signature,
            servable.signature_defs,
            instead=f"send this request to POST /v1/models/{route.name}:predict instead",
        )

    def _signature_label(self, route: Route, signature: str) -> str:
        """``signature`` if the model serves it (metric labels stay a bounded set)."""
        if not signature:
            return ""
        try:
            servable = self.model_server.resolve(route.name)
        except RequestError:
            return ""
        return signature if signature in servable.signatures else ""

    def _observe(self, route: Route | None, signature: str, status: int, start: float) -> None:
        """Count a request (model label only for configured models: a bounded label set)."""
        if self.metrics is None:
            return
        model = route.name if route and route.name in self.model_server.models else ""
        api = route.api if route else ""
        self.metrics.observe(model, api, signature, status, time.perf_counter() - start)

    def _metrics(self, request: web.BaseRequest) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return _json_error(405, f"{request.path} takes GET, not {request.method}", Allow="GET")
        assert self.metrics is not None
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": self.metrics.content_type}
        )


async def _cancel_other_tasks() -> None:
    """Cancel what is left on the loop (connections still lingering after cleanup)."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"Number too big to be stored in double: {text[:40]}")
    return value


def _decode_json(data: bytes) -> Any:
    """The JSON body; 400 "JSON Parse error" as TF Serving's parser answers, including
    for a number beyond a double's range (Python would read 1e400 as infinity)."""
    if not data.strip():
        raise RequestError(400, "JSON Parse error: The document is empty")
    try:
        if _HUGE_NUMBER.search(data):  # rare: check each float only then
            return json.loads(data, parse_float=_finite_float)
        return json.loads(data)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(400, f"JSON Parse error: {err}") from None


def _requested_signature(request: Any) -> str:
    name = request.get("signature_name") if isinstance(request, dict) else None
    return (name or DEFAULT_SIGNATURE) if isinstance(name, str | None) else ""
