"""The ``zoo`` console command, run in-process and once as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from zoo.cli import main


def test_help_explains_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("list", "train", "sample", "demo"):
        assert f"zoo {command}" in result.stdout


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "dcgan" in out and "conv_ae" in out and "vae" in out and "_tiny" not in out
    assert main(["list", "--recipes"]) == 0
    assert "dcgan_mnist" in capsys.readouterr().out
    assert main(["list", "*nothing*"]) == 1


def test_train_with_a_bad_key_fails_cleanly(tiny_recipe, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", str(tiny_recipe()), "--logdir", str(runs), "--set", "epochz=2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown recipe key" in err and "did you mean 'epochs'" in err
    assert not runs.exists()  # nothing half-written
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "train",
            str(tiny_recipe()),
            "--logdir",
            str(runs),
            "--set",
            "data.source=folder",
            "--set",
            f"data.path={tmp_path / 'empty'}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no image files found" in err and "empty" in err
    assert not runs.exists()


def test_train_then_sample(tiny_recipe, tmp_path, capsys):
    assert main(["train", str(tiny_recipe(epochs=1)), "--logdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "tiny"
    assert str(run) in out and "tensorboard --logdir" in out
    png = tmp_path / "grid.png"
    assert main(["sample", str(run), "--n", "9", "--out", str(png)]) == 0
    grid = np.asarray(Image.open(png))
    assert grid.shape[0] == grid.shape[1] > 3 * 28  # 3x3 tiles
    again = tmp_path / "again.png"
    main(["sample", str(run), "--n", "9", "--out", str(again)])
    np.testing.assert_array_equal(np.asarray(Image.open(again)), grid)  # seeded


def test_sample_unknown_model_is_a_clear_error(capsys):
    assert main(["sample", "dcgam"]) == 2
    assert "Did you mean 'dcgan'" in capsys.readouterr().err


def test_evaluate_picks_the_task_by_family(tmp_path, capsys):
    assert (
        main(["evaluate", "vae_tiny", "--k", "8", "--n", "20", "--out", str(tmp_path / "v")]) == 0
    )
    assert "active_units" in capsys.readouterr().out
    assert main(["evaluate", "dcgan_tiny", "--n", "100", "--out", str(tmp_path / "g")]) == 0
    assert "class KL to uniform" in capsys.readouterr().out


def test_evaluate_samples_with_inception_offline_names_the_offline_choice(
    tmp_path, capsys, monkeypatch
):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what get_file raises offline

    monkeypatch.setattr(keras.utils, "get_file", offline)
    code = main(["evaluate", "dcgan_tiny", "--task", "samples", "--n", "10",
                 "--feature-extractor", "inception_v3", "--out", str(tmp_path / "e")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "inception_v3" in err and "feature_extractor='mnist_classifier'" in err
    assert not (tmp_path / "e" / "sample_quality.md").exists()


def test_sample_of_a_conditional_model_has_one_class_per_column(tmp_path):
    png = tmp_path / "cgan.png"
    assert main(["sample", "cgan_tiny", "--n", "20", "--out", str(png)]) == 0
    grid = np.asarray(Image.open(png))
    # 20 tiles as 10 columns x 2 rows (a square layout would be 5 x 4)
    assert grid.shape[1] > 4 * grid.shape[0]
