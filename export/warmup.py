"""TF Serving warmup records: ``<version>/assets.extra/tf_serving_warmup_requests``.

A TFRecord file of serialized ``tensorflow_serving.apis.prediction_log_pb2.PredictionLog``
protos, each holding a ``PredictRequest`` (TF Serving's "SavedModel Warmup" guide); the
server replays them when it loads the version, before it reports AVAILABLE. TF Serving
reads at most 1000 records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["MAX_RECORDS", "WARMUP_FILE", "read_warmup_requests", "write_warmup_requests"]

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000


def write_warmup_requests(
    path: str | os.PathLike,
    model_name: str,
    requests: Mapping[str, Mapping[str, np.ndarray]],
) -> int:
    """Write one ``PredictRequest`` per ``{signature_name: {input name: array}}``; returns
    the number of records."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    if len(requests) > MAX_RECORDS:
        raise ValueError(f"TF Serving reads at most {MAX_RECORDS} warmup records")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature_name, inputs in requests.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
            )
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return len(requests)


def read_warmup_requests(path: str | os.PathLike) -> list[tuple[str, str, dict[str, Any]]]:
    """``(model name, signature name, {input: ndarray})`` for each record in ``path``."""
    from tensorflow_serving.apis import prediction_log_pb2

    records = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        records.append((request.model_spec.name, request.model_spec.signature_name, inputs))
    return records
