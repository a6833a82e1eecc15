"""TF Serving's REST predict format: request bodies in, response bodies out.

The rules tensorflow_model_server's REST API applies, with its error texts
(https://www.tensorflow.org/tfx/serving/api_rest):

- row format ``{"instances": [...]}`` (one item per example; an object keyed by input
  name when the signature has several inputs) answers ``{"predictions": ...}``;
  columnar format ``{"inputs": ...}`` answers ``{"outputs": ...}``;
- string inputs are JSON strings or ``{"b64": "..."}``; string outputs whose name ends
  in ``_bytes`` (or that are not UTF-8) are written as ``{"b64": "..."}``;
- values are cast to the signature's dtypes (no silent float -> int truncation, integer
  ranges checked) and shapes checked against the signature, ragged lists refused.

Every refusal is a :class:`RequestError` with the HTTP status TF Serving answers.
TensorFlow is imported on first call.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DEFAULT_SIGNATURE",
    "InputSpec",
    "RequestError",
    "Servable",
    "check_predict_body",
    "predict_response",
]

DEFAULT_SIGNATURE = "serving_default"
#: Deepest JSON nesting a request may have: far above any tensor's rank, far below
#: Python's recursion limit (deeper bodies get 400, not a RecursionError's 500).
MAX_JSON_DEPTH = 64


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InputSpec:
    """One input of a signature: its key, ``tf.DType`` and static shape."""

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


class Servable(Protocol):
    """What a predict request runs on: one loaded version of a model."""

    name: str
    version: int
    signatures: dict[str, Any]  # signature name -> concrete function
    inputs: dict[str, dict[str, InputSpec]]  # signature name -> input key -> spec


# --------------------------------------------------------------------------- predict


def json_depth(value: Any) -> int:
    """How deeply ``value``'s lists and objects nest (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            if depth + 1 > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in item)
    return deepest


def check_predict_body(body: Any) -> dict[str, Any]:
    """The JSON-decoded body if it is an object nested at most :data:`MAX_JSON_DEPTH`
    deep (checked before the model is looked up)."""
    if not isinstance(body, dict):
        raise RequestError(
            400,
            'the request body must be a JSON object: {"instances": [...]} (row format) '
            'or {"inputs": ...} (columnar format)',
        )
    if json_depth(body) > MAX_JSON_DEPTH:
        raise RequestError(400, f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels")
    return body


def predict_response(
    body: dict[str, Any], servable: Servable, *, max_batch_size: int | None = None
) -> dict[str, Any]:
    """Run a predict request body on ``servable``; return the response JSON."""
    name = servable.name
    sig_name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(sig_name, str):
        raise RequestError(400, "'signature_name' key must be a string value.")
    sig_name = sig_name or DEFAULT_SIGNATURE  # TF Serving: an empty name is the default
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


def _describe_inputs(specs: dict[str, InputSpec]) -> str:
    return ", ".join(f"'{k}' ({s.describe})" for k, s in specs.items()) or "none"


def _batch_too_large(batch: int, limit: int) -> RequestError:
    return RequestError(
        400,
        f"batch size {batch} is larger than max_batch_size {limit}; send at most {limit} "
        "instances per request",
    )


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _check_keys(
    given: dict[str, Any],
    specs: dict[str, InputSpec],
    where: str,
    sig: str,
    *,
    extra_allowed: bool = False,
) -> None:
    """Every input present; unknown keys are refused unless ``extra_allowed`` (TF
    Serving ignores unknown keys of a columnar ``inputs`` object)."""
    missing = [k for k in specs if k not in given]
    unknown = [] if extra_allowed else [k for k in given if k not in specs]
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
    instances: Any, specs: dict[str, InputSpec], sig: str, max_batch_size: int | None
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
    inputs: Any, specs: dict[str, InputSpec], sig: str
) -> tuple[dict[str, np.ndarray], int | None]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        _check_keys(inputs, specs, "inputs", sig, extra_allowed=True)
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


def _ragged_error(value: Any, spec: InputSpec, where: str) -> RequestError:
    return RequestError(
        400,
        f"input '{spec.key}' is ragged: {_ragged_detail(value, where)}; every instance and "
        f"nested list must have the same length (input '{spec.key}' expects {spec.describe})",
    )


def _first_leaf(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _string_leaf(value: Any, spec: InputSpec) -> bytes:
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


def _to_array(value: Any, spec: InputSpec, where: str) -> np.ndarray:
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
            if raw.dtype == object and spec.dtype.is_floating and _all_numbers(value):
                raw = np.array(value, dtype=np.float64)  # integers beyond int64 (TF Serving
                # reads every JSON number as a double for a float input)
        except (ValueError, TypeError, OverflowError):
            raise _ragged_error(value, spec, where) from None
        arr = _cast(raw, value, spec)
    _check_shape(arr, spec)
    return arr


def _all_numbers(value: Any) -> bool:
    """Whether every leaf of nested lists ``value`` is a JSON number (not a boolean)."""
    leaves: list[Any] = []
    _flatten(value, leaves)
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in leaves)


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        for item in value:
            _flatten(item, out)
    else:
        out.append(value)


def _cast(raw: np.ndarray, value: Any, spec: InputSpec) -> np.ndarray:
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
        with np.errstate(over="ignore"):
            out = raw.astype(np_dtype)
        if not np.all(np.isfinite(out[np.isfinite(raw)])):  # e.g. 1e39 for a float32
            info = np.finfo(np_dtype)
            raise RequestError(
                400,
                f"input '{spec.key}' expects {spec.describe}; a value is out of its range "
                f"(|x| <= {info.max:.4g})",
            )
        return out
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


def _check_shape(arr: np.ndarray, spec: InputSpec) -> None:
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
    fn: Any, arrays: dict[str, np.ndarray], specs: dict[str, InputSpec], sig: str
) -> dict[str, np.ndarray]:
    import tensorflow as tf  # imported on first use: importing this module stays light

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
