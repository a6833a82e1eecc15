"""Issue 16 §1: ``zoo train`` under ``tf.distribute`` on the two logical CPU devices of
tests/conftest.py. A mirrored run reports the losses of a one-device run of the same
recipe and seed, logs to TensorBoard, checkpoints, resumes and exports; only the chief
writes the run folder; bad strategies, devices, precisions and batch sizes are refused."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from recipe_helpers import recipe_toml
from zoo.recipes import RecipeError, load_recipe, train
from zoo.recipes.runs import load_run

from zoo import distribute
from zoo.cli import main

MIRRORED = ["--strategy", "mirrored", "--devices", "/cpu:0,/cpu:1"]
TRAINING = "steps_per_epoch = 3\nlog_every_steps = 2\nverbose = 0"
LOGGING = {  # every logger a run can have: grids, sample quality (GANs), latent plots (VAEs)
    "dcgan_tiny": "num_samples = 4\nquality_every_epochs = 1\nquality_samples = 40",
    "vae_tiny": "num_samples = 4\nlatent_examples = 40",
}


QUIET = ("num_samples", "quality_every_epochs", "latent_every_epochs")


def write(folder: Path, model: str, name: str, epochs: int = 1) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        recipe_toml(name, model, epochs=epochs, training=TRAINING, logging=LOGGING[model])
    )
    return path


def history(run: Path) -> dict[str, list[float]]:
    return json.loads((run / "history.json").read_text())


def summaries(run: Path) -> dict[tuple[str, str], set[int]]:
    """(subfolder, tag) -> steps recorded, over every events file of the run."""
    out: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    for path in run.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                out[(path.relative_to(run).parts[0], value.tag)].add(int(event.step))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """dcgan_tiny and vae_tiny, one epoch each, mirrored over 2 devices and on one."""
    folder = tmp_path_factory.mktemp("distributed")
    out = {}
    for model in ("dcgan_tiny", "vae_tiny"):
        recipe = write(folder, model, model)
        # logging never moves the trainer's RNG: the reference run needs none
        quiet = [f"--set=logging.{key}=0" for key in QUIET]
        for kind, flags in (("mirrored", MIRRORED), ("default", quiet)):
            name = f"{model}_{kind}"
            argv = ["train", str(recipe), "--logdir", str(folder / "runs"), "--run-name", name]
            assert main(argv + flags) == 0
            out[name] = folder / "runs" / name
    return out


@pytest.mark.parametrize("model", ["dcgan_tiny", "vae_tiny"])
def test_mirrored_losses_equal_one_device_losses(runs, model):
    mirrored, default = history(runs[f"{model}_mirrored"]), history(runs[f"{model}_default"])
    assert any(k.startswith("val_") for k in default) and set(mirrored) == set(default)
    for key in default:  # same seed, same global batches: the same reported values
        assert np.all(np.isfinite(mirrored[key])), key
        np.testing.assert_allclose(mirrored[key], default[key], rtol=1e-3, atol=1e-4, err_msg=key)


def test_mirrored_run_records_the_strategy_and_writes_everything(runs):
    run = runs["dcgan_tiny_mirrored"]
    recorded = load_recipe(run / "recipe.toml")
    assert recorded.distribute["strategy"] == "mirrored"
    assert recorded.distribute["devices"] == ["/cpu:0", "/cpu:1"]
    assert recorded.training["precision"] == "float32"
    assert (run / "checkpoints" / "ckpt-1.index").is_file()
    assert (run / "model.keras").is_file()
    assert (run / "samples" / "samples_epoch001.png").is_file()
    steps = summaries(run)
    for loss in ("d_loss", "g_loss"):
        assert steps[("train", f"epoch_{loss}")] == {0}, loss
        assert steps[("validation", f"epoch_{loss}")] == {0}, loss
        assert steps[("train", f"batch_{loss}")] == {2}, loss  # every 2nd of 3 steps
    assert steps[("train", "samples")] == {1}  # the image grid, at epoch 1
    for metric in ("fid", "kid", "precision", "recall"):  # sample quality, at epoch 1
        assert steps[("train", f"quality/{metric}")] == {1}, metric


def test_vae_latent_plots_under_mirrored(runs):
    steps = summaries(runs["vae_tiny_mirrored"])
    images = {tag for (folder, tag), at in steps.items() if folder == "train" and at == {1}}
    assert {"samples", "reconstructions"} <= images
    assert any(tag.startswith(("latent", "interpolation", "traversal")) for tag in images), images


def test_export_of_a_mirrored_run_generates_like_the_run(runs, tmp_path):
    run = runs["dcgan_tiny_mirrored"]
    assert main(["export", str(run), "--out", str(tmp_path), "--format", "savedmodel"]) == 0
    loaded = tf.saved_model.load(str(tmp_path / "dcgan" / "1"))
    model = load_run(run)
    z = np.random.default_rng(0).standard_normal((3, model.latent_dim)).astype("float32")
    images = loaded.signatures["generate"](z=tf.constant(z))["images"].numpy()
    assert images.shape == (3, 28, 28, 1)
    np.testing.assert_allclose(images, np.asarray(model.generate(z)), atol=1e-5)


def test_a_non_chief_worker_resumes_from_the_chief_and_writes_only_a_temp_folder(
    runs, monkeypatch, tmp_path
):
    """As worker 1 of a two-worker cluster (its role faked on the mirrored strategy, as
    ``TF_CONFIG`` would make it under multi_worker): it restores the chief's checkpoint,
    trains, and leaves the run folder as it was; its temporary folder is gone at the end."""
    run = runs["dcgan_tiny_mirrored"]
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    not_chief = lambda strategy=None: False  # noqa: E731
    monkeypatch.setattr(distribute, "is_chief", not_chief)  # write_dir asks it
    monkeypatch.setattr("zoo.recipes.runner.is_chief", not_chief)
    made: list[Path] = []
    real_write_dir = distribute.write_dir

    def spy(run_dir, strategy=None):
        made.append(real_write_dir(run_dir, strategy))
        return made[-1]

    monkeypatch.setattr("zoo.recipes.runner.write_dir", spy)
    recipe = load_recipe(run / "recipe.toml", ["epochs=2"])
    result = train(recipe, logdir=run.parent, run_name=run.name, resume=True)
    assert result.initial_epoch == 1 and result.run_dir == run
    assert len(result.history["d_loss"]) == 1  # its own epoch (the chief keeps history.json)
    assert np.all(np.isfinite(result.history["d_loss"]))
    (tmp,) = made
    assert tmp != run and tmp.name.startswith("zoo-worker1-") and not tmp.exists()
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_resume_under_mirrored_continues_exactly_like_an_uninterrupted_run(runs, capsys):
    run = runs["vae_tiny_mirrored"]
    argv = ["train", str(run / "recipe.toml"), "--logdir", str(run.parent), *MIRRORED]
    argv += ["--set", "epochs=2", "--set", "logging.latent_every_epochs=0"]
    assert main([*argv, "--run-name", run.name, "--resume"]) == 0
    assert "from epoch 2 of 2" in capsys.readouterr().out
    assert (run / "checkpoints" / "ckpt-2.index").is_file()
    assert load_recipe(run / "recipe.toml").epochs == 2
    assert main([*argv, "--run-name", "vae_uninterrupted"]) == 0
    whole = run.parent / "vae_uninterrupted"
    np.testing.assert_allclose(history(run)["loss"], history(whole)["loss"], rtol=1e-6)
    for resumed, uninterrupted in zip(load_run(run).weights, load_run(whole).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(resumed), np.asarray(uninterrupted))


# -- refusals: one line naming the choices, before any run folder exists -----------------
BAD_FLAGS = {
    "unknown strategy 'mirorred'; choose one of: default, mirrored, multi_worker": [
        "--strategy", "mirorred"
    ],
    "unknown precision 'float16'; choose one of float32, mixed_float16": ["--precision", "float16"],
    "devices = ['/cpu:0'] needs distribute.strategy = 'mirrored'": ["--devices", "/cpu:0"],
    "unknown device(s) /gpu:7; this machine has /cpu:0, /cpu:1": [
        "--strategy", "mirrored", "--devices", "/gpu:7"
    ],
    "strategy multi_worker needs TF_CONFIG": ["--strategy", "multi_worker"],
    "data.batch_size = 33 is the GLOBAL batch and must split evenly over the 2 replicas": [
        *MIRRORED, "--set", "data.batch_size=33"
    ],
}  # fmt: skip


@pytest.mark.parametrize(("message", "flags"), list(BAD_FLAGS.items()))
def test_bad_distribute_settings_are_one_line_errors(tmp_path, capsys, monkeypatch, message, flags):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    recipe = write(tmp_path, "dcgan_tiny", "bad")
    argv = ["train", str(recipe), "--logdir", str(tmp_path / "runs"), *flags]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("zoo train: error: ") and message in line, line
    assert not (tmp_path / "runs").exists()


ONE_WORKER = '{"cluster": {"worker": ["a:1"]}'
BAD_TF_CONFIG = {
    "{not json": "TF_CONFIG is not valid JSON",
    ONE_WORKER + "}": "TF_CONFIG needs a 'cluster' table and a 'task' table",
    ONE_WORKER + ', "task": {"type": "ps", "index": 0}}': "task.type 'ps' is not in the cluster",
    ONE_WORKER + ', "task": {"type": "worker", "index": 1}}': "task.index 1 is out of range",
}


@pytest.mark.parametrize(("tf_config", "message"), list(BAD_TF_CONFIG.items()))
def test_malformed_tf_config_is_refused(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(distribute.DistributeError, match="TF_CONFIG") as error:
        distribute.cluster_role()
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
    ],
)
def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch, cluster, task, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    role = distribute.cluster_role()
    assert (role.chief, role.num_workers, distribute.is_chief()) == (chief, 2, chief)
    # a single-process strategy always writes, whatever TF_CONFIG says
    assert distribute.is_chief(tf.distribute.get_strategy())


def test_mirrored_over_cpus_is_built_once_and_reduces_on_one_device():
    strategy = distribute.make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    assert distribute.make_strategy("mirrored", ["CPU:0", "/device:CPU:1"]) is strategy
    assert strategy.num_replicas_in_sync == 2
    # no collective ops, whose keys a second MirroredStrategy in the process would reuse
    assert isinstance(strategy.extended._cross_device_ops, tf.distribute.ReductionToOneDevice)
    with strategy.scope():  # "default" is whatever strategy is current
        assert distribute.make_strategy("default") is strategy
    assert distribute.make_strategy("default") is tf.distribute.get_strategy()


def test_without_tf_config_a_process_is_a_lone_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.cluster_role() == ("chief", 0, True, 1)


def test_flags_win_over_the_recipe_and_set(tmp_path):
    from zoo.cli import build_parser, train_flag_overrides

    recipe = write(tmp_path, "dcgan_tiny", "flags")
    argv = ["train", str(recipe), "--set", "distribute.strategy='default'"]
    argv += [*MIRRORED, "--precision", "mixed_bfloat16"]
    args = build_parser().parse_args(argv)
    values = load_recipe(args.recipe, args.set + train_flag_overrides(args))
    assert values.distribute["strategy"] == "mirrored"
    assert values.distribute["devices"] == ["/cpu:0", "/cpu:1"]
    assert values.training["precision"] == "mixed_bfloat16"
    assert 'strategy = "mirrored"' in values.to_toml()  # what the run folder records


def test_recipe_key_errors_name_the_key():
    base = {"name": "x", "model": "dcgan_tiny", "epochs": 1}
    from zoo.recipes.recipe import validate

    with pytest.raises(RecipeError, match=r"distribute.devices must be a list"):
        validate({**base, "distribute": {"strategy": "mirrored", "devices": "/cpu:0"}})
    with pytest.raises(RecipeError, match=r"distribute.timeout_seconds must be a positive"):
        validate({**base, "distribute": {"timeout_seconds": 0}})
    with pytest.raises(RecipeError, match=r"training.precision: unknown precision 'fp16'"):
        validate({**base, "training": {"precision": "fp16"}})


def test_layerwise_pretraining_under_mirrored_reports_the_one_device_losses(tmp_path):
    """The runner's greedy pre-training sees the same batches at every depth on 2 replicas
    as on one device (each depth iterates a dataset whose epoch orders depend only on the
    seed), so every depth's history matches; before, a one-epoch dataset reshuffled per
    iteration and the depths after the first drifted by 2-7%."""
    recipe = tmp_path / "stacked.toml"
    training = "steps_per_epoch = 2\npretrain_epochs = 2\nverbose = 0"
    recipe.write_text(
        recipe_toml("stacked", "stacked_ae_tiny", epochs=1, training=training, logging=None)
        + "\n[logging]\nnum_samples = 0\n"
    )
    histories = {}
    for kind, flags in (("mirrored", MIRRORED), ("default", [])):
        argv = ["train", str(recipe), "--logdir", str(tmp_path / "runs"), "--run-name", kind]
        assert main(argv + flags) == 0
        histories[kind] = json.loads(
            (tmp_path / "runs" / kind / "pretrain_history.json").read_text()
        )
    assert len(histories["default"]) >= 2  # at least two depths: the second sees codes
    assert histories["mirrored"].keys() == histories["default"].keys()
    for depth, one_device in histories["default"].items():
        np.testing.assert_allclose(
            histories["mirrored"][depth]["loss"], one_device["loss"], rtol=1e-4, err_msg=depth
        )
