"""Helpers shared by the export tests: inputs per signature, what Keras says each
signature should return (from the trainer's own methods, not from the export code),
closeness checks, and running a SavedModel as TF Serving's C++ loader does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

ATOL, RTOL = 1e-4, 1e-5


def make_inputs(
    model: Any, names: list[str], examples: np.ndarray, n: int = 3
) -> dict[str, np.ndarray]:
    """Inputs named ``names``: the first ``n`` examples (as ``images`` or ``sequences``),
    seeded ``z``, seeds [5, 11, 5], class ids 3, 6, 9, ... (mod the model's classes) and a
    per-example threshold of 0.05."""
    rng = np.random.default_rng(7)
    values = {
        "images": examples[:n],
        "sequences": examples[:n],
        "z": rng.standard_normal((n, model.latent_dim)).astype("float32"),
        "seed": np.array([5, 11, 5], np.int64)[:n],
        "threshold": np.full([n], 0.05, np.float32),
        "labels": (3 * np.arange(1, n + 1) % max(getattr(model, "num_classes", 1), 1)).astype(
            np.int64
        ),
    }
    return {k: values[k] for k in names}


def keras_outputs(
    model: Any, signature: str, inputs: Mapping[str, np.ndarray], metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """What Keras says ``signature`` returns, from the trainer's methods and the
    threshold and normalisation recorded in the export ``metadata``."""
    threshold = (metadata.get("threshold") or {}).get("value")
    if signature == "serving_default":
        signature = "generate" if threshold is None else "score"
    examples = inputs.get("images", inputs.get("sequences"))
    conditioned = {"labels": inputs["labels"]} if "labels" in inputs else {}
    generator = model.generate if hasattr(model, "generator") else model.decode
    if signature == "sample":
        z = tf.stack(
            [
                tf.random.stateless_normal(
                    [model.latent_dim], seed=tf.constant([int(s), 0], tf.int64), alg="philox"
                )
                for s in inputs["seed"]
            ]
        )
        return {"images": generator(z, **conditioned)}
    if signature in ("generate", "decode"):
        out = {"images": generator(inputs["z"], **conditioned)}
        if getattr(model, "likelihood", None) == "gaussian_learned":
            out["scale"] = np.broadcast_to(np.asarray(model.scale()), out["images"].shape)
        return out
    if signature == "reconstruct":
        return {"reconstructions": model.reconstruct(examples, **conditioned)}
    if signature == "denoise":
        key = "images" if "images" in inputs else "sequences"
        return {key: model.denoise(examples)}
    if signature == "encode":
        out = model.encode(examples, **conditioned)
        if isinstance(out, tuple):
            return {"mean": out[0], "log_variance": out[1]}
        return {"codes": out}
    score = np.asarray(model.anomaly_score(examples, **conditioned))
    thr = inputs.get("threshold", threshold)
    thr = np.broadcast_to(np.asarray(thr, np.float32), score.shape)
    out = {"anomaly_score": score, "threshold": thr, "is_anomaly": score > thr}
    norm = metadata.get("normalization") or {}
    if norm.get("output"):
        out["normalized_score"] = (score.astype(np.float64) - norm["mean"]) / norm["std"]
    if "sequences" in inputs:
        out["step_scores"] = np.asarray(model.step_scores(examples))
    return out


def assert_close(
    expected: Mapping[str, Any],
    actual: Mapping[str, Any],
    atol: float = ATOL,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Same keys and shapes; booleans equal, floats within ``atol + RTOL * |expected|``.

    ``normalized_score`` (with the export ``metadata``) is allowed the ``anomaly_score``
    tolerance divided by the recorded std, as the export's parity check allows it.
    """
    assert sorted(expected) == sorted(actual)
    norm = (metadata or {}).get("normalization") or {}
    for key, want in expected.items():
        want, got = np.asarray(want), np.asarray(actual[key])
        assert got.shape == want.shape, key
        if want.dtype == np.bool_:
            np.testing.assert_array_equal(got, want, err_msg=key)
        elif key == "normalized_score" and norm.get("std"):
            score = np.abs(np.asarray(expected["anomaly_score"], np.float64))
            allowed = np.maximum(atol + RTOL * np.abs(want), (atol + RTOL * score) / norm["std"])
            error = np.abs(got.astype(np.float64) - want)
            assert np.all(error <= allowed), (key, error.max(), allowed.min())
        else:
            np.testing.assert_allclose(got, want, atol=atol, rtol=RTOL, err_msg=key)


def run_tf1_session(
    version_dir: str | Path, make: Any
) -> tuple[list[str], dict[str, tuple[dict, dict]]]:
    """Load ``version_dir`` as TF Serving's C++ loader does (a fresh Graph, a Session, the
    ``serve`` tag) and run every signature by tensor names, with inputs ``make(names)``.

    Returns (sorted signature keys, {key: (inputs, outputs)}).
    """
    runs = {}
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
        keys = sorted(k for k in meta.signature_def if not k.startswith("__"))
        for key in keys:
            sd = meta.signature_def[key]
            inputs = make(sorted(sd.inputs))
            feeds = {sd.inputs[k].name: v for k, v in inputs.items()}
            outs = sorted(sd.outputs)
            values = session.run([sd.outputs[k].name for k in outs], feed_dict=feeds)
            runs[key] = (inputs, dict(zip(outs, values, strict=True)))
    return keys, runs


@contextmanager
def zoo_serve(models: Mapping[str, str | Path], folder: Path) -> Iterator[tuple[str, str]]:
    """A ``zoo serve`` subprocess serving ``models`` (name -> base path) from a models.config
    written into ``folder``, on free ports; yields ``(url, first line of its output)`` and
    stops the server afterwards. The subprocess imports nothing of the test's code."""
    config = Path(folder) / "models.config"
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
        for name, base in models.items()
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "zoo.cli", "serve", f"--model_config_file={config}",
               "--rest_api_port=0", "--port=0"]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"zoo serve did not start: {line!r}"
        yield found.group(0), line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
