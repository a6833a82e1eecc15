"""The committed TF Serving configs, Dockerfile and compose file, and the config helpers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from zoo.serving import config as cfg

SERVING_DIR = Path(__file__).resolve().parents[1] / "serving"
MODELS_CONFIG = SERVING_DIR / "models.config"
BATCHING = SERVING_DIR / "batching_parameters.txt"
MONITORING = SERVING_DIR / "monitoring.config"
COMPOSE = SERVING_DIR / "docker-compose.yml"


# --------------------------------------------------------------------------- models.config


DEMO_MODELS = ("dcgan", "conv_ae")  # exported by the demo: labelled "stable" -> 1
ANOMALY_MODELS = ("denoising_ae", "recurrent_ae")  # not exported by the demo: no labels
TRANSLATORS = ("pix2pix",)  # image-to-image (translate), exported by the demo, no label


def test_committed_models_config_parses_with_the_proto():
    config = cfg.load_model_server_config(MODELS_CONFIG)
    models = {m.name: m for m in config.model_config_list.config}
    assert list(models) == [*DEMO_MODELS, *ANOMALY_MODELS, *TRANSLATORS]
    for name, model in models.items():
        assert model.base_path == f"/models/{name}"
        assert model.model_platform == "tensorflow"
        assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
        assert model.model_version_policy.latest.num_versions == 2
        # Only labels that will exist: the demo exports version 1 of its models first,
        # and no version of the others (TF Serving refuses labels on unloaded versions).
        expected = {"stable": 1} if name in DEMO_MODELS else {}
        assert dict(model.version_labels) == expected, name


def test_typo_in_models_config_is_rejected_with_its_line(tmp_path):
    lines = MODELS_CONFIG.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if 'base_path: "/models/conv_ae"' in line)
    lines[index] = lines[index].replace("base_path", "base_pth")
    bad = tmp_path / "models.config"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        cfg.load_model_server_config(bad)
    message = str(info.value)
    assert str(bad) in message
    assert f"line {index + 1}," in message
    assert "base_pth" in message and "Did you mean 'base_path'" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected a 'model_config_list"),
        ("model_config_list { }", "no 'config' entries"),
        ('model_config_list { config { name: "a" } }', "'base_path' is required"),
        (
            'model_config_list { config { name: "a" base_path: "/m" } '
            'config { name: "a" base_path: "/n" model_platform: "tensorflow" } }',
            "model_platform",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" }'
            ' config { name: "a" base_path: "/n" model_platform: "tensorflow" } }',
            "duplicate model name 'a'",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" model_platform: "onnx" } }',
            "model_platform",
        ),
        ('model_config_list { config { name: "a" base_path: 3 } }', "line 1"),
    ],
)
def test_invalid_model_server_configs(tmp_path, text, fragment):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        cfg.load_model_server_config(path)


def test_resolve_base_path(tmp_path):
    root = tmp_path / "models"
    assert cfg.resolve_base_path("/models/dcgan", root) == root / "dcgan"
    assert cfg.resolve_base_path("/models", root) == root
    assert cfg.resolve_base_path("/models_old/x", root) == Path("/models_old/x")
    assert cfg.resolve_base_path("/srv/dcgan", root) == Path("/srv/dcgan")
    assert cfg.resolve_base_path("exports/dcgan", root, tmp_path) == tmp_path / "exports/dcgan"
    with pytest.raises(ValueError, match="remote"):
        cfg.resolve_base_path("gs://bucket/dcgan", root)


def test_available_versions_ignores_partial_and_temporary_folders(tmp_path):
    for name, complete in [
        ("1", True),
        ("2", True),
        ("3", False),  # half-written: no saved_model.pb yet
        ("007", True),
        (".4", True),
        ("5.tmp", True),
        ("tmp-6", True),
        ("latest", True),
    ]:
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "8").write_text("a file, not a folder")
    assert cfg.available_versions(tmp_path) == [1, 2, 7]
    assert cfg.version_folders(tmp_path)[7] == tmp_path / "007"
    assert cfg.available_versions(tmp_path / "missing") == []


def _model(policy: str = "", labels: dict[str, int] | None = None) -> cfg.ModelConfig:
    from google.protobuf import text_format

    text = f'name: "m" base_path: "/models/m" model_platform: "tensorflow" {policy}'
    for key, value in (labels or {}).items():
        text += f' version_labels {{ key: "{key}" value: {value} }}'
    return text_format.Parse(text, cfg.ModelConfig())


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [9]),
        ("model_version_policy { latest { } }", [9]),
        ("model_version_policy { latest { num_versions: 2 } }", [5, 9]),
        ("model_version_policy { all { } }", [1, 5, 9]),
        ("model_version_policy { specific { versions: 1 versions: 4 } }", [1]),
    ],
)
def test_select_versions_follows_tf_serving_policies(policy, expected):
    assert cfg.select_versions(_model(policy), [9, 1, 5]) == expected


def test_version_labels_must_point_at_loaded_versions():
    model = _model(labels={"stable": 1, "canary": 2})
    assert cfg.resolve_version_labels(model, [1, 2]) == {"stable": 1, "canary": 2}
    with pytest.raises(ValueError, match="'canary' points at version 2") as info:
        cfg.resolve_version_labels(model, [1])
    assert "--allow_version_labels_for_unavailable_models" in str(info.value)
    assert cfg.resolve_version_labels(model, [1], allow_unavailable=True)["canary"] == 2


# --------------------------------------------------------------------------- batching & monitoring


def test_committed_batching_parameters_validate():
    params = cfg.validate_batching_parameters(BATCHING)
    assert params == {
        "max_batch_size": 64,
        "batch_timeout_micros": 2000,
        "num_batch_threads": 2,
        "max_enqueued_batches": 100,
    }


def test_batching_parameters_accept_every_documented_field(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text(
        "max_batch_size { value: 32 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 10 }\n"
        "num_batch_threads { value: 4 }\n"
        'thread_pool_name { value: "zoo" }\n'
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\nallowed_batch_sizes: 32\n"
        "pad_variable_length_inputs: true\n"
        "enable_large_batch_splitting { value: false }\n"
        "max_execution_batch_size { value: 32 }\n"
    )
    params = cfg.validate_batching_parameters(path)
    assert params["allowed_batch_sizes"] == [8, 16, 32]
    assert params["pad_variable_length_inputs"] is True
    assert params["thread_pool_name"] == "zoo"
    assert params["enable_large_batch_splitting"] is False


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "max_batch_size { value: 64 }\nmax_batch_sise { value: 8 }\n",
            ["line 2", "max_batch_sise", "Did you mean 'max_batch_size'"],
        ),
        ('max_batch_size { value: "many" }\n', ["line 1", "Couldn't parse integer"]),
        ("num_batch_threads: 2\n", ["line 1", "name { value: N }"]),
        ("pad_variable_length_inputs: maybe\n", ["line 1", '"true" or "false"']),
        ("max_batch_size { value: 0 }\n", ["max_batch_size must be >= 1"]),
        (
            "max_batch_size { value: 64 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n",
            ["must equal max_batch_size (64)"],
        ),
        (
            "max_batch_size { value: 8 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 4\n",
            ["strictly increasing"],
        ),
    ],
)
def test_batching_parameters_reject_unknown_fields_and_bad_values(tmp_path, text, fragments):
    path = tmp_path / "batching.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        cfg.validate_batching_parameters(path)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_committed_monitoring_config_validates():
    assert cfg.validate_monitoring_config(MONITORING) == {
        "prometheus_config": {"enable": True, "path": "/monitoring/prometheus/metrics"}
    }


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("prometheus_config {\n  enabled: true\n}\n", ["line 2", "Did you mean 'enable'"]),
        ('prometheus_config {\n  enable: "yes"\n}\n', ["line 2", '"true" or "false"']),
        ("prometheus_config {\n  path: 7\n}\n", ["line 2", "string"]),
        ('prometheus_config { path: "metrics" }\n', ["must be a URL path starting with '/'"]),
        ("prometheus { enable: true }\n", ["line 1", "prometheus_config"]),
    ],
)
def test_monitoring_config_rejects_unknown_fields_and_bad_types(tmp_path, text, fragments):
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        cfg.validate_monitoring_config(path)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


# --------------------------------------------------------------------------- compose healthcheck
# (the static checks of serving/Dockerfile and docker-compose.yml: tests/test_container_files.py)


def _compose_healthcheck() -> list[str]:
    text = COMPOSE.read_text()
    match = re.search(r"^\s*healthcheck:\s*\n\s*(?:#.*\n\s*)*test:\s*(\[.*\])\s*$", text, re.M)
    assert match, "healthcheck.test must be an exec-form list"
    return json.loads(match.group(1))


# --------------------------------------------------------------------------- against real models


def _export_stand_ins(root: Path, names: tuple[str, ...]) -> Path:
    """Tiny stand-ins for the committed config's models, version 1 each: dcgan (generate),
    conv_ae and denoising_ae (score on images [N, 4, 4, 1]), recurrent_ae (score on
    sequences [N, 6, 2] with step_scores)."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    decoder = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="sigmoid"),
            keras.layers.Reshape((4, 4, 1)),
        ]
    )

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="z")])
    def generate(z):
        return {"images": decoder(z)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32, name="images")])
    def score(images):
        errors = tf.reduce_mean(tf.square(images - 0.5), axis=[1, 2, 3])
        return {"anomaly_score": errors, "is_anomaly": errors > 0.1}

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 2], tf.float32, name="sequences")])
    def score_sequences(sequences):
        steps = tf.reduce_mean(tf.square(sequences), axis=-1)
        errors = tf.reduce_mean(steps, axis=1)
        return {"anomaly_score": errors, "is_anomaly": errors > 0.1, "step_scores": steps}

    functions = {"dcgan": generate, "conv_ae": score, "denoising_ae": score}
    functions["recurrent_ae"] = score_sequences
    for name in names:
        fn = functions[name]
        archive = keras.export.ExportArchive()
        archive.track(decoder)
        archive.add_endpoint("score" if fn is score_sequences else fn.__name__, fn)
        archive.add_endpoint("serving_default", fn)
        archive.write_out(str(root / name / "1"), verbose=False)
    return root


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    """Stand-ins for every model of the committed config (TF Serving needs them all)."""
    return _export_stand_ins(
        tmp_path_factory.mktemp("serving_models"), DEMO_MODELS + ANOMALY_MODELS
    )


@pytest.fixture(scope="module")
def demo_only_models(tmp_path_factory):
    """What the demo exports: dcgan and conv_ae, nothing for the anomaly models."""
    return _export_stand_ins(tmp_path_factory.mktemp("demo_models"), DEMO_MODELS)


@pytest.fixture(scope="module")
def committed_config_server(demo_models):
    from zoo.serving.server import make_server

    server = make_server(MODELS_CONFIG, models_root=demo_models, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_local_server_serves_the_committed_config(committed_config_server):
    from zoo.serving.client import ServingClient

    url = committed_config_server.url
    images = ServingClient(url, model="dcgan").generate(
        np.zeros((2, 8), np.float32), label="stable"
    )
    assert images.shape == (2, 4, 4, 1) and images.dtype == np.float32
    for name in ("conv_ae", "denoising_ae"):
        scores, verdicts = ServingClient(url, model=name).score(images)
        assert scores.shape == (2,) and verdicts.dtype == np.bool_
    sequences = np.full((3, 6, 2), 0.5, np.float32)
    sequences[1, 3:] = 0.0
    scores, verdicts, steps = ServingClient(url, model="recurrent_ae").score_sequences(sequences)
    assert scores.shape == verdicts.shape == (3,) and steps.shape == (3, 6)
    assert steps.dtype == np.float32 and not steps[1, 3:].any()


def test_local_server_starts_with_the_demo_exports_only(demo_only_models):
    """The demo exports dcgan and conv_ae only: the committed config's other models have
    no version yet. `zoo serve` starts, serves the two, and answers the others as TF
    Serving answers for a model without versions (404)."""
    from zoo.serving.client import ServingClient, ServingError
    from zoo.serving.server import make_server

    server = make_server(MODELS_CONFIG, models_root=demo_only_models, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        summary = server.model_server.summary()
        for name in ANOMALY_MODELS:
            assert f"{name} (no versions under" in summary
        dcgan = ServingClient(server.url, model="dcgan")
        assert dcgan.wait_until_available(timeout=5)["model_version_status"][0]["version"] == "1"
        assert dcgan.generate(np.zeros((1, 8), np.float32), label="stable").shape == (1, 4, 4, 1)
        waiting = ServingClient(server.url, model="recurrent_ae", timeout=5)
        with pytest.raises(ServingError) as info:
            waiting.status()
        assert info.value.status == 404
        assert info.value.message == "Could not find any versions of model recurrent_ae"
        with pytest.raises(ServingError) as info:
            waiting.predict({"sequences": np.zeros((1, 6, 2), np.float32)}, "score")
        assert info.value.status == 404
        assert "Servable not found for request: Latest(recurrent_ae)" in info.value.message
        with pytest.raises(TimeoutError, match="not AVAILABLE"):
            waiting.wait_until_available(timeout=0.3, interval=0.1)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("bash") is None, reason="the healthcheck is a bash command")
def test_compose_healthcheck_command_works_against_the_rest_api(committed_config_server):
    port = committed_config_server.server_address[1]
    script = _compose_healthcheck()[-1].replace("/8501", f"/{port}")
    ok = subprocess.run(["bash", "-c", script], timeout=20)
    assert ok.returncode == 0
    missing = subprocess.run(["bash", "-c", script.replace("/v1/models/dcgan", "/v1/models/x")])
    assert missing.returncode != 0  # 404 JSON has no AVAILABLE: unhealthy


# --------------------------------------------------------------------------- the container


def _docker_engine_running() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(
    not _docker_engine_running(),
    reason="needs a running Docker engine (none on this machine / CI): builds serving/Dockerfile "
    "(pulls tensorflow/serving) and calls the container's REST API",
)
def test_container_serves_the_models_over_rest(demo_models):
    import tensorflow as tf
    from zoo.serving.client import ServingClient

    tag = "zoo-serving-test:latest"
    name = f"zoo-serving-test-{os.getpid()}"
    subprocess.run(["docker", "build", "-t", tag, str(SERVING_DIR)], check=True, timeout=3600)
    subprocess.run(
        [
            *("docker", "run", "-d", "--rm", "--name", name, "-p", "127.0.0.1::8501"),
            *("-v", f"{demo_models}:/models:ro", tag),
        ],
        check=True,
        timeout=120,
    )
    try:
        mapped = subprocess.run(
            ["docker", "port", name, "8501/tcp"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        url = "http://127.0.0.1:" + mapped.rsplit(":", 1)[1]
        dcgan = ServingClient(url, model="dcgan")
        dcgan.wait_until_available(timeout=300)
        z = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
        direct = tf.saved_model.load(str(demo_models / "dcgan" / "1")).signatures["generate"]
        expected = direct(z=tf.constant(z))["images"].numpy()
        np.testing.assert_allclose(dcgan.generate(z), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            dcgan.generate(z, label="stable"), expected, rtol=1e-6, atol=1e-7
        )
        meta = dcgan.metadata()["metadata"]["signature_def"]["signature_def"]
        assert meta["generate"]["inputs"]["z"]["dtype"] == "DT_FLOAT"
        scores, verdicts = ServingClient(url, model="conv_ae").score(expected)
        assert scores.shape == (3,) and verdicts.dtype == np.bool_
        # every configured model must have a version, or tensorflow_model_server never
        # opens its ports: demo_models holds stand-ins for all four
        sequences = np.ones((2, 6, 2), np.float32)
        _, _, steps = ServingClient(url, model="recurrent_ae").score_sequences(sequences)
        assert steps.shape == (2, 6)
        health = _compose_healthcheck()
        probe = subprocess.run(["docker", "exec", name, *health[1:]], timeout=30)
        assert probe.returncode == 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
