"""ONNX conversion guards against tf2onnx 1.17's ReshapeOptimizer: a computed-shape
``Reshape`` that is itself a graph output gets a ``1`` prepended to its shape and a
``Squeeze`` hung on consumers it does not have, so the output gains a dimension. Whether
the output ``Identity`` is gone before that rewrite varies by process (one CI run's
SRResNet ``upscale`` came out ``[1, N, H, W, 1]``); running identity removal first makes
the case deterministic here."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import tf2onnx
import tf2onnx.optimizer
from zoo.export import onnx_export

from zoo.tasks.signatures import Signature


@tf.function(input_signature=[tf.TensorSpec([None, 1, None, None], tf.float32, name="images")])
def nchw_to_nhwc(images: tf.Tensor) -> dict[str, tf.Tensor]:
    """A one-channel NCHW -> NHWC move as a reshape with a computed shape (what tf2onnx's
    transpose optimizer turns a one-channel Transpose into)."""
    shape = tf.shape(images)
    return {"moved": tf.reshape(images, tf.stack([shape[0], shape[2], shape[3], 1]))}


@pytest.fixture
def identity_removal_first(monkeypatch):
    stock = tf2onnx.optimizer._optimizers
    order = OrderedDict([("remove_identity", stock["remove_identity"])])
    order.update((name, factory) for name, factory in stock.items() if name != "remove_identity")
    monkeypatch.setattr(tf2onnx.optimizer, "_optimizers", order)


def _run(path_or_proto, images: np.ndarray) -> np.ndarray:
    model = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["moved"], {"images": images})[0]


def test_a_reshape_that_is_a_graph_output_keeps_its_rank(identity_removal_first, tmp_path):
    images = np.random.default_rng(0).random((3, 1, 5, 7), dtype=np.float32)
    expected = nchw_to_nhwc(tf.constant(images))["moved"].numpy()
    assert expected.shape == (3, 5, 7, 1)

    stock, _ = tf2onnx.convert.from_function(
        nchw_to_nhwc, input_signature=nchw_to_nhwc.input_signature, opset=17
    )
    if _run(stock, images).shape == expected.shape:
        pytest.skip("this tf2onnx no longer adds the dimension; graph_output_safe_reshapes can go")
    assert _run(stock, images).shape == (1, 3, 5, 7, 1)  # the bug being guarded against

    signature = Signature("move", nchw_to_nhwc, onnx=True, description="NCHW -> NHWC")
    path = tmp_path / "move.onnx"
    proto = onnx_export.convert_signature(signature, path)
    np.testing.assert_array_equal(_run(str(path), images), expected)
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert len(dims) == 4 and dims[0].dim_param == onnx_export.BATCH_DIM
    assert tf2onnx.optimizer._optimizers["reshape_optimizer"].__name__ == "ReshapeOptimizer"


def test_an_output_of_the_wrong_rank_is_refused_by_name(identity_removal_first):
    stock, _ = tf2onnx.convert.from_function(
        nchw_to_nhwc, input_signature=nchw_to_nhwc.input_signature, opset=17
    )
    signature = Signature("move", nchw_to_nhwc, onnx=True, description="NCHW -> NHWC")
    ranks = [len(o.type.tensor_type.shape.dim) for o in stock.graph.output]
    if ranks == [4]:
        pytest.skip("this tf2onnx no longer adds the dimension, so there is no bad graph to refuse")
    refused = r"'moved' of 'move' has rank 5.*rank 4"
    with pytest.raises(onnx_export.OnnxConversionError, match=refused):
        onnx_export.check_output_ranks(signature, stock)
