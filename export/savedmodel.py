"""SavedModel writing with ``keras.export.ExportArchive`` and the two ways to run it.

Why (docs/ARCHITECTURE.md): ``tf.saved_model.save`` on Keras 3 objects gives generic
names and, for a ``tf.Module`` wrapping Keras 3 models, a SavedModel the TF1 loader
(``saved_model_cli``, TF Serving's C++ loader) cannot run; ``ExportArchive`` runs through
both. So every export is run through the TF2 loader (``tf.saved_model.load``) *and* the TF1 loader
(``tf.compat.v1.saved_model.loader.load`` in a ``Session``, by tensor names).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.tasks import SignatureSet

__all__ = ["read_signature_defs", "run_tf1", "run_tf2", "write_savedmodel"]

SERVE_TAG = "serve"


def write_savedmodel(signature_set: SignatureSet, path: str | os.PathLike) -> None:
    """Write every signature (and alias) of ``signature_set`` to ``path`` with ExportArchive.

    Only the networks the signatures use are tracked (a GAN's discriminator, the
    optimizers and the loss trackers stay out of the serving artifact).
    """
    archive = keras.export.ExportArchive()
    for network in signature_set.networks:
        archive.track(network)
    for name, signature in signature_set.signatures.items():
        archive.add_endpoint(name, signature.function)
    for alias, target in signature_set.aliases.items():
        archive.add_endpoint(alias, signature_set.signatures[target].function)
    archive.write_out(str(path), verbose=False)


def _tensor_info(info: Any) -> dict[str, Any]:
    shape = info.tensor_shape
    return {
        "dtype": tf.dtypes.as_dtype(info.dtype).name,
        "shape": None if shape.unknown_rank else [int(d.size) for d in shape.dim],
        "tensor_name": info.name,
    }


def read_signature_defs(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Signature defs of the ``serve`` MetaGraph, read from ``saved_model.pb`` without
    loading the graph: ``{signature: {"method_name", "inputs", "outputs"}}``; shapes use
    -1 for unknown dimensions and ``None`` for unknown rank."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    meta = next(m for m in proto.meta_graphs if SERVE_TAG in m.meta_info_def.tags)
    return {
        key: {
            "method_name": sd.method_name,
            "inputs": {k: _tensor_info(v) for k, v in sorted(sd.inputs.items())},
            "outputs": {k: _tensor_info(v) for k, v in sorted(sd.outputs.items())},
        }
        for key, sd in sorted(meta.signature_def.items())
        if not key.startswith("__")
    }


def run_tf2(
    path: str | os.PathLike, calls: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """Run ``{signature: inputs}`` through ``tf.saved_model.load(path).signatures``."""
    loaded = tf.saved_model.load(str(path))
    results = {}
    for name, inputs in calls.items():
        fn = loaded.signatures[name]
        outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        results[name] = {k: v.numpy() for k, v in outputs.items()}
    return results


def run_tf1(
    path: str | os.PathLike, calls: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """Run ``{signature: inputs}`` as TF Serving's C++ loader does: load the ``serve``
    MetaGraph into a fresh graph and ``Session.run`` the signature's tensor names."""
    from tensorflow.python.util import deprecation

    graph = tf.Graph()
    results = {}
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        with deprecation.silence():  # the TF1 loader is the point here: no deprecation notice
            meta = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], str(path))
        for name, inputs in calls.items():
            sd = meta.signature_def[name]
            feeds = {sd.inputs[k].name: np.asarray(v) for k, v in inputs.items()}
            keys = sorted(sd.outputs)
            values = session.run([sd.outputs[k].name for k in keys], feed_dict=feeds)
            results[name] = dict(zip(keys, values, strict=True))
    return results
