"""A local server that speaks TF Serving's REST API over a TF Serving ``models.config``.

It loads every model version the config's version policies select (with
``tf.saved_model.load``) and answers the same requests as tensorflow_model_server's
REST API, with the same JSON shapes and error conventions:

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
import base64
import binascii
import gc
import json
import logging
import socket
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from .config import (
    ModelConfig,
    load_model_server_config,
    resolve_base_path,
    resolve_version_labels,
    select_versions,
    validate_batching_parameters,
    version_folders,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "ModelServer",
    "RequestError",
    "ServableVersion",
    "ServedModel",
    "ServingHTTPServer",
    "build_arg_parser",
    "main",
    "make_server",
]

log = logging.getLogger("zoo.serving")

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
_LINGER_BYTES = 16 * 1024 * 1024  # how much of a refused body we drain so the client reads the 413
_USAGE = (
    "expected GET /v1/models/{name}[/versions/{version}|/labels/{label}][/metadata] or "
    "POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict"
)


def _tf() -> Any:
    import tensorflow as tf  # imported on first use: `--help` stays fast

    return tf


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- loaded models


@dataclass(frozen=True)
class _InputSpec:
    key: str
    dtype: Any  # tf.DType
    shape: tuple[int | None, ...] | None  # None = unknown rank

    @property
    def shape_text(self) -> str:
        if self.shape is None:
            return "<any>"
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"

    @property
    def describe(self) -> str:
        return f"shape {self.shape_text} and dtype {self.dtype.name}"


@dataclass
class ServableVersion:
    """One loaded version of a model: its SavedModel, signatures and metadata."""

    name: str
    version: int
    path: Path
    loaded: Any  # the object tf.saved_model.load returned; keeps variables alive
    signatures: dict[str, Any]
    signature_defs: dict[str, Any]  # JSON form of the SignatureDefMap, as TF Serving prints it
    inputs: dict[str, dict[str, _InputSpec]] = field(default_factory=dict)


@dataclass
class ServedModel:
    """A model of the config with its loaded versions and version labels."""

    config: ModelConfig
    base_path: Path
    versions: dict[int, ServableVersion]
    labels: dict[str, int]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def latest(self) -> ServableVersion:
        if not self.versions:
            raise RequestError(
                404,
                f"Servable not found for request: Latest({self.name}); no version of "
                f"'{self.name}' is loaded (nothing under {self.base_path} when the server "
                "started: export a version, then restart the server)",
            )
        return self.versions[max(self.versions)]


def _read_signature_defs(version_dir: Path) -> dict[str, Any]:
    """The serve-tagged MetaGraph's signature defs, as TF Serving's metadata JSON prints them."""
    from google.protobuf import json_format, text_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb = version_dir / "saved_model.pb"
    if pb.is_file():
        saved_model.ParseFromString(pb.read_bytes())
    else:
        text_format.Parse((version_dir / "saved_model.pbtxt").read_text(), saved_model)
    graphs = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ValueError(f"{version_dir}: the SavedModel has no MetaGraph tagged 'serve'")
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in graphs[0].signature_def.items():
        sig_map.signature_def[key].CopyFrom(sig)
    return json_format.MessageToDict(
        sig_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )["signature_def"]


def _load_version(name: str, version: int, path: Path) -> ServableVersion:
    tf = _tf()
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    signatures = dict(loaded.signatures)
    inputs: dict[str, dict[str, _InputSpec]] = {}
    for sig_name, fn in signatures.items():
        specs = fn.structured_input_signature[1]
        inputs[sig_name] = {
            key: _InputSpec(
                key,
                spec.dtype,
                None if spec.shape.rank is None else tuple(spec.shape.as_list()),
            )
            for key, spec in sorted(specs.items())
        }
    return ServableVersion(
        name=name,
        version=version,
        path=path,
        loaded=loaded,
        signatures=signatures,
        signature_defs=_read_signature_defs(path),
        inputs=inputs,
    )


class ModelServer:
    """Every model of a TF Serving ``models.config``, loaded per version, answering REST calls.

    ``models_root`` is the local folder that stands for the container's ``/models``
    (default: ``<config dir>/models``). Methods return JSON-ready dicts or raise
    :class:`RequestError`; they are safe to call from many threads.
    """

    def __init__(
        self,
        config_path: str | Path,
        models_root: str | Path | None = None,
        *,
        allow_version_labels_for_unavailable_models: bool = False,
    ) -> None:
        self.config_path = Path(config_path)
        self.config = load_model_server_config(self.config_path)
        config_dir = self.config_path.resolve().parent
        self.models_root = Path(models_root) if models_root is not None else config_dir / "models"
        self.models: dict[str, ServedModel] = {}
        for model_config in self.config.model_config_list.config:
            base = resolve_base_path(model_config.base_path, self.models_root, config_dir)
            folders = version_folders(base)
            chosen = select_versions(model_config, folders)
            if not chosen:
                found = (
                    f"found versions {sorted(folders)} but model_version_policy selects none"
                    if folders
                    else "found no integer-named version folder holding saved_model.pb"
                )
                problem = (
                    f"model '{model_config.name}': base_path {model_config.base_path!r} is "
                    f"{base}; {found} (expected e.g. {base / '1' / 'saved_model.pb'})"
                )
                labelled = model_config.version_labels and not (
                    allow_version_labels_for_unavailable_models
                )
                if folders or labelled:
                    # A policy that selects nothing is a config mistake; labels need
                    # loaded versions (TF Serving refuses them too).
                    extra = "; its version_labels need loaded versions" if labelled else ""
                    raise ValueError(problem + extra)
                # Nothing exported yet: serve the other models, answer 404 for this one.
                log.warning("%s: it is not available until a version is exported", problem)
            versions = {v: _load_version(model_config.name, v, folders[v]) for v in chosen}
            labels = resolve_version_labels(
                model_config,
                chosen,
                allow_unavailable=allow_version_labels_for_unavailable_models,
            )
            self.models[model_config.name] = ServedModel(model_config, base, versions, labels)

    # ---------------------------------------------------------------- lookups

    def summary(self) -> str:
        """One line: each model with its versions, labels and signatures."""
        parts = []
        for model in self.models.values():
            if not model.versions:
                parts.append(f"{model.name} (no versions under {model.base_path}: not available)")
                continue
            versions = ",".join(str(v) for v in sorted(model.versions, reverse=True))
            sigs = ", ".join(sorted(model.latest.signatures))
            labels = "".join(f" {k}->{v}" for k, v in sorted(model.labels.items()))
            parts.append(f"{model.name} v{versions}{' labels' + labels if labels else ''} [{sigs}]")
        return "; ".join(parts)

    def _model(self, name: str, request: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise RequestError(
                404,
                f"Servable not found for request: {request}; this server serves models: "
                f"{', '.join(sorted(self.models))}",
            )
        return model

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServableVersion:
        """The servable a request names (latest when neither version nor label is given).

        Unknown model or version: 404; unknown label: 400 (TF Serving's
        INVALID_ARGUMENT "Unrecognized servable version label").
        """
        if label is not None:
            model = self._model(name, f"Latest({name})")
            if label not in model.labels:
                known = ", ".join(f"{k} -> {v}" for k, v in sorted(model.labels.items()))
                raise RequestError(
                    400,
                    f"Unrecognized servable version label: {label}; model '{name}' has "
                    + (f"labels: {known}" if known else "no version labels"),
                )
            version = model.labels[label]
        else:
            request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            model = self._model(name, request)
        if version is None:
            return model.latest
        if version not in model.versions:
            raise RequestError(
                404,
                f"Servable not found for request: Specific({name}, {version}); loaded versions "
                f"of '{name}': {', '.join(str(v) for v in sorted(model.versions))}",
            )
        return model.versions[version]

    # ---------------------------------------------------------------- APIs

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """``GetModelStatusResponse`` JSON: every loaded version, or the one named."""
        model = self._model(name, f"Latest({name})")
        if not model.versions:
            raise RequestError(404, f"Could not find any versions of model {name}")
        if version is None and label is None:
            versions = sorted(model.versions, reverse=True)
        else:
            versions = [self.resolve(name, version, label).version]
        return {
            "model_version_status": [
                {
                    "version": str(v),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
                for v in versions
            ]
        }

    def metadata(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """``GetModelMetadataResponse`` JSON with the ``signature_def`` metadata."""
        servable = self.resolve(name, version, label)
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": servable.signature_defs}},
        }

    def predict(
        self,
        name: str,
        body: Any,
        version: int | None = None,
        label: str | None = None,
        *,
        max_batch_size: int | None = None,
    ) -> dict[str, Any]:
        """Run a REST predict request body (already JSON-decoded); return the response JSON."""
        if not isinstance(body, dict):
            raise RequestError(
                400,
                'the request body must be a JSON object: {"instances": [...]} (row format) '
                'or {"inputs": ...} (columnar format)',
            )
        servable = self.resolve(name, version, label)
        sig_name = body.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(sig_name, str):
            raise RequestError(400, "'signature_name' key must be a string value.")
        if sig_name not in servable.signatures:
            available = ", ".join(sorted(servable.signatures))
            raise RequestError(
                400,
                f'Serving signature name: "{sig_name}" not found in signature def; model '
                f"'{name}' version {servable.version} has signatures: {available}",
            )
        specs = servable.inputs[sig_name]
        has_instances, has_inputs = "instances" in body, "inputs" in body
        if has_instances and has_inputs:
            raise RequestError(
                400,
                "Not formatted correctly: expecting only one of 'inputs' (columnar) or "
                "'instances' (row) keys, not both",
            )
        if not has_instances and not has_inputs:
            raise RequestError(
                400,
                "Missing 'inputs' or 'instances' key; signature "
                f"'{sig_name}' expects inputs: {_describe_inputs(specs)}",
            )
        if has_instances:
            arrays, batch = _row_inputs(body["instances"], specs, sig_name, max_batch_size)
        else:
            arrays, batch = _columnar_inputs(body["inputs"], specs, sig_name)
            if max_batch_size is not None and batch is not None and batch > max_batch_size:
                raise _batch_too_large(batch, max_batch_size)
        outputs = _call(servable.signatures[sig_name], arrays, specs, sig_name)
        if has_instances:
            return {"predictions": _row_outputs(outputs, sig_name)}
        if len(outputs) == 1:
            ((key, value),) = outputs.items()
            return {"outputs": _to_json(value, key)}
        return {"outputs": {key: _to_json(value, key) for key, value in outputs.items()}}


# --------------------------------------------------------------------------- request decoding


def _describe_inputs(specs: dict[str, _InputSpec]) -> str:
    return ", ".join(f"'{k}' ({s.describe})" for k, s in specs.items()) or "none"


def _batch_too_large(batch: int, limit: int) -> RequestError:
    return RequestError(
        400,
        f"batch size {batch} is larger than max_batch_size {limit}; send at most {limit} "
        "instances per request",
    )


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _check_keys(given: dict[str, Any], specs: dict[str, _InputSpec], where: str, sig: str) -> None:
    missing = [k for k in specs if k not in given]
    unknown = [k for k in given if k not in specs]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing input(s) {', '.join(repr(k) for k in missing)}")
        if unknown:
            problems.append(f"unknown input(s) {', '.join(repr(k) for k in unknown)}")
        raise RequestError(
            400,
            f"{where}: {'; '.join(problems)}; signature '{sig}' expects inputs: "
            f"{_describe_inputs(specs)}",
        )


def _row_inputs(
    instances: Any, specs: dict[str, _InputSpec], sig: str, max_batch_size: int | None
) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, "'instances' must be a non-empty JSON list (one item per instance)")
    batch = len(instances)
    if max_batch_size is not None and batch > max_batch_size:
        raise _batch_too_large(batch, max_batch_size)
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named:
        if len(specs) != 1:
            raise RequestError(
                400,
                f"signature '{sig}' has {len(specs)} inputs, so each instance must be a JSON "
                f"object keyed by input name; expected inputs: {_describe_inputs(specs)}",
            )
        ((key, spec),) = specs.items()
        if any(isinstance(x, dict) and not _is_b64(x) for x in instances):
            raise RequestError(400, "instances mix JSON objects and bare values; use one form")
        return {key: _to_array(instances, spec, "instances")}, batch
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or _is_b64(instance):
            raise RequestError(
                400,
                f"instances[{i}] is not a JSON object; every instance must be an object keyed "
                f"by input name ({_describe_inputs(specs)})",
            )
        _check_keys(instance, specs, f"instances[{i}]", sig)
    arrays = {
        key: _to_array([inst[key] for inst in instances], spec, f"instances[*]['{key}']")
        for key, spec in specs.items()
    }
    return arrays, batch


def _columnar_inputs(
    inputs: Any, specs: dict[str, _InputSpec], sig: str
) -> tuple[dict[str, np.ndarray], int | None]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        _check_keys(inputs, specs, "inputs", sig)
        arrays = {
            key: _to_array(inputs[key], spec, f"inputs['{key}']") for key, spec in specs.items()
        }
    else:
        if len(specs) != 1:
            raise RequestError(
                400,
                f"signature '{sig}' has {len(specs)} inputs, so 'inputs' must be a JSON object "
                f"keyed by input name; expected inputs: {_describe_inputs(specs)}",
            )
        ((key, spec),) = specs.items()
        arrays = {key: _to_array(inputs, spec, "inputs")}
    batch = None
    for key, spec in specs.items():
        arr = arrays[key]
        if spec.shape and spec.shape[0] is None and arr.ndim >= 1:
            batch = max(batch or 0, int(arr.shape[0]))
    return arrays, batch


class _RaggedError(Exception):
    pass


def _rect_shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    shapes = {_rect_shape(v) for v in value}
    if len(shapes) > 1:
        raise _RaggedError
    return (len(value), *(shapes.pop() if shapes else ()))


def _ragged_detail(value: Any, path: str) -> str:
    """Where a nested list stops being rectangular, e.g. "[1] has shape [7] but [0] has [8]"."""
    if not isinstance(value, list):
        return f"{path} is ragged"
    shapes = []
    for i, item in enumerate(value):
        try:
            shapes.append(_rect_shape(item))
        except _RaggedError:
            return _ragged_detail(item, f"{path}[{i}]")
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            return f"{path}[{i}] has shape {list(shape)} but {path}[0] has shape {list(shapes[0])}"
    return f"{path} is ragged"


def _ragged_error(value: Any, spec: _InputSpec, where: str) -> RequestError:
    return RequestError(
        400,
        f"input '{spec.key}' is ragged: {_ragged_detail(value, where)}; every instance and "
        f"nested list must have the same length (input '{spec.key}' expects {spec.describe})",
    )


def _first_leaf(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _string_leaf(value: Any, spec: _InputSpec) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise RequestError(
                400, f"input '{spec.key}': invalid base64 in {{\"b64\": ...}} value"
            ) from None
    raise RequestError(
        400,
        f'input \'{spec.key}\' expects {spec.describe}: JSON strings or {{"b64": "..."}} '
        f"objects; got {json.dumps(value)[:40]}",
    )


def _to_array(value: Any, spec: _InputSpec, where: str) -> np.ndarray:
    """JSON value -> numpy array of the signature input's dtype, checked against its shape."""
    tf_dtype = spec.dtype
    if tf_dtype.name == "string":
        try:
            shape = _rect_shape(value)
        except _RaggedError:
            raise _ragged_error(value, spec, where) from None
        leaves: list[Any] = []
        _flatten(value, leaves)
        arr = np.empty(len(leaves), dtype=object)
        arr[:] = [_string_leaf(v, spec) for v in leaves]
        arr = arr.reshape(shape)
    else:
        try:
            raw = np.array(value)
        except (ValueError, TypeError):
            raise _ragged_error(value, spec, where) from None
        arr = _cast(raw, value, spec)
    _check_shape(arr, spec)
    return arr


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        for item in value:
            _flatten(item, out)
    else:
        out.append(value)


def _cast(raw: np.ndarray, value: Any, spec: _InputSpec) -> np.ndarray:
    tf_dtype = spec.dtype
    kind = raw.dtype.kind
    np_dtype = tf_dtype.as_numpy_dtype
    if raw.size == 0:
        return raw.astype(np_dtype)
    if kind in "US":
        got = f"strings (e.g. {json.dumps(str(_first_leaf(value)))[:40]})"
    elif kind == "O":
        got = "JSON objects, nulls or mixed values"
    elif tf_dtype.is_bool:
        if kind == "b":
            return raw
        got = "numbers (booleans are written true/false)"
    elif kind == "b":
        got = "booleans"
    elif tf_dtype.is_floating and kind in "fiu":
        return raw.astype(np_dtype)
    elif tf_dtype.is_integer and kind in "iu":
        info = np.iinfo(np_dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise RequestError(
                400,
                f"input '{spec.key}' expects {spec.describe}; values must lie in "
                f"[{info.min}, {info.max}], got [{raw.min()}, {raw.max()}]",
            )
        return raw.astype(np_dtype)
    elif tf_dtype.is_integer and kind == "f":
        got = "non-integer numbers (e.g. 1.5 or 1.0); integer inputs take JSON integers"
    else:
        got = f"values of numpy kind {raw.dtype}"
    raise RequestError(400, f"input '{spec.key}' expects {spec.describe}; got {got}")


def _check_shape(arr: np.ndarray, spec: _InputSpec) -> None:
    expected = spec.shape
    if expected is None:
        return
    if arr.ndim != len(expected) or any(
        e is not None and e != a for e, a in zip(expected, arr.shape, strict=False)
    ):
        raise RequestError(
            400,
            f"input '{spec.key}' expects {spec.describe}; got shape {list(arr.shape)}",
        )


def _error_line(err: Exception) -> str:
    """The informative line of a TF runtime error: an in-graph check's own message
    ("assertion failed: [...]") when there is one, else the first line."""
    lines = [line.strip() for line in (getattr(err, "message", "") or str(err)).splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith("assertion failed"):
            return line
    return lines[0] if lines else type(err).__name__


def _call(
    fn: Any, arrays: dict[str, np.ndarray], specs: dict[str, _InputSpec], sig: str
) -> dict[str, np.ndarray]:
    tf = _tf()
    feeds = {k: tf.convert_to_tensor(arrays[k], dtype=specs[k].dtype) for k in specs}
    try:
        outputs = fn(**feeds)
    except tf.errors.InvalidArgumentError as err:
        raise RequestError(
            400, f"signature '{sig}' rejected the input: {_error_line(err)}"
        ) from None
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    return {k: np.asarray(v.numpy()) for k, v in outputs.items()}


# --------------------------------------------------------------------------- response encoding


def _strings_to_json(value: Any, binary: bool) -> Any:
    if isinstance(value, list):
        return [_strings_to_json(v, binary) for v in value]
    if isinstance(value, bytes):
        if not binary:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _to_json(arr: np.ndarray, name: str) -> Any:
    """Numpy output -> JSON value; strings named ``*_bytes`` (or not UTF-8) as {"b64": ...}."""
    if arr.dtype.kind in "OSU":
        return _strings_to_json(arr.tolist(), binary=name.endswith("_bytes"))
    if arr.dtype.kind == "V":  # ml_dtypes' bfloat16 and friends: tolist() is not JSON-ready
        arr = arr.astype(np.float32)
    return arr.tolist()


def _row_outputs(outputs: dict[str, np.ndarray], sig: str) -> Any:
    if len(outputs) == 1:
        ((key, value),) = outputs.items()
        return _to_json(value, key)
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise RequestError(
            400,
            f"signature '{sig}' outputs do not share a batch dimension ({sizes}); the row "
            "format needs one; send the request in columnar format ('inputs')",
        )
    columns = {k: _to_json(v, k) for k, v in outputs.items()}
    batch = next(iter(sizes.values()))
    return [{k: col[i] for k, col in columns.items()} for i in range(batch)]


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
