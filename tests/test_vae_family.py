"""The VAE family: learned-variance Gaussian likelihood vs its closed form, beta and KL
warm-up, the conditional VAE (labels condition encoder and decoder; save/load; recipe
runs on (images, labels) batches), and config round trips of the new options."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.trainers import VAE
from zoo.trainers.vae import CVAE
from zoo.trainers.vae_distributions import likelihood


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -- likelihoods ------------------------------------------------------------------------
def test_learned_variance_gaussian_log_prob_is_the_closed_form(digits):
    model = zoo.load("vae_tiny", likelihood="gaussian_learned", gaussian_scale=0.2, min_scale=0.01)
    assert model.likelihood == "gaussian_learned" and model.get_config()["likelihood"] == (
        "gaussian_learned"
    )
    np.testing.assert_allclose(model.scale(), 0.2, rtol=1e-6)  # starts at gaussian_scale
    rng = np.random.default_rng(0)
    log_scale = rng.normal(-2.0, 0.5, size=(28, 28, 1)).astype("float32")
    model.log_scale.assign(log_scale)
    z = rng.normal(size=(4, model.latent_dim)).astype("float32")
    x = digits[:4]
    mean = sigmoid(np.asarray(model.decoder(z), np.float64))
    s = 0.01 + np.exp(log_scale.astype(np.float64))  # per-pixel scale
    expected = -np.sum(
        0.5 * ((x - mean) / s) ** 2 + np.log(s) + 0.5 * math.log(2 * math.pi), axis=(1, 2, 3)
    )
    np.testing.assert_allclose(model.log_likelihood(x, z), expected, rtol=1e-5)
    np.testing.assert_allclose(model.decode(z), mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs the learned scale"):
        likelihood("gaussian_learned", tf.zeros((1, 2, 2, 1)))
    with pytest.raises(ValueError, match="min_scale < gaussian_scale"):
        zoo.load("vae_tiny", likelihood="gaussian_learned", gaussian_scale=0.01, min_scale=0.1)


def test_learned_scale_trains_and_survives_keras_and_checkpoint_round_trips(digits, tmp_path):
    from zoo.checkpoints import TrainingState

    model = zoo.load("mlp_vae_tiny", likelihood="gaussian_learned")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = np.asarray(model.log_scale).copy()
    model.fit(digits, batch_size=16, epochs=3, verbose=0)
    after = np.asarray(model.log_scale)
    assert np.abs(after - before).max() > 1e-3  # the variance is learned
    assert "log_scale" in {w.name for w in model.trainable_weights}
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded.log_scale), after)
    z = np.zeros((2, model.latent_dim), "float32")
    np.testing.assert_array_equal(loaded.log_likelihood(digits[:2], z), model.log_likelihood(
        digits[:2], z))  # fmt: skip
    state = TrainingState(model, tmp_path / "ckpt")
    state.save(1)
    fresh = zoo.load("mlp_vae_tiny", likelihood="gaussian_learned")
    fresh.compile(optimizer=keras.optimizers.Adam(1e-2))
    TrainingState(fresh, tmp_path / "ckpt").restore_latest()
    np.testing.assert_array_equal(np.asarray(fresh.log_scale), after)


# -- beta and warm-up ---------------------------------------------------------------------
def test_beta_vae_is_registered_with_beta_4():
    model = zoo.load("beta_vae")
    assert isinstance(model, VAE) and model.beta == 4.0 and model.warmup_steps == 0
    assert float(model.current_beta()) == 4.0
    assert len([la for la in model.encoder.layers if isinstance(la, keras.layers.Conv2D)]) == 2


def test_kl_warmup_values_at_steps_and_tracked_beta(digits):
    model = zoo.load("beta_vae_tiny", warmup_steps=10)  # beta = 4
    np.testing.assert_allclose(model.beta_at([0, 1, 5, 10, 20]), [0.0, 0.4, 2.0, 4.0, 4.0])
    assert float(model.current_beta()) == 4.0  # not compiled yet: the full weight
    model.compile()
    assert float(model.current_beta()) == 0.0  # step 0
    history = model.fit(digits[:24], batch_size=8, epochs=2, verbose=0, shuffle=False)
    # epoch 1 runs steps 0, 1, 2; epoch 2 steps 3, 4, 5: the epoch means of beta_t
    np.testing.assert_allclose(history.history["beta"], [0.4, 1.6], rtol=1e-6)
    assert int(model.optimizer.iterations) == 6
    values = {k: float(v) for k, v in model.step_losses(digits[:8], training=False).items()}
    assert values["beta"] == pytest.approx(2.4)
    assert values["loss"] == pytest.approx(values["reconstruction"] + 2.4 * values["kl"], rel=1e-6)
    assert values["elbo"] == pytest.approx(-(values["reconstruction"] + values["kl"]), rel=1e-6)
    fixed = zoo.load("vae_tiny", beta=2.0)
    np.testing.assert_allclose(fixed.beta_at([0, 100]), [2.0, 2.0])


def test_iwae_warmup_weights_the_prior_ratio_and_reports_the_unweighted_bound(digits):
    model = zoo.load("iwae_tiny", seed=1)
    assert model.objective == "iwae" and isinstance(model, VAE)
    model.compile()
    history = model.fit(digits[:16], batch_size=8, epochs=1, verbose=0)
    assert {"iwae_bound", "elbo", "beta", "loss"} <= set(history.history)
    assert history.history["loss"][0] == pytest.approx(-history.history["iwae_bound"][0], rel=1e-6)
    warm = zoo.load("mlp_vae_tiny", objective="iwae", k=4, warmup_steps=100)
    warm.compile()
    values = warm.step_losses(digits[:8], training=False)  # beta_0 = 0
    assert float(values["beta"]) == 0.0
    assert float(values["loss"]) < -float(values["iwae_bound"])  # KL-free loss is smaller


def test_k_sample_elbo_averages_the_reconstruction(digits):
    model = zoo.load("mlp_vae_tiny", k=8)
    values = {k: float(v) for k, v in model.step_losses(digits[:8], training=False).items()}
    assert values["loss"] == pytest.approx(values["reconstruction"] + values["kl"], rel=1e-6)
    assert "iwae_bound" not in values
    with pytest.raises(ValueError, match="at least 1"):
        zoo.load("mlp_vae_tiny", k=0)


# -- conditional VAE ------------------------------------------------------------------
def test_cvae_generate_respects_labels(digits):
    model = zoo.load("cvae_tiny")
    assert isinstance(model, CVAE) and model.num_classes == 10 and model.conditional
    z = np.random.default_rng(0).standard_normal((10, model.latent_dim)).astype("float32")
    same_z = np.repeat(z[:1], 10, axis=0)
    images = np.asarray(model.generate(same_z, np.arange(10)))
    assert images.shape == (10, 28, 28, 1)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # the same z with different labels gives different images, and every pair differs
    flat = images.reshape(10, -1)
    distances = np.abs(flat[:, None] - flat[None]).max(axis=-1)
    assert np.all(distances[~np.eye(10, dtype=bool)] > 1e-6)
    # ids and one-hot rows mean the same; the decoder sees exactly [z, one_hot]
    one_hot = np.eye(10, dtype="float32")[[3, 3, 7]]
    np.testing.assert_allclose(model.generate(z[:3], [3, 3, 7]), model.generate(z[:3], one_hot))
    logits = np.asarray(model.decoder([z[:3], one_hot]))
    np.testing.assert_allclose(model.generate(z[:3], one_hot), sigmoid(logits), atol=1e-6)
    # without labels, image i shows class i mod 10
    np.testing.assert_allclose(model.generate(z), model.generate(z, np.arange(10)))
    # the encoder is conditioned too
    m3, _ = model.encode(digits[:2], [3, 3])
    m5, _ = model.encode(digits[:2], [5, 5])
    assert np.abs(np.asarray(m3) - np.asarray(m5)).max() > 1e-6
    with pytest.raises(ValueError, match="class ids"):
        model.generate(z[:2], np.zeros((2, 3, 4)))


def test_unconditional_vae_refuses_labels(digits):
    with pytest.raises(ValueError, match="unconditional"):
        zoo.load("vae_tiny").encode(digits[:2], [1, 2])


def test_cvae_trains_on_images_and_labels_and_round_trips_through_keras(digits, tmp_path):
    labels = np.arange(len(digits)) % 10
    model = zoo.load("cvae_tiny", label_dropout=0.2)
    model.compile()
    ds = tf.data.Dataset.from_tensor_slices((digits, labels)).batch(16)
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    path = tmp_path / "cvae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is CVAE and loaded.label_dropout == 0.2
    z = np.random.default_rng(1).standard_normal((4, model.latent_dim)).astype("float32")
    np.testing.assert_array_equal(loaded.generate(z, [0, 1, 2, 3]), model.generate(z, [0, 1, 2, 3]))
    np.testing.assert_array_equal(
        loaded.anomaly_score(digits[:4], labels[:4]), model.anomaly_score(digits[:4], labels[:4])
    )
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
    loaded.fit(ds, epochs=1, verbose=0, shuffle=False)


def test_cvae_mlp_architecture(digits):
    model = zoo.load("cvae_tiny", architecture="mlp")
    model.compile()
    model.fit(digits, np.arange(32) % 10, batch_size=16, epochs=1, verbose=0)
    assert model.reconstruct(digits[:2], [0, 1]).shape == (2, 28, 28, 1)
    with pytest.raises(ValueError, match="choose one of conv, mlp"):
        zoo.load("cvae_tiny", architecture="resnet")


def test_cvae_recipe_runs_on_labelled_batches(tmp_path):
    from zoo.recipes import train

    result = train(
        "cvae_mnist",
        logdir=tmp_path,
        overrides=[
            "model=cvae_tiny", "epochs=1", "training.steps_per_epoch=3", "training.verbose=0",
            "data.batch_size=32", "logging.num_samples=10", "model_config.latent_dim=4",
        ],
    )  # fmt: skip
    assert isinstance(result.model, CVAE)
    assert {"loss", "kl", "beta", "val_loss"} <= set(result.history)
    assert (result.run_dir / "samples" / "samples_epoch001.png").is_file()  # classes 0..9
    assert (result.run_dir / "model.keras").is_file()


# -- configs ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, config",
    [
        ("vae_tiny", {"likelihood": "gaussian_learned", "warmup_steps": 7}),
        ("vae_tiny", {"objective": "iwae", "k": 2, "likelihood": "continuous_bernoulli"}),
        ("mlp_vae_tiny", {"likelihood": "gaussian", "k": 3}),
        ("cvae_tiny", {"architecture": "mlp", "num_classes": 3, "label_dropout": 0.5}),
    ],
)
def test_new_options_round_trip_through_config_and_keras(name, config, digits, tmp_path):
    model = zoo.load(name, **config)
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    for key, value in config.items():
        if key in model.get_config():
            assert model.get_config()[key] == value
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.reconstruct(digits[:3]), model.reconstruct(digits[:3]))


def test_registered_vae_family():
    names = set(zoo.list_models("*vae*")) | set(zoo.list_models("iwae*"))
    assert {"vae", "mlp_vae", "beta_vae", "cvae", "iwae"} <= names
    assert {f"{n}_tiny" for n in ("vae", "mlp_vae", "beta_vae", "cvae", "iwae")} <= names
    mlp = zoo.load("mlp_vae")
    assert mlp.latent_dim == 50 and [la.units for la in mlp.encoder.layers[2:]] == [200, 200, 100]
