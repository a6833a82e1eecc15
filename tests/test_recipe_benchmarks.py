"""The recipes are the benchmarks' configurations (one source of truth), and the VAEs'
``output_bias="data_mean"`` option (Burda et al., 2015's decoder output-bias start)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from zoo.recipes import RecipeError, load_recipe, train
from zoo.recipes.runner import compile_settings

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
    # only the one-class VAE and DDPM (benchmark-only protocols, no recipe trains them one
    # class at a time) live in the benchmark; every autoencoder's settings come from its recipe
    assert set(one_class_mnist.BENCH_ONLY) == {"vae", "ddpm"}
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


# --------------------------------------------------------------------------- DCGAN throughput


def test_dcgan_throughput_benchmark_trains_the_recipe() -> None:
    """The zoo side is ``zoo train dcgan_mnist``: model, optimizers, batch and the
    ``[training]`` speed keys come from the recipe, and an override reaches the model."""
    from bench import dcgan_throughput

    recipe = load_recipe("dcgan_mnist")
    model, batches, settings = dcgan_throughput.zoo_side("dcgan_mnist")
    built = registry.resolve_config("dcgan", recipe.model_config)
    assert model.latent_dim == built["latent_dim"] and model.loss_kind == built["loss"]
    assert tuple(model.image_shape) == tuple(recipe.model_config["image_shape"])
    for role in ("generator", "discriminator"):
        optimizer, table = getattr(model, f"{role}_optimizer"), recipe.optimizer[role]
        assert float(optimizer.learning_rate) == pytest.approx(table["learning_rate"])
        assert float(optimizer.beta_1) == table["beta_1"]
    assert batches.element_spec.shape[0] == recipe.data["batch_size"]
    assert int(batches.cardinality()) == settings["steps"] == 4000 // recipe.data["batch_size"]
    wanted = compile_settings(recipe.training, settings["steps"])
    assert model.steps_per_execution == wanted["steps_per_execution"]
    # an override flows through, rounded to a divisor of the 62 steps of an epoch
    changed, _, _ = dcgan_throughput.zoo_side("dcgan_mnist", ["training.steps_per_execution=8"])
    assert changed.steps_per_execution == 2


@pytest.mark.parametrize(
    ("wanted", "steps", "expected"), [(8, 62, 2), (32, 62, 31), (40, 62, 31), (1, 5, 1), (10, 3, 3)]
)
def test_steps_per_execution_divides_the_epoch(wanted, steps, expected) -> None:
    settings = compile_settings({"steps_per_execution": wanted, "jit_compile": "auto"}, steps)
    assert settings == {"steps_per_execution": expected, "jit_compile": "auto"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.steps_per_execution=0", "steps_per_execution must be an integer >= 1"),
        ('training.jit_compile="yes"', 'jit_compile must be true, false or "auto"'),
    ],
)
def test_bad_speed_keys_are_refused(override, message) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe("dcgan_mnist", [override])


@pytest.mark.parametrize(
    ("layer", "input_shape", "per_example"),
    [
        (keras.layers.Dense(7, use_bias=False), (10,), 2 * 10 * 7),
        # a convolution: 2 x output pixels x kernel area x in x out channels
        (keras.layers.Conv2D(5, 3, strides=2, padding="same", use_bias=False), (8, 8, 4),
         2 * 4 * 4 * 9 * 4 * 5),
        # a transposed convolution slides over its input pixels
        (keras.layers.Conv2DTranspose(5, 4, strides=2, padding="same", use_bias=False),
         (4, 4, 6), 2 * 4 * 4 * 16 * 6 * 5),
    ],
)  # fmt: skip
def test_flop_counter_gives_the_analytic_count_of_one_layer(layer, input_shape, per_example):
    from bench.dcgan_throughput import graph_flops, layer_flops

    network = keras.Sequential([keras.Input(input_shape), layer])
    assert layer_flops(layer) == per_example
    counted = graph_flops(lambda x: network(x), tf.TensorSpec((3, *input_shape), tf.float32))
    assert sum(counted.values()) == 3 * per_example


def test_profiler_count_of_a_dcgan_step_is_the_analytic_count() -> None:
    """Forward and backward of every network call in a GAN step (dcgan_tiny)."""
    from bench.dcgan_throughput import MATMUL_OPS, analytic_step_flops, graph_flops

    model = zoo.load("dcgan_tiny")
    model.compile()
    model.build_optimizers()
    spec = tf.TensorSpec((4, *model.image_shape), tf.float32)
    counted = graph_flops(model.train_step, spec)
    analytic = analytic_step_flops(model.generator, model.discriminator, 4)
    assert sum(counted.get(op, 0) for op in MATMUL_OPS) == analytic
    assert sum(counted.values()) > analytic  # plus batch norm, activations, Adam


def test_matmul_peak_is_a_positive_rate() -> None:
    from bench.dcgan_throughput import matmul_gflops

    rate = matmul_gflops(n=64, repeats=2)
    assert 0 < rate < 1e6  # GFLOP/s: positive and not absurd
