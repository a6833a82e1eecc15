"""The main job end to end (quick mode: a few training steps), and the export/serve CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from zoo.cli import main


def test_demo_trains_exports_serves_and_requests(tmp_path, capsys):
    from zoo.serving.demo import run_demo

    result = run_demo(tmp_path / "out", quick=True)
    out = capsys.readouterr().out
    models = tmp_path / "out" / "models"
    # exported into the committed config's layout: /models/<name>/<version>
    for name in ("dcgan", "conv_ae", "denoising_ae", "recurrent_ae", "pix2pix"):  # all of it
        assert (models / name / "1" / "saved_model.pb").is_file()
        assert (models / name / "1" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    # images came back over REST, in [0, 1], and were written as a grid
    images = result["served_images"]
    assert images.shape == (64, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    grid = np.asarray(Image.open(tmp_path / "out" / "served_samples.png"))
    assert grid.shape[0] > 8 * 28
    # verdicts are the served scores against the exported threshold
    threshold = result["exports"]["conv_ae"].threshold.value
    for scores, verdicts in (
        (result["normal_scores"], result["normal_verdicts"]),
        (result["corrupted_scores"], result["corrupted_verdicts"]),
    ):
        assert scores.shape == verdicts.shape == (8,)
        np.testing.assert_array_equal(verdicts, scores > threshold)
    assert result["sequence_scores"].shape == (40,) and result["sequence_labels"].sum() == 20
    assert (tmp_path / "out" / "served_denoised.png").is_file()
    # pix2pix answered the held-out outlines with one 32x32 digit each, in [0, 1]
    drawn, digits = result["served_translations"], result["translation_targets"]
    assert drawn.shape == digits.shape == (8, 32, 32, 1)
    assert drawn.min() >= 0.0 and drawn.max() <= 1.0
    assert (tmp_path / "out" / "served_translations.png").is_file() and "translate:" in out
    assert "server stopped" in out and "anomaly_score" in out


def test_export_cli_writes_the_next_version(tmp_path, capsys):
    from zoo.data import load_sample

    normal = tmp_path / "normal.npz"  # a bare model name has no held-out data of its own
    np.savez(normal, images=load_sample("test")[0][:200])
    command = ["export", "conv_ae_tiny", "--out", str(tmp_path), "--format", "savedmodel"]
    assert main([*command, "--calibration", str(normal)]) == 0
    assert main([*command, "--calibration", str(normal)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "conv_ae").iterdir() if p.name.isdigit()) == [
        "1",
        "2",
    ]
    assert "threshold:" in out and "quantile" in out


def test_serve_help_is_passed_through():
    result = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "serve", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--model_config_file" in result.stdout and "--rest_api_port" in result.stdout
