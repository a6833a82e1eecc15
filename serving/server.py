"""A local server that speaks TF Serving's REST API over a TF Serving ``models.config``.

It serves a :class:`~zoo.serving.model_server.ModelServer` (every model version the
config's version policies select, loaded with ``tf.saved_model.load``) and answers the
same requests as tensorflow_model_server's REST API, with the same JSON shapes
(:mod:`zoo.serving.rest_format`) and error conventions:

- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``           model status
- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata``  signature defs
- ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict``   row or columnar predict

It does not merge concurrent requests into batches; it enforces ``max_batch_size``
per request as TF Serving's batching does without large-batch splitting. Standard
library HTTP only (``ThreadingHTTPServer``); TensorFlow is imported on first use.

A configured model with no version folder yet (nothing exported) does not stop the
server: it is listed as waiting, its status is 404 "Could not find any versions of
model ..." and its requests 404 "Servable not found ...", as TF Serving answers for a
model it has no version of. Versions are read at startup only (TF Serving polls the
base path): restart the server after exporting. Note that tensorflow_model_server
itself does not open its ports until every configured model has a version AVAILABLE.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import socket
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .config import validate_batching_parameters
from .model_server import ModelServer
from .rest_format import RequestError

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "ServingHTTPServer",
    "build_arg_parser",
    "main",
    "make_server",
]

log = logging.getLogger("zoo.serving")

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
_LINGER_BYTES = 16 * 1024 * 1024  # how much of a refused body we drain so the client reads the 413
_USAGE = (
    "expected GET /v1/models/{name}[/versions/{version}|/labels/{label}][/metadata] or "
    "POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict"
)


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class _Route:
    name: str
    version: int | None
    label: str | None
    metadata: bool
    verb: str | None


def _parse_route(raw_path: str) -> _Route:
    path = urlsplit(raw_path).path
    prefix = "/v1/models/"
    if not path.startswith(prefix) or len(path) == len(prefix):
        raise RequestError(404, f"Malformed request: {path}; {_USAGE}")
    rest = path[len(prefix) :]
    verb = None
    if ":" in rest:
        rest, verb = rest.rsplit(":", 1)
    parts = [unquote(p) for p in rest.split("/")]
    metadata = False
    if len(parts) in (2, 4) and parts[-1] == "metadata":
        metadata = True
        parts = parts[:-1]
    version = label = None
    if len(parts) == 3 and parts[1] == "versions":
        if not parts[2].isascii() or not parts[2].isdigit():
            raise RequestError(
                400, f"Malformed request: version must be a non-negative integer; got {parts[2]!r}"
            )
        version = int(parts[2])
    elif len(parts) == 3 and parts[1] == "labels":
        label = parts[2]
    elif len(parts) != 1:
        raise RequestError(404, f"Malformed request: {path}; {_USAGE}")
    if not parts[0] or (metadata and verb):
        raise RequestError(404, f"Malformed request: {path}; {_USAGE}")
    return _Route(parts[0], version, label, metadata, verb)


class _Handler(BaseHTTPRequestHandler):
    server: ServingHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "zoo-serving/0.1"
    timeout = 120  # seconds an idle keep-alive connection may hold a thread

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            log.info("%s %s", self.address_string(), format % args)

    def _handle(self, method: str) -> None:
        self._refused_bytes = 0
        self._allow: str | None = None
        if method != "POST" and self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True  # an unread body would corrupt the next request
        try:
            status, payload = 200, self._route(method)
        except RequestError as err:
            status, payload = err.status, {"error": err.message}
        except Exception as err:  # a bug or a model failure: answer 500, keep serving
            log.error("internal error on %s %s: %s: %s", method, self.path, type(err).__name__, err)
            status, payload = 500, {"error": f"internal error: {type(err).__name__}: {err}"}
        self._send_json(status, payload, head=method == "HEAD")
        if self._refused_bytes:
            self._drain(self._refused_bytes)

    def _route(self, method: str) -> dict[str, Any]:
        route = _parse_route(self.path)
        if route.verb is not None:
            if route.verb != "predict":
                supported = "classify and regress" if route.verb in ("classify", "regress") else ""
                raise RequestError(
                    404 if not supported else 501,
                    f"Malformed request: ':{route.verb}' is not an API of this server"
                    + (
                        f" ({supported} are TF Serving APIs for classify/regress signatures; "
                        "the local server implements ':predict')"
                        if supported
                        else f"; {_USAGE}"
                    ),
                )
            if method != "POST":
                self._allow = "POST"
                raise RequestError(405, f"{self.path} takes POST, not {method}")
            body = self._read_json()
            return self.server.model_server.predict(
                route.name,
                body,
                route.version,
                route.label,
                max_batch_size=self.server.max_batch_size,
            )
        if method != "GET":
            self._allow = "GET"
            raise RequestError(405, f"{self.path} takes GET, not {method}")
        ms = self.server.model_server
        if route.metadata:
            return ms.metadata(route.name, route.version, route.label)
        return ms.status(route.name, route.version, route.label)

    def _read_json(self) -> Any:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(411, "chunked request bodies are not supported; send Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise RequestError(411, "missing Content-Length header: predict needs a JSON body")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(400, f"invalid Content-Length header {raw!r}") from None
        limit = self.server.max_request_bytes
        if length > limit:
            self._refused_bytes = length  # drained (not stored) after the response is sent
            raise RequestError(
                413,
                f"request body is {length} bytes; this server accepts at most {limit} bytes "
                "(--max_request_bytes); send fewer instances per request",
            )
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise RequestError(400, f"request body ended after {len(data)} of {length} bytes")
        if not data.strip():
            raise RequestError(400, "JSON Parse error: The document is empty")
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError
            raise RequestError(400, f"JSON Parse error: {err}") from None

    def _send_json(self, status: int, payload: Any, *, head: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 405 and self._allow:
            self.send_header("Allow", self._allow)
        if self.close_connection or self._refused_bytes:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.wfile.flush()

    def _drain(self, length: int) -> None:
        """Read and drop part of a refused body so the client sees the 413, not a reset."""
        remaining = min(length, _LINGER_BYTES)
        try:
            self.connection.settimeout(2.0)
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass


class ServingHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer answering TF Serving's REST API from a :class:`ModelServer`."""

    daemon_threads = True

    def __init__(
        self,
        server_address: tuple[str, int],
        model_server: ModelServer,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_batch_size: int | None = None,
        verbose: bool = False,
    ) -> None:
        if ":" in server_address[0]:
            self.address_family = socket.AF_INET6
        self.model_server = model_server
        self.max_request_bytes = int(max_request_bytes)
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.verbose = verbose
        super().__init__(server_address, _Handler)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8501``."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        log.warning("connection from %s failed: %s: %s", client_address, type(exc).__name__, exc)


def make_server(
    config_path: str | Path,
    *,
    models_root: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8501,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_batch_size: int | None = None,
    allow_version_labels_for_unavailable_models: bool = False,
    verbose: bool = False,
) -> ServingHTTPServer:
    """Load the config's models and bind a REST server (call ``serve_forever`` to run it).

    Binds loopback unless ``host`` says otherwise; ``port=0`` picks a free port (see
    ``server_address`` / ``url``).
    """
    model_server = ModelServer(
        config_path,
        models_root,
        allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
    )
    # TensorFlow leaves ~0.5M long-lived objects tracked by the garbage collector; every
    # JSON response builds many small lists, which triggers full collections over them.
    # Freezing what loading created keeps collections short (batch-64 REST ~7x faster).
    gc.freeze()
    return ServingHTTPServer(
        (host, port),
        model_server,
        max_request_bytes=max_request_bytes,
        max_batch_size=max_batch_size,
        verbose=verbose,
    )


# --------------------------------------------------------------------------- CLI


def build_arg_parser() -> argparse.ArgumentParser:
    """Flags named like tensorflow_model_server's."""
    parser = argparse.ArgumentParser(
        prog="zoo serve",
        description="Serve a TF Serving models.config over TF Serving's REST API, locally.",
    )
    parser.add_argument(
        "--model_config_file", required=True, help="text-format ModelServerConfig (models.config)"
    )
    parser.add_argument("--rest_api_port", type=int, default=8501, help="0 picks a free port")
    parser.add_argument(
        "--rest_api_host",
        default="127.0.0.1",
        help="address to bind (default loopback; 0.0.0.0 exposes the unauthenticated API)",
    )
    parser.add_argument(
        "--models_root",
        default=None,
        help="local folder standing for the container's /models (default: <config dir>/models)",
    )
    parser.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body accepted (413 above it)",
    )
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=None,
        help="largest batch per request (400 above it); default: no limit, or the "
        "batching parameters file's max_batch_size with --enable_batching",
    )
    parser.add_argument(
        "--enable_batching",
        action="store_true",
        help="apply --batching_parameters_file's max_batch_size (requests are not merged)",
    )
    parser.add_argument("--batching_parameters_file", default=None)
    parser.add_argument("--allow_version_labels_for_unavailable_models", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the local server until interrupted; return a process exit code."""
    args = build_arg_parser().parse_args(argv)
    try:
        max_batch_size = args.max_batch_size
        if args.batching_parameters_file:
            params = validate_batching_parameters(args.batching_parameters_file)
            if (
                args.enable_batching
                and max_batch_size is None
                and not params.get("enable_large_batch_splitting", False)
            ):
                max_batch_size = params.get("max_batch_size")
        server = make_server(
            args.model_config_file,
            models_root=args.models_root,
            host=args.rest_api_host,
            port=args.rest_api_port,
            max_request_bytes=args.max_request_bytes,
            max_batch_size=max_batch_size,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
            verbose=args.verbose,
        )
    except (ValueError, OSError) as err:
        print(f"zoo serve: error: {err}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(
        f"zoo serve: loaded {server.model_server.summary()}; REST API at "
        f"{server.url}/v1/models/<name>",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
