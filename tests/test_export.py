"""Tests for zoo.export: signatures, TF1-path execution, warmup, parity, atomic versions,
thresholds and ONNX. One export per family (tiny models) is shared by the module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from export_helpers import ATOL, RTOL, assert_close, keras_outputs, make_inputs, run_tf1_session
from zoo.export import (
    ParityError,
    Threshold,
    calibrate_threshold,
    calibrate_threshold_f1,
    export_cli,
    export_model,
    versioning,
)

import zoo
from zoo.registry import get_spec, list_models

SCORE_OUTPUTS = ["anomaly_score", "is_anomaly", "normalized_score", "threshold"]
EXPECTED = {
    "dcgan_tiny": {
        "generate": (["z"], ["images"]),
        "sample": (["seed"], ["images"]),
        "serving_default": (["z"], ["images"]),
    },
    "conv_ae_tiny": {
        "reconstruct": (["images"], ["reconstructions"]),
        "encode": (["images"], ["codes"]),
        "score": (["images"], SCORE_OUTPUTS),
        "score_with_threshold": (["images", "threshold"], SCORE_OUTPUTS),
        "serving_default": (["images"], SCORE_OUTPUTS),
    },
    "cgan_tiny": {
        "generate": (["labels", "z"], ["images"]),
        "sample": (["labels", "seed"], ["images"]),
        "serving_default": (["labels", "z"], ["images"]),
    },
    "cvae_tiny": {
        "reconstruct": (["images", "labels"], ["reconstructions"]),
        "encode": (["images", "labels"], ["log_variance", "mean"]),
        "decode": (["labels", "z"], ["images"]),
        "generate": (["labels", "z"], ["images"]),
        "sample": (["labels", "seed"], ["images"]),
        "score": (["images", "labels"], SCORE_OUTPUTS),
        "score_with_threshold": (["images", "labels", "threshold"], SCORE_OUTPUTS),
        "serving_default": (["images", "labels"], SCORE_OUTPUTS),
    },
    "vae_tiny": {
        "reconstruct": (["images"], ["reconstructions"]),
        "encode": (["images"], ["log_variance", "mean"]),
        "decode": (["z"], ["images"]),
        "generate": (["z"], ["images"]),
        "sample": (["seed"], ["images"]),
        "score": (["images"], SCORE_OUTPUTS),
        "score_with_threshold": (["images", "threshold"], SCORE_OUTPUTS),
        "serving_default": (["images"], SCORE_OUTPUTS),
    },
}


@pytest.fixture(scope="module")
def normal_images() -> np.ndarray:
    """The bundled sample's 1000 test digits, float32 in [0, 1]."""
    from zoo.data import load_sample

    images, _ = load_sample("test")
    return (images / 255.0).astype("float32").reshape(-1, 28, 28, 1)


@pytest.fixture(scope="module")
def normal_labels() -> np.ndarray:
    """The class ids of :func:`normal_images`."""
    from zoo.data import load_sample

    return load_sample("test")[1].astype(np.int64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, normal_images, normal_labels) -> dict[str, tuple]:
    """``{name: (model, ExportResult)}``: each tiny model exported once, all formats."""
    out = tmp_path_factory.mktemp("models")
    done = {}
    for name in EXPECTED:
        model = zoo.load(name)
        labels = normal_labels if name == "cvae_tiny" else None
        result = export_model(
            model, out, name, calibration_images=normal_images, calibration_labels=labels
        )
        done[name] = (model, result)
    return done


@pytest.fixture(scope="module")
def loaded(exported) -> dict:
    return {name: tf.saved_model.load(str(r.version_dir)) for name, (_, r) in exported.items()}


# ------------------------------------------------------------------------- calibration


def test_quantile_threshold_is_smallest_with_fpr_at_most_target():
    rng = np.random.default_rng(0)
    for scores in (rng.normal(size=997), rng.integers(0, 20, size=500).astype(float)):
        for target in (0.0, 0.01, 0.05, 0.29, 0.5):
            t = calibrate_threshold(scores, target_fpr=target)
            assert t.method == "quantile" and t.n == len(scores) and t.target_fpr == target
            fpr = np.mean(scores > t.value)
            assert fpr <= target + 1e-12 and t.observed_fpr == pytest.approx(fpr)
            below = scores[scores < t.value]
            if below.size:  # the next smaller candidate lets too many through
                assert np.mean(scores > below.max()) > target


def test_quantile_threshold_known_answer_and_held_out_fpr():
    scores = np.random.default_rng(1).permutation(np.arange(1000, dtype=float))
    t = calibrate_threshold(scores, target_fpr=0.01)
    assert t.value == 989.0 and t.observed_fpr == 0.01  # 990..999 lie above
    assert calibrate_threshold([3.0, 3.0, 3.0], target_fpr=0.5).value == 3.0
    rng = np.random.default_rng(2)
    t = calibrate_threshold(rng.normal(size=100_000), target_fpr=0.01)
    held_out = rng.normal(size=100_000)
    assert abs(np.mean(held_out > t.value) - 0.01) < 0.002


def test_f1_threshold_known_answers():
    scores = [0.1, 0.2, 0.3, 0.4, 0.35, 0.8, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1]
    t = calibrate_threshold_f1(scores, labels)
    # flag > 0.3: tp 3 (0.35, 0.8, 0.9), fp 1 (0.4), fn 0 -> F1 = 6/7, the best
    assert t.method == "best_f1" and t.value == pytest.approx(0.3)
    assert t.f1 == pytest.approx(6 / 7) and t.recall == 1.0 and t.observed_fpr == 0.25
    separable = calibrate_threshold_f1([0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1])
    assert separable.value == pytest.approx(0.2) and separable.f1 == 1.0
    everything = calibrate_threshold_f1([0.5, 0.5], [1, 1])
    assert everything.value < 0.5 and everything.f1 == 1.0


def test_calibration_rejects_bad_input():
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate_threshold([1.0, 2.0], target_fpr=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        calibrate_threshold([1.0, np.nan])
    with pytest.raises(ValueError, match="no anomalies"):
        calibrate_threshold_f1([1.0, 2.0], [0, 0])


# ------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("name", list(EXPECTED))
def test_signature_names_keys_dtypes_shapes(exported, loaded, name):
    model, result = exported[name]
    sigs = loaded[name].signatures
    assert sorted(sigs) == sorted(EXPECTED[name])
    for key, (ins, outs) in EXPECTED[name].items():
        _, kwargs = sigs[key].structured_input_signature
        assert sorted(kwargs) == sorted(ins), key
        assert sorted(sigs[key].structured_outputs) == sorted(outs), key
        for arg, spec in kwargs.items():
            want = {
                "images": (tf.float32, [None, *model.image_shape]),
                "z": (tf.float32, [None, model.latent_dim]),
                "seed": (tf.int64, [None]),
                "labels": (tf.int64, [None]),
                "threshold": (tf.float32, [None]),  # one per example, batch first
            }[arg]
            shape = None if spec.shape.rank is None else spec.shape.as_list()
            assert spec.dtype == want[0] and shape == want[1], (key, arg)
        for out, spec in sigs[key].structured_outputs.items():
            assert spec.dtype == (tf.bool if out == "is_anomaly" else tf.float32), (key, out)
            assert spec.shape[0] is None, (key, out)
            if out in ("anomaly_score", "threshold", "is_anomaly", "normalized_score"):
                assert spec.shape.rank == 1
            if out in ("images", "reconstructions"):
                assert spec.shape.as_list() == [None, *model.image_shape]
    meta_sigs = result.metadata["signatures"]
    assert sorted(meta_sigs) == sorted(EXPECTED[name])
    assert all(meta_sigs[k]["inputs"] for k in meta_sigs)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_signature_runs_through_the_tf1_loader(exported, normal_images, name):
    """As TF Serving's C++ loader runs it: a fresh Graph, a Session, tensor names."""
    model, result = exported[name]
    keys, runs = run_tf1_session(
        result.version_dir, lambda names: make_inputs(model, names, normal_images)
    )
    assert keys == sorted(EXPECTED[name])
    for key, (inputs, actual) in runs.items():  # Keras runs eagerly, outside the graph
        expected = keras_outputs(model, key, inputs, result.metadata)
        assert_close(expected, actual, metadata=result.metadata)


@pytest.mark.skipif(
    not (Path(sys.executable).parent / "saved_model_cli").exists(),
    reason="saved_model_cli is installed with tensorflow beside this Python; it is missing here",
)
def test_saved_model_cli_runs_generate(exported, tmp_path):
    model, result = exported["dcgan_tiny"]
    z = np.random.default_rng(3).standard_normal((2, model.latent_dim)).astype("float32")
    np.save(tmp_path / "z.npy", z)
    cli = Path(sys.executable).parent / "saved_model_cli"
    run = subprocess.run(
        [str(cli), "run", "--dir", str(result.version_dir), "--tag_set", "serve",
         "--signature_def", "generate", "--inputs", f"z={tmp_path / 'z.npy'}",
         "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    images = np.load(tmp_path / "out" / "images.npy")
    np.testing.assert_allclose(images, np.asarray(model.generate(z)), atol=ATOL)


def test_sample_is_seeded_per_image(loaded):
    sample = loaded["dcgan_tiny"].signatures["sample"]
    a = sample(seed=tf.constant([5, 11, 5], tf.int64))["images"].numpy()
    b = sample(seed=tf.constant([5], tf.int64))["images"].numpy()
    np.testing.assert_array_equal(a[0], a[2])
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], a[1])


# ------------------------------------------------------------------------- warmup


@pytest.mark.parametrize("name", list(EXPECTED))
def test_warmup_records_replay(exported, loaded, name):
    from tensorflow_serving.apis import prediction_log_pb2

    _, result = exported[name]
    path = result.version_dir / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 0 < len(records) <= 1000
    seen = []
    for raw in records:
        request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        assert request.model_spec.name == name
        key = request.model_spec.signature_name
        seen.append(key)
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert all(1 <= v.shape[0] <= 2 for v in inputs.values())
        outputs = loaded[name].signatures[key](**inputs)
        assert sorted(outputs) == sorted(EXPECTED[name][key][1])
    assert sorted(seen) == sorted(EXPECTED[name])  # one record per signature


# ------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(EXPECTED))
def test_recorded_parity_is_within_tolerance(exported, name):
    _, result = exported[name]
    stored = json.loads((result.version_dir / "assets.extra" / "zoo_export.json").read_text())
    parity = stored["parity"]
    assert parity["passed"] and parity["atol"] == ATOL
    assert parity["backends"] == ["savedmodel", "tf1_session", "onnxruntime"]
    assert sorted(parity["signatures"]) == sorted(EXPECTED[name])
    bounds = [0.0]
    for key, backends in parity["signatures"].items():
        for diffs in backends.values():
            for out, d in diffs.items():
                if "max_abs_diff" in d:
                    # VAE scores are ~500 nats: the rtol part; normalized_score: that / std
                    bounds.append(d.get("allowed", ATOL + RTOL * 1e4))
                    assert d["max_abs_diff"] <= bounds[-1], (key, out)
                else:
                    assert d["mismatches"] == 0
    assert parity["max_abs_diff"] <= max(bounds)
    assert stored["versions"]["tensorflow"] == tf.__version__
    assert "keras" in stored["versions"]


def _only_final_entries(base: Path) -> set[str]:
    return {p.name for p in base.iterdir()} if base.exists() else set()


def test_forced_onnx_mismatch_raises_and_writes_nothing(tmp_path, monkeypatch):
    from zoo.export import onnx_export

    real = onnx_export.run_onnx

    def perturbed(path, inputs):
        return {k: v + 0.01 for k, v in real(path, inputs).items()}

    monkeypatch.setattr(onnx_export, "run_onnx", perturbed)
    with pytest.raises(ParityError, match=r"generate \[onnxruntime\] images") as info:
        export_model(zoo.load("dcgan_tiny"), tmp_path, "gan")
    assert info.value.report["signatures"]["generate"]["onnxruntime"]["images"][
        "max_abs_diff"
    ] == pytest.approx(0.01, rel=1e-3)
    assert _only_final_entries(tmp_path / "gan") == set()


def test_tiny_tolerance_raises(tmp_path, monkeypatch):
    from zoo.export import savedmodel

    real = savedmodel.run_tf1

    def off_by_a_little(path, calls):
        out = real(path, calls)
        out["generate"]["images"] = out["generate"]["images"] + 1e-6
        return out

    monkeypatch.setattr(savedmodel, "run_tf1", off_by_a_little)
    model = zoo.load("dcgan_tiny")
    export_model(model, tmp_path, "gan", formats="savedmodel", warmup=False)  # 1e-6 is fine
    with pytest.raises(ParityError, match="tf1_session"):
        export_model(
            model, tmp_path, "gan", formats="savedmodel", parity_atol=1e-8, parity_rtol=0.0
        )
    assert versioning.existing_versions(tmp_path / "gan") == [1]


# ------------------------------------------------------------------------- atomicity


def test_failure_mid_export_leaves_no_version_and_no_temp(tmp_path, monkeypatch):
    from zoo.export import warmup

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(warmup, "write_warmup_requests", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(zoo.load("dcgan_tiny"), tmp_path, "gan", formats="savedmodel")
    assert _only_final_entries(tmp_path / "gan") == set()


def test_failure_at_the_final_rename_removes_the_onnx_folder(tmp_path, monkeypatch):
    real_rename = versioning.os.rename

    def rename(src, dst):
        if Path(dst).name.isdigit() and Path(dst).parent.name == "gan":
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(versioning.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        export_model(zoo.load("dcgan_tiny"), tmp_path, "gan", warmup=False)
    base = tmp_path / "gan"
    assert versioning.existing_versions(base) == []
    assert not any(p.name.startswith(".tmp-") for p in base.iterdir())
    assert not (base / "onnx" / "1").exists()


def test_successive_exports_get_versions_1_and_2(tmp_path):
    model = zoo.load("dcgan_tiny")
    first = export_model(model, tmp_path, "gan", formats=["savedmodel"], warmup=False)
    second = export_model(model, tmp_path, "gan", formats=["savedmodel"], warmup=False)
    assert (first.version, second.version) == (1, 2)
    assert first.version_dir == tmp_path / "gan" / "1"
    assert (second.version_dir / "saved_model.pb").is_file()
    assert first.onnx_paths == {} and second.metadata["version"] == 2
    assert _only_final_entries(tmp_path / "gan") == {"1", "2"}


def test_next_version_ignores_non_integer_folders(tmp_path):
    for name in ("1", "3", "onnx", ".tmp-abc", "7b"):
        (tmp_path / name).mkdir()
    assert versioning.existing_versions(tmp_path) == [1, 3]
    assert versioning.next_version(tmp_path) == 4
    assert versioning.next_version(tmp_path / "missing") == 1


# ------------------------------------------------------------------------- threshold


@pytest.mark.parametrize("name", ["conv_ae_tiny", "vae_tiny"])
def test_threshold_metadata_and_verdicts(exported, loaded, normal_images, name):
    model, result = exported[name]
    meta = result.metadata["threshold"]
    assert meta["method"] == "quantile" and meta["target_fpr"] == 0.01
    assert meta["n"] == len(normal_images) and meta["observed_fpr"] <= 0.01
    assert meta["score_definition"]
    assert ("nats" in meta["score_definition"]) == (name == "vae_tiny")
    scores = np.asarray(model.anomaly_score(normal_images))
    order = np.argsort(scores)
    batch = normal_images[np.concatenate([order[:3], order[-3:]])]  # both verdicts
    out = loaded[name].signatures["score"](images=tf.constant(batch))
    value = np.float32(meta["value"])
    np.testing.assert_array_equal(out["is_anomaly"], out["anomaly_score"].numpy() > value)
    np.testing.assert_array_equal(out["threshold"], np.full(6, value))
    assert 0 < out["is_anomaly"].numpy().sum() < 6

    with_threshold = loaded[name].signatures["score_with_threshold"]
    mid = float(np.median(out["anomaly_score"]))
    got = with_threshold(images=tf.constant(batch), threshold=tf.fill([6], mid))
    np.testing.assert_array_equal(got["is_anomaly"], out["anomaly_score"].numpy() > mid)
    np.testing.assert_allclose(got["threshold"], np.full(6, mid))


def test_missing_calibration_names_both_options(tmp_path):
    with pytest.raises(ValueError, match=r"calibration_images=.*threshold="):
        export_model(zoo.load("conv_ae_tiny"), tmp_path, "ae")
    assert not (tmp_path / "ae").exists()


def test_explicit_threshold_is_recorded_and_used(tmp_path, normal_images):
    model = zoo.load("conv_ae_tiny")
    result = export_model(model, tmp_path, "ae", formats="savedmodel", threshold=0.05, warmup=False)
    assert result.metadata["threshold"]["method"] == "given"
    assert result.metadata["threshold"]["value"] == 0.05
    out = tf.saved_model.load(str(result.version_dir)).signatures["score"](
        images=tf.constant(normal_images[:8])
    )
    np.testing.assert_array_equal(out["is_anomaly"], out["anomaly_score"].numpy() > 0.05)
    assert isinstance(result.threshold, Threshold)


def test_export_cli_calibrates_on_the_given_data(tmp_path, normal_images):
    given = tmp_path / "normal.npz"
    np.savez(given, images=normal_images)
    result = export_cli("conv_ae_tiny", tmp_path, "savedmodel", calibration=given)
    assert result.version_dir == tmp_path / "conv_ae" / "1"  # name = model.name
    assert result.metadata["threshold"]["n"] == len(normal_images) == 1000
    assert f"--calibration {given}" in result.metadata["user"]["calibration_data"]


# ------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("name", list(EXPECTED))
def test_onnx_files_check_and_match_keras(exported, normal_images, name):
    model, result = exported[name]
    expected_sigs = sorted(k for k in EXPECTED[name] if k not in ("sample", "serving_default"))
    assert sorted(result.onnx_paths) == expected_sigs
    for key, path in result.onnx_paths.items():
        assert path == result.version_dir.parent / "onnx" / str(result.version) / f"{key}.onnx"
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        types = {node.op_type for node in proto.graph.node}
        assert not any(t.startswith("Random") for t in types), (key, types)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        assert sorted(names) == EXPECTED[name][key][0]
        inputs = make_inputs(model, names, normal_images)
        outputs = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, inputs), strict=True)
        )
        renames = result.metadata["signatures"][key]["onnx"]["output_names"]
        outputs = {k: outputs[v] for k, v in renames.items()}
        expected = keras_outputs(model, key, inputs, result.metadata)
        assert_close(expected, outputs, metadata=result.metadata)
    if "generate" in result.onnx_paths:
        proto = onnx.load(str(result.onnx_paths["generate"]))
        conditional = "labels" in EXPECTED[name]["generate"][0]
        assert [i.name for i in proto.graph.input] == (["z", "labels"] if conditional else ["z"])
    reasons = result.metadata["onnx"]["savedmodel_only_reasons"]  # never silently skipped
    assert sorted(reasons) == (["sample"] if "sample" in EXPECTED[name] else [])
    assert all("StatelessRandomNormalV2" in why for why in reasons.values())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_model_card_is_written(exported, name):
    _, result = exported[name]
    text = (result.version_dir / "assets.extra" / "MODEL_CARD.md").read_text()
    assert text.startswith(f"# Model card: {name} (version 1)")
    assert "## Parity" in text and "Passed: **True**" in text
    assert ("Conditional on `labels`" in text) == (name in ("cgan_tiny", "cvae_tiny"))
    if name in ("dcgan_tiny", "cgan_tiny"):
        assert "no anomaly threshold" in text and "StatelessRandomNormalV2" in text
    else:
        assert result.metadata["score"]["definition"] in text
        assert "Method: quantile of held-out normal scores" in text
        assert ("negative ELBO in nats" in text) == (name in ("vae_tiny", "cvae_tiny"))


# ------------------------------------------------------------------------- conditional models


def test_conditional_labels_pick_the_class(loaded, exported):
    model, _ = exported["cgan_tiny"]
    z = np.repeat(np.random.default_rng(1).standard_normal((1, model.latent_dim)), 3, 0)
    images = (
        loaded["cgan_tiny"]
        .signatures["generate"](
            z=tf.constant(z, tf.float32), labels=tf.constant([2, 2, 7], tf.int64)
        )["images"]
        .numpy()
    )
    np.testing.assert_array_equal(images[0], images[1])  # same z, same class
    # same z, another class: the untrained generator's outputs sit near 0.5, so the
    # class changes them by ~1e-4, still far above float32 round-off (~1e-7)
    assert np.abs(images[0] - images[2]).max() > 1e-5
    np.testing.assert_allclose(images, model.generate(z, np.array([2, 2, 7])), atol=1e-6)


@pytest.mark.parametrize(("name", "signature"), [("cgan_tiny", "generate"), ("cvae_tiny", "score")])
@pytest.mark.parametrize("bad", [10, -1])
def test_out_of_range_labels_give_nan_for_their_example(
    loaded, exported, normal_images, name, signature, bad
):
    model, _ = exported[name]
    inputs = make_inputs(model, sorted(EXPECTED[name][signature][0]), normal_images, n=2)
    inputs["labels"] = np.array([0, bad], np.int64)
    out = loaded[name].signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    first = "images" if signature == "generate" else "anomaly_score"
    assert np.isnan(out[first].numpy()[1]).all() and np.isfinite(out[first].numpy()[0]).all()


def test_cvae_export_needs_calibration_labels(tmp_path, normal_images, normal_labels):
    model = zoo.load("cvae_tiny")
    with pytest.raises(ValueError, match="calibration_labels"):
        export_model(model, tmp_path, "cvae", calibration_images=normal_images[:50])
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        export_model(model, tmp_path, "cvae", calibration_images=normal_images[:3],
                     calibration_labels=np.array([0, 1, 12]))  # fmt: skip
    with pytest.raises(ValueError, match="unconditional"):
        export_model(zoo.load("vae_tiny"), tmp_path, "vae", calibration_images=normal_images[:3],
                     calibration_labels=normal_labels[:3])  # fmt: skip
    assert not (tmp_path / "cvae").exists() and not (tmp_path / "vae").exists()


def test_export_cli_calibrates_a_cvae_with_the_sample_labels(
    tmp_path, normal_images, normal_labels
):
    model = zoo.load("cvae_tiny")
    given = tmp_path / "normal.npz"
    np.savez(given, images=normal_images, labels=normal_labels)
    result = export_cli("cvae_tiny", tmp_path, "savedmodel", calibration=given)
    scores = np.asarray(model.anomaly_score(normal_images, labels=normal_labels))
    assert result.metadata["threshold"]["n"] == 1000
    # the smallest threshold with FPR <= 1 %: scored under each digit's own label
    assert np.mean(scores > result.metadata["threshold"]["value"]) <= 0.01
    assert result.metadata["model"]["num_classes"] == 10


def test_gan_exports_its_ema_generator(tmp_path):
    model = zoo.load("gan_tiny", ema_decay=0.9)
    trained = model.generator.get_weights()
    model.generator.set_weights([w + 0.5 for w in trained])  # EMA and raw now differ
    z = np.random.default_rng(2).standard_normal((4, model.latent_dim)).astype("float32")
    result = export_model(model, tmp_path, "gan", formats="savedmodel", warmup=False)
    images = tf.saved_model.load(str(result.version_dir)).signatures["generate"](z=tf.constant(z))
    ema = np.asarray(model.generate(z))  # generate() samples with the EMA generator
    np.testing.assert_allclose(images["images"], ema, atol=ATOL)
    raw = (np.asarray(model.generator(z)) + 1.0) / 2.0
    assert np.abs(raw - ema).max() > 1e-2


def test_learned_scale_vae_exports_its_scale(tmp_path, normal_images):
    model = zoo.load("mlp_vae_tiny", likelihood="gaussian_learned")
    model.log_scale.assign(model.log_scale + np.linspace(-1, 1, 784).reshape(28, 28, 1))
    result = export_model(model, tmp_path, "vae", calibration_images=normal_images[:64])
    decode = tf.saved_model.load(str(result.version_dir)).signatures["decode"]
    z = np.zeros((2, model.latent_dim), np.float32)
    out = decode(z=tf.constant(z))
    want = np.broadcast_to(np.asarray(model.scale()), (2, 28, 28, 1))
    np.testing.assert_allclose(out["scale"], want, rtol=1e-6)  # the trained, not initial, scale
    assert result.metadata["parity"]["passed"]


def test_rest_generate_and_score_with_labels(exported, normal_images, normal_labels, tmp_path):
    """The exported conditional models over REST (``zoo serve``), as a client calls them."""
    import threading

    from zoo.serving.client import InvalidLabelsError, ServingClient
    from zoo.serving.server import make_server

    blocks = "".join(
        f'  config {{ name: "{name}" base_path: "{result.version_dir.parent}" '
        'model_platform: "tensorflow" }\n'
        for name, (_, result) in exported.items()
        if name in ("cgan_tiny", "cvae_tiny")
    )
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{\n{blocks}}}\n")
    server = make_server(config, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cgan, _ = exported["cgan_tiny"]
        z = np.random.default_rng(4).standard_normal((3, cgan.latent_dim)).astype("float32")
        labels = np.array([1, 4, 8])
        images = ServingClient(server.url, "cgan_tiny").generate(z, labels)
        np.testing.assert_allclose(images, cgan.generate(z, labels), atol=ATOL)

        cvae, result = exported["cvae_tiny"]
        client = ServingClient(server.url, "cvae_tiny")
        scores, verdicts = client.score(normal_images[:4], normal_labels[:4])
        want = np.asarray(cvae.anomaly_score(normal_images[:4], labels=normal_labels[:4]))
        np.testing.assert_allclose(scores, want, rtol=1e-5)
        np.testing.assert_array_equal(verdicts, want > result.metadata["threshold"]["value"])
        with pytest.raises(InvalidLabelsError, match=r"labels \[10\] \(rows \[1\]\)") as error:
            client.score(normal_images[:2], [3, 10])
        assert error.value.status == 400
    finally:
        server.shutdown()
        server.server_close()


#: Every other registered GAN and VAE (the shared export checks above cover one of each).
#: Diffusion models are exported by tests/test_diffusion_export.py instead: their z is an
#: image-shaped x_T (not [N, latent_dim]) and their generate is a K-step loop with its own
#: tolerance, which make_inputs / keras_outputs here do not model.
OTHER_GENERATIVE = sorted(
    n for n in list_models("*_tiny") if get_spec(n).family in ("gan", "vae") and n not in EXPECTED
)


def test_every_gan_and_vae_is_covered():
    assert set(OTHER_GENERATIVE) | set(EXPECTED) >= {
        "gan_tiny", "dcgan_tiny", "cgan_tiny", "wgan_tiny", "wgan_gp_tiny",
        "vae_tiny", "mlp_vae_tiny", "beta_vae_tiny", "cvae_tiny", "iwae_tiny",
    }  # fmt: skip


@pytest.mark.parametrize("name", OTHER_GENERATIVE)
def test_every_gan_and_vae_exports_and_runs_in_the_tf1_loader(tmp_path, normal_images, name):
    model = zoo.load(name)
    result = export_model(model, tmp_path, name, calibration_images=normal_images[:200])
    assert result.metadata["parity"]["passed"]
    generator = get_spec(name).family == "gan"
    assert sorted(result.onnx_paths) == (
        ["generate"]
        if generator
        else ["decode", "encode", "generate", "reconstruct", "score", "score_with_threshold"]
    )
    keys, runs = run_tf1_session(
        result.version_dir, lambda names: make_inputs(model, names, normal_images)
    )
    assert "generate" in keys and ("score" in keys) != generator
    for key, (inputs, actual) in runs.items():
        expected = keras_outputs(model, key, inputs, result.metadata)
        assert_close(expected, actual, metadata=result.metadata)


def test_blurred_top_fraction_score_exports_with_parity(tmp_path, normal_images):
    model = zoo.load("conv_ae_tiny", score_blur=1.0, score_top_fraction=0.05)
    result = export_model(model, tmp_path, "ae", calibration_images=normal_images[:100])
    assert result.metadata["parity"]["passed"] and "score" in result.onnx_paths
    definition = result.metadata["score"]["definition"]
    assert "Gaussian of sigma 1 px" in definition and "largest 39 of the 28 x 28 x 1" in definition
    session = ort.InferenceSession(str(result.onnx_paths["score"]))
    (onnx_scores,) = session.run(["anomaly_score"], {"images": normal_images[:5]})
    np.testing.assert_allclose(onnx_scores, model.anomaly_score(normal_images[:5]), rtol=1e-5)
