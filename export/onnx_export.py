"""ONNX conversion of serving signatures with tf2onnx, checked before anyone trusts it.

tf2onnx logs unsupported ops and carries on, so every file is checked with
``onnx.checker.check_model``, scanned for random ops and non-standard domains, and run
once in onnxruntime (tf2onnx's own advice; docs/ARCHITECTURE.md).

TFP's distributions emit TF ops tf2onnx 1.17 does not convert: ``MulNoNan`` (in
``Bernoulli.log_prob``), ``BroadcastArgs`` (batch shapes in ``kl_divergence``) and
``Expm1`` (``ContinuousBernoulli``). :data:`CUSTOM_OP_HANDLERS` lowers them to standard
ONNX ops, so the VAE's signatures convert from the same graphs the SavedModel serves.

tf2onnx 1.17's ``ReshapeOptimizer`` can leave a graph output one dimension too many: when
it rewrites a computed-shape ``Reshape`` that feeds a graph output directly, it prepends a
``1`` to the shape and hangs a ``Squeeze`` on the output's consumers, of which a graph
output has none, so the ``Squeeze`` is dropped. Whether the output ``Identity`` is gone by
then varies from process to process (an SRResNet's ``upscale`` came out ``[1, N, H, W, 1]``
in one CI run). :func:`convert_signature` leaves such reshapes alone and checks every
output's rank against the TensorFlow signature.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BATCH_DIM",
    "CUSTOM_OP_HANDLERS",
    "DEFAULT_OPSET",
    "OnnxConversionError",
    "check_output_ranks",
    "convert_signature",
    "graph_output_safe_reshapes",
    "name_batch_dimension",
    "random_op_types",
    "run_onnx",
]

#: Opset written by default (onnxruntime 1.31 runs up to 23).
DEFAULT_OPSET = 17

#: The symbolic first dimension of every ONNX input and output: the batch.
BATCH_DIM = "N"

RANDOM_OP_PREFIXES = ("Random", "Multinomial", "Bernoulli")


class OnnxConversionError(RuntimeError):
    """tf2onnx produced a graph that does not check, load or run."""


def _mul_no_nan(ctx: Any, node: Any, name: str, args: Any) -> Any:
    """TF ``MulNoNan(x, y)`` = 0 where y == 0 (even if x is inf/NaN), else x * y."""
    from tf2onnx import utils

    node.type = "Mul"
    np_dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[1]))
    zero = ctx.make_const(utils.make_name("mul_no_nan_zero"), np.array(0, np_dtype)).output[0]
    is_zero = ctx.make_node("Equal", [node.input[1], zero]).output[0]
    where = ctx.make_node("Where", [is_zero, zero, node.output[0]])
    ctx.insert_node_on_output(where, node.output[0])
    return node


def _broadcast_args(ctx: Any, node: Any, name: str, args: Any) -> Any:
    """TF ``BroadcastArgs(s0, s1)`` = Shape(Expand(ConstantOfShape(s0), s1)), cast back."""
    from onnx import TensorProto

    out_dtype = ctx.get_dtype(node.output[0])
    shapes, dtypes = node.output_shapes, node.output_dtypes
    s0, s1 = node.input[0], node.input[1]
    s0 = ctx.make_node("Cast", [s0], attr={"to": TensorProto.INT64}).output[0]
    s1 = ctx.make_node("Cast", [s1], attr={"to": TensorProto.INT64}).output[0]
    ones = ctx.make_node("ConstantOfShape", [s0]).output[0]
    expanded = ctx.make_node("Expand", [ones, s1]).output[0]
    shape = ctx.make_node("Shape", [expanded]).output[0]
    ctx.remove_node(node.name)
    return ctx.make_node(
        "Cast",
        [shape],
        attr={"to": out_dtype},
        name=node.name,
        outputs=node.output,
        shapes=shapes,
        dtypes=dtypes,
    )


def _expm1(ctx: Any, node: Any, name: str, args: Any) -> Any:
    """TF ``Expm1(x)`` = Exp(x) - 1 (ONNX has no expm1; absolute error ~1 ulp of 1)."""
    from tf2onnx import utils

    node.type = "Exp"
    np_dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name("expm1_one"), np.array(1, np_dtype)).output[0]
    sub = ctx.make_node("Sub", [node.output[0], one])
    ctx.insert_node_on_output(sub, node.output[0])
    return node


#: tf2onnx's old-style custom handlers: ``{tf_op: (handler, [])}``.
CUSTOM_OP_HANDLERS: dict[str, tuple[Any, list]] = {
    "MulNoNan": (_mul_no_nan, []),
    "BroadcastArgs": (_broadcast_args, []),
    "Expm1": (_expm1, []),
}


@contextlib.contextmanager
def graph_output_safe_reshapes() -> Iterator[None]:
    """Within the block, tf2onnx's ``ReshapeOptimizer`` skips any ``Reshape`` whose output
    is a graph output (the case it mis-wires, module docstring); every other reshape is
    optimised as before. A tf2onnx without that optimizer is left as it is."""
    try:
        import tf2onnx.optimizer as optimizers
        from tf2onnx.optimizer.reshape_optimizer import ReshapeOptimizer
    except ImportError:  # a later tf2onnx reorganised its optimizers
        yield
        return
    registry = getattr(optimizers, "_optimizers", None)
    if not isinstance(registry, dict) or registry.get("reshape_optimizer") is not ReshapeOptimizer:
        yield
        return

    class GraphOutputSafeReshapeOptimizer(ReshapeOptimizer):
        def _optimize_reshape(self, node: Any, graph: Any) -> bool:
            if node.output[0] in graph.outputs:
                return False
            return super()._optimize_reshape(node, graph)

    registry["reshape_optimizer"] = GraphOutputSafeReshapeOptimizer
    try:
        yield
    finally:
        registry["reshape_optimizer"] = ReshapeOptimizer


def check_output_ranks(signature: Any, model_proto: Any) -> None:
    """Raise :class:`OnnxConversionError` when an ONNX output's rank differs from the
    rank of the TensorFlow output it was converted from."""
    outputs = signature.function.get_concrete_function().structured_outputs
    expected = {signature.onnx_output_name(k): t.shape.rank for k, t in outputs.items()}
    for value in model_proto.graph.output:
        rank = len(value.type.tensor_type.shape.dim)
        if expected.get(value.name) is not None and rank != expected[value.name]:
            raise OnnxConversionError(
                f"ONNX output {value.name!r} of {signature.name!r} has rank {rank}, but "
                f"TensorFlow's has rank {expected[value.name]}: a tf2onnx graph rewrite "
                "went wrong; please report it with the model's config"
            )


def random_op_types(model_proto: Any) -> list[str]:
    """Node types in the graph (subgraphs included) that draw random numbers."""
    found: list[str] = []

    def visit(graph: Any) -> None:
        for node in graph.node:
            if node.op_type.startswith(RANDOM_OP_PREFIXES):
                found.append(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model_proto.graph)
    return found


def name_batch_dimension(model_proto: Any, symbol: str = BATCH_DIM) -> None:
    """Declare the first dimension of every graph input and output as ``symbol``.

    Every zoo signature is batch first (TF Serving's batching needs it), and tf2onnx
    gives each open dimension its own name (``unk__12``): one name says that the inputs'
    batch sizes must agree (``threshold`` [N] beside ``images`` [N, ...]) and that the
    outputs have one row per example."""
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims:
            raise OnnxConversionError(
                f"ONNX {value.name!r} has no batch dimension; zoo signatures are batch first"
            )
        dims[0].ClearField("dim_value")
        dims[0].dim_param = symbol


def convert_signature(
    signature: Any, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET
) -> Any:
    """Convert one :class:`~zoo.tasks.Signature` to ``path``; return the ModelProto.

    Raises :class:`OnnxConversionError` when the checker fails, random or non-standard
    ops remain, the input/output names differ from the signature's, or onnxruntime
    cannot load it.
    """
    import onnx
    import onnxruntime as ort
    import tf2onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    function = signature.onnx_function()
    try:
        with graph_output_safe_reshapes():
            model_proto, _ = tf2onnx.convert.from_function(
                function,
                input_signature=function.input_signature,
                opset=opset,
                custom_op_handlers=dict(CUSTOM_OP_HANDLERS),
            )
        check_output_ranks(signature, model_proto)
        name_batch_dimension(model_proto)
        onnx.checker.check_model(model_proto, full_check=True)
        onnx.save(model_proto, str(path))
    except Exception as error:
        raise OnnxConversionError(
            f"ONNX conversion of signature {signature.name!r} failed: {error}"
        ) from error
    randoms = random_op_types(model_proto)
    if randoms:
        raise OnnxConversionError(
            f"signature {signature.name!r} has random ops {sorted(set(randoms))} in ONNX; "
            "feed the noise as an input instead"
        )
    foreign = sorted({n.domain for n in model_proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise OnnxConversionError(
            f"signature {signature.name!r} converted with non-standard op domains {foreign}"
        )
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise OnnxConversionError(
            f"onnxruntime cannot load {path.name} ({signature.name!r}): {error}"
        ) from error
    inputs = [i.name for i in session.get_inputs()]
    expected_outputs = sorted(signature.onnx_output_name(k) for k in signature.output_names)
    outputs = sorted(o.name for o in session.get_outputs())
    if inputs != signature.input_names or outputs != expected_outputs:
        raise OnnxConversionError(
            f"ONNX names for {signature.name!r} differ from the SavedModel's: inputs {inputs} "
            f"vs {signature.input_names}, outputs {outputs} vs {expected_outputs}"
        )
    return model_proto


def run_onnx(path: str | os.PathLike, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an exported ONNX file in onnxruntime (CPU); outputs by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = {i.name: np.asarray(inputs[i.name]) for i in session.get_inputs()}
    return dict(zip(names, session.run(names, feeds), strict=True))
