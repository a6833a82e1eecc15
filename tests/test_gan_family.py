"""The GAN family on the adversarial trainer: gradient penalty against its definition,
weight clipping, critic steps, conditioning, instance noise, generator EMA, compile
defaults, seeds, 64x64x3, and the shared checks for the conditional GAN with labels."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import losses, networks
from zoo.models.gans import conv_discriminator, conv_generator
from zoo.trainers import GAN
from zoo.trainers.adversarial import instance_noise_stddev, to_unit

NEW_MODELS = ("gan", "cgan", "wgan", "wgan_gp")


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """The labels of the ``digits`` fixture (the first 32 of the sample's test split)."""
    from zoo.data import load_sample

    return load_sample("test")[1][:32].astype("int32")


def as_json(config: dict) -> dict:
    """A config as it is stored in a .keras file (tuples become lists)."""
    return json.loads(json.dumps(config))


def z_for(model: GAN, n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype("float32")


# -- gradient penalty ---------------------------------------------------------------------
def tiny_critic(seed: int = 0) -> keras.Model:
    """A small critic with no batch coupling (layer norm, as in WGAN-GP)."""
    return conv_discriminator((8, 8, 2), (3, 4), normalization="layer", seed=seed)


def test_gradient_penalty_matches_its_definition():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (6, 8, 8, 2)).astype("float32")
    fake = rng.uniform(-1, 1, (6, 8, 8, 2)).astype("float32")
    critic = tiny_critic()
    for layer in critic.layers:  # random affine parameters, so every term matters
        if isinstance(layer, keras.layers.GroupNormalization):
            layer.gamma.assign(rng.uniform(0.5, 2, layer.gamma.shape))
    alpha = np.asarray(losses.interpolation_weights(tf.constant(real), seed=1))
    got = np.asarray(losses.gradient_penalty(critic, real, fake, alpha))
    expected = []
    for i in range(len(real)):  # one tape per example, alpha applied by hand
        x_hat = tf.constant(alpha[i] * real[i : i + 1] + (1 - alpha[i]) * fake[i : i + 1])
        with tf.GradientTape() as tape:
            tape.watch(x_hat)
            score = critic(x_hat)[0, 0]
        norm = np.linalg.norm(np.asarray(tape.gradient(score, x_hat)).ravel())
        expected.append((norm - 1.0) ** 2)
    assert got.shape == (6,)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(5, 4, 4, 1)).astype("float32")
    fake = rng.normal(size=(5, 4, 4, 1)).astype("float32")
    w = rng.normal(size=(16, 1)).astype("float32")
    alpha = losses.interpolation_weights(tf.constant(real), seed=0)

    def linear(scale):
        return lambda x: tf.reshape(x, (-1, 16)) @ (scale * w / np.linalg.norm(w))

    np.testing.assert_allclose(
        losses.gradient_penalty(linear(1.0), real, fake, alpha), 0, atol=1e-6
    )
    # ||grad|| = 3 everywhere: the penalty is (3 - 1)^2 = 4 for every example
    np.testing.assert_allclose(
        losses.gradient_penalty(linear(3.0), real, fake, alpha), 4, rtol=1e-5
    )


def test_interpolation_weights_are_uniform_per_example():
    real = tf.zeros((64, 5, 5, 3))
    alpha = np.asarray(losses.interpolation_weights(real, seed=0))
    assert alpha.shape == (64, 1, 1, 1)
    assert len(np.unique(alpha)) == 64  # one weight per example, not one per batch
    assert np.asarray(losses.interpolation_weights(tf.zeros((7, 3)), seed=0)).shape == (7, 1)
    seed = keras.random.SeedGenerator(3)
    draws = np.concatenate(
        [np.asarray(losses.interpolation_weights(real, seed=seed)).ravel() for _ in range(400)]
    )  # 25,600 draws
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert draws.mean() == pytest.approx(0.5, abs=0.01)
    assert draws.var() == pytest.approx(1 / 12, abs=0.003)
    assert (draws**3).mean() == pytest.approx(0.25, abs=0.01)  # E[a^3] = 1/4 for U[0, 1]
    counts, _ = np.histogram(draws, bins=10, range=(0, 1))
    assert np.abs(counts / len(draws) - 0.1).max() < 0.01  # flat, unlike a normal's bell


def test_interpolation_stays_on_the_segment():
    real, fake = tf.ones((3, 2, 2, 1)), -tf.ones((3, 2, 2, 1))
    alpha = tf.constant([0.0, 0.25, 1.0])[:, None, None, None]
    np.testing.assert_allclose(losses.interpolate(real, fake, alpha)[:, 0, 0, 0], [-1, -0.5, 1])


def test_wgan_gp_critic_objective_adds_lambda_times_the_penalty(digits):
    model = zoo.load("wgan_gp_tiny")
    values = model.discriminator_objective(digits[:8], z_for(model))
    wasserstein = float(values["d_fake"]) - float(values["d_real"])
    penalty = float(values["gradient_penalty"])
    assert penalty > 0
    assert float(values["d_loss"]) == pytest.approx(wasserstein + 10.0 * penalty, rel=1e-5)


def test_wgan_gp_refuses_batch_norm_in_the_critic():
    with pytest.raises(ValueError, match="batch norm in the critic"):
        zoo.load("wgan_gp_tiny", normalization="batch")
    critic = zoo.load("wgan_gp_tiny").discriminator
    assert not any(isinstance(la, keras.layers.BatchNormalization) for la in critic.layers)


# -- WGAN: clipping, critic steps ------------------------------------------------------------
def test_wgan_clips_every_critic_weight_and_takes_n_critic_steps(digits):
    model = zoo.load("wgan_tiny")
    weights = model.discriminator.trainable_weights
    assert max(np.abs(np.asarray(w)).max() for w in weights) > 0.01  # clipping has work to do
    assert (model.clip_value, model.discriminator_steps) == (0.01, 5)
    model.compile()
    model.fit(digits, batch_size=16, epochs=2, verbose=0)  # 2 batches per epoch
    for w in model.discriminator.trainable_weights:
        assert np.abs(np.asarray(w)).max() <= 0.01 + 1e-8, w.path
    g, d = model.optimizers["generator_optimizer"], model.optimizers["discriminator_optimizer"]
    assert int(g.iterations) == 4
    assert int(d.iterations) == 5 * int(g.iterations)


def test_each_critic_step_takes_its_own_share_of_the_batch():
    model = zoo.load("wgan_tiny")
    images = np.arange(12, dtype="float32")[:, None, None, None] * np.ones((1, 28, 28, 1))
    labels = np.arange(12)
    slices = [model.critic_batch(images, labels, step) for step in range(5)]
    for step, (real, lab) in enumerate(slices):  # 12 // 5 = 2 per step, dealt: k, k + 5
        np.testing.assert_array_equal(np.asarray(real)[:, 0, 0, 0], [step, step + 5])
        np.testing.assert_array_equal(np.asarray(lab), [step, step + 5])
    tiny_batch = [np.asarray(model.critic_batch(images[:3], None, s)[0]) for s in range(5)]
    assert [int(b[0, 0, 0, 0]) for b in tiny_batch] == [0, 1, 2, 2, 2]
    whole = zoo.load("wgan_tiny", split_batch=False)
    assert np.asarray(whole.critic_batch(images, None, 3)[0]).shape[0] == 12


# -- conditional GAN -----------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_cgan_generate_respects_labels(conditioning):
    model = zoo.load("cgan_tiny", conditioning=conditioning)
    z = np.repeat(z_for(model, 1), 10, axis=0)
    images = np.asarray(model.generate(z, np.arange(10)))
    assert images.shape == (10, 28, 28, 1)
    # same z, different labels -> different images; same label -> the same image
    flat = images.reshape(10, -1)
    assert min(np.abs(flat[i] - flat[j]).max() for i in range(10) for j in range(i + 1, 10)) > 1e-6
    # a batch of 2 may run other CPU kernels than a batch of 10: equal up to round-off
    np.testing.assert_allclose(
        np.asarray(model.generate(z[:2], [3, 3]))[1], images[3], rtol=0, atol=1e-6
    )
    # without labels, sample i gets class i mod num_classes
    np.testing.assert_array_equal(np.asarray(model.generate(z)), images)


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_cgan_discriminator_output_depends_on_the_label(conditioning, digits):
    model = zoo.load("cgan_tiny", conditioning=conditioning)
    x = digits[:1].repeat(10, axis=0) * 2 - 1
    scores = np.asarray(model.discriminator([x, np.arange(10)]))[:, 0]
    assert len(np.unique(scores)) == 10
    if conditioning == "projection":
        names = {layer.name for layer in model.discriminator.layers}
        assert {"embed", "projection"} <= names


def test_cgan_trains_on_labelled_batches_and_round_trips(digits, labels, tmp_path):
    """The shared model checks, with labels (tests/test_models.py fits images only)."""
    model = zoo.load("cgan_tiny", conditioning="projection")
    model.compile()
    z = np.random.default_rng(1).standard_normal((32, model.latent_dim)).astype("float32")

    def d_loss() -> float:
        return float(model.discriminator_objective(digits, z, labels=labels)["d_loss"])

    before = d_loss()
    history = model.fit(digits, labels, batch_size=32, epochs=15, verbose=0, shuffle=False)
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert d_loss() < before
    path = tmp_path / "cgan.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert as_json(loaded.get_config()) == as_json(model.get_config())
    z8, y8 = z[:8], labels[:8]
    np.testing.assert_array_equal(loaded.generate(z8, y8), model.generate(z8, y8))
    for role, optimizer in model.optimizers.items():
        assert int(loaded.optimizers[role].iterations) == int(optimizer.iterations) == 15
    loaded.fit(digits, labels, batch_size=16, epochs=1, verbose=0)


def test_cgan_without_labels_is_a_clear_error(digits):
    model = zoo.load("cgan_tiny")
    model.compile()
    with pytest.raises(ValueError, match=r"trains on \(images, labels\) batches"):
        model.fit(digits, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="unconditional: it takes no labels"):
        zoo.load("dcgan_tiny").generate(z_for(model), np.zeros(8, "int32"))


# -- instance noise --------------------------------------------------------------------------
def test_instance_noise_schedule_anneals_linearly_to_zero():
    sigma = [float(instance_noise_stddev(s, 0.2, 100)) for s in (0, 25, 50, 100, 500)]
    np.testing.assert_allclose(sigma, [0.2, 0.15, 0.1, 0.0, 0.0], atol=1e-7)
    assert float(instance_noise_stddev(10**6, 0.2, 0)) == pytest.approx(0.2)  # constant


def test_instance_noise_only_in_training_and_follows_the_generator_steps(digits):
    model = zoo.load("dcgan_tiny", instance_noise=0.5, instance_noise_steps=8)
    x = tf.zeros((64, 28, 28, 1))
    np.testing.assert_array_equal(model.discriminator_inputs(x, training=False), x)
    noisy = np.asarray(model.discriminator_inputs(x, training=True))
    assert noisy.std() == pytest.approx(0.5, rel=0.02)
    model.compile()
    history = model.fit(digits, batch_size=16, epochs=3, verbose=0)  # 6 generator steps
    assert float(model.noise_stddev()) == pytest.approx(0.5 * (1 - 6 / 8))
    # tracked per epoch: the mean sigma over steps (0, 1), (2, 3), (4, 5)
    np.testing.assert_allclose(
        history.history["noise_stddev"], [0.5 * (1 - s / 8) for s in (0.5, 2.5, 4.5)], rtol=1e-5
    )
    noisy = np.asarray(model.discriminator_inputs(x, training=True))
    assert noisy.std() == pytest.approx(0.125, rel=0.02)
    # evaluation sees clean inputs: the same score twice
    a = model.evaluate(digits, batch_size=32, verbose=0, return_dict=True)
    assert a["noise_stddev"] == pytest.approx(0.125)


# -- generator EMA ---------------------------------------------------------------------------
def test_ema_update_is_exact_generate_uses_it_and_it_is_saved(digits, tmp_path):
    decay = 0.9
    model = zoo.load("dcgan_tiny", ema_decay=decay)
    ema, gen = model.ema_generator, model.generator
    assert model.sampling_generator is ema
    assert zoo.load("dcgan_tiny").ema_generator is None
    for a, b in zip(ema.weights, gen.weights, strict=True):  # starts as a copy
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # move the EMA away from the generator, so the update has two different operands
    for w in ema.weights:
        if w.trainable or "gamma" in w.path or "beta" in w.path or "kernel" in w.path:
            w.assign(np.asarray(w) + 0.01)
    before = [np.asarray(w).copy() for w in ema.weights]
    model.compile()
    model.fit(digits[:16], batch_size=16, epochs=1, verbose=0)  # one generator step
    assert int(model.generator_optimizer.iterations) == 1
    for old, new, weight in zip(before, ema.weights, gen.weights, strict=True):
        w = np.asarray(weight)
        if weight.trainable:
            expected = np.float32(decay) * old + np.float32(1 - decay) * w
            np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-6, atol=1e-8)
        else:  # batch-norm moving statistics are copied
            np.testing.assert_array_equal(np.asarray(new), w)
    assert not ema.trainable_weights  # no optimizer touches the EMA copy
    # generate() (and the model's call) use the EMA generator
    z = z_for(model)
    from_ema = np.asarray(to_unit(ema(z, training=False)))
    from_raw = np.asarray(to_unit(gen(z, training=False)))
    np.testing.assert_array_equal(np.asarray(model.generate(z)), from_ema)
    np.testing.assert_array_equal(np.asarray(model(z)), from_ema)
    assert np.abs(from_ema - from_raw).max() > 1e-6
    model.save(tmp_path / "ema.keras")
    loaded = keras.saving.load_model(tmp_path / "ema.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded.generate(z)), from_ema)
    for a, b in zip(loaded.ema_generator.weights, ema.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- every new model: defaults, losses, stabilisers, 64x64x3, seeds ----------------------------
@pytest.mark.parametrize(
    ("name", "optimizer", "settings"),
    [
        ("gan", keras.optimizers.Adam, {"learning_rate": 2e-4, "beta_1": 0.5}),
        ("dcgan", keras.optimizers.Adam, {"learning_rate": 2e-4, "beta_1": 0.5}),
        ("cgan", keras.optimizers.Adam, {"learning_rate": 2e-4, "beta_1": 0.5}),
        ("wgan", keras.optimizers.RMSprop, {"learning_rate": 5e-5}),
        ("wgan_gp", keras.optimizers.Adam, {"learning_rate": 1e-4, "beta_1": 0.0, "beta_2": 0.9}),
    ],
)
def test_compile_defaults_are_the_papers(name, optimizer, settings):
    model = zoo.load(f"{name}_tiny")
    model.compile()
    for opt in model.optimizers.values():
        assert type(opt) is optimizer
        for key, value in settings.items():
            assert float(getattr(opt, key)) == pytest.approx(value)


def test_gan_losses_and_validation():
    assert zoo.load("gan_tiny").loss_kind == "non_saturating"
    for loss in losses.GAN_LOSSES:
        assert zoo.load("gan_tiny", loss=loss).get_config()["loss"] == loss
    assert zoo.load("wgan_tiny").loss_kind == zoo.load("wgan_gp_tiny").loss_kind == "wasserstein"
    with pytest.raises(ValueError, match="label_smoothing has no effect with the hinge"):
        zoo.load("dcgan_tiny", loss="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="unknown conditioning 'film'"):
        zoo.load("cgan_tiny", conditioning="film")
    with pytest.raises(ValueError, match="unknown normalization"):
        zoo.load("dcgan_tiny", normalization="instance")
    with pytest.raises(ValueError, match="ema_decay must be in"):
        zoo.load("dcgan_tiny", ema_decay=1.0)


def test_dcgan_networks_are_unchanged_by_default():
    """dcgan's builders reproduce zoo.networks' DCGAN networks weight for weight."""
    model = zoo.load("dcgan_tiny", seed=4)
    ref_g = networks.dcgan_generator(8, (28, 28, 1), (4, 8), seed=4)
    ref_d = networks.dcgan_discriminator((28, 28, 1), (4, 8), seed=5)
    for ours, ref in ((model.generator, ref_g), (model.discriminator, ref_d)):
        assert [type(la) for la in ours.layers] == [type(la) for la in ref.layers]
        for a, b in zip(ours.weights, ref.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert conv_generator(8, (28, 28, 1), (4, 8), seed=4).count_params() == ref_g.count_params()


ALL_STABILISERS = {
    "spectral_norm": True,
    "minibatch_std": True,
    "instance_noise": 0.1,
    "instance_noise_steps": 100,
    "ema_decay": 0.99,
}


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_models_train_at_28x28_and_64x64_with_every_stabiliser(name, digits, labels, tmp_path):
    """28x28x1 training is the shared checks' (tests/test_models.py; cgan above); here
    64x64x3 with spectral norm, minibatch std, instance noise and EMA all on, then a
    safe-mode .keras round trip of everything (u vectors, EMA copy, optimizer state)."""
    widths = {"hidden": (8,)} if name == "gan" else {"filters": (4, 8, 8, 8)}
    extra = {"normalization": "none"} if name != "wgan_gp" else {}
    model = zoo.load(
        name, image_shape=(64, 64, 3), latent_dim=8, **widths, **ALL_STABILISERS, **extra
    )
    model.compile()
    images = np.random.default_rng(0).random((10, 64, 64, 3)).astype("float32")
    fit_args = (images, labels[:10]) if model.conditional else (images,)
    history = model.fit(*fit_args, batch_size=10, epochs=1, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert "noise_stddev" in history.history
    out = np.asarray(model.sample(3))
    assert model.image_shape == (64, 64, 3) and out.shape == (3, 64, 64, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert as_json(loaded.get_config()) == as_json(model.get_config())
    z = z_for(model)
    np.testing.assert_array_equal(np.asarray(loaded.generate(z)), np.asarray(model.generate(z)))
    for a, b in zip(loaded.weights, model.weights, strict=True):  # incl. u, EMA, BN stats
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    for role, optimizer in model.optimizers.items():
        assert int(loaded.optimizers[role].iterations) == int(optimizer.iterations) > 0


@pytest.mark.parametrize(
    ("name", "config"),
    # every random path: z, alpha, instance noise, u initialisation, the critic loop, EMA
    [("wgan_gp_tiny", ALL_STABILISERS)],
)
def test_same_seed_same_run(name, config, digits, labels):
    """Two runs with one seed train to the same weights, bit for bit. (Another seed builds
    other weights: the shared test_same_seed_builds_the_same_weights, for every tiny
    model; the other GANs train through the same step.)"""

    def run(seed: int) -> tuple[np.ndarray, list[np.ndarray], GAN]:
        model = zoo.load(name, seed=seed, **config)
        model.compile()
        fit_args = (digits[:20], labels[:20]) if model.conditional else (digits[:20],)
        model.fit(*fit_args, batch_size=10, epochs=1, verbose=0, shuffle=False)
        weights = [np.asarray(w) for w in model.weights]
        return np.asarray(model.generate(z_for(model))), weights, model

    (first, w1, model), (again, w2, _) = run(1), run(1)
    np.testing.assert_array_equal(first, again)
    for a, b in zip(w1, w2, strict=True):  # every weight: networks, u, EMA, BN statistics
        np.testing.assert_array_equal(a, b)
    other = zoo.load(name, seed=2, **config)
    assert (
        max(np.abs(np.asarray(a) - b).max() for a, b in zip(other.weights, w1, strict=True)) > 1e-3
    )
    g, d = model.optimizers["generator_optimizer"], model.optimizers["discriminator_optimizer"]
    assert int(d.iterations) == model.discriminator_steps * int(g.iterations) > 0
