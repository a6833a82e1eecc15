"""The recipes are the benchmarks' configurations (one source of truth), and the VAEs'
``output_bias="data_mean"`` option (Burda et al., 2015's decoder output-bias start)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from zoo.recipes import load_recipe, train

import zoo
from bench import one_class_mnist, vae_likelihood
from bench.common import TRAINING_KEYS
from zoo import registry
from zoo.networks import output_layer

IMAGE_SHAPE = (28, 28, 1)


def normalised(config: dict) -> dict:
    """Lists as tuples (TOML has no tuples), for comparing configs."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def assert_benchmark_trains_the_recipe(model: str, config: dict, recipe_name: str) -> None:
    """The benchmark's config builds the same model, with the same training budget, as
    ``zoo train <recipe>``: resolved builder configs and epochs / batch / rate equal."""
    recipe = load_recipe(recipe_name)
    assert recipe.model == model
    build = {k: v for k, v in config.items() if k not in TRAINING_KEYS}
    bench_model = registry.resolve_config(model, {**build, "image_shape": IMAGE_SHAPE})
    recipe_model = registry.resolve_config(model, recipe.model_config)
    assert normalised(bench_model) == normalised(recipe_model)
    assert config["epochs"] == recipe.epochs
    assert config["batch_size"] == recipe.data["batch_size"]
    assert recipe.optimizer == {"name": "adam", "learning_rate": config["learning_rate"]}


def test_one_class_benchmark_configs_are_the_recipes() -> None:
    configs = one_class_mnist.model_configs()
    assert set(configs) == {*one_class_mnist.RECIPES, *one_class_mnist.BENCH_ONLY}
    # only the one-class VAE (a benchmark-only protocol, no recipe trains it) lives in the
    # benchmark; every autoencoder's settings come from its recipe
    assert set(one_class_mnist.BENCH_ONLY) == {"vae"}
    for model, recipe_name in one_class_mnist.RECIPES.items():
        assert_benchmark_trains_the_recipe(model, configs[model], recipe_name)


def test_vae_likelihood_benchmark_configs_are_the_recipes() -> None:
    configs = vae_likelihood.model_configs()
    assert set(configs) == set(vae_likelihood.RECIPES) == {"mlp_vae", "iwae", "vae"}
    for model, recipe_name in vae_likelihood.RECIPES.items():
        assert_benchmark_trains_the_recipe(model, configs[model], recipe_name)
    # the command line overrides the recipe, and only what it names
    changed = vae_likelihood.model_configs(epochs=3, conv_epochs=2, conv_filters=(8, 16))
    assert [changed[m]["epochs"] for m in ("mlp_vae", "iwae", "vae")] == [3, 3, 2]
    assert changed["vae"]["filters"] == (8, 16)
    assert changed["mlp_vae"]["batch_size"] == configs["mlp_vae"]["batch_size"]


def test_recipes_carry_the_benchmark_choices() -> None:
    """The README's CLI path trains what the benchmarks chose (the issue's numbers)."""
    conv = load_recipe("conv_ae_mnist")
    assert (conv.epochs, conv.data["batch_size"]) == (90, 32)
    chosen = {"latent_dim": 16, "score_blur": 1.0, "score_top_fraction": 0.05}
    assert {k: conv.model_config[k] for k in chosen} == chosen
    assert conv.optimizer == {"name": "adam", "learning_rate": 1e-3}
    for name in ("mlp_vae_mnist", "iwae_mnist", "vae_mnist"):
        recipe = load_recipe(name)
        assert recipe.model_config["output_bias"] == "data_mean", name
        assert recipe.data["batch_size"] == 50, name
    # the MLP builders (Burda et al.'s architecture) start from the data mean by default
    assert registry.resolve_config("mlp_vae")["output_bias"] == "data_mean"
    assert registry.resolve_config("iwae")["output_bias"] == "data_mean"
    assert registry.resolve_config("vae")["output_bias"] == "zeros"


# --------------------------------------------------------------------------- output bias


def digits(n: int, scale: float, seed: int = 0) -> np.ndarray:
    """Images in [0, 1] whose per-pixel means differ (a ramp over the pixels)."""
    ramp = np.linspace(0.05, 0.9, 784).reshape(1, *IMAGE_SHAPE)
    return (np.random.default_rng(seed).random((n, *IMAGE_SHAPE)) * ramp * scale).astype("float32")


def decoded_with_zero_kernel(model: keras.Model) -> np.ndarray:
    """The decoder's output when its last layer's inputs contribute nothing: sigmoid(bias)."""
    layer = output_layer(model.decoder)
    layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
    z = np.zeros((1, model.latent_dim), "float32")
    labels = [0] if model.conditional else None
    return np.asarray(model.generate(z, labels))[0]


@pytest.mark.parametrize(
    "name, per_pixel",
    [("mlp_vae_tiny", True), ("vae_tiny", False), ("cvae_tiny", False)],
)
def test_output_bias_data_mean_starts_the_decoder_at_the_data_mean(name, per_pixel) -> None:
    x = digits(40, 1.0)
    model = zoo.load(name, output_bias="data_mean")
    assert float(model.output_bias_ready.numpy()) == 0.0
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # no gradient step: only the init
    labels = np.arange(40) % 10 if model.conditional else None
    model.fit(x, labels, batch_size=40, epochs=1, verbose=0, shuffle=False)
    assert float(model.output_bias_ready.numpy()) == 1.0
    # dense decoder: one bias per pixel; convolutional: one per channel
    mean = x.mean(axis=0) if per_pixel else np.full(IMAGE_SHAPE, x.mean(), "float32")
    np.testing.assert_allclose(decoded_with_zero_kernel(model), mean, atol=1e-5)


def test_output_bias_zeros_leaves_the_decoder_at_one_half() -> None:
    model = zoo.load("vae_tiny")
    assert model.output_bias == "zeros" and model.output_bias_ready is None
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    model.fit(digits(8, 1.0), batch_size=8, epochs=1, verbose=0)
    np.testing.assert_allclose(decoded_with_zero_kernel(model), 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown output_bias 'mean'; choose one of zeros"):
        zoo.load("vae_tiny", output_bias="mean")


def test_output_bias_is_set_once_and_kept_by_save_and_load(tmp_path) -> None:
    model = zoo.load("mlp_vae_tiny")
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    model.fit(digits(16, 1.0), batch_size=16, epochs=1, verbose=0)
    bias = np.asarray(output_layer(model.decoder).bias).copy()
    # different data later (another epoch, a loaded copy) must not redo it
    other = digits(16, 0.3, seed=1)
    model.fit(other, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.asarray(output_layer(model.decoder).bias), bias)
    path = tmp_path / "mlp_vae.keras"
    model.save(path)
    loaded = zoo.load("mlp_vae", weights=str(path))
    assert loaded.get_config()["output_bias"] == "data_mean"
    assert float(loaded.output_bias_ready.numpy()) == 1.0
    loaded.compile(optimizer=keras.optimizers.SGD(0.0))
    loaded.fit(other, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.asarray(output_layer(loaded.decoder).bias), bias)
    # an explicit call (e.g. with the whole training set) sets it again
    loaded.init_output_bias(other)
    assert not np.allclose(np.asarray(output_layer(loaded.decoder).bias), bias)


class BiasAtStart(keras.callbacks.Callback):
    """Records the decoder's output bias and the init flag when training starts."""

    def on_train_begin(self, logs=None) -> None:
        self.bias = np.asarray(output_layer(self.model.decoder).bias).copy()
        self.ready = float(self.model.output_bias_ready.numpy())


def test_resumed_run_keeps_the_trained_output_bias(tmp_path) -> None:
    tiny = [
        "model_config.hidden=[16]",
        "model_config.latent_dim=4",
        "data.batch_size=16",
        "training.steps_per_epoch=2",
        "training.verbose=0",
        "logging.num_samples=4",
        "logging.sample_every_epochs=0",
        "logging.latent_every_epochs=0",
        'data.validation_split=""',
    ]
    first = train("mlp_vae_mnist", logdir=tmp_path, overrides=[*tiny, "epochs=1"])
    trained = np.asarray(output_layer(first.model.decoder).bias).copy()
    start = BiasAtStart()
    train(
        load_recipe("mlp_vae_mnist", [*tiny, "epochs=2"]),
        logdir=tmp_path,
        resume=True,
        callbacks=[start],
    )
    assert start.ready == 1.0  # restored from the checkpoint: not redone on resume
    np.testing.assert_allclose(start.bias, trained, rtol=0, atol=0)
