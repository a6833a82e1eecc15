"""Clients for TF Serving's predict APIs: REST (:class:`ServingClient`) and gRPC.

The REST client talks to tensorflow_model_server and to the local server
(``zoo.serving.server``) alike. It sends row (``instances``) or columnar
(``inputs``) requests, and restores output dtypes (float32, bool, bytes) from the
model's metadata, since JSON keeps none of them.
"""

from __future__ import annotations

import abc
import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np

__all__ = [
    "DT_TO_NUMPY",
    "GrpcServingClient",
    "InvalidLabelsError",
    "ServingClient",
    "ServingError",
]

#: TF Serving metadata dtype names -> numpy dtypes (DT_STRING -> object arrays of bytes).
DT_TO_NUMPY: dict[str, Any] = {
    "DT_HALF": np.float16,
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
    "DT_STRING": object,
}

# gRPC status code name -> the HTTP status TF Serving's REST API gives for it.
_GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class ServingError(Exception):
    """The server refused a request: ``status`` (HTTP) and the server's ``message``."""

    def __init__(
        self, status: int, message: str, *, url: str | None = None, grpc_code: str | None = None
    ) -> None:
        where = f" ({url})" if url else ""
        code = f" [{grpc_code}]" if grpc_code else ""
        super().__init__(f"HTTP {status}{code}{where}: {message}")
        self.status = status
        self.message = message
        self.url = url
        self.grpc_code = grpc_code


class InvalidLabelsError(ServingError):
    """Some ``labels`` are not class ids of the model: the exported signatures answer an id
    outside [0, num_classes) with NaN outputs for that example (and normal outputs for the
    others), and the convenience methods turn those rows into this error. ``rows`` and
    ``labels`` name them; ``outputs`` holds the whole answer (the other rows are valid)."""

    def __init__(self, model: str, rows: np.ndarray, labels: np.ndarray, outputs: dict) -> None:
        super().__init__(
            400,
            f"labels {labels.tolist()} (rows {rows.tolist()}) are not class ids of model "
            f"'{model}': its signatures return NaN for a label outside [0, num_classes); "
            "use ids in that range (zoo_export.json and the model card give num_classes)",
        )
        self.rows = rows
        self.labels = labels
        self.outputs = outputs


# --------------------------------------------------------------------------- JSON <-> numpy


def _encode(value: Any) -> Any:
    """Numpy/array-like -> JSON value; bytes become {"b64": ...}."""
    arr = np.asarray(value)
    if arr.dtype.kind in "OS":
        return _encode_strings(arr.tolist())
    return arr.tolist()


def _encode_strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_encode_strings(v) for v in value]
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _decode_strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _decode(value: Any, dtype_name: str | None) -> np.ndarray:
    """JSON value -> numpy array with the dtype the signature declares."""
    if dtype_name == "DT_STRING":
        return np.array(_decode_strings(value), dtype=object)
    return np.asarray(value, dtype=DT_TO_NUMPY.get(dtype_name or ""))


def _model_path(model: str, version: int | None, label: str | None) -> str:
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both")
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{quote(label, safe='')}"
    return path


def _conditioned(inputs: dict[str, Any], labels: Any) -> dict[str, Any]:
    """``inputs`` plus ``labels`` as int64 class ids [N], for conditional models."""
    if labels is None:
        return inputs
    return {**inputs, "labels": np.asarray(labels, dtype=np.int64).reshape(-1)}


def _per_example(threshold: Any, n: int) -> np.ndarray:
    """``threshold`` as float32 [n]: ``score_with_threshold`` takes one per example (batch
    first, so TF Serving's batching can merge requests); a number is repeated n times."""
    value = np.asarray(threshold, dtype=np.float32)
    if value.ndim == 0:
        return np.full([n], value, np.float32)
    if value.shape != (n,):
        raise ValueError(
            f"threshold must be a number or one per example, shape [{n}]; "
            f"got shape {list(value.shape)}"
        )
    return value


def _check_labels(model: str, inputs: dict[str, Any], outputs: dict, key: str, out: str) -> None:
    """Raise :class:`InvalidLabelsError` for the rows whose output ``out`` came back all NaN
    from a finite input ``key`` under given labels: the signatures' answer to a label
    outside [0, num_classes). A non-finite input's NaN score is an answer, not an error."""
    if "labels" not in inputs:
        return
    n = len(inputs["labels"])
    given = np.asarray(inputs[key]).reshape(n, -1)
    answer = np.asarray(outputs[out], dtype=np.float64).reshape(n, -1)
    rows = np.flatnonzero(np.isnan(answer).all(axis=1) & np.isfinite(given).all(axis=1))
    if rows.size:
        raise InvalidLabelsError(model, rows, inputs["labels"][rows], outputs)


def _wait_until_available(
    client: ServingClient | GrpcServingClient, where: str, timeout: float, interval: float
) -> dict[str, Any]:
    """Poll ``client.status()`` until a version is AVAILABLE (both clients' method)."""
    deadline = time.monotonic() + timeout
    last: str = "no answer yet"
    while True:
        try:
            status = client.status()
            if any(s.get("state") == "AVAILABLE" for s in status["model_version_status"]):
                return status
            last = f"status {status}"
        except (ServingError, ConnectionError, OSError, KeyError, ValueError) as err:
            last = str(err)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"model '{client.model}' at {where} not AVAILABLE after {timeout:.0f}s; "
                f"last: {last}"
            )
        time.sleep(interval)


class _Convenience(abc.ABC):
    """``generate``, ``score`` and ``score_sequences`` on top of ``predict`` (REST and gRPC)."""

    model: str

    @abc.abstractmethod
    def predict(
        self, inputs: Mapping[str, Any], signature_name: str = "serving_default", **kw: Any
    ) -> dict[str, np.ndarray]:
        """Run ``signature_name`` on named inputs; outputs by name as numpy arrays."""

    def generate(
        self,
        z: Any,
        labels: Any = None,
        signature_name: str = "generate",
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> np.ndarray:
        """Images from latent vectors ``z`` (and class ``labels`` for conditional models;
        a label outside the model's classes raises :class:`InvalidLabelsError`)."""
        inputs = _conditioned({"z": np.asarray(z, dtype=np.float32)}, labels)
        out = self.predict(inputs, signature_name, version=version, label=label)
        _check_labels(self.model, inputs, out, "z", "images")
        return out["images"]

    def score(
        self,
        images: Any,
        labels: Any = None,
        signature_name: str | None = None,
        *,
        threshold: Any = None,
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores (float32) and verdicts (bool) for a batch of ``images`` (under
        class ``labels`` [N] for a conditional model such as a CVAE; a label outside its
        classes raises :class:`InvalidLabelsError`). ``signature_name`` defaults to
        ``score`` (the calibrated threshold), or ``score_with_threshold`` when a
        ``threshold`` is given: a number (sent as one per example) or an array [N]."""
        images = np.asarray(images, dtype=np.float32)
        inputs = _conditioned({"images": images}, labels)
        if threshold is not None:
            inputs["threshold"] = _per_example(threshold, len(images))
        name = signature_name or ("score" if threshold is None else "score_with_threshold")
        out = self.predict(inputs, name, version=version, label=label)
        _check_labels(self.model, inputs, out, "images", "anomaly_score")
        return out["anomaly_score"], out["is_anomaly"]

    def score_sequences(
        self,
        sequences: Any,
        signature_name: str | None = None,
        *,
        threshold: Any = None,
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anomaly scores [N] (float32), verdicts [N] (bool) and per-step scores [N, T]
        (float32, 0 at padding) for ``sequences`` [N, T, F] padded with the model's
        ``mask_value``, from a sequence autoencoder's ``score`` signature (or
        ``score_with_threshold`` with a ``threshold``, as in :meth:`score`)."""
        sequences = np.asarray(sequences, dtype=np.float32)
        inputs = {"sequences": sequences}
        if threshold is not None:
            inputs["threshold"] = _per_example(threshold, len(sequences))
        name = signature_name or ("score" if threshold is None else "score_with_threshold")
        out = self.predict(inputs, name, version=version, label=label)
        return out["anomaly_score"], out["is_anomaly"], out["step_scores"]


# --------------------------------------------------------------------------- REST


class ServingClient(_Convenience):
    """REST client for one model of TF Serving (or of ``zoo serve``)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8501",
        model: str = "dcgan",
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._signatures: dict[tuple[int | None, str | None], dict[str, Any]] = {}

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        url = self.base_url + path
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace") or err.reason
            raise ServingError(err.code, str(message), url=url) from None
        except urllib.error.URLError as err:
            raise ConnectionError(
                f"cannot reach the serving REST API at {url}: {err.reason}"
            ) from None

    def status(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """``GET /v1/models/{model}[...]``: the model's ``model_version_status``."""
        return self._call("GET", _model_path(self.model, version, label))

    def metadata(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """``GET /v1/models/{model}[...]/metadata``: model spec and signature defs."""
        meta = self._call("GET", _model_path(self.model, version, label) + "/metadata")
        self._signatures[(version, label)] = meta["metadata"]["signature_def"]["signature_def"]
        return meta

    def _signature(self, name: str, version: int | None, label: str | None) -> dict[str, Any]:
        if (version, label) not in self._signatures:
            self.metadata(version, label)
        return self._signatures[(version, label)].get(name, {})

    def wait_until_available(self, timeout: float = 60.0, interval: float = 0.25) -> dict[str, Any]:
        """Poll the status until a version is AVAILABLE; return it, or raise TimeoutError."""
        return _wait_until_available(self, self.base_url, timeout, interval)

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
        columnar: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run ``:predict``; return ``{output name: array}`` with the signature's dtypes.

        ``columnar=True`` sends ``{"inputs": {...}}``; ``False`` sends row-format
        ``{"instances": [{...}, ...]}`` (every input must share the batch dimension).
        """
        payload: dict[str, Any] = {"signature_name": signature_name}
        columns = {key: _encode(value) for key, value in inputs.items()}
        if columnar:
            payload["inputs"] = columns
        else:
            sizes = {k: len(c) if isinstance(c, list) else None for k, c in columns.items()}
            if len(set(sizes.values())) != 1 or None in sizes.values():
                raise ValueError(
                    f"row format needs every input to share the batch dimension; got {sizes} "
                    "(use columnar=True)"
                )
            batch = next(iter(sizes.values()))
            payload["instances"] = [{k: col[i] for k, col in columns.items()} for i in range(batch)]
        response = self._call("POST", _model_path(self.model, version, label) + ":predict", payload)
        outputs_meta = self._signature(signature_name, version, label).get("outputs", {})
        names = sorted(outputs_meta)
        result = response["outputs"] if columnar else response["predictions"]
        single = names[0] if len(names) == 1 else "output"
        if columnar:
            named = isinstance(result, dict) and len(names) != 1 and set(result) != {"b64"}
            raw = result if named else {single: result}
        elif (
            len(names) != 1
            and isinstance(result, list)
            and result
            and isinstance(result[0], dict)
            and set(result[0]) != {"b64"}
        ):
            raw = {k: [row[k] for row in result] for k in result[0]}
        else:
            raw = {single: result}
        return {k: _decode(v, outputs_meta.get(k, {}).get("dtype")) for k, v in raw.items()}


# --------------------------------------------------------------------------- gRPC


class GrpcServingClient(_Convenience):
    """gRPC client for tensorflow_model_server's ``--port`` (8500) and ``zoo serve --port``.

    ``status()`` and ``metadata()`` return the same JSON-shaped dicts as
    :class:`ServingClient` (``ModelService/GetModelStatus`` and
    ``PredictionService/GetModelMetadata``, printed as TF Serving's REST API prints
    them); ``predict`` returns each output with the dtype of its ``TensorProto``. A
    refusal raises :class:`ServingError` with the HTTP status TF Serving's REST API
    gives for the gRPC code (``grpc_code`` names the code); an unreachable server
    raises ConnectionError.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:8500",
        model: str = "dcgan",
        timeout: float = 30.0,
        *,
        channel: Any = None,
    ) -> None:
        self.target = target
        self.model = model
        self.timeout = timeout
        self._channel = channel
        self._stub: Any = None
        self._model_stub: Any = None

    @staticmethod
    def _model_spec(spec: Any, model: str, version: int | None, label: str | None) -> None:
        """Fill a ``ModelSpec``: name and, optionally, a version or a label."""
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label

    def build_request(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
    ) -> Any:
        """The ``PredictRequest`` proto :meth:`predict` sends."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, self.model, version, label)
        request.model_spec.signature_name = signature_name
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        return request

    @staticmethod
    def parse_response(response: Any) -> dict[str, np.ndarray]:
        """``PredictResponse`` -> ``{output name: array}``."""
        import tensorflow as tf

        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def _get_channel(self) -> Any:
        if self._channel is None:
            import grpc

            # Outputs (image batches) may exceed gRPC's default 4 MB receive limit.
            options = [("grpc.max_receive_message_length", -1)]
            self._channel = grpc.insecure_channel(self.target, options=options)
        return self._channel

    def _get_stub(self) -> Any:
        if self._stub is None:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            channel = self._get_channel()
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return self._stub

    def _get_model_stub(self) -> Any:
        if self._model_stub is None:
            from tensorflow_serving.apis import model_service_pb2_grpc

            self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._get_channel())
        return self._model_stub

    def _call(self, method: Any, request: Any) -> Any:
        """One RPC; gRPC errors become :class:`ServingError` (or ConnectionError)."""
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code().name if err.code() is not None else "UNKNOWN"
            details = err.details() or code
            # The channel's own failure ("failed to connect to all addresses"), not a
            # server's 503 (a full batch queue), which is a ServingError.
            if code == "UNAVAILABLE" and "failed to connect" in details.lower():
                raise ConnectionError(
                    f"cannot reach the serving gRPC API at {self.target}: {details}"
                ) from None
            raise ServingError(
                _GRPC_TO_HTTP.get(code, 500), details, url=self.target, grpc_code=code
            ) from None

    @staticmethod
    def _to_json(message: Any) -> dict[str, Any]:
        from google.protobuf import json_format

        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    def status(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """``ModelService/GetModelStatus``: the model's ``model_version_status``."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec, self.model, version, label)
        return self._to_json(self._call(self._get_model_stub().GetModelStatus, request))

    def metadata(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """``PredictionService/GetModelMetadata``: model spec and signature defs, shaped as
        the REST API's ``/metadata`` answer."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec, self.model, version, label)
        request.metadata_field.append("signature_def")
        response = self._call(self._get_stub().GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        spec = self._to_json(response.model_spec)
        return {
            "model_spec": {
                "name": spec["name"],
                "signature_name": spec["signature_name"],
                "version": spec.get("version", ""),
            },
            "metadata": {"signature_def": self._to_json(sig_map)},
        }

    def wait_until_available(self, timeout: float = 60.0, interval: float = 0.25) -> dict[str, Any]:
        """Poll the status until a version is AVAILABLE; return it, or raise TimeoutError."""
        return _wait_until_available(self, self.target, timeout, interval)

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``Predict``; gRPC errors raise :class:`ServingError` (status as REST would give)."""
        request = self.build_request(inputs, signature_name, version, label)
        return self.parse_response(self._call(self._get_stub().Predict, request))

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = self._model_stub = None
