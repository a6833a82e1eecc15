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
from collections.abc import Callable
from typing import Any

import numpy as np

from .servable import (
    DEFAULT_SIGNATURE,
    InputSpec,
    RequestError,
    Servable,
    batch_size_of,
    call_signature,
    check_batch_size,
    check_shape,
    describe_inputs,
    signature_of,
)

__all__ = [
    "DEFAULT_SIGNATURE",
    "InputSpec",
    "RequestError",
    "Servable",
    "check_predict_body",
    "predict_response",
    "tf_serving_floats",
]

#: Deepest JSON nesting a request may have: far above any tensor's rank, far below
#: Python's recursion limit (deeper bodies get 400, not a RecursionError's 500).
MAX_JSON_DEPTH = 64

#: Runs one signature on checked arrays: (servable, signature name, arrays) -> outputs.
SignatureRunner = Callable[[Servable, str, dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_directly(servable: Servable, sig: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Call the signature at once (no batching)."""
    return call_signature(servable.signatures[sig], arrays, servable.inputs[sig], sig)


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
            # only containers go on the stack: a list of a million numbers is one pass
            # of type checks, not a million stack entries
            stack.extend((c, depth + 1) for c in item if type(c) is list or type(c) is dict)
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
    body: dict[str, Any],
    servable: Servable,
    *,
    max_batch_size: int | None = None,
    run: SignatureRunner = run_directly,
) -> dict[str, Any]:
    """Run a predict request body on ``servable``; return the response JSON.

    ``run`` calls the signature on the decoded arrays (the model server passes its
    batching scheduler); the default calls it at once."""
    sig_name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(sig_name, str):
        raise RequestError(400, "'signature_name' key must be a string value.")
    sig_name = signature_of(servable, sig_name)  # TF Serving: an empty name is the default
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
            f"'{sig_name}' expects inputs: {describe_inputs(specs)}",
        )
    if has_instances:
        arrays = _row_inputs(body["instances"], specs, sig_name, max_batch_size)
    else:
        arrays = _columnar_inputs(body["inputs"], specs, sig_name)
        check_batch_size(batch_size_of(arrays, specs), max_batch_size)
    outputs = run(servable, sig_name, arrays)
    if has_instances:
        return {"predictions": _row_outputs(outputs, sig_name)}
    if len(outputs) == 1:
        ((key, value),) = outputs.items()
        return {"outputs": _to_json(value, key)}
    return {"outputs": {key: _to_json(value, key) for key, value in outputs.items()}}


# --------------------------------------------------------------------------- request decoding


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
            f"{describe_inputs(specs)}",
        )


def _row_inputs(
    instances: Any, specs: dict[str, InputSpec], sig: str, max_batch_size: int | None
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, "'instances' must be a non-empty JSON list (one item per instance)")
    batch = len(instances)
    check_batch_size(batch, max_batch_size)  # before decoding: refuse early, cheaply
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named:
        if len(specs) != 1:
            raise RequestError(
                400,
                f"signature '{sig}' has {len(specs)} inputs, so each instance must be a JSON "
                f"object keyed by input name; expected inputs: {describe_inputs(specs)}",
            )
        ((key, spec),) = specs.items()
        if any(isinstance(x, dict) and not _is_b64(x) for x in instances):
            raise RequestError(400, "instances mix JSON objects and bare values; use one form")
        return {key: _to_array(instances, spec, "instances")}
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or _is_b64(instance):
            raise RequestError(
                400,
                f"instances[{i}] is not a JSON object; every instance must be an object keyed "
                f"by input name ({describe_inputs(specs)})",
            )
        _check_keys(instance, specs, f"instances[{i}]", sig)
    arrays = {
        key: _to_array([inst[key] for inst in instances], spec, f"instances[*]['{key}']")
        for key, spec in specs.items()
    }
    return arrays


def _columnar_inputs(inputs: Any, specs: dict[str, InputSpec], sig: str) -> dict[str, np.ndarray]:
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
                f"keyed by input name; expected inputs: {describe_inputs(specs)}",
            )
        ((key, spec),) = specs.items()
        arrays = {key: _to_array(inputs, spec, "inputs")}
    return arrays


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
    check_shape(arr, spec)
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


def _round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` (float64) rounded to ``digits`` significant decimal digits: the double
    nearest the decimal printf's ``%.<digits>g`` writes."""
    magnitude = np.abs(values)
    finite = np.isfinite(values) & (magnitude > 0)
    exponent = np.floor(np.log10(np.where(finite, magnitude, 1.0))).astype(np.int64)
    shift = digits - 1 - exponent  # decimal places that keep ``digits`` digits
    # Powers of ten up to 1e22 are exact doubles, so one multiply or divide of the
    # integer mantissa gives the correctly rounded double; beyond, printf decides.
    exact = finite & (np.abs(shift) <= 22)
    power = 10.0 ** np.abs(np.where(exact, shift, 0))
    with np.errstate(over="ignore", invalid="ignore"):
        mantissa = np.round(np.where(shift >= 0, values * power, values / power))
        rounded = np.where(shift >= 0, mantissa / power, mantissa * power)
    out = np.where(exact, rounded, values)
    for i in np.flatnonzero(finite & ~exact):
        out.flat[i] = float(f"{values.flat[i]:.{digits}g}")
    return out


def tf_serving_floats(arr: np.ndarray) -> np.ndarray:
    """Float64 values that print (Python ``repr``) the way TF Serving writes ``arr``.

    TF Serving's JSON writer (``WriteDecimal`` in ``util/json_tensor.cc``) prints a float
    with six significant digits when that reads back as the same float, else with
    ``max_digits10`` (9 for float32, 17 for float64): ``0.2`` stays ``0.2``, not
    ``0.20000000298023224`` as a float32 widened to a double would print.
    """
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    exact = arr.astype(dtype)
    wide = exact.astype(np.float64)
    if dtype == np.float64:
        short = _round_significant(wide, 6)
        return np.where(short == wide, short, wide)
    short = _round_significant(wide, 6)
    with np.errstate(over="ignore"):
        fits = short.astype(np.float32) == exact
    return np.where(fits, short, _round_significant(wide, 9))


def _to_json(arr: np.ndarray, name: str) -> Any:
    """Numpy output -> JSON value; strings named ``*_bytes`` (or not UTF-8) as {"b64": ...}."""
    if arr.dtype.kind in "OSU":
        return _strings_to_json(arr.tolist(), binary=name.endswith("_bytes"))
    if arr.dtype.kind == "V":  # ml_dtypes' bfloat16 and friends: tolist() is not JSON-ready
        arr = arr.astype(np.float32)
    if arr.dtype.kind == "f":
        return tf_serving_floats(arr).tolist()
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
