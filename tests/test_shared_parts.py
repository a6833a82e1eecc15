"""Shared parts every family uses: atomic writes, weight averages (EMA), GAN losses over
logit maps, batch unpacking, and the sequence autoencoder's regulariser losses."""

from __future__ import annotations

import numpy as np
import pytest

from zoo import fileio


# -- 1. atomic writes ----------------------------------------------------------------------
def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_text_and_bytes_replace_the_content(tmp_path):
    target = tmp_path / "deep" / "er" / "report.md"  # parent folders are created
    assert fileio.atomic_write_text(target, "first") == target
    assert target.read_text() == "first"
    fileio.atomic_write_bytes(target, b"second \xe2\x9c\x93")
    assert target.read_text() == "second \u2713"
    assert _leftovers(target.parent) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), fileio.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        assert tmp.name.endswith("model.keras")  # writers that check the suffix accept it
        tmp.write_text("half a mod")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with fileio.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_call_sites_write_atomically(tmp_path, monkeypatch):
    """The runner's model writer and the PNG writer go through zoo.fileio: a failure in the
    middle of a write keeps the previous file and leaves nothing behind."""
    from PIL import Image
    from zoo.recipes.runner import save_model_atomically

    from zoo.data import save_png

    class BrokenModel:
        def save(self, path):
            with open(path, "w") as fh:
                fh.write("partial")
            raise OSError("no space left on device")

    target = tmp_path / "model.keras"
    target.write_text("previous model")
    with pytest.raises(OSError, match="no space"):
        save_model_atomically(BrokenModel(), target)
    assert target.read_text() == "previous model"
    assert _leftovers(tmp_path) == []

    png = tmp_path / "grid.png"
    save_png(np.zeros((4, 4), np.uint8), png)
    before = png.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError("interrupted")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="interrupted"):
        save_png(np.full((4, 4), 255, np.uint8), png)
    assert png.read_bytes() == before
    assert _leftovers(tmp_path) == []


# -- 2. weight averages (EMA) ----------------------------------------------------------------
def small_network(seed: int = 0):
    """Dense -> batch norm -> Dense: trainable weights and non-trainable moving statistics."""
    import keras

    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="live")


def test_weight_average_is_the_numpy_ema_after_k_steps():
    from zoo.ema import WeightAverage

    network = small_network()
    average = WeightAverage(network, 0.8, "averaged")
    assert average.average.name == "averaged" and not average.average.trainable_weights
    assert len(network.trainable_weights) == 6  # the optimizer's view is unchanged
    trainable = [w.trainable for w in network.weights]
    assert trainable.count(False) == 2  # moving mean and variance
    expected = [np.asarray(w).copy() for w in network.weights]  # starts as a copy
    rng = np.random.default_rng(3)
    for step, decay in enumerate((None, None, 0.5, None)):  # k = 4 steps, one override
        for w in network.weights:  # a "training step": every weight moves
            w.assign(rng.normal(size=w.shape).astype("float32"))
        average.update() if decay is None else average.update(decay)
        d = 0.8 if decay is None else decay
        live = [np.asarray(w) for w in network.weights]
        expected = [
            d * e + (1 - d) * w if is_trainable else w
            for e, w, is_trainable in zip(expected, live, trainable, strict=True)
        ]
        for got, want in zip(average.average.weights, expected, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7, err_msg=step)
    average.reset()
    for got, want in zip(average.average.weights, network.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\) or None; got 1.5"):
        WeightAverage(network, 1.5, "bad")


def test_vae_with_ema_decay_decodes_with_the_averaged_decoder(digits, tmp_path):
    import keras

    import zoo

    decay = 0.7
    model = zoo.load("vae_tiny", ema_decay=decay)
    assert model.get_config()["ema_decay"] == decay
    assert zoo.load("vae_tiny").ema_decoder is None
    assert model.sampling_decoder is model.ema_decoder
    model.init_output_bias(digits)  # the average starts from the initialised decoder
    for a, b in zip(model.ema_decoder.weights, model.decoder.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    expected = [np.asarray(w).copy() for w in model.decoder.weights]

    class AfterEachStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            nonlocal expected
            live = [np.asarray(w) for w in model.decoder.weights]
            expected = [decay * e + (1 - decay) * w for e, w in zip(expected, live, strict=True)]

    model.compile()
    model.fit(digits, batch_size=8, epochs=1, verbose=0, callbacks=[AfterEachStep()])
    assert int(model.optimizer.iterations) == 4
    for got, want in zip(model.ema_decoder.weights, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    z = np.random.default_rng(0).standard_normal((5, model.latent_dim)).astype("float32")
    averaged = 1.0 / (1.0 + np.exp(-np.asarray(model.ema_decoder(z))))  # Bernoulli mean
    live = 1.0 / (1.0 + np.exp(-np.asarray(model.decoder(z))))
    for images in (model.generate(z), model.decode(z)):
        np.testing.assert_allclose(np.asarray(images), averaged, rtol=1e-5, atol=1e-6)
    assert np.abs(averaged - live).max() > 1e-3  # training moved the live decoder away
    assert model.sample(3).shape == (3, 28, 28, 1)
    # the reconstruction (and so the loss and the scores) uses the trained decoder
    mean, _ = model.encode(digits[:4])
    np.testing.assert_allclose(
        np.asarray(model.reconstruct(digits[:4])),
        1.0 / (1.0 + np.exp(-np.asarray(model.decoder(mean)))),
        rtol=1e-5,
        atol=1e-6,
    )
    model.save(tmp_path / "ema_vae.keras")
    loaded = keras.saving.load_model(tmp_path / "ema_vae.keras", safe_mode=True)
    assert loaded.ema_decay == decay
    for a, b in zip(loaded.ema_decoder.weights, model.ema_decoder.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(loaded.generate(z)), averaged, rtol=1e-5, atol=1e-6)


def test_vae_ema_decay_is_checked_by_the_registry():
    import zoo
    from zoo.registry import ConfigError

    with pytest.raises(ConfigError, match=r"ema_decay must be in \(0, 1\) or None; got 1.0"):
        zoo.load("mlp_vae_tiny", ema_decay=1.0)
    assert zoo.load("cvae_tiny", ema_decay=0.5).ema_decoder.name == "ema_decoder"


# -- 3. GAN losses over every logit ----------------------------------------------------------
def softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def hand_losses(kind: str, r: np.ndarray, f: np.ndarray, y: float = 1.0):
    """Per-logit (discriminator, generator) losses from the module docstring's equations,
    with s = sigmoid; log s(t) = -softplus(-t), log(1 - s(t)) = -softplus(t)."""
    log_s = lambda t: -softplus(-t)  # noqa: E731
    log_1ms = lambda t: -softplus(t)  # noqa: E731
    if kind in ("minimax", "non_saturating"):
        d = -(y * log_s(r) + (1 - y) * log_1ms(r)) - log_1ms(f)
        g = log_1ms(f) if kind == "minimax" else -log_s(f)
    elif kind == "least_squares":
        d, g = (r - y) ** 2 / 2 + f**2 / 2, (f - 1) ** 2 / 2
    elif kind == "wasserstein":
        d, g = f - r, -f
    else:
        d, g = np.maximum(0, 1 - r) + np.maximum(0, 1 + f), -f
    return d, g


@pytest.mark.parametrize("kind", ["minimax", "non_saturating", "least_squares", "wasserstein",
                                  "hinge"])  # fmt: skip
def test_gan_losses_average_every_logit_of_a_patch_map(kind):
    from zoo import losses

    assert kind in losses.GAN_LOSSES
    rng = np.random.default_rng(7)
    real = (rng.normal(size=(2, 3, 3, 1)) * 2).astype("float32")  # a PatchGAN map
    fake = (rng.normal(size=(2, 3, 3, 1)) * 2).astype("float32")
    d, g = hand_losses(kind, real.astype(np.float64), fake.astype(np.float64))
    np.testing.assert_allclose(
        losses.discriminator_loss(real, fake, kind), d.mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        losses.generator_loss(fake, kind), g.mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6
    )
    # the first patch alone (the old behaviour) is not the answer
    assert np.abs(d.mean(axis=(1, 2, 3)) - d[:, 0, 0, 0]).max() > 1e-2
    # a single logit per example [N, 1] gives the single-logit values
    d1, g1 = hand_losses(kind, real[:, 0, 0, :].astype(np.float64), fake[:, 0, 0, :])
    np.testing.assert_allclose(
        losses.discriminator_loss(real[:, 0, 0, :], fake[:, 0, 0, :], kind), d1[:, 0], rtol=1e-5
    )
    np.testing.assert_allclose(losses.generator_loss(fake[:, 0, 0, :], kind), g1[:, 0], rtol=1e-5)


def test_label_smoothing_and_gradient_penalty_use_every_logit():
    import tensorflow as tf

    from zoo import losses

    rng = np.random.default_rng(8)
    real = rng.normal(size=(2, 3, 3, 1)).astype("float32")
    fake = rng.normal(size=(2, 3, 3, 1)).astype("float32")
    d, _ = hand_losses("non_saturating", real.astype(np.float64), fake.astype(np.float64), 0.9)
    got = losses.discriminator_loss(real, fake, "non_saturating", real_label=0.9)
    np.testing.assert_allclose(got, d.mean(axis=(1, 2, 3)), rtol=1e-5)
    # a critic whose logit map is w * x per pixel: D(x) = mean(w * x), so grad = w / 9
    weights = rng.normal(size=(1, 3, 3, 1)).astype("float32")
    x_real = rng.normal(size=(2, 3, 3, 1)).astype("float32")
    alpha = np.full((2, 1, 1, 1), 0.5, "float32")
    penalty = losses.gradient_penalty(lambda x: x * tf.constant(weights), x_real, fake, alpha)
    norm = np.sqrt(np.sum((weights / 9.0) ** 2))
    np.testing.assert_allclose(penalty, [(norm - 1) ** 2] * 2, rtol=1e-5)


# -- 4. batch unpacking ----------------------------------------------------------------------
def test_split_batch_cases():
    import tensorflow as tf

    from zoo.data.batches import unpack_batch
    from zoo.trainers.base import first_batch

    x, y, w = np.ones((2, 3), "float32"), np.array([1, 0]), np.array([0.5, 2.0])
    assert unpack_batch(x)[0] is x and unpack_batch(x)[1] is None
    t = tf.constant(x)
    assert unpack_batch(t)[0] is t and unpack_batch(t)[1] is None
    assert unpack_batch((x,)) == (x, None)
    assert unpack_batch((x, y)) == (x, y)
    assert unpack_batch([x, y]) == (x, y)
    assert unpack_batch((x, y, w)) == (x, y)  # sample weights dropped
    named = {"images": x}
    assert unpack_batch(named) == (named, None)  # a dict is the (named) inputs
    with pytest.raises(ValueError, match=r"a batch is inputs, .*got a tuple of 4 items"):
        unpack_batch((x, y, w, w))
    # first_batch reads the inputs of fit's x through the same function
    np.testing.assert_array_equal(first_batch((x, y, w)), x)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    np.testing.assert_array_equal(first_batch(dataset), x)
    assert first_batch(iter([x])) is None and first_batch(named) is None


def test_a_trainer_takes_weighted_labelled_batches(digits, digit_labels):
    """(images, labels, sample_weight) batches reach a conditional trainer's labels through
    split_batch (the GAN and the single-objective trainers use the same function)."""
    import tensorflow as tf

    import zoo

    weights = np.ones(16, "float32")
    model = zoo.load("cvae_tiny")
    model.compile()
    data = tf.data.Dataset.from_tensor_slices((digits[:16], digit_labels[:16], weights))
    history = model.fit(data.batch(16), epochs=1, verbose=0, shuffle=False)
    assert all(np.isfinite(v[-1]) for v in history.history.values())


# -- 5. the sequence autoencoder adds its networks' losses -----------------------------------
def test_sequence_autoencoder_adds_activity_regulariser_losses():
    import keras

    from zoo.trainers.autoencoder import SequenceAutoencoder

    l1 = 0.1
    inputs = keras.Input((6, 2))
    codes = keras.layers.Dense(3, activity_regularizer=keras.regularizers.L1(l1), name="code")(
        keras.layers.Flatten()(inputs)
    )
    encoder = keras.Model(inputs, codes, name="encoder")
    z = keras.Input((3,))
    decoder = keras.Model(
        z, keras.layers.Reshape((6, 2))(keras.layers.Dense(12)(z)), name="decoder"
    )
    model = SequenceAutoencoder(encoder, decoder, seed=0)
    model.build()
    sequences = np.random.default_rng(0).normal(size=(4, 6, 2)).astype("float32")
    values = model.step_losses(sequences, training=False)
    # Keras' activity penalty: l1 * sum |h| over the batch, divided by the batch size
    penalty = l1 * np.abs(np.asarray(encoder(sequences))).sum() / len(sequences)
    assert penalty > 0.01
    np.testing.assert_allclose(
        float(values["loss"]) - float(values["reconstruction"]), penalty, rtol=1e-5
    )
    model.compile()
    reported = model.evaluate(sequences, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(reported["loss"] - reported["reconstruction"], penalty, rtol=1e-4)


def test_one_image_shape_check_for_configs_and_data():
    """zoo.data's check is zoo.shapes' check raised as DataError (one rule, one message)."""
    from zoo.data import DataError
    from zoo.data.core import check_image_shape as data_check
    from zoo.shapes import check_image_shape

    assert check_image_shape([28, 28, 1]) == data_check((28, 28, 1)) == (28, 28, 1)
    for bad in ((28, 28), (28, 0, 1), "abc"):
        with pytest.raises(ValueError) as config_error:
            check_image_shape(bad)
        with pytest.raises(DataError) as data_error:
            data_check(bad)
        assert str(config_error.value) == str(data_error.value)
        assert "image_shape must be (height, width, channels)" in str(data_error.value)
