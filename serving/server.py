"""``zoo serve``: a local server speaking TF Serving's REST and gRPC APIs over a ``models.config``.

:func:`make_server` loads a :class:`~zoo.serving.model_server.ModelServer` (every model
version the config's version policies select) and binds the REST transport of
:mod:`zoo.serving.rest_server` (aiohttp) to it, and with ``grpc_port`` the gRPC API of
:mod:`zoo.serving.grpc_server` beside it; :func:`main` is the command line, with
tensorflow_model_server's flag names. TensorFlow is imported on first use.

A configured model with no version folder yet (nothing exported) does not stop the
server: it is listed as waiting, its status is 404 "Could not find any versions of
model ..." and its requests 404 "Servable not found ...", as TF Serving answers for a
model it has no version of. Note that tensorflow_model_server itself does not open its
ports until every configured model has a version AVAILABLE.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .batching import BatchingOptions
from .config import validate_monitoring_config
from .metrics import metrics_path
from .model_server import DEFAULT_POLL_WAIT_SECONDS, ModelServer
from .rest_server import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_NUM_THREADS,
    DEFAULT_TIMEOUT_MS,
    ServingHTTPServer,
)
from .servable import DEFAULT_MAX_BATCH_SIZE

if TYPE_CHECKING:
    from .grpc_server import GrpcServer

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_MAX_REQUEST_BYTES",
    "ServingHTTPServer",
    "ServingServer",
    "build_arg_parser",
    "main",
    "make_server",
]

log = logging.getLogger("zoo.serving")

#: tensorflow_model_server's ``--port`` (gRPC) default.
DEFAULT_GRPC_PORT = 8500


class ServingServer(ServingHTTPServer):
    """The REST server and, when ``grpc_server`` is set, TF Serving's gRPC API on the same
    model server: ``make_server`` starts it, ``shutdown()`` / ``server_close()`` stop both."""

    grpc_server: GrpcServer | None = None

    def shutdown(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop()
        super().shutdown()

    def server_close(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=None)
        super().server_close()


def make_server(
    config_path: str | Path,
    *,
    models_root: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8501,
    grpc_port: int | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
    num_threads: int = DEFAULT_NUM_THREADS,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    monitoring_config_file: str | Path | None = None,
    allow_version_labels_for_unavailable_models: bool = False,
    file_system_poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
    batching: BatchingOptions | None = None,
    verbose: bool = False,
) -> ServingServer:
    """Load the config's models and bind a REST server (call ``serve_forever`` to run it).

    Binds loopback unless ``host`` says otherwise; ``port=0`` picks a free port (see
    ``server_address`` / ``url``). With ``grpc_port`` (0: a free one), TF Serving's gRPC
    API answers at once on ``host`` (``server.grpc_server.target``), with the same
    request-bytes and batch limits. ``monitoring_config_file`` (TF Serving's
    ``MonitoringConfig``) serves Prometheus metrics at the path it names. The model
    server polls the base paths every ``file_system_poll_wait_seconds`` (0: once) and,
    with ``batching``, merges concurrent predicts (:mod:`zoo.serving.batching`).
    """
    monitoring = (
        validate_monitoring_config(monitoring_config_file) if monitoring_config_file else {}
    )
    model_server = ModelServer(
        config_path,
        models_root,
        allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
        file_system_poll_wait_seconds=file_system_poll_wait_seconds,
        batching=batching,
    )
    # TensorFlow leaves ~0.5M long-lived objects tracked by the garbage collector; every
    # JSON response builds many small lists, which triggers full collections over them.
    # Freezing what loading created keeps collections short (batch-64 REST ~7x faster).
    gc.freeze()
    try:
        server = ServingServer(
            (host, port),
            model_server,
            max_request_bytes=max_request_bytes,
            max_batch_size=max_batch_size,
            num_threads=num_threads,
            timeout_ms=timeout_ms,
            metrics_path=metrics_path(monitoring),
            close_model_server=True,
            verbose=verbose,
        )
    except BaseException:
        model_server.close()
        raise
    if grpc_port is not None:
        from .grpc_server import GrpcServer  # imports grpc and the serving protos

        try:
            server.grpc_server = GrpcServer(
                model_server,
                host=host,
                port=grpc_port,
                max_request_bytes=max_request_bytes,
                max_batch_size=max_batch_size,
                num_threads=num_threads,
                metrics=server.metrics,
            )
        except BaseException:
            server.server_close()
            raise
        server.grpc_server.start()
    return server


# --------------------------------------------------------------------------- CLI


def build_arg_parser() -> argparse.ArgumentParser:
    """Flags named like tensorflow_model_server's (defaults shown in ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="zoo serve",
        description="Serve a TF Serving models.config over TF Serving's REST API, locally.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model_config_file", required=True, help="text-format ModelServerConfig (models.config)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help="gRPC API port (PredictionService, ModelService), on --rest_api_host; "
        "0 picks a free port",
    )
    parser.add_argument("--rest_api_port", type=int, default=8501, help="0 picks a free port")
    parser.add_argument(
        "--rest_api_host",
        default="127.0.0.1",
        help="address to bind (loopback; 0.0.0.0 exposes the unauthenticated API)",
    )
    parser.add_argument(
        "--rest_api_num_threads",
        type=int,
        default=DEFAULT_NUM_THREADS,
        help="threads decoding requests and calling models (TF Serving's default: 4 per CPU)",
    )
    parser.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=DEFAULT_TIMEOUT_MS,
        help="a request body that has not fully arrived after this long gets 408",
    )
    parser.add_argument(
        "--models_root",
        default=None,
        help="local folder standing for the container's /models (None: <config dir>/models)",
    )
    parser.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body accepted (413 above it, refused before it is read)",
    )
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=None,
        help=f"largest batch per request (400 above it); None: {DEFAULT_MAX_BATCH_SIZE}, or "
        "the batching parameters file's max_batch_size with --enable_batching",
    )
    parser.add_argument(
        "--enable_batching",
        action="store_true",
        help="merge concurrent predict requests into batches, as set by "
        "--batching_parameters_file (None: TF Serving's BatchingParameters defaults)",
    )
    parser.add_argument("--batching_parameters_file", default=None)
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=int,
        default=int(DEFAULT_POLL_WAIT_SECONDS),
        help="seconds between polls of the models' base paths for new versions (0: only at start)",
    )
    parser.add_argument(
        "--monitoring_config_file",
        default=None,
        help="MonitoringConfig: Prometheus metrics at its path on the REST port "
        "(None: no metrics path)",
    )
    parser.add_argument("--allow_version_labels_for_unavailable_models", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def _max_batch_size(args: argparse.Namespace) -> int:
    """--max_batch_size, else the default (with --enable_batching, the batch scheduler
    also refuses a request above the batching file's max_batch_size)."""
    return DEFAULT_MAX_BATCH_SIZE if args.max_batch_size is None else args.max_batch_size


def _batching(args: argparse.Namespace) -> BatchingOptions | None:
    """The batching parameters with --enable_batching (the file is checked when given)."""
    file = args.batching_parameters_file
    options = BatchingOptions.from_file(file) if file else BatchingOptions()
    return options if args.enable_batching else None


def main(argv: list[str] | None = None) -> int:
    """Run the local server until interrupted; return a process exit code."""
    args = build_arg_parser().parse_args(argv)
    try:
        server = make_server(
            args.model_config_file,
            models_root=args.models_root,
            host=args.rest_api_host,
            port=args.rest_api_port,
            grpc_port=args.port,
            max_request_bytes=args.max_request_bytes,
            max_batch_size=_max_batch_size(args),
            num_threads=args.rest_api_num_threads,
            timeout_ms=args.rest_api_timeout_in_ms,
            monitoring_config_file=args.monitoring_config_file,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            batching=_batching(args),
            verbose=args.verbose,
        )
    except (ValueError, OSError) as err:
        print(f"zoo serve: error: {err}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    metrics = f"; metrics at {server.url}{server.metrics_path}" if server.metrics_path else ""
    grpc_api = f"; gRPC API at {server.grpc_server.target}" if server.grpc_server else ""
    print(
        f"zoo serve: loaded {server.model_server.summary()}; REST API at "
        f"{server.url}/v1/models/<name>{grpc_api}{metrics}",
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
