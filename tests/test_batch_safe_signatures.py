"""Exported signatures that TF Serving's batching can merge (issue 15).

``--enable_batching`` merges concurrent requests into one batch: every input must be
batch first, and an op that fails fails every request merged with it. So a label outside
[0, K) gives NaN outputs for its own example only (no in-graph assertion), and
``score_with_threshold`` takes ``threshold`` [N], one per example. Checked on the
declared signatures, the SavedModel (TF2 and the TF1 loader TF Serving's C++ side
uses), ONNX Runtime, the local server and the zoo clients.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import run_tf1_session
from zoo.export import export_model
from zoo.export.onnx_export import BATCH_DIM, run_onnx
from zoo.serving.client import (
    GrpcServingClient,
    InvalidLabelsError,
    ServingClient,
    ServingError,
)
from zoo.serving.server import make_server

import zoo
from zoo.tasks import declaration_of

BAD = 99  # not a class id of a 10-class model
VALID = 5
#: Every signature of a CVAE that takes labels (all of them: each must mask them).
CVAE_LABELLED = [
    "decode",
    "encode",
    "generate",
    "reconstruct",
    "sample",
    "score",
    "score_with_threshold",
]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from zoo.data import load_sample

    images, _ = load_sample("test")
    return (images[:8] / 255.0).astype("float32").reshape(-1, 28, 28, 1)


@pytest.fixture(scope="module")
def cvae(tmp_path_factory) -> tuple[Any, Any]:
    """cvae_tiny exported (SavedModel + ONNX) with a given threshold: (model, result)."""
    model = zoo.load("cvae_tiny")
    out = tmp_path_factory.mktemp("batch_safe")
    return model, export_model(model, out, "cvae", threshold=544.0)


@pytest.fixture(scope="module")
def conv_ae(tmp_path_factory) -> tuple[Any, Any]:
    model = zoo.load("conv_ae_tiny")
    out = tmp_path_factory.mktemp("batch_safe")
    return model, export_model(model, out, "ae", threshold=0.05)


@pytest.fixture(scope="module")
def declared_cvae() -> tuple[Any, dict]:
    """cvae_tiny and its declared signatures (not exported): (model, {name: Signature})."""
    model = zoo.load("cvae_tiny")
    return model, declaration_of(model).signatures(threshold=544.0).signatures


@pytest.fixture(scope="module")
def server(cvae, conv_ae, tmp_path_factory):
    """The local server over both exports (``cvae`` and ``ae``)."""
    blocks = "".join(
        f'  config {{ name: "{name}" base_path: "{result.version_dir.parent}" '
        'model_platform: "tensorflow" }\n'
        for name, (_, result) in (("cvae", cvae), ("ae", conv_ae))
    )
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(f"model_config_list {{\n{blocks}}}\n")
    running = make_server(config, port=0)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield running
    running.shutdown()
    running.server_close()


def _inputs(model: Any, names: list[str], digits: np.ndarray, labels: list[int]) -> dict:
    """A batch of ``len(labels)`` inputs named ``names`` (examples, z, seeds, thresholds)."""
    n = len(labels)
    rng = np.random.default_rng(3)
    values = {
        "images": digits[:n],
        "z": rng.standard_normal((n, model.latent_dim)).astype("float32"),
        "seed": np.arange(7, 7 + n, dtype=np.int64),
        "labels": np.asarray(labels, np.int64),
        "threshold": np.full([n], 544.0, np.float32),
    }
    return {k: values[k] for k in names}


def _rows(outputs: dict, rows: list[int]) -> dict:
    return {k: np.asarray(v)[rows] for k, v in outputs.items()}


def _assert_masked_row(outputs: dict, row: int) -> None:
    """Every float output of ``row`` is NaN; a score's verdict flags it."""
    for key, value in outputs.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            assert np.isnan(value[row]).all(), key
    if "is_anomaly" in outputs:
        assert bool(np.asarray(outputs["is_anomaly"])[row])


# ----------------------------------------------------------------------------- 1. labels


def test_every_labels_signature_is_found_and_states_the_rule():
    """The declared signatures (Keras inside a tf.function): every signature with a
    ``labels`` input, of a CVAE and a conditional GAN."""
    for name, expected in (("cvae_tiny", CVAE_LABELLED), ("cgan_tiny", ["generate", "sample"])):
        signatures = declaration_of(zoo.load(name)).signatures(
            threshold=544.0 if name == "cvae_tiny" else None
        )
        labelled = sorted(k for k, s in signatures.signatures.items() if "labels" in s.input_names)
        assert labelled == expected
        for key in labelled:
            assert (
                "gives NaN float outputs for that example" in signatures.signatures[key].description
            )


@pytest.mark.parametrize("bad", [BAD, -1])
@pytest.mark.parametrize("key", CVAE_LABELLED)
def test_a_bad_label_gives_nan_for_its_example_only(declared_cvae, digits, key, bad):
    model, signatures = declared_cvae
    signature = signatures[key]

    def call(inputs: dict) -> dict:
        out = signature.function(*(tf.constant(inputs[n]) for n in signature.input_names))
        return {k: v.numpy() for k, v in out.items()}

    valid_inputs = _inputs(model, signature.input_names, digits, [0, VALID, 1])
    merged = call({**valid_inputs, "labels": np.array([0, bad, 1], np.int64)})
    _assert_masked_row(merged, 1)
    # the other examples are bit-identical to the same batch with a valid label there
    valid = call(valid_inputs)
    for name, value in _rows(merged, [0, 2]).items():
        np.testing.assert_array_equal(value, valid[name][[0, 2]], err_msg=name)
        assert value.dtype.kind != "f" or np.isfinite(value).all(), name
    # and equal to calling them alone up to float32 round-off (TF's CPU kernels round
    # differently for another batch size, with or without this masking)
    for row in (0, 2):
        alone = call({k: v[row : row + 1] for k, v in valid_inputs.items()})
        for name, value in alone.items():
            np.testing.assert_allclose(merged[name][row], value[0], atol=1e-6, rtol=1e-6)


def test_exported_bad_labels_are_nan_in_savedmodel_tf1_loader_and_onnx(cvae, digits):
    """The same merged batch [0, 99, 1] in every backend TF Serving or ONNX users run."""
    model, result = cvae
    labels = [0, BAD, 1]
    loaded = tf.saved_model.load(str(result.version_dir))
    _, tf1 = run_tf1_session(
        result.version_dir, lambda names: _inputs(model, names, digits, labels)
    )
    assert sorted(result.onnx_paths) == sorted(set(CVAE_LABELLED) - {"sample"})
    for key in CVAE_LABELLED:
        names = sorted(tf1[key][0])
        inputs = _inputs(model, names, digits, labels)
        saved = {k: v.numpy() for k, v in loaded.signatures[key](**{
            k: tf.constant(v) for k, v in inputs.items()}).items()}  # fmt: skip
        backends = {"savedmodel": saved, "tf1": tf1[key][1]}
        if key in result.onnx_paths:
            onnx_out = run_onnx(result.onnx_paths[key], inputs)
            backends["onnx"] = {k.removesuffix("_out"): v for k, v in onnx_out.items()}
        for backend, outputs in backends.items():
            assert sorted(outputs) == sorted(saved), (key, backend)
            _assert_masked_row(outputs, 1)
            for name, value in _rows(outputs, [0, 2]).items():
                want = saved[name][[0, 2]]
                if value.dtype.kind == "f":
                    assert np.isfinite(value).all(), (key, backend, name)
                    np.testing.assert_allclose(value, want, atol=1e-4, rtol=1e-5)
                else:
                    np.testing.assert_array_equal(value, want)


def test_model_card_and_metadata_state_the_label_rule(cvae):
    _, result = cvae
    text = result.model_card.read_text()
    assert "a label outside [0, 10) gives NaN float outputs for that example" in text
    assert "fails the request" not in text
    description = result.metadata["signatures"]["generate"]["description"]
    assert "a label outside [0, 10) gives NaN float outputs for that example" in description


# ----------------------------------------------------------------------------- 2. threshold


def test_threshold_is_one_per_example_in_the_savedmodel(conv_ae, digits):
    model, result = conv_ae
    signature = tf.saved_model.load(str(result.version_dir)).signatures["score_with_threshold"]
    _, kwargs = signature.structured_input_signature
    assert kwargs["threshold"].shape.as_list() == [None]
    scores = np.asarray(model.anomaly_score(digits[:3]))
    given = np.array([scores[0] - 1e-3, scores[1] + 1e-3, scores[2] - 1e-3], np.float32)
    out = signature(images=tf.constant(digits[:3]), threshold=tf.constant(given))
    np.testing.assert_array_equal(out["is_anomaly"], [True, False, True])
    np.testing.assert_array_equal(out["threshold"], given)
    # a scalar: TF2's signature wrapper passes it as [1], which the graph refuses
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"one value per example.*\[1\] \[3\]"):
        signature(images=tf.constant(digits[:3]), threshold=tf.constant(0.05))
    # the TF1 loader (TF Serving's C++ side) refuses a scalar for the [N] placeholder
    scalar = {"images": digits[:3], "threshold": np.float32(0.05)}
    with pytest.raises(ValueError, match=r"Cannot feed value of shape \(\)"):
        run_tf1_session(result.version_dir, lambda names: {n: scalar[n] for n in names})
    # sizes that disagree fail that call with a message naming the rule
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per example"):
        signature(images=tf.constant(digits[:3]), threshold=tf.constant([0.05, 0.05]))


def test_onnx_threshold_shares_the_batch_dimension(conv_ae, cvae, digits):
    import onnx
    import onnxruntime as ort

    model, result = conv_ae
    path = result.onnx_paths["score_with_threshold"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == BATCH_DIM, value.name
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input}  # fmt: skip
    assert dims == {"images": [BATCH_DIM, 28, 28, 1], "threshold": [BATCH_DIM]}
    # a conditional model's labels too
    cvae_inputs = onnx.load(str(cvae[1].onnx_paths["score_with_threshold"])).graph.input
    assert all(i.type.tensor_type.shape.dim[0].dim_param == BATCH_DIM for i in cvae_inputs)

    scores = np.asarray(model.anomaly_score(digits[:3]))
    given = np.array([scores[0] + 1e-3, scores[1] - 1e-3, scores[2] + 1e-3], np.float32)
    out = run_onnx(path, {"images": digits[:3], "threshold": given})
    np.testing.assert_array_equal(out["is_anomaly"], [False, True, False])
    np.testing.assert_array_equal(out["threshold_out"], given)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=r"Invalid rank for input: threshold"):
        session.run(None, {"images": digits[:3], "threshold": np.array(0.05, np.float32)})


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_local_server_refuses_a_bad_threshold_with_a_400(server, digits):
    url = f"{server.url}/v1/models/ae:predict"
    images = digits[:3].tolist()
    body = {"signature_name": "score_with_threshold", "inputs": {"images": images}}
    status, answer = _post(url, {**body, "inputs": {"images": images, "threshold": 0.05}})
    assert status == 400 and "threshold" in answer["error"]
    status, answer = _post(url, {**body, "inputs": {"images": images, "threshold": [0.05] * 2}})
    assert status == 400, answer
    assert "threshold needs one value per example" in answer["error"]
    status, answer = _post(url, {**body, "inputs": {"images": images, "threshold": [0.05] * 3}})
    assert status == 200 and len(answer["outputs"]["is_anomaly"]) == 3


def test_clients_send_a_scalar_threshold_as_one_per_example(server, conv_ae, digits):
    model, _ = conv_ae
    client = ServingClient(server.url, "ae")
    scores = np.asarray(model.anomaly_score(digits[:4]))
    cut = float(np.median(scores))
    got, verdicts = client.score(digits[:4], threshold=cut)
    np.testing.assert_allclose(got, scores, rtol=1e-5)
    np.testing.assert_array_equal(verdicts, scores > np.float32(cut))
    per_example = np.where(np.arange(4) % 2 == 0, 1e9, -1e9).astype(np.float32)
    _, verdicts = client.score(digits[:4], threshold=per_example)
    np.testing.assert_array_equal(verdicts, [False, True, False, True])
    with pytest.raises(ValueError, match=r"one per example, shape \[4\]; got shape \[3\]"):
        client.score(digits[:4], threshold=[0.1, 0.2, 0.3])

    class Recording(GrpcServingClient):  # the gRPC client's conveniences, without a server
        def predict(self, inputs, signature_name="serving_default", **kw):
            self.sent = (dict(inputs), signature_name, self.build_request(inputs, signature_name))
            n = len(inputs["images"])
            return {"anomaly_score": np.zeros(n, np.float32), "is_anomaly": np.zeros(n, bool)}

    grpc_client = Recording(model="ae")
    pytest.importorskip("tensorflow_serving")
    grpc_client.score(digits[:4], threshold=0.5)
    inputs, signature_name, request = grpc_client.sent
    assert signature_name == "score_with_threshold"
    assert inputs["threshold"].dtype == np.float32
    np.testing.assert_array_equal(inputs["threshold"], np.full(4, 0.5, np.float32))
    assert [d.size for d in request.inputs["threshold"].tensor_shape.dim] == [4]


def test_clients_name_bad_labels_and_keep_the_other_rows(server, cvae, digits):
    model, _ = cvae
    client = ServingClient(server.url, "cvae")
    with pytest.raises(InvalidLabelsError, match=r"labels \[99\] \(rows \[1\]\)") as error:
        client.score(digits[:3], [0, BAD, 1])
    assert isinstance(error.value, ServingError) and error.value.status == 400
    assert error.value.rows.tolist() == [1] and error.value.labels.tolist() == [BAD]
    good = error.value.outputs["anomaly_score"][[0, 2]]
    want = np.asarray(model.anomaly_score(digits[:3], labels=np.array([0, VALID, 1])))[[0, 2]]
    np.testing.assert_allclose(good, want, rtol=1e-5)

    z = np.random.default_rng(0).standard_normal((3, model.latent_dim)).astype("float32")
    with pytest.raises(InvalidLabelsError, match=r"labels \[-1, 99\] \(rows \[0, 2\]\)"):
        client.generate(z, [-1, 3, BAD])
    # a NaN image under a valid label is an answer (flagged), not a label error
    images = digits[:2].copy()
    images[0, 0, 0, 0] = np.nan
    scores, verdicts = client.score(images, [0, 1])
    assert np.isnan(scores[0]) and verdicts[0] and np.isfinite(scores[1])
