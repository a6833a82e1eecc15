"""Training runs as a user meets them (issue 13): every TensorBoard summary recorded
whatever the logging frequency, divergence stops the run cleanly, failed runs leave no
folder behind, fit checks its inputs, and the CLI's one-line errors and summaries."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from recipe_helpers import recipe_toml
from zoo.recipes import train
from zoo.recipes.runner import check_run_dir

import zoo
from zoo.checkpoints import TrainingDivergedError
from zoo.cli import main
from zoo.data import DataError

# 3 steps per epoch, batch summaries every 5 steps: epoch ends fall on training steps 3
# and 6 and after validation batches 32 and 64 (1,000 test digits in batches of 32), none
# a multiple of 5, where Keras leaves summary recording off.
NOT_A_MULTIPLE = "steps_per_epoch = 3\nlog_every_steps = 5\nverbose = 0"


def write_recipe(folder: Path, model: str, name: str, extra: str = "", **kw) -> Path:
    path = folder / f"{name}.toml"
    kw = {"training": NOT_A_MULTIPLE, "logging": None, **kw}
    path.write_text(recipe_toml(name, model, **kw) + extra)
    return path


def summary_steps(run_dir: Path) -> dict[tuple[str, str], set[int]]:
    """(subfolder, tag) -> the steps at which it was recorded, over every events file."""
    out: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    for path in run_dir.rglob("events.out.tfevents.*"):
        folder = path.relative_to(run_dir).parts[0]
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                out[(folder, value.tag)].add(int(event.step))
    return out


# -- item 1: TensorBoard keeps what is logged at epoch end ------------------------------
def test_gan_run_records_epoch_end_summaries_when_steps_are_not_a_multiple(tmp_path):
    recipe = write_recipe(
        tmp_path, "dcgan_tiny", "gan",
        extra="\n[logging]\nnum_samples = 4\nquality_every_epochs = 1\nquality_samples = 40\n",
    )  # fmt: skip
    run = train(recipe, logdir=tmp_path / "runs").run_dir
    steps = summary_steps(run)
    epochs, epoch_ends = {0, 1}, {1, 2}  # Keras: epoch scalars at epoch index; ours at E
    for loss in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert steps[("train", f"epoch_{loss}")] == epochs, loss
        assert steps[("validation", f"epoch_{loss}")] == epochs, loss
        assert steps[("train", f"batch_{loss}")] == {5}, loss  # still thinned
    assert steps[("train", "epoch_learning_rate")] == epochs
    assert steps[("train", "samples")] == epoch_ends
    for metric in ("fid", "kid", "precision", "recall", "density", "coverage", "class_kl"):
        assert steps[("train", f"quality/{metric}")] == epoch_ends, metric
        assert steps[("train", f"quality_floor/{metric}")] == epoch_ends, metric
    assert steps[("train", "_hparams_/session_start_info")] == {0}


def test_batch_summaries_count_training_steps_under_steps_per_execution(tmp_path):
    """2 steps per call, 4 per epoch, 2 epochs, log every 3 steps: the calls end on steps
    2, 4, 6, 8 and those covering step 3 or 6 are recorded, labelled 4 and 6 (Keras alone
    counts calls, 1..4, and records call 3 only, labelled 3)."""
    training = "steps_per_epoch = 4\nlog_every_steps = 3\nsteps_per_execution = 2\nverbose = 0"
    recipe = write_recipe(tmp_path, "dense_ae_tiny", "spe", training=training)
    run = train(recipe, logdir=tmp_path / "runs").run_dir
    steps = summary_steps(run)
    assert steps[("train", "batch_loss")] == {4, 6}
    assert steps[("train", "epoch_loss")] == {0, 1}


def test_vae_run_records_latent_plots_and_reconstructions_every_epoch(tmp_path):
    recipe = write_recipe(
        tmp_path, "vae_tiny", "vae", extra="\n[logging]\nnum_samples = 4\nlatent_examples = 40\n"
    )
    run = train(recipe, logdir=tmp_path / "runs").run_dir
    steps = summary_steps(run)
    for loss in ("loss", "elbo", "kl", "reconstruction"):
        assert steps[("train", f"epoch_{loss}")] == {0, 1}, loss
        assert steps[("validation", f"epoch_{loss}")] == {0, 1}, loss
    for tag in ("samples", "reconstructions", "latent/interpolation", "latent/traversal",
                "latent/scatter"):  # fmt: skip
        assert steps[("train", tag)] == {1, 2}, tag
    assert ("train", "_hparams_/session_start_info") in steps


def test_zoo_callbacks_record_beside_a_plain_keras_tensorboard(tmp_path, digits):
    """In a user's own fit with keras.callbacks.TensorBoard(update_freq=N), the zoo's
    image, latent and quality callbacks still record at epoch end."""
    from zoo.recipes.callbacks import ImageGrids

    from zoo.latent import LatentSpaceLogger
    from zoo.metrics.quality_callback import SampleQualityCallback

    model = zoo.load("vae_tiny")
    model.compile()
    callbacks = [
        keras.callbacks.TensorBoard(str(tmp_path), update_freq=3),  # 4 steps per epoch
        ImageGrids(tmp_path, digits[:4], num_samples=4, every=1, seed=0),
        LatentSpaceLogger(tmp_path, digits[:8], every=1, traverse_dims=2),
        SampleQualityCallback(
            tmp_path / "train", every_n_epochs=1, n_samples=16, real_reference=digits[:16],
            real_heldout=digits[16:32],
        ),
    ]  # fmt: skip
    model.fit(digits, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
    steps = summary_steps(tmp_path)
    for tag in ("samples", "reconstructions", "latent/interpolation", "latent/scatter",
                "quality/fid"):  # fmt: skip
        assert steps[("train", tag)] == {1}, tag


# -- item 10: divergence stops the run, keeps the last good checkpoint ------------------
EXPLODING_LR = """
[optimizer]
name = "sgd"
# 1e-3 for the 3 steps of epoch 1, then 1e9: epoch 1 trains, epoch 2 diverges
learning_rate = {schedule = "exponential", initial = 1e-3, decay_rate = 1e12, decay_steps = 3, staircase = true}
"""  # noqa: E501


def test_divergence_stops_at_the_first_nan_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    recipe = write_recipe(tmp_path, "conv_ae_tiny", "boom", extra=EXPLODING_LR, epochs=3)
    runs = tmp_path / "runs"
    assert main(["train", str(recipe), "--logdir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    run = runs / "boom"
    good = run / "checkpoints" / "ckpt-1"
    assert re.fullmatch(
        rf"zoo train: error: training diverged at epoch 2 step \d \(loss = (nan|inf)\); "
        rf"last good checkpoint: {re.escape(str(good))}; lower the learning rate.*",
        err[-1],
    ), err
    assert len(err) == 1  # one line, no traceback
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-1.index"]
    reader = tf.train.load_checkpoint(str(good))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name
    assert not (run / "model.keras").exists()
    assert not list((run / "samples").glob("*epoch002*"))  # nothing ran on diverged weights


def test_a_nan_loss_in_the_first_epoch_saves_nothing_and_names_no_checkpoint(tmp_path):
    recipe = write_recipe(
        tmp_path, "conv_ae_tiny", "nan", epochs=1,
        extra="\n[optimizer]\nlearning_rate = 1e6\n\n[logging]\nnum_samples = 0\n",
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match=r"epoch 1 step \d .*checkpoint: none") as info:
        train(recipe, logdir=tmp_path / "runs")
    assert info.value.epoch == 1 and info.value.last_good is None
    assert not (tmp_path / "runs" / "nan").exists()  # before its first checkpoint: removed


# -- item 9 (second half): a run failing before its first checkpoint leaves no folder ----
class FailInFirstEpoch(keras.callbacks.Callback):
    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error

    def on_train_batch_end(self, batch, logs=None):
        raise self.error


@pytest.mark.parametrize("error", [OSError("data pipeline broke"), KeyboardInterrupt()])
def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path, error):
    recipe = write_recipe(tmp_path, "dense_ae_tiny", "early", epochs=1)
    runs = tmp_path / "runs"
    with pytest.raises(type(error)):
        train(recipe, logdir=runs, callbacks=[FailInFirstEpoch(error)])
    assert not (runs / "early").exists()
    # a rerun needs neither --resume nor --overwrite
    assert check_run_dir(runs, "early", resume=False, overwrite=False) == runs / "early"


def test_resume_without_checkpoints_says_to_rerun_without_resume(tmp_path, capsys):
    recipe = write_recipe(tmp_path, "dense_ae_tiny", "half", epochs=1)
    (tmp_path / "runs" / "half").mkdir(parents=True)
    (tmp_path / "runs" / "half" / "recipe.toml").write_text(recipe.read_text())
    code = main(["train", str(recipe), "--logdir", str(tmp_path / "runs"), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "has no checkpoints to resume from" in err
    assert err.endswith("rerun without --resume and with --overwrite")


# -- speed and feedback: --resume names its epoch; the summary names existing folders ----
def test_resume_prints_its_epoch_and_the_summary_names_only_what_exists(tmp_path, capsys):
    recipe = write_recipe(
        tmp_path, "dense_ae_tiny", "quiet", epochs=1, extra="\n[logging]\nnum_samples = 0\n"
    )
    runs = tmp_path / "runs"
    assert main(["train", str(recipe), "--logdir", str(runs)]) == 0
    out = capsys.readouterr().out
    run = runs / "quiet"
    assert not (run / "samples").exists()
    assert "sample grids" not in out and "latent plots" not in out
    assert f"model:        {run / 'model.keras'}" in out
    assert f"checkpoints:  {run / 'checkpoints'}" in out
    assert f"TensorBoard:  tensorboard --logdir {runs}" in out

    args = ["train", str(recipe), "--logdir", str(runs), "--resume", "--set", "epochs=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    ckpt = run / "checkpoints" / "ckpt-1"
    assert f"resuming {run} from epoch 2 of 2 (checkpoint {ckpt})" in out


# -- item 11 (logdir part): a --logdir that is a file ------------------------------------
def test_a_logdir_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    recipe = write_recipe(tmp_path, "dense_ae_tiny", "x", epochs=1)
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("")
    assert main(["train", str(recipe), "--logdir", str(not_a_folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"zoo train: error: --logdir: {not_a_folder} is a file, not a folder; pass --logdir "
        "a folder (it is created if missing)"
    ]
    assert not_a_folder.read_text() == ""


# -- item 5: fit checks the dtype and range of its first batch ---------------------------
@pytest.fixture(scope="module")
def conv_ae() -> keras.Model:
    model = zoo.load("conv_ae_tiny", image_shape=(28, 28, 1))
    model.compile()
    return model


@pytest.fixture(scope="module")
def raw_digits() -> np.ndarray:
    from zoo.data import load_sample

    return load_sample("test")[0][:64]  # uint8, 0-255


def test_fit_refuses_uint8_images_naming_the_conversion(conv_ae, raw_digits):
    assert raw_digits.dtype == np.uint8
    with pytest.raises(DataError, match=r"float32 images in \[0, 1\], got uint8.*/ 255"):
        conv_ae.fit(raw_digits, epochs=1, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(raw_digits).batch(32)
    with pytest.raises(DataError, match="got uint8"):
        conv_ae.fit(dataset, epochs=1, verbose=0)


def test_fit_refuses_0_255_float_images(conv_ae, raw_digits):
    images = raw_digits.astype("float32")
    with pytest.raises(DataError, match=r"spans \[0, 255\]; divide by 255"):
        conv_ae.fit(images, epochs=1, verbose=0)
    labelled = tf.data.Dataset.from_tensor_slices((images, np.zeros(64))).batch(32)
    with pytest.raises(DataError, match=r"fit\(x=...\).*spans \[0, 255\]"):
        conv_ae.fit(labelled, epochs=1, verbose=0)
    scaled = images / 255.0
    with pytest.raises(DataError, match=r"fit\(validation_data=...\)"):
        conv_ae.fit(scaled, epochs=1, verbose=0, validation_data=images)
    conv_ae.check_inputs(scaled)  # [0, 1]: accepted


def test_fit_refuses_non_finite_sequences():
    model = zoo.load("recurrent_ae_tiny")
    model.compile()
    series = np.zeros((8, *model.image_shape), "float32")
    series[3, 2, 0] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        model.fit(series, epochs=1, verbose=0)
    series[3, 2, 0] = 40.0  # standardised series are not bounded: only finiteness
    model.check_inputs(series)
