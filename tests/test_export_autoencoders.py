"""Every registered autoencoder exports: signatures (``denoise`` for corrupted models,
``sequences`` for recurrent ones), TF1-session execution, parity, the baked-in score
normalisation, the model card, masking in ``step_scores``, and a served round trip.

Each tiny variant is exported once for the module (all formats); the recurrent one goes
through ``export_cli``, calibrated on the synthetic normal series it is given.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
from export_helpers import assert_close, keras_outputs, make_inputs, run_tf1_session
from zoo.export import export_cli, export_model, synthetic_calibration

import zoo
from zoo.registry import get_spec, list_models
from zoo.tasks import Sequences, declaration_of

FAMILIES = ("autoencoder", "sequence_autoencoder")
TINY = sorted(n for n in list_models("*_tiny") if get_spec(n).family in FAMILIES)
EPS32 = float(np.finfo(np.float32).eps)


def _padded(sequences: np.ndarray, mask_value: float) -> np.ndarray:
    """Three sequences: unpadded, padded at the end (last 12 steps), at the start (5)."""
    batch = sequences[:3].copy()
    batch[1, -12:] = mask_value
    batch[2, :5] = mask_value
    return batch


@pytest.fixture(scope="module")
def normal_images() -> np.ndarray:
    from zoo.data import load_sample

    images, _ = load_sample("test")
    return (images / 255.0).astype("float32").reshape(-1, 28, 28, 1)


def calibration_data(model):
    """The synthetic normal series the recurrent model is calibrated on here."""
    return synthetic_calibration(model)


def _export_cli_keeping_the_model(name: str, out) -> tuple:
    """``export_cli(name, out)`` (``zoo export``'s body) calibrated on synthetic normal
    series, and the model it loaded: recurrent_ae's recurrent kernels are not seeded, so
    another ``zoo.load`` would give other weights."""
    from zoo.recipes import runs

    seen = []

    def load_run(target, real=runs.load_run):
        seen.append(real(target))
        return seen[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "load_run", load_run)
        result = export_cli(name, out, name=name, calibration=calibration_data(zoo.load(name)))
    (model,) = seen
    return result, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, normal_images) -> dict[str, tuple]:
    """``{name: (model, ExportResult)}`` for every tiny autoencoder, all formats."""
    out = tmp_path_factory.mktemp("models")
    done = {}
    for name in TINY:
        model = zoo.load(name)
        if declaration_of(model).family == "sequence_autoencoder":
            result, model = _export_cli_keeping_the_model(name, out)
        else:
            result = export_model(
                model,
                out,
                name,
                calibration_images=normal_images,
                calibration_description="bundled MNIST test split: all digits normal",
            )
        done[name] = (model, result)
    return done


@pytest.fixture(scope="module")
def loaded(exported) -> dict:
    return {name: tf.saved_model.load(str(r.version_dir)) for name, (_, r) in exported.items()}


def _examples(model, normal_images) -> np.ndarray:
    if declaration_of(model).family == "sequence_autoencoder":
        return _padded(calibration_data(model)[0], model.mask_value)
    return normal_images


def _expected_signatures(model) -> dict[str, tuple[list[str], list[str]]]:
    key = "sequences" if declaration_of(model).family == "sequence_autoencoder" else "images"
    scores = ["anomaly_score", "is_anomaly", "normalized_score", "threshold"]
    if key == "sequences":
        scores = sorted([*scores, "step_scores"])
    expected = {
        "reconstruct": ([key], ["reconstructions"]),
        "encode": ([key], ["codes"]),
        "score": ([key], scores),
        "score_with_threshold": (sorted([key, "threshold"]), scores),
        "serving_default": ([key], scores),
    }
    if model.corruption:
        expected["denoise"] = ([key], [key])
    return expected


def test_every_registered_autoencoder_is_covered():
    assert set(TINY) >= {
        "conv_ae_tiny", "denoising_ae_tiny", "dense_ae_tiny", "overcomplete_ae_tiny",
        "sparse_ae_tiny", "contractive_ae_tiny", "stacked_ae_tiny", "recurrent_ae_tiny",
    }  # fmt: skip
    assert all(n[: -len("_tiny")] in list_models() for n in TINY)


@pytest.mark.parametrize("name", TINY)
def test_signature_names_keys_dtypes_shapes(exported, loaded, name):
    model, result = exported[name]
    expected = _expected_signatures(model)
    sigs = loaded[name].signatures
    assert sorted(sigs) == sorted(expected)
    assert result.metadata["serving_default"] == "score"
    steps = model.image_shape[0]
    for key, (ins, outs) in expected.items():
        _, kwargs = sigs[key].structured_input_signature
        assert sorted(kwargs) == ins, key
        assert sorted(sigs[key].structured_outputs) == outs, key
        for arg, spec in kwargs.items():
            shape = None if spec.shape.rank is None else spec.shape.as_list()
            want = [None] if arg == "threshold" else [None, *model.image_shape]
            assert spec.dtype == tf.float32 and shape == want, (key, arg)
        for out, spec in sigs[key].structured_outputs.items():
            assert spec.dtype == (tf.bool if out == "is_anomaly" else tf.float32), (key, out)
            want = {
                "codes": [None, model.latent_dim],
                "step_scores": [None, steps],
                "reconstructions": [None, *model.image_shape],
                "images": [None, *model.image_shape],
                "sequences": [None, *model.image_shape],
            }.get(out, [None])
            assert spec.shape.as_list() == want, (key, out)
    assert sorted(result.metadata["signatures"]) == sorted(expected)


@pytest.mark.parametrize("name", TINY)
def test_every_signature_runs_through_the_tf1_loader(exported, normal_images, name):
    model, result = exported[name]
    examples = _examples(model, normal_images)
    keys, runs = run_tf1_session(
        result.version_dir, lambda names: make_inputs(model, names, examples)
    )
    assert keys == sorted(_expected_signatures(model))
    for key, (inputs, actual) in runs.items():
        expected = keras_outputs(model, key, inputs, result.metadata)
        assert_close(expected, actual, metadata=result.metadata)


@pytest.mark.parametrize("name", TINY)
def test_parity_is_recorded_for_every_backend(exported, name):
    model, result = exported[name]
    stored = json.loads((result.version_dir / "assets.extra" / "zoo_export.json").read_text())
    parity = stored["parity"]
    assert parity["passed"] and parity["backends"] == ["savedmodel", "tf1_session", "onnxruntime"]
    expected = _expected_signatures(model)
    assert sorted(parity["signatures"]) == sorted(expected)
    assert sorted(result.onnx_paths) == sorted(k for k in expected if k != "serving_default")
    assert (
        stored["onnx"]["savedmodel_only"] == [] and stored["onnx"]["savedmodel_only_reasons"] == {}
    )
    for key, backends in parity["signatures"].items():
        for diffs in backends.values():
            for out, d in diffs.items():
                if "max_abs_diff" in d:
                    assert d["max_abs_diff"] <= d.get("allowed", 1e-4 + 1e-5), (key, out)
                else:
                    assert d["mismatches"] == 0, (key, out)
    for key, path in result.onnx_paths.items():  # the baked constants are no extra inputs
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert sorted(i.name for i in session.get_inputs()) == expected[key][0]


@pytest.mark.parametrize("name", TINY)
def test_denoise_exactly_for_corrupted_models(exported, loaded, normal_images, name):
    model, result = exported[name]
    assert ("denoise" in loaded[name].signatures) == bool(model.corruption)
    if not model.corruption:
        return
    key = "sequences" if declaration_of(model).family == "sequence_autoencoder" else "images"
    clean = _examples(model, normal_images)[:3]
    noisy = clean + np.random.default_rng(1).normal(0, 0.3, clean.shape)
    noisy = (noisy if key == "sequences" else np.clip(noisy, 0, 1)).astype("float32")
    out = loaded[name].signatures["denoise"](**{key: tf.constant(noisy)})
    np.testing.assert_allclose(out[key], model.denoise(noisy), atol=1e-5)
    assert result.metadata["signatures"]["denoise"]["onnx"]["output_names"] == {key: f"{key}_out"}
    assert "denoise" in result.model_card.read_text()


@pytest.mark.parametrize(
    ("name", "config", "key"),
    [
        ("overcomplete_ae_tiny", {"regularizer": "denoising"}, "images"),
        ("recurrent_ae_tiny", {"noise_level": 0.1}, "sequences"),
        ("sparse_ae_tiny", {}, None),
    ],
)
def test_denoise_follows_the_corruption_setting(name, config, key):
    model = zoo.load(name, **config)
    sigs = declaration_of(model).signatures(threshold=0.1).signatures
    assert ("denoise" in sigs) == (key is not None)
    if key:
        x = np.random.default_rng(0).uniform(size=(2, *model.image_shape)).astype("float32")
        out = sigs["denoise"].function(tf.constant(x))
        np.testing.assert_allclose(out[key], model.denoise(x), atol=1e-6)


@pytest.mark.parametrize("name", TINY)
def test_normalized_score_is_score_minus_mean_over_std(exported, loaded, normal_images, name):
    model, result = exported[name]
    stored = json.loads((result.version_dir / "assets.extra" / "zoo_export.json").read_text())
    norm = stored["normalization"]
    assert norm["output"] == "normalized_score" and norm["ddof"] == 1
    sequences = declaration_of(model).family == "sequence_autoencoder"
    calibration = calibration_data(model)[0] if sequences else normal_images
    scores = np.asarray(model.anomaly_score(calibration), np.float64)
    assert norm["n"] == len(scores) == stored["threshold"]["n"]
    np.testing.assert_allclose(norm["mean"], scores.mean(), rtol=1e-6)
    np.testing.assert_allclose(norm["std"], scores.std(ddof=1), rtol=1e-5)
    examples = _examples(model, normal_images)[:3]
    key = "sequences" if sequences else "images"
    threshold = {"threshold": np.full(3, 0.5, np.float32)}
    for signature, extra in (("score", {}), ("score_with_threshold", threshold)):
        out = loaded[name].signatures[signature](
            **{key: tf.constant(examples)}, **{k: tf.constant(v) for k, v in extra.items()}
        )
        score = out["anomaly_score"].numpy().astype(np.float64)
        want = (score - norm["mean"]) / norm["std"]
        # float32 arithmetic on float32-rounded constants: a few ulps of the operands / std
        allowed = 4 * EPS32 * (np.abs(score) + abs(norm["mean"])) / norm["std"] + 1e-6
        assert np.all(np.abs(out["normalized_score"].numpy() - want) <= allowed), signature


@pytest.mark.parametrize("name", TINY)
def test_model_card_states_threshold_method_and_score_definition(exported, name):
    model, result = exported[name]
    card = result.model_card
    assert card == result.version_dir / "assets.extra" / "MODEL_CARD.md" and card.is_file()
    text = card.read_text()
    meta = result.metadata
    assert f"# Model card: {name} (version 1)" in text
    assert meta["score"]["definition"] in text
    assert "Method: quantile of held-out normal scores" in text
    assert f"Target FPR: {meta['threshold']['target_fpr']:g}" in text
    assert f"(n = {meta['threshold']['n']})" in text
    assert f"mean = {meta['normalization']['mean']:.6g}" in text
    assert f"std = {meta['normalization']['std']:.6g}" in text
    assert "## Parity" in text and "Passed: **True**" in text and "onnxruntime" in text
    assert f"- tensorflow {tf.__version__}" in text and "## Intended use and limits" in text
    for signature in _expected_signatures(model):
        if signature != "serving_default":
            assert f"| `{signature}` |" in text
    if declaration_of(model).family == "sequence_autoencoder":
        assert "per valid timestep, averaged over the sequence" in meta["score"]["definition"]
        assert "SYNTHETIC" in text and "synthetic_series" in text and "step_scores" in text
    else:
        assert "per value" in meta["score"]["definition"]
        assert "bundled MNIST test split: all digits normal" in text


def test_sequence_export_is_calibrated_on_synthetic_normal_series(exported):
    model, result = exported["recurrent_ae_tiny"]
    calibration = result.metadata["calibration"]
    normal, _, description = calibration_data(model)
    assert normal.shape[1:] == (32, 3) and 900 <= len(normal) <= 1100
    assert calibration == {"examples": "sequences", "n": len(normal), "description": description}
    assert "labels False" in description and "not standardised" in description
    assert result.metadata["user"]["calibration_data"] == description
    assert result.metadata["model"]["input"] == {
        "key": "sequences",
        "shape": [None, 32, 3],
        "dtype": "float32",
    }
    assert result.metadata["model"]["mask_value"] == model.mask_value == 0.0


def test_sequence_step_scores_are_zero_at_padding(exported, loaded):
    model, result = exported["recurrent_ae_tiny"]
    batch = _padded(calibration_data(model)[0], model.mask_value)
    padding = np.all(batch == model.mask_value, axis=-1)
    assert padding[1, -12:].all() and padding[2, :5].all() and padding.sum() == 17
    served = loaded["recurrent_ae_tiny"].signatures["score"](sequences=tf.constant(batch))
    session = ort.InferenceSession(
        str(result.onnx_paths["score"]), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    onnx_out = dict(zip(names, session.run(None, {"sequences": batch}), strict=True))
    for out in (served, onnx_out):
        steps = np.asarray(out["step_scores"])
        assert steps.shape == (3, 32)
        assert np.all(steps[padding] == 0.0) and np.all(steps[~padding] > 0.0)
        valid = (~padding).sum(axis=1)
        np.testing.assert_allclose(out["anomaly_score"], steps.sum(axis=1) / valid, rtol=1e-5)
        np.testing.assert_allclose(
            out["anomaly_score"], model.anomaly_score(batch), rtol=1e-5, atol=1e-7
        )
    # the masked LSTM encoder converts to ONNX with its masking (an ONNX Loop)
    session = ort.InferenceSession(
        str(result.onnx_paths["encode"]), providers=["CPUExecutionProvider"]
    )
    (codes,) = session.run(None, {"sequences": batch})
    np.testing.assert_allclose(codes, model.encode(batch), atol=1e-5)


def test_sequence_top_fraction_score_exports_with_parity(tmp_path):
    model = zoo.load("recurrent_ae_tiny", score_top_fraction=0.25)
    normal = calibration_data(model)[0][:200]
    result = export_model(model, tmp_path, "rae", calibration_images=normal)
    assert result.metadata["parity"]["passed"]
    definition = result.metadata["score"]["definition"]
    assert "mean of the k largest step_scores" in definition
    assert "k = max(1, floor(0.25 x number of valid steps + 0.5))" in definition
    batch = _padded(normal, model.mask_value)  # 32, 20 and 27 valid steps: k = 8, 5, 7
    valid = ~np.all(batch == model.mask_value, axis=-1)
    counts = zoo.data.top_step_count(valid.sum(axis=1), 0.25)
    assert counts.tolist() == [8, 5, 7]
    step_scores = np.asarray(model.step_scores(batch))
    want = [np.sort(s[v])[-k:].mean() for s, v, k in zip(step_scores, valid, counts, strict=True)]
    np.testing.assert_allclose(model.anomaly_score(batch), want, rtol=1e-5)
    served = tf.saved_model.load(str(result.version_dir)).signatures["score"](
        sequences=tf.constant(batch)
    )
    session = ort.InferenceSession(
        str(result.onnx_paths["score"]), providers=["CPUExecutionProvider"]
    )
    (onnx_scores,) = session.run(["anomaly_score"], {"sequences": batch})
    for scores in (served["anomaly_score"], onnx_scores):
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-7)


def test_served_round_trip_of_the_recurrent_model(exported, loaded, tmp_path):
    from zoo.serving.client import ServingClient
    from zoo.serving.server import make_server

    model, result = exported["recurrent_ae_tiny"]
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "recurrent_ae" '
        f'base_path: "{result.version_dir.parent}" model_platform: "tensorflow" }} }}\n'
    )
    server = make_server(config, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = ServingClient(server.url, model="recurrent_ae", timeout=30)
        client.wait_until_available(timeout=10)
        batch = _padded(calibration_data(model)[0], model.mask_value)
        batch[0, 3:9] += 4.0  # a level shift: anomalous at those steps
        scores, verdicts, steps = client.score_sequences(batch)
        direct = loaded["recurrent_ae_tiny"].signatures["score"](sequences=tf.constant(batch))
        assert scores.dtype == np.float32 and verdicts.dtype == np.bool_ and steps.shape == (3, 32)
        np.testing.assert_allclose(scores, direct["anomaly_score"], rtol=1e-6)
        np.testing.assert_array_equal(verdicts, direct["is_anomaly"])
        np.testing.assert_allclose(steps, direct["step_scores"], rtol=1e-6, atol=1e-9)
        assert np.all(steps[1, -12:] == 0.0) and np.all(steps[2, :5] == 0.0)
        assert steps[0, 3:9].mean() > steps[0, 12:].mean()
        assert verdicts[0]
        with_threshold = client.predict(
            {"sequences": batch, "threshold": np.full(len(batch), 1e9, np.float32)},
            "score_with_threshold",
        )
        assert not with_threshold["is_anomaly"].any()
        np.testing.assert_allclose(
            with_threshold["normalized_score"], direct["normalized_score"], rtol=1e-6
        )
    finally:
        server.shutdown()
        server.server_close()


def test_given_threshold_without_data_has_no_normalized_score(tmp_path):
    model = zoo.load("dense_ae_tiny")
    result = export_model(
        model, tmp_path, "dense", formats="savedmodel", threshold=0.05, warmup=False
    )
    meta = result.metadata
    assert meta["threshold"]["method"] == "given" and result.normalization is None
    assert (
        meta["normalization"]["output"] is None
        and "no calibration data" in (meta["normalization"]["reason"])
    )
    score = tf.saved_model.load(str(result.version_dir)).signatures["score"]
    assert "normalized_score" not in score.structured_outputs
    text = result.model_card.read_text()
    assert "Method: given by the caller" in text and "No `normalized_score` output" in text
    assert "false-positive rate is unknown" in text


def test_calibration_sequences_are_checked():
    data = tf.data.Dataset.from_tensor_slices(np.zeros((5, 32, 3), np.float32)).batch(2)
    kind = Sequences((32, 3))
    assert kind.check(data).shape == (5, 32, 3)
    with pytest.raises(ValueError, match=r"pad_sequences\(\.\.\., maxlen=32\)"):
        kind.check(np.zeros((4, 16, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        kind.check(np.full((2, 32, 3), np.nan))
    with pytest.raises(ValueError, match=r"calibration_images=<normal sequences"):
        export_model(zoo.load("recurrent_ae_tiny"), "/nonexistent", "rae")
