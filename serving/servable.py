"""What every transport shares: a loaded servable's inputs, how a request's arrays are
checked against them, and how a signature is called.

The REST codec (:mod:`zoo.serving.rest_format`) and the gRPC service
(:mod:`zoo.serving.grpc_server`) both turn a request into ``{input key: numpy array}``;
:func:`check_inputs` checks those arrays against the signature as TF Serving does
(every input present, dtype, shape, batch size), and :func:`call_signature` runs the
concrete function. Refusals are :class:`RequestError` with the HTTP status TF Serving
answers (gRPC maps it to its status code). TensorFlow is imported on first call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import numpy as np

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_SIGNATURE",
    "InputSpec",
    "RequestError",
    "Servable",
    "batch_size_of",
    "call_signature",
    "check_arrays",
    "check_batch_size",
    "check_shape",
    "describe_inputs",
    "refuse_classify_regress",
    "signature_of",
]

DEFAULT_SIGNATURE = "serving_default"
#: Largest batch a request may carry unless ``--max_batch_size`` says otherwise: a
#: 120 KB request for 20,000 seeds must not hold the server for a minute.
DEFAULT_MAX_BATCH_SIZE = 1024


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


def signature_of(servable: Servable, signature_name: str) -> str:
    """The signature a request names (empty = ``serving_default``); 400 naming the
    servable's signatures when it has no such one."""
    sig = signature_name or DEFAULT_SIGNATURE
    if sig not in servable.signatures:
        available = ", ".join(sorted(servable.signatures))
        raise RequestError(
            400,
            f'Serving signature name: "{sig}" not found in signature def; model '
            f"'{servable.name}' version {servable.version} has signatures: {available}",
        )
    return sig


def describe_inputs(specs: dict[str, InputSpec]) -> str:
    return ", ".join(f"'{k}' ({s.describe})" for k, s in specs.items()) or "none"


def check_shape(arr: np.ndarray, spec: InputSpec) -> None:
    """400 unless ``arr``'s rank and known dimensions match the signature input."""
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


def batch_size_of(arrays: dict[str, np.ndarray], specs: dict[str, InputSpec]) -> int | None:
    """The largest first dimension among inputs whose signature leaves it open (the batch)."""
    sizes = [
        int(arrays[k].shape[0])
        for k, spec in specs.items()
        if spec.shape and spec.shape[0] is None and arrays[k].ndim >= 1
    ]
    return max(sizes) if sizes else None


def check_batch_size(batch: int | None, limit: int | None) -> None:
    """400 when a request carries more examples than ``limit`` (``--max_batch_size``)."""
    if limit is not None and batch is not None and batch > limit:
        raise RequestError(
            400,
            f"batch size {batch} is larger than max_batch_size {limit}; send at most {limit} "
            "examples per request (the server's --max_batch_size flag sets the limit)",
        )


def check_arrays(arrays: dict[str, np.ndarray], specs: dict[str, InputSpec], sig: str) -> None:
    """400 unless ``arrays`` holds exactly the signature's inputs with its dtypes and shapes
    (what TF Serving's gRPC ``Predict`` checks; the REST codec casts JSON values first)."""
    missing = [k for k in specs if k not in arrays]
    unknown = [k for k in arrays if k not in specs]
    if missing or unknown:
        # Worded as the REST codec words it, so both APIs refuse alike.
        problems = [f"missing input(s) {', '.join(map(repr, missing))}"] if missing else []
        problems += [f"unknown input(s) {', '.join(map(repr, unknown))}"] if unknown else []
        raise RequestError(
            400,
            f"{'; '.join(problems)}; signature '{sig}' expects inputs: {describe_inputs(specs)}",
        )
    for key, spec in specs.items():
        arr = arrays[key]
        expected = np.dtype(spec.dtype.as_numpy_dtype)
        if arr.dtype != expected and not (expected.kind == "O" and arr.dtype.kind in "OSU"):
            raise RequestError(
                400,
                f"input '{key}' expects {spec.describe}; got dtype {arr.dtype.name}",
            )
        check_shape(arr, spec)


#: TF Serving's classify and regress APIs: the word its messages use, the method_name.
SIGNATURE_METHODS = {
    "classify": ("classification", "tensorflow/serving/classify"),
    "regress": ("regression", "tensorflow/serving/regress"),
}


def refuse_classify_regress(
    api: str, model: str, version: int, sig: str, signature_defs: dict[str, Any], instead: str
) -> NoReturn:
    """Answer a Classify/Regress (REST ``:classify``/``:regress``, gRPC ``Classify``...) as
    TF Serving's classifier.cc/regressor.cc do for the signatures served here: 400 for an
    unknown signature or one of another method (every exported signature is a predict
    one; ``instead`` says where to send it), 501 for a signature of that very method
    (its tf.Example input is not run here)."""
    kind, wanted = SIGNATURE_METHODS[api]
    if sig not in signature_defs:
        raise RequestError(
            400,
            f"No signature was found with the name: {sig}; model '{model}' version {version} "
            f"has signatures: {', '.join(sorted(signature_defs))}",
        )
    method = signature_defs[sig].get("method_name", "")
    if method != wanted:
        raise RequestError(
            400,
            f"Expected {kind} signature method_name to be {wanted}. Was: {method} "
            f"(signature '{sig}' of model '{model}'); {instead}",
        )
    raise RequestError(
        501,
        f"signature '{sig}' of model '{model}' is a {wanted} signature (tf.Example input); "
        "this server runs predict signatures only: serve it with tensorflow_model_server",
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


def call_signature(
    fn: Any, arrays: dict[str, np.ndarray], specs: dict[str, InputSpec], sig: str
) -> dict[str, np.ndarray]:
    """Run a signature's concrete function on checked arrays; numpy outputs by name.

    A TensorFlow ``InvalidArgumentError`` (an input the graph refuses) is a 400."""
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
