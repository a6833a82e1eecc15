"""Export and serving of the diffusion models (issue 17 §3): cddpm_tiny exported once
(SavedModel + ONNX + warmup + card) and shared by the module (the unconditional ddpm is
exported by the README's commands, run by tests/test_readme.py).

The zoo's generic export tests (tests/test_export.py) feed a flat ``z`` [N, latent_dim] and
compare against a decoder; a diffusion model's ``z`` is an image-shaped x_T and its
``generate`` is a K-step loop held to its own tolerance, so the family is checked here: every
exported signature against the trainer's own methods (``generate``, ``denoise``) through the
TF2 loader, the TF1 session loader (as TF Serving's C++ side runs it) and ONNX Runtime
(``generate`` converts to one ONNX ``Loop``), and REST through ``zoo serve``'s server.

The tiny denoisers' output layer is zero-initialised (ε ≡ 0 would make every sampler trivially
agree), so the fixture moves the sampling weights off their initial values first.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from export_helpers import run_tf1_session
from zoo.export import export_model

import zoo
from zoo.registry import get_spec, list_models
from zoo.trainers.diffusion_tasks import DENOISE_TOLERANCE, GENERATE_TOLERANCE

#: Export formats per model. An export costs minutes (tf2onnx takes ~30 s per loop signature
#: on 2 loaded cores), so one model is exported here: the conditional one, whose graphs hold
#: every piece of the unconditional one plus labels and guidance. The unconditional graphs are
#: exported (SavedModel + ONNX, parity on every backend, else the export fails) by the
#: README's `zoo export runs/ddpm_mnist`, which tests/test_readme.py runs.
FORMATS = {"cddpm_tiny": "savedmodel,onnx"}
MODELS = tuple(FORMATS)
#: Exported by tests/test_readme.py (the README's diffusion commands), not here.
EXPORTED_BY_README = {"ddpm_tiny"}
PARAMS = list(MODELS)
ONNX_SIGNATURES = ["denoise", "generate", "score", "score_with_threshold"]
SIGNATURES = ["denoise", "generate", "sample", "score", "score_with_threshold", "serving_default"]
SHAPE = (28, 28, 1)
#: The anomaly threshold given at export (the AnoDDPM score signatures need one).
THRESHOLD = 0.05


def _perturbed(name: str) -> zoo.trainers.DiffusionModel:
    """``name`` with its sampling (EMA) denoiser's weights moved by N(0, 0.05²) noise."""
    model = zoo.load(name)
    rng = np.random.default_rng(0)
    for v in model.sampling_denoiser.weights:
        v.assign(v.numpy() + 0.05 * rng.standard_normal(v.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(name) -> (model, ExportResult)``: each model exported once, on first use."""
    out, done = tmp_path_factory.mktemp("diffusion_models"), {}

    def get(name: str) -> tuple:
        if name not in done:
            model = _perturbed(name)
            done[name] = (
                model,
                export_model(model, out, name, formats=FORMATS[name], threshold=THRESHOLD),
            )
        return done[name]

    return get


@pytest.fixture(scope="module")
def loaded(exported):
    """``loaded(name)``: the export reloaded through the TF2 loader."""
    done = {}

    def get(name: str) -> object:
        if name not in done:
            done[name] = tf.saved_model.load(str(exported(name)[1].version_dir))
        return done[name]

    return get


def _z(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def _inputs(model, names: list[str], n: int = 3) -> dict[str, np.ndarray]:
    """Inputs by tensor name for any diffusion signature."""
    steps = model.schedule.num_steps
    values = {
        "z": _z(n),
        "x_t": _z(n, seed=2),
        "t": np.array([0, steps // 2, steps - 1][:n], np.int64),
        "seed": np.array([5, 11, 5][:n], np.int64),
        "labels": np.array([3, 6, 9][:n], np.int64),
        "images": np.random.default_rng(3).uniform(size=(n, *SHAPE)).astype(np.float32),
        "threshold": np.full([n], THRESHOLD, np.float32),
    }
    return {k: values[k] for k in names}


def _keras(model, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the trainer's own methods say ``signature`` returns."""
    labels = inputs.get("labels")
    if signature in ("generate", "serving_default"):
        return {"images": np.asarray(model.generate(inputs["z"], labels))}
    if signature == "sample":
        z = tf.stack(
            [
                tf.random.stateless_normal(SHAPE, seed=tf.constant([int(s), 0], tf.int64),
                                           alg="philox")
                for s in inputs["seed"]
            ]
        )  # fmt: skip
        return {"images": np.asarray(model.generate(z, labels))}
    if signature.startswith("score"):
        score = np.asarray(model.anomaly_score(inputs["images"], labels))
        threshold = np.full(score.shape, THRESHOLD, np.float32)
        return {"anomaly_score": score, "threshold": threshold, "is_anomaly": score > threshold}
    out = model.denoise(inputs["x_t"], inputs["t"], labels)
    return {k: np.asarray(v) for k, v in out.items()}


def _close(signature: str, expected: dict, actual: dict) -> float:
    """Assert same keys and closeness at the signature's tolerance; return max |diff|."""
    assert sorted(expected) == sorted(actual), signature
    atol = {"generate": GENERATE_TOLERANCE.atol, "serving_default": GENERATE_TOLERANCE.atol,
            "denoise": DENOISE_TOLERANCE.atol}.get(signature, 1e-4)  # fmt: skip
    worst = 0.0
    for key, want in expected.items():
        got = np.asarray(actual[key])
        assert got.shape == want.shape, (signature, key)
        if want.dtype == np.bool_:
            np.testing.assert_array_equal(got, want, err_msg=f"{signature} {key}")
            continue
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5, err_msg=f"{signature} {key}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def test_every_diffusion_model_is_exported_here():
    """tests/test_export.py covers the GAN/VAE/AE families; every tiny diffusion model is
    covered by this module."""
    tiny = {n for n in list_models("*_tiny") if get_spec(n).family == "diffusion"}
    assert tiny == set(MODELS) | EXPORTED_BY_README
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "zoo export runs/ddpm_mnist" in readme


@pytest.mark.parametrize("name", PARAMS)
def test_signatures_onnx_and_recorded_parity(exported, loaded, name):
    _, result = exported(name)
    conditional = name.startswith("c")
    labels = ["labels"] if conditional else []
    sigs = loaded(name).signatures
    assert sorted(sigs) == SIGNATURES
    want_inputs = {
        "generate": ["z", *labels],
        "serving_default": ["z", *labels],
        "sample": ["seed", *labels],
        "denoise": ["t", "x_t", *labels],
        "score": ["images", *labels],
        "score_with_threshold": ["images", *labels, "threshold"],
    }
    for key, names in want_inputs.items():
        _, kwargs = sigs[key].structured_input_signature
        assert sorted(kwargs) == sorted(names), key
    _, kwargs = sigs["generate"].structured_input_signature
    assert kwargs["z"].shape.as_list() == [None, *SHAPE]  # z = x_T, image-shaped
    assert sorted(sigs["denoise"].structured_outputs) == ["denoised", "eps"]
    onnx = "onnx" in FORMATS[name]
    assert result.metadata["onnx"]["signatures"] == (ONNX_SIGNATURES if onnx else [])
    assert result.metadata["onnx"]["savedmodel_only"] == ["sample"]
    parity = result.metadata["parity"]
    backends = ["savedmodel", "tf1_session", *(["onnxruntime"] if onnx else [])]
    assert parity["passed"] and parity["backends"] == backends
    assert parity["tolerances"]["generate"] == GENERATE_TOLERANCE.to_dict()
    assert parity["tolerances"]["denoise"] == DENOISE_TOLERANCE.to_dict()
    for key in ONNX_SIGNATURES:
        assert sorted(parity["signatures"][key]) == sorted(backends), key
    warmup = result.version_dir / "assets.extra" / "tf_serving_warmup_requests"
    assert len(list(tf.data.TFRecordDataset(str(warmup)))) == len(SIGNATURES)


@pytest.mark.parametrize("name", PARAMS)
def test_exported_generate_matches_model_generate_on_every_backend(exported, loaded, name):
    """SavedModel (TF2 loader), TF1 session by tensor names, and the ONNX Loop."""
    model, result = exported(name)
    conditional = name.startswith("c")
    inputs = _inputs(model, ["z", "labels"] if conditional else ["z"])
    want = _keras(model, "generate", inputs)
    assert want["images"].std() > 0.05  # the perturbed network makes real images, not 0.5
    tf2 = loaded(name).signatures["generate"](**{k: tf.constant(v) for k, v in inputs.items()})
    _close("generate", want, {k: v.numpy() for k, v in tf2.items()})

    keys, runs = run_tf1_session(result.version_dir, lambda names: _inputs(model, names))
    assert keys == SIGNATURES
    for key, (given, actual) in runs.items():
        _close(key, _keras(model, key, given), actual)

    if "onnx" not in FORMATS[name]:
        return
    proto = onnx.load(str(result.onnx_paths["generate"]))
    assert "Loop" in {node.op_type for node in proto.graph.node}  # one loop, not unrolled
    session = ort.InferenceSession(str(result.onnx_paths["generate"]))
    (images,) = session.run(["images"], inputs)
    _close("generate", want, {"images": images})


@pytest.mark.parametrize("name", PARAMS)
def test_denoise_is_one_network_evaluation_on_every_backend(exported, loaded, name):
    """eps = the trainer's denoise; denoised = the x_0 it implies (Ho et al. eq. 4 solved for
    x_0), as images in [0, 1], in float64 from the schedule's table."""
    model, result = exported(name)
    names = ["x_t", "t", "labels"] if name.startswith("c") else ["x_t", "t"]
    inputs = _inputs(model, names)
    want = _keras(model, "denoise", inputs)
    assert np.abs(want["eps"]).max() > 0.1
    abar = model.schedule.alpha_bars[inputs["t"]].reshape(-1, 1, 1, 1)
    x0 = (inputs["x_t"] - np.sqrt(1 - abar) * want["eps"].astype(np.float64)) / np.sqrt(abar)
    np.testing.assert_allclose(want["denoised"], np.clip((x0 + 1) / 2, 0, 1), atol=1e-4)

    tf2 = loaded(name).signatures["denoise"](**{k: tf.constant(v) for k, v in inputs.items()})
    _close("denoise", want, {k: v.numpy() for k, v in tf2.items()})
    if "onnx" not in FORMATS[name]:
        return
    session = ort.InferenceSession(str(result.onnx_paths["denoise"]))
    got = dict(zip(["denoised", "eps"], session.run(["denoised", "eps"], inputs), strict=True))
    _close("denoise", want, got)


def test_conditional_labels_and_guidance(exported, loaded):
    model, _ = exported("cddpm_tiny")
    generate = loaded("cddpm_tiny").signatures["generate"]
    z = np.repeat(_z(1), 3, 0)
    labels = np.array([2, 2, 7], np.int64)
    images = generate(z=tf.constant(z), labels=tf.constant(labels))["images"].numpy()
    np.testing.assert_array_equal(images[0], images[1])  # same z, same class
    assert np.abs(images[0] - images[2]).max() > 1e-2  # same z, another class
    # the guidance scale fixed at export is the model's (2 for cddpm), not s = 1
    assert model.guidance_scale == 2.0
    guided = np.asarray(model.generate(z, labels, guidance_scale=2.0))
    unguided = np.asarray(model.generate(z, labels, guidance_scale=1.0))
    np.testing.assert_allclose(images, guided, atol=GENERATE_TOLERANCE.atol)
    assert np.abs(images - unguided).max() > 1e-2
    # an out-of-range label gives NaN for its own example only
    for bad in (10, -1):
        out = generate(z=tf.constant(z[:2]), labels=tf.constant([4, bad], tf.int64))["images"]
        out = out.numpy()
        assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()
        np.testing.assert_allclose(
            out[0], np.asarray(model.generate(z[:1], [4]))[0], atol=GENERATE_TOLERANCE.atol
        )


def test_sample_is_seeded_per_image(loaded):
    sample = loaded("cddpm_tiny").signatures["sample"]
    labels = tf.constant([4, 4, 4], tf.int64)
    a = sample(seed=tf.constant([5, 11, 5], tf.int64), labels=labels)["images"].numpy()
    b = sample(seed=tf.constant([5], tf.int64), labels=labels[:1])["images"].numpy()
    # the same seed gives the same image wherever it sits in the batch (to conv round-off)
    np.testing.assert_allclose(a[0], a[2], atol=1e-6)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert np.abs(a[0] - a[1]).max() > 1e-2


@pytest.mark.parametrize("name", PARAMS)
def test_model_card_and_metadata_state_steps_schedule_and_guidance(exported, name):
    model, result = exported(name)
    summary = result.metadata["model"]["diffusion"]
    assert summary["sample_steps"] == model.sample_steps == 5
    assert summary["schedule"]["num_steps"] == 100 and summary["sampler"] == "DDIM, eta = 0"
    assert summary["schedule"]["kind"] == "linear"
    assert ("guidance_scale" in summary) == name.startswith("c")
    card = result.model_card.read_text()
    assert "DDIM (Song et al. 2021, eta = 0) from z = x_T" in card
    assert "in 5 steps of a 100-step linear schedule" in card
    assert "one ONNX `Loop`" in card
    assert ("classifier-free guidance (Ho & Salimans 2022) at scale 2" in card) == (
        name.startswith("c")
    )
    if "onnx" in FORMATS[name]:
        assert "`onnx/1/generate.onnx`" in card and "`onnx/1/denoise.onnx`" in card
    assert "| `sample` |" in card and "StatelessRandomNormalV2" in card


@pytest.mark.parametrize("name", PARAMS)
def test_rest_generate_denoise_and_sample(exported, tmp_path, name):
    """The export behind ``zoo serve``'s server, called over HTTP by the REST client in both
    request formats; labels per example; a wrong z shape is a clear 400."""
    from zoo.serving.client import InvalidLabelsError, ServingClient, ServingError
    from zoo.serving.server import make_server

    model, result = exported(name)
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{\n  config {{ name: "{name}" base_path: '
        f'"{result.version_dir.parent}" model_platform: "tensorflow" }}\n}}\n'
    )
    server = make_server(config, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ServingClient(server.url, name)
        conditional = model.conditional
        labels = np.array([1, 8], np.int64) if conditional else None
        given = {} if labels is None else {"labels": labels}
        z = _z(2, seed=4)
        want = np.asarray(model.generate(z, labels))
        np.testing.assert_allclose(client.generate(z, labels), want, atol=GENERATE_TOLERANCE.atol)
        rows = client.predict({"z": z, **given}, "serving_default", columnar=False)["images"]
        np.testing.assert_allclose(rows, want, atol=GENERATE_TOLERANCE.atol)
        inputs = _inputs(model, ["x_t", "t", *given], n=2)
        _close("denoise", _keras(model, "denoise", inputs), client.predict(inputs, "denoise"))
        seeds = {"seed": np.array([5, 11], np.int64), **given}
        _close("sample", _keras(model, "sample", seeds), client.predict(seeds, "sample"))
        with pytest.raises(ServingError, match=r"input 'z' expects shape \[-1, 28, 28, 1\]") as bad:
            client.generate(z[:, :14], labels)  # z of the wrong size
        assert bad.value.status == 400
        if conditional:
            with pytest.raises(InvalidLabelsError, match=r"labels \[10\] \(rows \[1\]\)") as err:
                client.generate(z, [3, 10])
            assert err.value.status == 400
            images = err.value.outputs["images"]
            assert np.isnan(images[1]).all()
            np.testing.assert_allclose(images[0], np.asarray(model.generate(z[:1], [3]))[0],
                                       atol=GENERATE_TOLERANCE.atol)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
