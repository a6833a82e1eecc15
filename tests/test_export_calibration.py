"""``zoo export`` calibrates on the run's own held-out normal data (issue 13, item 2), says
so, warns when the set is too small for the target FPR, refuses when there is none; export
paths fail with one line (item 11); stale staging folders are cleaned (item 13); long
loops show progress.

One tiny one-class run (conv_ae_tiny, ``data.classes = [3]``) is trained for the module.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import recipe_toml
from zoo.export import CalibrationError, calibration_data, versioning
from zoo.recipes.runs import load_run

import zoo
from zoo.calibration import (
    CalibrationSizeWarning,
    calibrate_threshold,
    calibration_size_warning,
    min_calibration_size,
)
from zoo.cli import main
from zoo.data import load_sample, make_dataset, synthetic_series
from zoo.progress import Progress


def one_class_recipe(name: str, data: str) -> str:
    """A one-epoch conv_ae_tiny recipe on ``data`` (the body of its [data] table)."""
    return recipe_toml(
        name, "conv_ae_tiny", epochs=1, data=data,
        training="steps_per_epoch = 2\nverbose = 0", logging="num_samples = 0",
    )  # fmt: skip


def _write_run(folder: Path, name: str, data: str) -> Path:
    """A run folder holding only its resolved recipe.toml (all calibration reads)."""
    from zoo.recipes import load_recipe

    source = folder / f"{name}.toml"
    source.write_text(one_class_recipe(name, data))
    run = folder / name
    run.mkdir()
    (run / "recipe.toml").write_text(load_recipe(source).to_toml())
    return run


@pytest.fixture(scope="module")
def one_class_run(tmp_path_factory) -> Path:
    """A trained conv_ae_tiny run on threes only (validation split 'test', classes [3])."""
    from zoo.recipes import train

    folder = tmp_path_factory.mktemp("runs")
    recipe = folder / "threes.toml"
    recipe.write_text(
        one_class_recipe("threes", 'source = "sample"\nbatch_size = 32\nclasses = [3]')
    )
    return train(recipe, logdir=folder).run_dir


@pytest.fixture(scope="module")
def threes() -> np.ndarray:
    """The 3s of the bundled test split (the run's validation split), float32 in [0, 1]."""
    images, labels = load_sample("test")
    return (images[labels == 3] / 255.0).astype("float32")


def _export(run, out, *extra: str) -> int:
    return main(["export", str(run), "--out", str(out), "--format", "savedmodel", *extra])


# ----------------------------------------------------------------------- item 2


def test_one_class_export_calibrates_on_the_held_out_threes_only(
    one_class_run, threes, tmp_path, capsys
):
    assert _export(one_class_run, tmp_path) == 0
    captured = capsys.readouterr()
    meta = json.loads((tmp_path / "conv_ae" / "1" / "assets.extra" / "zoo_export.json").read_text())
    # calibrated on exactly the 100 threes of the validation split, nothing else
    assert len(threes) == 100 and meta["threshold"]["n"] == meta["calibration"]["n"] == 100
    model = load_run(one_class_run)
    scores = np.asarray(model.anomaly_score(threes), np.float64)
    assert meta["threshold"]["value"] == pytest.approx(
        calibrate_threshold(scores, target_fpr=0.01).value, rel=1e-6
    )
    said = f"100 held-out normal examples of {one_class_run} (validation split 'test', classes [3])"
    assert meta["calibration"]["description"] == said
    assert meta["user"]["calibration_data"] == said
    assert said in (tmp_path / "conv_ae" / "1" / "assets.extra" / "MODEL_CARD.md").read_text()
    assert f"calibrated on {said}" in captured.out
    # 100 examples at a 1% FPR: one score above the threshold -> one warning line
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("zoo export: warning: the calibration ")
    assert "100 normal examples" in warning[0] and "1000 examples" in warning[0]
    assert meta["calibration"]["warning"] in warning[0]


def test_calibration_option_overrides_the_run_data(one_class_run, tmp_path, capsys):
    images, labels = load_sample("test")
    given = tmp_path / "normal.npz"
    np.savez(given, images=images[labels == 7][:60])  # uint8: converted to [0, 1]
    assert _export(one_class_run, tmp_path / "out", "--calibration", str(given)) == 0
    out = capsys.readouterr().out
    meta = json.loads(
        (tmp_path / "out" / "conv_ae" / "1" / "assets.extra" / "zoo_export.json").read_text()
    )
    assert meta["calibration"]["n"] == 60
    assert meta["calibration"]["description"] == (
        f"60 normal examples given with --calibration {given}"
    )
    assert f"--calibration {given}" in out


def test_folder_run_calibrates_on_its_own_held_out_images(tmp_path):
    from PIL import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):  # 40x40 colour noise: nothing like a digit, another size
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            pictures / f"{i:02d}.png"
        )
    data = f'source = "folder"\npath = "{pictures}"\nvalidation_fraction = 0.25\nbatch_size = 4'
    run = _write_run(tmp_path, "own", data)
    found = calibration_data(zoo.load("conv_ae_tiny"), run)
    # the held-out quarter: the first 5 files, as the runner splits them, at the model's shape
    held_out = make_dataset("folder", path=pictures, image_shape=(28, 28, 1)).take(5)
    np.testing.assert_array_equal(found.examples, np.stack(list(held_out.as_numpy_iterator())))
    assert found.description == (
        f"5 held-out normal examples of {run} (the held-out data.validation_fraction = 0.25 of "
        f"data.source = 'folder' {pictures})"
    )


def test_sequence_run_calibrates_on_its_held_out_normal_series(tmp_path):
    from zoo.recipes import load_recipe

    source = tmp_path / "seq.toml"
    source.write_text(
        'name = "seq"\nmodel = "recurrent_ae_tiny"\nepochs = 1\n'
        "[model_config]\nsequence_shape = [32, 3]\n"
        '[data]\nsource = "synthetic_series"\nn_series = 64\nvalidation_fraction = 0.25\n'
    )
    run = tmp_path / "seq"
    run.mkdir()
    (run / "recipe.toml").write_text(load_recipe(source).to_toml())
    found = calibration_data(zoo.load("recurrent_ae_tiny"), run)
    want = synthetic_series(n_series=64, length=32, n_features=3, anomaly_fraction=0.0, seed=0)
    np.testing.assert_allclose(found.examples, want.series[:16], rtol=1e-6)
    assert found.description.startswith(f"16 held-out normal examples of {run} (the held-out")


def test_no_calibration_data_refuses_and_writes_nothing(one_class_run, tmp_path, capsys):
    out = tmp_path / "models"
    assert _export("conv_ae_tiny", out) == 2  # a bare model name: no held-out data
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo export: error: conv_ae_tiny is a model name")
    assert "--calibration PATH" in err and "--threshold VALUE" in err and "\n" not in err
    assert not out.exists()
    # a run without a validation split
    run = tmp_path / "no_validation"
    shutil.copytree(one_class_run, run)
    recipe = (run / "recipe.toml").read_text()
    (run / "recipe.toml").write_text(
        recipe.replace('validation_split = "test"', 'validation_split = ""')
    )
    assert _export(run, out) == 2
    err = capsys.readouterr().err.strip()
    assert "has no held-out data" in err and "validation_split = ''" in err
    assert "--calibration" in err and not out.exists()
    with pytest.raises(CalibrationError, match="is a model name"):
        calibration_data(zoo.load("conv_ae_tiny"))


def test_calibration_size_rule():
    assert min_calibration_size(0.01) == 1000 and min_calibration_size(0.05) == 200
    assert min_calibration_size(0.1) == 100 and min_calibration_size(0.0) == 0
    assert calibration_size_warning(1000, 0.01) is None
    assert calibration_size_warning(200, 0.05) is None
    assert "only 9 scores lie above" in calibration_size_warning(199, 0.05)
    assert "simply the largest score" in calibration_size_warning(50, 0.01)


def test_evaluate_warns_when_calibrating_on_too_few_images(one_class_run, tmp_path, capsys):
    from zoo.anomaly import AnomalyDetector

    detector = AnomalyDetector(load_run(one_class_run))
    images = np.random.default_rng(0).uniform(size=(100, 28, 28, 1)).astype(np.float32)
    with pytest.warns(CalibrationSizeWarning, match="has 50 normal examples"):
        detector.calibrate(images[:50], target_fpr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationSizeWarning)
        detector.calibrate(images, target_fpr=0.1)
    assert main(["evaluate", str(one_class_run), "--out", str(tmp_path / "eval")]) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("zoo evaluate: warning:"))
    assert "has 50 normal examples" in line and "1000 examples" in line


# ----------------------------------------------------------------------- item 11


def test_export_of_a_missing_path_says_it_does_not_exist(tmp_path, capsys):
    assert _export(tmp_path / "runs" / "nonexistent", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"zoo export: error: {tmp_path / 'runs' / 'nonexistent'} does not exist: pass a run "
        "folder (e.g. runs/conv_ae_mnist), a .keras file or a registered model name (zoo list)"
    )


def test_export_out_that_is_a_file_is_one_line(one_class_run, tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("not a folder")
    for out in (file, file / "models"):
        assert _export(one_class_run, out) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"zoo export: error: output folder {out} cannot be created: ")
        assert f"{file} is a file, not a folder" in err and "--out" in err
        assert "\n" not in err and "Traceback" not in err
    assert file.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_out_read_only_is_one_line(one_class_run, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert _export(one_class_run, locked / "models") == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert "is not writable" in err and "\n" not in err


def test_export_out_not_writable_is_one_line(one_class_run, tmp_path, capsys, monkeypatch):
    """The write probe failing (as on a read-only mount, or for a non-root user) gives one
    line; runs as root too, where permission bits are not enforced."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(versioning.tempfile, "mkdtemp", refuse)
    assert _export(one_class_run, tmp_path / "models") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"zoo export: error: output folder {tmp_path / 'models'} is not writable (Permission "
        f"denied in {tmp_path}); choose a folder you can write to with --out"
    )


# ----------------------------------------------------------------------- item 13


def _staging(base: Path, owner: dict | None, age: float = 0.0) -> Path:
    folder = base / f"{versioning.STAGING_PREFIX}{len(list(base.iterdir())):04d}"
    folder.mkdir(parents=True)
    (folder / "partial.bin").write_bytes(b"\0" * 1024)
    if owner is not None:
        (folder / versioning.OWNER_FILE).write_text(json.dumps(owner))
    if age:
        old = time.time() - age
        os.utime(folder, (old, old))
    return folder


def test_stale_staging_folders_are_cleaned_and_live_ones_kept(one_class_run, tmp_path, capsys):
    base = tmp_path / "models" / "conv_ae"
    base.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "start": versioning._process_start(os.getpid())}
    stale = _staging(base, {"pid": dead.pid, "host": host, "start": None})
    live = _staging(base, me)
    reused = _staging(base, {**me, "start": "1"})  # our pid, but another (earlier) process
    unknown_old = _staging(base, None, age=versioning.STALE_AFTER_SECONDS + 60)
    unknown_new = _staging(base, None)
    other_host = _staging(base, {"pid": 1, "host": host + "-elsewhere"})
    assert _export(one_class_run, tmp_path / "models", "--threshold", "0.25") == 0
    assert (base / "1" / "saved_model.pb").is_file()
    assert "threshold:  0.25 (given), observed FPR " in capsys.readouterr().out
    meta = json.loads((base / "1" / "assets.extra" / "zoo_export.json").read_text())
    assert meta["threshold"]["method"] == "given" and meta["threshold"]["value"] == 0.25
    assert not stale.exists() and not reused.exists() and not unknown_old.exists()
    assert live.exists() and unknown_new.exists() and other_host.exists()
    assert sorted(p.name for p in base.iterdir() if p.name.startswith(".tmp-")) == sorted(
        p.name for p in (live, unknown_new, other_host)
    )
    owner = json.loads((versioning.staging_dir(base) / versioning.OWNER_FILE).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == host


# ----------------------------------------------------------------------- progress


def test_long_loops_report_progress_on_stderr(capsys):
    from zoo.anomaly import AnomalyDetector
    from zoo.likelihood import importance_sampled_log_likelihood

    AnomalyDetector(zoo.load("conv_ae_tiny")).score(np.zeros((600, 28, 28, 1), np.float32))
    importance_sampled_log_likelihood(
        zoo.load("vae_tiny"), np.zeros((4, 28, 28, 1), np.float32), k=20, batch_k=5
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    scoring = [line for line in lines if line.startswith("anomaly scores [")]
    assert scoring[0].endswith("0/3 batches, 0s") and " 3/3 batches" in scoring[-1]
    sampling = [line for line in lines if line.startswith("importance sampling, k=20, 4 examples")]
    assert " 0/4 chunks" in sampling[0] and " 4/4 chunks" in sampling[-1]


def test_progress_redraws_in_a_terminal_and_prints_tenths_in_a_log():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        with Progress(100, "work", stream=stream) as bar:
            for _ in range(100):
                bar.update()
    assert terminal.getvalue().startswith("\rwork [") and terminal.getvalue().endswith("\n")
    assert terminal.getvalue().count("\n") == 1
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and lines[0].startswith("work [....") and " 100/100 steps" in lines[-1]
    assert [line.split("] ")[1].split()[0] for line in lines] == [
        f"{i * 10}/100" for i in range(11)
    ]
