"""Recipe parsing, the runner's run folder and TensorBoard logs, and exact resume."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from zoo.recipes import RecipeError, list_recipes, load_recipe, train
from zoo.recipes.recipe import apply_overrides, validate


@pytest.mark.parametrize("name", list_recipes())
def test_bundled_recipes_are_valid_and_name_real_models(name):
    import zoo
    from zoo.registry import resolve_config

    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.model in zoo.list_models()
    resolve_config(recipe.model, recipe.model_config)  # every model_config key is accepted


def test_three_training_styles_have_recipes():
    assert {"dcgan_mnist", "conv_ae_mnist", "vae_mnist", "dcgan_cats64"} <= set(list_recipes())


def test_unknown_keys_are_errors_with_suggestions(tiny_recipe):
    with pytest.raises(RecipeError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        validate({"name": "x", "model": "dcgan", "epochs": 1, "epoch": 3})
    with pytest.raises(RecipeError, match=r"\[data\].*'batchsize' \(did you mean 'batch_size'\?\)"):
        load_recipe(tiny_recipe(), ["data.batchsize=8"])
    with pytest.raises(RecipeError, match="missing the required key 'model'"):
        validate({"name": "x", "epochs": 1})
    with pytest.raises(RecipeError, match="Did you mean 'dcgan_mnist'"):
        load_recipe("dcgan_mnst")


def test_overrides_parse_toml_values():
    values = apply_overrides(
        {"a": {"b": 1}},
        ["a.b=2e-4", "a.c=[8, 16]", "d=true", "e=hello", 'f="quoted"', "g.h.i=3"],
    )
    assert values == {
        "a": {"b": 2e-4, "c": [8, 16]},
        "d": True,
        "e": "hello",
        "f": "quoted",
        "g": {"h": {"i": 3}},
    }
    with pytest.raises(RecipeError, match="key=value"):
        apply_overrides({}, ["epochs"])


def test_recipe_toml_round_trip():
    recipe = load_recipe("dcgan_mnist", ["epochs=3", "model_config.filters=[8, 16]"])
    again = validate(__import__("tomllib").loads(recipe.to_toml()))
    assert again == recipe.values
    assert again["epochs"] == 3 and again["model_config"]["filters"] == [8, 16]


def test_bad_model_config_and_optimizer_are_recipe_errors(tiny_recipe, tmp_path):
    with pytest.raises(RecipeError, match=r"'latentdim' \(did you mean 'latent_dim'\?\)"):
        train(tiny_recipe(), logdir=tmp_path / "a", overrides=["model_config.latentdim=3"])
    with pytest.raises(RecipeError, match=r"\[optimizer.generator\].*\[optimizer.discriminator\]"):
        train(tiny_recipe(), logdir=tmp_path / "b", overrides=["optimizer.learning_rate=0.1"])
    with pytest.raises(RecipeError, match="cannot build optimizer 'adam'"):
        train(tiny_recipe(), logdir=tmp_path / "c", overrides=["optimizer.generator.lr=0.1"])


def event_tags(folder) -> dict[str, set[str]]:
    """Summary tags by plugin (scalars, images, hparams) in a TensorBoard folder."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    plugins = {}
    for tag in tags["tensors"]:
        meta = acc.SummaryMetadata(tag)
        plugins.setdefault(meta.plugin_data.plugin_name, set()).add(tag)
    return plugins


def test_a_run_writes_everything(tiny_recipe, tmp_path):
    result = train(tiny_recipe("dcgan_tiny"), logdir=tmp_path)
    run = result.run_dir
    assert (run / "model.keras").is_file() and (run / "recipe.toml").is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "samples_epoch001.png",
        "samples_epoch002.png",
    ]
    history = json.loads((run / "history.json").read_text())
    assert set(history) >= {"d_loss", "g_loss", "val_d_loss"}
    assert all(len(v) == 2 for v in history.values())
    train_tags = event_tags(run / "train")
    scalars = train_tags["scalars"]
    for metric in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert f"batch_{metric}" in scalars and f"epoch_{metric}" in scalars  # per step and epoch
    assert "samples" in train_tags["images"]
    assert "hparams" in train_tags
    assert "epoch_d_loss" in event_tags(run / "validation")["scalars"]
    loaded = keras.saving.load_model(run / "model.keras")
    z = np.zeros((2, loaded.latent_dim), "float32")
    np.testing.assert_array_equal(loaded.generate(z), result.model.generate(z))


def test_autoencoder_run_logs_reconstruction_grids(tiny_recipe, tmp_path):
    result = train(tiny_recipe("conv_ae_tiny", epochs=1), logdir=tmp_path)
    assert (result.run_dir / "samples" / "reconstructions_epoch001.png").is_file()
    assert "reconstructions" in event_tags(result.run_dir / "train")["images"]


def test_existing_run_folder_is_not_overwritten_silently(tiny_recipe, tmp_path):
    train(tiny_recipe(epochs=1), logdir=tmp_path)
    with pytest.raises(RecipeError, match=r"--resume.*--run-name.*--overwrite"):
        train(tiny_recipe(epochs=1), logdir=tmp_path)
    with pytest.raises(RecipeError, match="no checkpoints"):
        train(tiny_recipe(epochs=1, name="fresh"), logdir=tmp_path, resume=True)


class KillAfterEpoch(keras.callbacks.Callback):
    """Simulates a run killed after an epoch's checkpoint was written."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt("killed")


@pytest.mark.parametrize("model", ["dcgan_tiny", "vae_tiny"])
def test_resume_continues_exactly_like_an_uninterrupted_run(model, tiny_recipe, tmp_path):
    recipe = tiny_recipe(model, epochs=3, extra="")
    full = train(recipe, logdir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(recipe, logdir=tmp_path / "killed", callbacks=[KillAfterEpoch(2)])
    assert not (tmp_path / "killed" / "tiny" / "model.keras").exists()
    resumed = train(recipe, logdir=tmp_path / "killed", resume=True)
    assert resumed.initial_epoch == 2
    for a, b in zip(full.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=a.path
        )
    for role, optimizer in full.model.optimizers.items():
        assert int(resumed.model.optimizers[role].iterations) == int(optimizer.iterations)
    np.testing.assert_array_equal(
        full.model.seed_generator.state, resumed.model.seed_generator.state
    )
    # the resumed run's history holds every epoch once
    assert len(resumed.history["loss" if model == "vae_tiny" else "d_loss"]) == 3


def test_checkpoint_weights_load_through_zoo_load(tiny_recipe, tmp_path):
    import zoo

    result = train(tiny_recipe("conv_ae_tiny", epochs=1), logdir=tmp_path)
    model = zoo.load("conv_ae_tiny", weights=str(result.run_dir), seed=3)
    x = tf.random.stateless_uniform((2, 28, 28, 1), seed=(1, 2))
    np.testing.assert_array_equal(model.reconstruct(x), result.model.reconstruct(x))


def test_learning_rate_schedules_decay_over_the_run():
    from zoo.recipes.runner import build_optimizer

    cosine = build_optimizer(
        {"name": "adam", "learning_rate": {"schedule": "cosine", "initial": 1e-3}}, 100, "optimizer"
    )
    schedule = cosine.learning_rate if callable(cosine.learning_rate) else cosine._learning_rate
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(0.5e-3, rel=1e-4)  # half-way down the cosine
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(RecipeError, match="schedule must be one of cosine, exponential"):
        build_optimizer({"learning_rate": {"schedule": "linear"}}, 100, "optimizer")


def scalar_values(folder, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar tag written with tf.summary.scalar."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def test_gan_run_logs_sample_quality_beside_its_floor(tiny_recipe, tmp_path):
    extra = "quality_every_epochs = 2\nquality_samples = 64\n"
    result = train(tiny_recipe("dcgan_tiny", epochs=2, extra=extra), logdir=tmp_path)
    train_dir = result.run_dir / "train"
    fid = scalar_values(train_dir, "quality/fid")
    floor = scalar_values(train_dir, "quality_floor/fid")
    assert [step for step, _ in fid] == [2]  # every 2 epochs: only at the end of epoch 2
    # an untrained 6-step generator is far from the digits; real-vs-real is the floor
    assert np.isfinite(fid[0][1]) and fid[0][1] > floor[0][1] >= 0.0
    for name in ("kid", "precision", "recall", "class_kl"):
        assert len(scalar_values(train_dir, f"quality/{name}")) == 1, name


def test_vae_run_logs_latent_space_grids(tiny_recipe, tmp_path):
    result = train(
        tiny_recipe("vae_tiny", epochs=1, extra="latent_examples = 40\n"), logdir=tmp_path
    )
    latent = result.run_dir / "latent"
    assert sorted(p.name for p in latent.glob("*.png")) == [
        "interpolation_epoch001.png",
        "scatter_epoch001.png",
        "traversal_epoch001.png",
    ]
    images = event_tags(result.run_dir / "train")["images"]
    assert {"latent/interpolation", "latent/traversal", "latent/scatter"} <= images


def test_conditional_model_without_labels_is_refused_before_the_run_folder(tiny_recipe, tmp_path):
    for model in ("cgan_tiny", "cvae_tiny"):
        with pytest.raises(RecipeError, match=r"conditional.*data.with_labels = true"):
            train(tiny_recipe(model, name=model), logdir=tmp_path)
        assert not (tmp_path / model).exists()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("quality_every_epochs = -1\n", "logging.quality_every_epochs must be"),
        ("quality_samples = 2\n", "logging.quality_samples must be an integer >= 6"),
        ("quality_every_epochs = 1\nfeature_extractor = 'vgg'\n", "unknown feature_extractor"),
    ],
)
def test_bad_logging_settings_are_recipe_errors(tiny_recipe, tmp_path, extra, match):
    with pytest.raises(RecipeError, match=match):
        train(tiny_recipe("dcgan_tiny", extra=extra), logdir=tmp_path)
    assert not (tmp_path / "tiny").exists()


def test_mnist_quality_metrics_refuse_other_image_shapes(tiny_recipe, tmp_path):
    path = tiny_recipe("dcgan_tiny", extra="quality_every_epochs = 1\n")
    with pytest.raises(RecipeError, match="28x28x1 digits; this model makes 32x32x3"):
        train(path, logdir=tmp_path, overrides=["model_config.image_shape=[32, 32, 3]"])
