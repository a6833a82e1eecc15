"""TF Serving's gRPC API (``--port``) on ``grpcio``, beside the REST API, on one ModelServer.

:class:`GrpcServer` serves, with the protos of the ``tensorflow-serving-api`` wheel:

- ``tensorflow.serving.PredictionService``: ``Predict`` (inputs and outputs as
  ``TensorProto``, ``output_filter`` honoured), ``GetModelMetadata`` (the
  ``signature_def`` map packed in an ``Any``), and ``Classify`` / ``Regress`` /
  ``MultiInference``, which the predict signatures served here refuse as TF Serving
  refuses them (INVALID_ARGUMENT, "Expected classification signature method_name ...");
- ``tensorflow.serving.ModelService``: ``GetModelStatus``; ``HandleReloadConfigRequest``
  is UNIMPLEMENTED (the config is read at start; base paths are polled).

Behaviour follows tensorflow/serving's model_servers/prediction_service_impl.cc,
model_service_impl.cc, servables/tensorflow/predict_util.cc, classifier.cc,
multi_inference.cc and get_model_metadata_impl.cc. Requests reach the same
:class:`~zoo.serving.model_server.ModelServer` calls as REST ones, so a refusal carries
the REST API's message; its HTTP status becomes the gRPC code of :data:`GRPC_CODES`
(the client maps codes back as TF Serving's REST API does). A response's ``model_spec``
carries the model name, the version that answered and, for ``Predict``, the signature
name (empty means ``serving_default``). The largest request message is the server's
``--max_request_bytes``.

TensorFlow and the serving protos are imported when a server is built, so importing
this module stays light.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from .model_server import ModelServer
from .servable import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_SIGNATURE,
    SIGNATURE_METHODS,
    RequestError,
    refuse_classify_regress,
)

__all__ = ["DEFAULT_GRPC_PORT", "GRPC_CODES", "GrpcServer", "grpc_code"]

log = logging.getLogger("zoo.serving")

#: tensorflow_model_server's ``--port`` default.
DEFAULT_GRPC_PORT = 8500
#: HTTP status of a :class:`RequestError` -> the gRPC code answered for it.
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_INSTEAD = "call Predict for it instead"
_SIGNATURE_DEF = "signature_def"  # GetModelMetadataImpl::kSignatureDef
_MAX_MESSAGE = 1024  # TF Serving's ToGRPCStatus truncates longer messages


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC code answered for an HTTP status (INTERNAL for anything unlisted)."""
    return GRPC_CODES.get(status, grpc.StatusCode.INTERNAL)


def _version_of(model_spec: Any) -> tuple[int | None, str | None]:
    """(version, label) a ``ModelSpec`` names; (None, None) means the latest."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return int(model_spec.version.value), None
    if choice == "version_label":
        return None, model_spec.version_label
    return None, None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _require_model_spec(request: Any) -> Any:
    if not request.HasField("model_spec"):
        raise RequestError(400, "Missing ModelSpec")
    return request.model_spec


class _Services:
    """The RPC methods of PredictionService and ModelService over one ModelServer.

    Each method returns its response proto or raises :class:`RequestError`;
    :meth:`GrpcServer._rpc` turns refusals into gRPC status codes and records metrics.
    """

    def __init__(self, model_server: ModelServer, max_batch_size: int | None) -> None:
        import tensorflow as tf
        from google.protobuf import json_format
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            predict_pb2,
        )

        self.model_server = model_server
        self.max_batch_size = max_batch_size
        self._tf = tf
        self._json = json_format
        self._metadata_pb2 = get_model_metadata_pb2
        self._status_pb2 = get_model_status_pb2
        self._predict_pb2 = predict_pb2

    # ---------------------------------------------------------------- PredictionService

    def predict(self, request: Any) -> Any:
        """``Predict``: run one signature on the request's tensors."""
        spec = _require_model_spec(request)
        version, label = _version_of(spec)
        arrays = {}
        for key, proto in request.inputs.items():
            try:
                arrays[key] = self._tf.make_ndarray(proto)
            except (TypeError, ValueError) as err:
                raise RequestError(
                    400, f"input '{key}' is not a valid TensorProto: {err}"
                ) from None
        servable, sig, outputs = self.model_server.predict_arrays(
            spec.name, spec.signature_name, arrays, version, label,
            max_batch_size=self.max_batch_size,
        )  # fmt: skip
        response = self._predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.signature_name = sig
        response.model_spec.version.value = servable.version
        for key in _output_filter(list(request.output_filter), outputs):
            response.outputs[key].CopyFrom(self._tf.make_tensor_proto(outputs[key]))
        return response

    def get_model_metadata(self, request: Any) -> Any:
        """``GetModelMetadata``: the ``signature_def`` map, packed in an ``Any``."""
        spec = _require_model_spec(request)
        fields = list(request.metadata_field)
        if not fields:
            raise RequestError(
                400,
                "GetModelMetadataRequest must specify at least one metadata_field; "
                f"the one supported is '{_SIGNATURE_DEF}'",
            )
        for field in fields:
            if field != _SIGNATURE_DEF:
                raise RequestError(
                    400, f"Metadata field {field} is not supported; use '{_SIGNATURE_DEF}'"
                )
        version, label = _version_of(spec)
        metadata = self.model_server.metadata(spec.name, version, label)
        sig_map = self._json.ParseDict(
            metadata["metadata"][_SIGNATURE_DEF], self._metadata_pb2.SignatureDefMap()
        )
        response = self._metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = int(metadata["model_spec"]["version"])
        response.metadata[_SIGNATURE_DEF].Pack(sig_map)
        return response

    def classify_or_regress(self, api: str, request: Any) -> Any:
        """``Classify`` / ``Regress``: the named signature must be of that method; the
        predict signatures served here never are (INVALID_ARGUMENT, as TF Serving)."""
        spec = _require_model_spec(request)
        version, label = _version_of(spec)
        servable = self.model_server.resolve(spec.name, version, label)
        sig = spec.signature_name or DEFAULT_SIGNATURE
        refuse_classify_regress(
            api, spec.name, servable.version, sig, servable.signature_defs, _INSTEAD
        )

    def multi_inference(self, request: Any) -> Any:
        """``MultiInference``: every task names one model's classify/regress signature."""
        first = request.tasks[0].model_spec if request.tasks else None
        name = first.name if first is not None else ""
        version, label = _version_of(first) if first is not None else (None, None)
        servable = self.model_server.resolve(name, version, label)
        seen: set[str] = set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise RequestError(400, "Found ModelSpec with an empty model name.")
            if task.model_spec.name != name:
                raise RequestError(
                    400,
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
                )
            sig = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if sig in seen:
                raise RequestError(400, f"Duplicate evaluation of signature: {sig}")
            seen.add(sig)
            if sig not in servable.signature_defs:
                raise RequestError(400, f"Requested signature not found in model graph: {sig}")
            api = next(
                (k for k, (_, m) in SIGNATURE_METHODS.items() if m == task.method_name), None
            )
            if api is None:
                raise RequestError(501, f"Unsupported signature method_name: {task.method_name}")
            refuse_classify_regress(
                api, name, servable.version, sig, servable.signature_defs, _INSTEAD
            )
        # Not reached: no tasks is a model spec without a name (404 above), as TF Serving.
        raise RequestError(400, "MultiInferenceRequest has no tasks; add at least one")

    # ---------------------------------------------------------------- ModelService

    def get_model_status(self, request: Any) -> Any:
        """``GetModelStatus``: every version the manager has seen, or the one named."""
        spec = _require_model_spec(request)
        version, label = _version_of(spec)
        status = self.model_server.status(spec.name, version, label)
        return self._json.ParseDict(status, self._status_pb2.GetModelStatusResponse())


def _output_filter(wanted: list[str], outputs: dict[str, Any]) -> list[str]:
    """The output keys a ``Predict`` answers: ``output_filter`` (checked) or all of them."""
    if not wanted:
        return sorted(outputs)
    seen: set[str] = set()
    for alias in wanted:
        if alias not in outputs:
            raise RequestError(
                400,
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(outputs))}}}.",
            )
        if alias in seen:
            raise RequestError(400, f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return wanted


class _PredictionService:
    """``tensorflow.serving.PredictionService`` handlers (grpc servicer, duck-typed)."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._server._rpc(context, request, "predict", self._server.services.predict)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        services = self._server.services
        return self._server._rpc(context, request, "metadata", services.get_model_metadata)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        services = self._server.services
        return self._server._rpc(
            context, request, "classify", lambda r: services.classify_or_regress("classify", r)
        )

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        services = self._server.services
        return self._server._rpc(
            context, request, "regress", lambda r: services.classify_or_regress("regress", r)
        )

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        services = self._server.services
        return self._server._rpc(context, request, "multi_inference", services.multi_inference)


class _ModelService:
    """``tensorflow.serving.ModelService`` handlers (grpc servicer, duck-typed)."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        services = self._server.services
        return self._server._rpc(context, request, "status", services.get_model_status)

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        def refuse(_: Any) -> Any:
            raise RequestError(
                501,
                "HandleReloadConfigRequest is not supported by zoo serve: it reads "
                "--model_config_file at start and picks up new versions by polling the "
                "base paths; to change the model list, restart the server with the new config",
            )

        return self._server._rpc(context, request, "reload_config", refuse)


class GrpcServer:
    """TF Serving's gRPC services on ``host:port`` (0 picks a free port: see :attr:`port`).

    ``start()`` begins answering (requests run in a pool of ``num_threads``);
    ``stop()`` ends it. ``metrics`` (a :class:`~zoo.serving.metrics.ServingMetrics`)
    records each request with entrypoint ``GRPC``. Raises OSError when the port is taken.
    """

    def __init__(
        self,
        model_server: ModelServer,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_GRPC_PORT,
        max_request_bytes: int = 32 * 1024 * 1024,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        num_threads: int = 8,
        metrics: Any = None,
    ) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.model_server = model_server
        self.services = _Services(model_server, max_batch_size)
        self.metrics = metrics
        self._server = grpc.server(
            ThreadPoolExecutor(num_threads, thread_name_prefix="zoo-grpc"),
            options=[
                ("grpc.max_receive_message_length", int(max_request_bytes)),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared one
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self._server)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        taken = f"cannot bind the gRPC port {bind}: {{}}; choose another --port"
        if port:  # ask the OS first: gRPC's own failure is a bare error plus a native log line
            try:
                socket.create_server((host, port), family=_family(host)).close()
            except OSError as err:
                raise OSError(taken.format(os.strerror(err.errno) if err.errno else err)) from None
        try:
            self.port = self._server.add_insecure_port(bind)
        except RuntimeError:  # grpcio >= 1.60 raises instead of returning 0
            self.port = 0
        if self.port == 0:
            raise OSError(taken.format("gRPC could not listen there"))
        self.host = host

    @property
    def target(self) -> str:
        """``host:port`` for :class:`~zoo.serving.client.GrpcServingClient`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> None:
        """Begin answering requests (in the server's own threads)."""
        self._server.start()

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting requests; wait up to ``grace`` seconds for those in flight."""
        self._server.stop(grace).wait()

    def _rpc(
        self,
        context: grpc.ServicerContext,
        request: Any,
        api: str,
        call: Callable[[Any], Any],
    ) -> Any:
        """Answer one RPC: refusals become gRPC codes with the REST API's message."""
        start = time.perf_counter()
        spec = getattr(request, "model_spec", None)
        status, message = 200, ""
        try:
            return call(request)
        except RequestError as err:
            status, message = err.status, err.message
        except Exception as err:  # a bug or a model failure: INTERNAL, keep serving
            log.error("internal error on gRPC %s: %s: %s", api, type(err).__name__, err)
            status, message = 500, f"internal error: {type(err).__name__}: {err}"
        finally:
            self._observe(spec, api, status, start)
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "...TRUNCATED"
        context.abort(grpc_code(status), message)

    def _observe(self, spec: Any, api: str, status: int, start: float) -> None:
        """Count a request (model and signature labels only for what is served)."""
        if self.metrics is None:
            return
        name = spec.name if spec is not None else ""
        model = name if name in self.model_server.models else ""
        signature = ""
        if model and api == "predict":
            wanted = spec.signature_name or DEFAULT_SIGNATURE
            try:
                served = self.model_server.resolve(model).signatures
            except RequestError:
                served = {}
            signature = wanted if wanted in served else ""
        seconds = time.perf_counter() - start
        self.metrics.observe(model, api, signature, status, seconds, entrypoint="GRPC")
