"""The README's main job (``make demo``), end to end on the bundled data:

1. train a DCGAN and a convolutional autoencoder (recipes ``dcgan_mnist``, ``conv_ae_mnist``);
2. export both (SavedModel + ONNX, parity-checked, anomaly threshold calibrated on
   held-out digits) into the layout of the committed ``serving/models.config``;
3. start ``zoo serve`` on that config, as a separate process (as the container would run);
4. request generated images and anomaly scores over TF Serving's REST API, save the
   images as a PNG grid and print the scores of normal and corrupted digits;
5. stop the server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from zoo.recipes import train

from zoo import data as zdata

#: (recipe, overrides, served model name) for each demo model.
#: Every model in the committed serving/models.config is trained and exported, because
#: tensorflow_model_server opens its ports only once each configured model has a version.
DEMO_RUNS: dict[str, tuple[list[str], str]] = {
    "dcgan_mnist": (["epochs=15", "training.verbose=2"], "dcgan"),
    "conv_ae_mnist": (["epochs=5", "training.verbose=2"], "conv_ae"),
    "denoising_ae_mnist": (["epochs=3", "training.verbose=2"], "denoising_ae"),
    "recurrent_ae_synthetic": (["epochs=8", "training.verbose=2"], "recurrent_ae"),
    "pix2pix_edges2digits": (["epochs=3", "training.verbose=2"], "pix2pix"),
}
QUICK = ["epochs=1", "training.steps_per_epoch=2", "training.verbose=0", "logging.num_samples=16"]


def committed_config() -> Path:
    """``serving/models.config`` as shipped in ``zoo.serving``."""
    return Path(str(resources.files("zoo.serving") / "models.config"))


class LocalServer:
    """``zoo serve`` in a child process; the URL is read from its first line."""

    def __init__(self, config: Path, models_root: Path, timeout: float = 120.0):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zoo.cli", "serve", "--model_config_file", str(config),
             "--models_root", str(models_root), "--rest_api_port", "0", "--port", "0"],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        for line in self.process.stdout:
            print(f"  [server] {line.rstrip()}", flush=True)
            match = re.search(r"(http://[\d.]+:\d+)", line)
            if match:
                self.url = match.group(1)
                return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError("zoo serve did not start; see its output above")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def threshold_line(threshold: Any, held_out: str) -> str:
    """How an exported model's threshold was chosen, in one line."""
    return (
        f"  score (threshold {threshold.value:.5f}: {threshold.method}, target FPR "
        f"{threshold.target_fpr:.0%} on {threshold.n} {held_out})"
    )


def run_demo(
    out: str | os.PathLike = "demo_output",
    *,
    models_root: str | os.PathLike | None = None,
    quick: bool = False,
) -> dict[str, object]:
    """Run the whole main job; returns the paths and numbers it printed."""
    from zoo.export import export_cli
    from zoo.serving.client import ServingClient

    from zoo.anomaly import corrupt_images

    started = time.perf_counter()
    out = Path(out)
    models_root = Path(models_root) if models_root else out / "models"
    config = committed_config()

    runs, latent = {}, 0
    for recipe, (overrides, _) in DEMO_RUNS.items():
        print(f"\n== 1. training {recipe} ({' '.join(overrides)}) ==", flush=True)
        result = train(
            recipe, logdir=out / "runs", overrides=overrides + (QUICK if quick else []),
            overwrite=True,
        )  # fmt: skip
        runs[recipe] = result.run_dir
        latent = getattr(result.model, "latent_dim", latent) if recipe == "dcgan_mnist" else latent

    print(f"\n== 2. exporting into {models_root} (the /models of {config}) ==", flush=True)
    exports = {}
    for recipe, (_, served_name) in DEMO_RUNS.items():
        # the committed config labels version 1 "stable": start each demo from version 1
        shutil.rmtree(models_root / served_name, ignore_errors=True)
        result = export_cli(runs[recipe], models_root, name=served_name)
        exports[served_name] = result
        print(f"  {served_name}: {result.version_dir} (+ ONNX {len(result.onnx_paths)} files), "
              f"parity max |diff| {result.parity.get('max_abs_diff', 0.0):.2e}")  # fmt: skip

    print("\n== 3. starting zoo serve ==", flush=True)
    server = LocalServer(config, models_root)
    try:
        print(f"\n== 4. REST requests to {server.url} ==", flush=True)
        dcgan = ServingClient(server.url, model="dcgan")
        dcgan.wait_until_available(timeout=60)
        z = np.random.default_rng(0).standard_normal((64, latent)).astype("float32")
        images = dcgan.generate(z)
        grid = zdata.save_png(zdata.image_grid(images), out / "served_samples.png")
        print(f"  generate: {images.shape[0]} images {images.shape[1:]} -> {grid}")

        conv_ae = ServingClient(server.url, model="conv_ae")
        conv_ae.wait_until_available(timeout=60)
        normal = zdata.load_sample("test")[0][::125][:8].astype("float32") / 255.0
        corrupted = corrupt_images(normal)
        normal_scores, normal_verdicts = conv_ae.score(normal)
        bad_scores, bad_verdicts = conv_ae.score(corrupted)
        print(threshold_line(exports["conv_ae"].threshold, "held-out digits"))
        print(f"  {'input':<11}{'anomaly_score':>15}  is_anomaly")
        for kind, scores, verdicts in (
            ("normal", normal_scores, normal_verdicts),
            ("corrupted", bad_scores, bad_verdicts),
        ):
            for score, verdict in zip(scores, verdicts, strict=True):
                print(f"  {kind:<11}{score:>15.5f}  {bool(verdict)}")

        denoiser = ServingClient(server.url, model="denoising_ae")
        noisy = np.clip(normal + np.random.default_rng(1).normal(0, 0.3, normal.shape), 0, 1)
        cleaned = denoiser.predict({"images": noisy.astype("float32")}, "denoise")["images"]
        pairs = np.stack([noisy, cleaned], axis=1).reshape(-1, *normal.shape[1:])
        denoised_png = zdata.save_png(zdata.image_grid(pairs, ncols=8), out / "served_denoised.png")
        print(f"  denoise: {len(noisy)} noisy digits -> {denoised_png} (noisy | denoised pairs)")

        sequences = ServingClient(server.url, model="recurrent_ae")
        series = zdata.synthetic_series(n_series=40, length=64, n_features=3,
                                        anomaly_fraction=0.5, seed=7)  # fmt: skip
        seq_scores, seq_verdicts, _ = sequences.score_sequences(series.series)
        print(threshold_line(exports["recurrent_ae"].threshold, "normal synthetic series"))
        print(f"  {'series':<16}{'anomaly_score':>15}  is_anomaly")
        for i in [*np.flatnonzero(~series.labels)[:4], *np.flatnonzero(series.labels)[:4]]:
            kind = series.kinds[i] or "normal"
            print(f"  {kind:<16}{seq_scores[i]:>15.5f}  {bool(seq_verdicts[i])}")

        pix2pix = ServingClient(server.url, model="pix2pix")
        held_out = zdata.bundled_task("edges2digits", "test", source_shape=(32, 32, 1))
        spread = held_out.shard(125, 0)  # 8 of the 1,000 held-out pairs, one per 125
        outlines, digits = (np.asarray(t) for t in next(iter(spread.batch(8))))
        drawn = pix2pix.predict({"images": outlines}, "translate")["translations"]
        rows = np.stack([outlines, drawn, digits], axis=1).reshape(-1, *outlines.shape[1:])
        drawn_png = zdata.save_png(zdata.image_grid(rows, ncols=6), out / "served_translations.png")
        drawn_l1 = float(np.mean(np.abs(drawn - digits)))
        print(f"  translate: {len(outlines)} held-out digit outlines -> {drawn_png} (outline | "
              f"drawn | true digit), L1 to the true digits {drawn_l1:.4f}")  # fmt: skip
    finally:
        server.stop()
        print("\n== 5. server stopped ==")

    elapsed = time.perf_counter() - started
    print(f"\n== demo finished in {elapsed:.0f} s ==")
    for recipe, run_dir in runs.items():
        grids = sorted((run_dir / "samples").glob("*.png"))
        print(f"{recipe}: model {run_dir / 'model.keras'}; last grid {grids[-1] if grids else '-'}")
    print(f"served samples: {out / 'served_samples.png'}")
    print(f"exports:        {models_root}  (serve them: zoo serve --model_config_file {config} "
          f"--models_root {models_root})")  # fmt: skip
    print(f"TensorBoard:    tensorboard --logdir {out / 'runs'}")
    return {
        "runs": runs,
        "exports": exports,
        "normal_scores": normal_scores,
        "corrupted_scores": bad_scores,
        "normal_verdicts": normal_verdicts,
        "corrupted_verdicts": bad_verdicts,
        "served_images": images,
        "sequence_scores": seq_scores,
        "sequence_labels": series.labels,
        "served_translations": drawn,
        "translation_targets": digits,
        "seconds": elapsed,
    }
