"""The shared check, run over every registered model (timm style): config round trip,
a few fit steps lower the loss on a fixed batch, no NaN, .keras save/load gives the
same outputs and a trainable trainer, seeds reproduce runs, 64x64x3 works."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.data import load_animals, pairs
from zoo.tasks import declaration_of
from zoo.trainers import GAN, VAE, Autoencoder, DiffusionModel, SequenceAutoencoder

ALL_MODELS = zoo.list_models()
#: Training checks run on the tiny variants: same builders and trainers, small widths.
TINY_MODELS = zoo.list_models("*_tiny")
#: Models that cannot be built without a choice: the smallest honest config.
REQUIRED_CONFIG = {"overcomplete_ae": {"regularizer": "sparse_kl"}}


def load(name: str, **config) -> keras.Model:
    return zoo.load(name, **{**REQUIRED_CONFIG.get(name, {}), **config})


def is_conditional(model: keras.Model) -> bool:
    return getattr(model, "num_classes", 0) > 0


def is_translator(model: keras.Model) -> bool:
    return declaration_of(model).pair_shapes is not None


def translator_pairs(model: keras.Model, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed training pairs for an image-to-image model, from real bundled images: paired
    models get (outline, digit) at one size, or (downscaled digit, digit) when the model
    upscales; unpaired models get (digit, animal silhouette) draws."""
    source_shape, target_shape = declaration_of(model).pair_shapes

    def resized(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        out = tf.image.resize(images, shape[:2], antialias=True).numpy().clip(0, 1)
        return np.repeat(out[..., :1], shape[-1], axis=-1).astype("float32")

    target = resized(digits, target_shape)
    if not model.paired:
        animals = load_animals("train")[0][: len(digits)].astype("float32") / 255.0
        return resized(digits, source_shape), resized(animals, target_shape)
    if source_shape[:2] != target_shape[:2]:
        return resized(target, source_shape), target
    return np.asarray(pairs.edges(tf.constant(target))), target


def batch_for(model: keras.Model, digits: np.ndarray) -> np.ndarray:
    """The fixed training inputs: digits, or smooth multivariate sequences."""
    if isinstance(model, SequenceAutoencoder):
        steps, features = model.sequence_shape
        t = np.arange(steps)[None, :, None]
        phase = np.random.default_rng(0).uniform(0, 6, size=(len(digits), 1, features))
        return np.sin(t / 5.0 + phase).astype("float32")
    return digits


def outputs(model: keras.Model, digits: np.ndarray) -> np.ndarray:
    """A deterministic output per family: generated images, or reconstructions."""
    if isinstance(model, GAN):
        z = np.random.default_rng(0).standard_normal((8, model.latent_dim)).astype("float32")
        return np.asarray(model.generate(z))
    if isinstance(model, DiffusionModel):
        z = np.random.default_rng(0).standard_normal((8, *model.image_shape)).astype("float32")
        return np.asarray(model.generate(z))
    if is_translator(model):
        return np.asarray(model.translate(translator_pairs(model, digits)[0][:8]))
    return np.asarray(model.reconstruct(batch_for(model, digits)[:8]))


def fit_data(model: keras.Model, digits: np.ndarray, labels: np.ndarray):
    """What ``fit`` gets: inputs, (images, labels) for conditional models, or (source,
    target) pairs for image-to-image models."""
    if is_translator(model):
        return translator_pairs(model, digits)
    x = batch_for(model, digits)
    return (x, labels) if is_conditional(model) else x


def fixed_batch_loss(model: keras.Model, data, labels: np.ndarray) -> float:
    """A deterministic loss on the fixed batch: the reconstruction-based anomaly score
    (AE: mean error; VAE: negative ELBO at the posterior mean), or for a GAN the
    discriminator objective on fixed noise (labels passed to conditional models)."""
    if is_translator(model):  # the generator's deterministic reconstruction loss
        return float(model.reference_loss(*data))
    x = data[0] if isinstance(data, tuple) else data
    extra = {"labels": labels} if is_conditional(model) else {}
    if isinstance(model, GAN):
        z = np.random.default_rng(1).standard_normal((len(x), model.latent_dim))
        return float(model.discriminator_objective(x, z.astype("float32"), **extra)["d_loss"])
    if isinstance(model, DiffusionModel):  # the simple loss at fixed steps and noise
        rng = np.random.default_rng(1)
        t = rng.integers(0, model.schedule.num_steps, len(x))
        noise = rng.standard_normal(x.shape).astype("float32")
        return float(model.noise_prediction_loss(x, extra.get("labels"), t, noise))
    return float(np.mean(model.anomaly_score(x, **extra)))


def test_every_model_has_a_tiny_variant():
    full = [n for n in ALL_MODELS if not n.endswith("_tiny")]
    assert sorted(f"{n}_tiny" for n in full) == TINY_MODELS


def test_registry_lists_the_three_training_styles():
    assert {"conv_ae", "vae", "dcgan"} <= set(ALL_MODELS)
    assert isinstance(zoo.load("conv_ae_tiny"), Autoencoder)
    assert isinstance(zoo.load("vae_tiny"), VAE)
    assert isinstance(zoo.load("dcgan_tiny"), GAN)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_config_round_trip(name):
    model = load(name)
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    assert keras.saving.serialize_keras_object(clone)["class_name"] == type(model).__name__


@pytest.mark.parametrize("name", TINY_MODELS)
def test_fit_lowers_loss_on_a_fixed_batch_without_nan(name, digits, digit_labels):
    model = load(name)
    model.compile()
    data = fit_data(model, digits, digit_labels)
    before = fixed_batch_loss(model, data, digit_labels)
    history = model.fit(
        *(data if isinstance(data, tuple) else (data,)),
        batch_size=len(digits), epochs=15, verbose=0, shuffle=False,
    )  # fmt: skip
    after = fixed_batch_loss(model, data, digit_labels)
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert np.isfinite(outputs(model, digits)).all()
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("name", TINY_MODELS)
def test_keras_save_load_restores_trainer(name, digits, digit_labels, tmp_path):
    model = load(name)
    model.compile()
    data = fit_data(model, digits, digit_labels)
    args = data if isinstance(data, tuple) else (data,)
    model.fit(*args, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(outputs(loaded, digits), outputs(model, digits))
    # the optimizers come back with their state, and the custom train_step still trains
    for role, optimizer in model.optimizers.items():
        assert int(loaded.optimizers[role].iterations) == int(optimizer.iterations)
    # every role stepped, but SRResNet's discriminator (the MSE stage trains no critic)
    assert any(int(o.iterations) > 0 for o in model.optimizers.values())
    history = loaded.fit(*args, batch_size=16, epochs=1, verbose=0)
    assert set(history.history) == {m.name for m in model.metrics}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_same_seed_builds_the_same_weights(name):
    first, again = load(name, seed=5), load(name, seed=5)
    for a, b in zip(first.weights, again.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    other = load(name, seed=6)
    assert any(
        np.abs(np.asarray(a) - np.asarray(b)).max() > 0
        for a, b in zip(first.trainable_weights, other.trainable_weights, strict=True)
    )


@pytest.mark.parametrize("name", ["conv_ae_tiny", "vae_tiny", "dcgan_tiny"])
def test_same_seed_same_run_other_seed_other_run(name, digits):
    def run(seed: int) -> np.ndarray:
        model = zoo.load(name, seed=seed)
        model.compile()
        model.fit(digits, batch_size=16, epochs=2, verbose=0, shuffle=False)
        return outputs(model, digits)

    first, again, other = run(1), run(1), run(2)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4


@pytest.mark.parametrize("name", ["conv_ae", "vae", "dcgan"])
def test_models_work_at_64x64_rgb(name):
    model = zoo.load(name, image_shape=(64, 64, 3), filters=(4, 8, 8, 8))
    model.compile()
    images = np.random.default_rng(0).random((4, 64, 64, 3)).astype("float32")
    history = model.fit(images, batch_size=4, epochs=1, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert model.image_shape == (64, 64, 3)
    out = np.asarray(model.sample(3) if isinstance(model, GAN) else model.reconstruct(images))
    assert out.shape[1:] == (64, 64, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", ["conv_ae", "vae", "dcgan"])
def test_default_filters_follow_the_image_size(name):
    small, large = zoo.load(name), zoo.load(name, image_shape=(64, 64, 3))
    first = small.encoder if hasattr(small, "encoder") else small.discriminator
    big = large.encoder if hasattr(large, "encoder") else large.discriminator
    strided = [layer for layer in first.layers if isinstance(layer, keras.layers.Conv2D)]
    strided_big = [layer for layer in big.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(strided) == 2  # 28 -> 14 -> 7
    assert len(strided_big) == 4  # 64 -> 32 -> 16 -> 8 -> 4


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"30x30 cannot be halved 2 times.*divisible by 4"):
        zoo.load("conv_ae", image_shape=(30, 30, 1), filters=(8, 16))
    with pytest.raises(ValueError, match=r"image_shape must be \(height, width, channels\)"):
        zoo.load("dcgan", image_shape=(28, 28))


def test_anomaly_scores_are_per_example(digits):
    for name in ("conv_ae_tiny", "vae_tiny"):
        scores = np.asarray(zoo.load(name).anomaly_score(digits[:5]))
        assert scores.shape == (5,)
        assert np.all(scores > 0)
    corrupted = digits[:5].copy()
    corrupted[:, 10:18, 10:18] = 1.0 - corrupted[:, 10:18, 10:18]
    ae = zoo.load("conv_ae_tiny")
    clean, noisy = ae.anomaly_score(digits[:5]), ae.anomaly_score(corrupted)
    # the score is the mean squared error per pixel, exactly
    expected = np.mean((digits[:5] - np.asarray(ae.reconstruct(digits[:5]))) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(clean, expected, rtol=1e-5)
    assert np.all(np.asarray(noisy) != np.asarray(clean))
