"""The DDPM denoiser and trainer against their definitions: the U-Net's pieces, the simple loss
(Ho et al. 2020, eq. 14), v-prediction (Salimans & Ho 2022), min-SNR weights (Hang et al. 2023),
classifier-free guidance (Ho & Salimans 2022), the EMA warm-up and the compiled sampler."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.diffusion import NoiseSchedule, build_unet, ddim_timesteps
from zoo.diffusion.unet import SinusoidalEmbedding, norm_groups
from zoo.trainers import DiffusionModel


def small_unet(**options) -> keras.Model:
    config = {"image_shape": (8, 8, 1), "widths": (4,), "attention_resolutions": (), "groups": 2}
    return build_unet(**{**config, **options})


def model_with(denoiser: keras.Model, **options) -> DiffusionModel:
    options.setdefault("schedule", NoiseSchedule("linear", 20))
    options.setdefault("sample_steps", 4)
    return DiffusionModel(denoiser, seed=0, **options)


def test_sinusoidal_embedding_matches_the_transformer_formula():
    t = np.array([0, 1, 7, 999], np.int32)
    out = np.asarray(SinusoidalEmbedding(8)(t))
    frequencies = 10_000.0 ** (-np.arange(4) / 4)
    angles = t[:, None] * frequencies[None, :]
    np.testing.assert_allclose(out, np.concatenate([np.sin(angles), np.cos(angles)], 1), atol=1e-4)
    with pytest.raises(ValueError, match="even dim"):
        SinusoidalEmbedding(5)


def test_norm_groups_divides_the_channels():
    assert norm_groups(32, 8) == 8
    assert norm_groups(12, 8) == 6
    assert norm_groups(7, 8) == 7
    assert norm_groups(10, 4) == 2


@pytest.mark.parametrize(
    ("shape", "widths", "attention"), [((28, 28, 1), (4, 8, 8), (7,)), ((7, 9, 3), (4, 8), (4,))]
)
def test_unet_shapes_zero_output_and_attention_where_asked(shape, widths, attention):
    net = build_unet(shape, widths, attention_resolutions=attention, groups=2, num_classes=3)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype("float32")
    out = np.asarray(net([x, np.array([3, 500], np.int32), np.array([0, 3], np.int32)]))
    assert out.shape == (2, *shape)
    assert np.all(out == 0.0)  # zero-initialised output convolution
    attention_layers = [
        layer.name for layer in net.layers if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    levels = {name.split("_")[0] for name in attention_layers}
    smallest = min(shape[0], shape[1])
    sizes = []
    for _ in widths:  # the sizes of each level (halved, rounding up, between levels)
        sizes.append(smallest)
        smallest = math.ceil(smallest / 2)
    expected = {f"down{i}" for i, s in enumerate(sizes) if s in attention}
    expected |= {f"up{i}" for i, s in enumerate(sizes) if s in attention} | {"mid"}
    assert levels == expected
    assert net.get_layer("label_embedding").input_dim == 4  # 3 classes + the null token


def test_unet_depends_on_t_and_labels_once_trained_weights_are_nonzero():
    net = small_unet(num_classes=2, seed=1)
    out_layer = net.get_layer("conv_out")
    out_layer.kernel.assign(np.random.default_rng(0).normal(0, 0.1, out_layer.kernel.shape))
    x = np.ones((2, 8, 8, 1), np.float32)
    base = np.asarray(net([x, np.array([1, 1]), np.array([0, 0])]))
    assert np.abs(base[0] - base[1]).max() == 0.0
    other_t = np.asarray(net([x, np.array([1, 15]), np.array([0, 0])]))
    other_y = np.asarray(net([x, np.array([1, 1]), np.array([0, 2])]))
    assert np.abs(other_t[1] - base[1]).max() > 1e-4
    assert np.abs(other_y[1] - base[1]).max() > 1e-4


class Constant(keras.layers.Layer):
    """A stand-in denoiser head: ε = c (per label when conditional)."""

    def call(self, inputs):
        return inputs


def linear_denoiser(num_classes: int = 0) -> keras.Model:
    """ε_θ(x_t, t, y) = 0.5 x_t + 0.1 (y + 1): simple enough to write down in numpy."""
    x = keras.Input((8, 8, 1), name="x_t")
    t = keras.Input((), dtype="int32", name="t")
    inputs = [x, t]
    out = keras.layers.Rescaling(0.5)(x)
    if num_classes:
        y = keras.Input((), dtype="int32", name="labels")
        inputs.append(y)
        shift = keras.layers.Rescaling(0.1, offset=0.1)(keras.ops.cast(y, "float32"))
        out = out + keras.layers.Reshape((1, 1, 1))(shift)
    return keras.Model(inputs, out)


def test_simple_loss_is_the_mean_squared_noise_error():
    model = model_with(linear_denoiser())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (3, 8, 8, 1)).astype("float32")
    t = np.array([0, 7, 19])
    noise = rng.standard_normal(images.shape).astype("float32")
    a = model.schedule.alpha_bars[t][:, None, None, None]
    x_t = np.sqrt(a) * (2 * images - 1) + np.sqrt(1 - a) * noise
    expected = np.mean((0.5 * x_t - noise) ** 2)
    got = float(model.noise_prediction_loss(images, None, t, noise))
    assert got == pytest.approx(expected, rel=1e-5)


def test_v_prediction_and_min_snr_weights_follow_their_definitions():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (3, 8, 8, 1)).astype("float32")
    t = np.array([0, 7, 19])
    noise = rng.standard_normal(images.shape).astype("float32")
    model = model_with(
        linear_denoiser(), prediction="v", loss_weighting="min_snr", min_snr_gamma=5.0
    )
    a = model.schedule.alpha_bars[t]
    snr = a / (1 - a)
    weight = np.minimum(snr, 5.0) / snr / (1 + snr)  # the v-MSE is (1 + SNR) x the eps-MSE
    a4 = a[:, None, None, None]
    x0 = 2 * images - 1
    x_t = np.sqrt(a4) * x0 + np.sqrt(1 - a4) * noise
    v = np.sqrt(a4) * noise - np.sqrt(1 - a4) * x0
    per_example = np.mean((0.5 * x_t - v) ** 2, axis=(1, 2, 3))
    expected = np.mean(per_example * weight)
    assert float(model.noise_prediction_loss(images, None, t, noise)) == pytest.approx(
        expected, rel=1e-5
    )
    np.testing.assert_allclose(np.asarray(model.loss_weights(t)), weight, rtol=1e-5)


def test_classifier_free_guidance_mixes_the_two_predictions():
    model = model_with(linear_denoiser(num_classes=3), num_classes=3, clip_denoised=False)
    x = np.random.default_rng(2).standard_normal((2, 8, 8, 1)).astype("float32")
    t = np.array([5, 5], np.int32)
    labels = np.array([0, 2], np.int32)
    for scale in (0.0, 1.0, 3.0):
        eps = np.asarray(model.eps_fn(labels, scale, network=model.denoiser)(x, t))
        conditional = 0.5 * x + 0.1 * (labels + 1)[:, None, None, None]
        unconditional = 0.5 * x + 0.1 * (3 + 1)  # the null token, index num_classes
        np.testing.assert_allclose(
            eps, unconditional + scale * (conditional - unconditional), rtol=1e-5, atol=1e-6
        )


def test_label_dropout_uses_the_null_token_at_the_configured_rate():
    model = model_with(small_unet(num_classes=4), num_classes=4, label_dropout=0.3)
    seen = []
    original = model.noise_prediction_loss

    def spy(images, labels, t, noise, training=False):
        seen.append(np.asarray(labels))
        return original(images, labels, t, noise, training)

    model.noise_prediction_loss = spy
    images = np.zeros((4000, 8, 8, 1), np.float32)
    model.step_losses(images, np.ones(4000, np.int32), training=True)
    model.step_losses(images[:50], np.ones(50, np.int32), training=False)
    dropped = seen[0] == 4
    assert set(np.unique(seen[0])) == {1, 4}
    assert dropped.mean() == pytest.approx(0.3, abs=0.03)
    assert np.all(seen[1] == 1)  # evaluation keeps every label


def test_ema_warms_up_then_follows_the_configured_decay():
    model = zoo.load("ddpm_tiny", ema_decay=0.9)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    live, average = model.denoiser, model.ema_denoiser
    images = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype("float32")
    kernel = next(i for i, w in enumerate(live.weights) if w.path.endswith("conv_in/kernel"))
    for step in range(3):
        before = np.asarray(average.weights[kernel])
        model.train_on_batch(images)
        k = step + 1  # optimizer steps taken, counting this one
        decay = min(0.9, (1 + k) / (10 + k))
        expected = decay * before + (1 - decay) * np.asarray(live.weights[kernel])
        np.testing.assert_allclose(np.asarray(average.weights[kernel]), expected, atol=1e-6)
    assert model.sampling_denoiser is average


def test_generate_is_one_compiled_ddim_loop_equal_to_python_steps():
    model = model_with(small_unet(seed=3), clip_denoised=True)
    head = model.ema_denoiser.get_layer("conv_out")
    head.kernel.assign(np.random.default_rng(0).normal(0, 0.05, head.kernel.shape))
    z = np.random.default_rng(4).standard_normal((3, 8, 8, 1)).astype("float32")
    compiled = np.asarray(model.generate(z, steps=4))
    eps_fn = model.eps_fn()
    x = tf.constant(z)
    for t, t_prev in zip(*ddim_timesteps(20, 4), strict=True):
        step = tf.fill([3], int(t))
        x = model.schedule.ddim_step(x, eps_fn(x, step), step, tf.fill([3], int(t_prev)))
    np.testing.assert_allclose(compiled, np.clip((np.asarray(x) + 1) / 2, 0, 1), atol=1e-5)
    # eta = 0 is deterministic; eta = 1 draws seeded noise
    np.testing.assert_array_equal(compiled, np.asarray(model.generate(z, steps=4)))
    noisy = np.asarray(model.generate(z, steps=4, eta=1.0, seed=7))
    np.testing.assert_array_equal(noisy, np.asarray(model.generate(z, steps=4, eta=1.0, seed=7)))
    assert np.abs(noisy - compiled).max() > 1e-3
    assert compiled.min() >= 0.0 and compiled.max() <= 1.0


def test_untrained_model_denoises_to_the_clipped_identity():
    """ε_θ = 0 at initialisation (zero output layer): x̂_0 = x_t / √ᾱ_t."""
    model = model_with(small_unet())
    x_t = np.random.default_rng(5).standard_normal((2, 8, 8, 1)).astype("float32")
    t = np.array([0, 10])
    out = model.denoise(x_t, t)
    assert np.all(np.asarray(out["eps"]) == 0.0)
    a = model.schedule.alpha_bars[t][:, None, None, None]
    np.testing.assert_allclose(
        np.asarray(out["denoised"]), np.clip((x_t / np.sqrt(a) + 1) / 2, 0, 1), atol=1e-5
    )


def test_bad_configurations_name_the_fix():
    with pytest.raises(ValueError, match="num_classes=2 needs a denoiser with 3 inputs"):
        model_with(small_unet(), num_classes=2)
    with pytest.raises(ValueError, match="prediction='x0' is unknown"):
        model_with(small_unet(), prediction="x0")
    with pytest.raises(ValueError, match="sample_steps must be in"):
        model_with(small_unet(), sample_steps=50)
    model = model_with(small_unet())
    with pytest.raises(ValueError, match="unconditional: it takes no labels"):
        model.generate(np.zeros((1, 8, 8, 1), np.float32), labels=[0])
    conditional = model_with(small_unet(num_classes=2), num_classes=2)
    conditional.compile()
    with pytest.raises(ValueError, match="with_labels = true"):
        conditional.fit(np.zeros((4, 8, 8, 1), np.float32), epochs=1, verbose=0)


def test_trajectory_ends_at_the_sample_and_grids_show_it():
    from zoo.tasks import declaration_of

    model = zoo.load("cddpm_tiny")
    z = np.random.default_rng(0).standard_normal((3, 28, 28, 1)).astype("float32")
    frames = model.trajectory(z, [1, 2, 3], frames=4)
    assert frames.shape == (4, 3, 28, 28, 1)
    np.testing.assert_allclose(frames[-1], np.asarray(model.generate(z, [1, 2, 3])), atol=1e-6)
    grids = declaration_of(model).image_grids(np.zeros((0, 28, 28, 1), np.float32), 10, 0)
    steps = model.sample_steps  # 5 in the tiny model: a 5 x 5 denoising grid
    assert grids["samples"].shape == (10, 28, 28, 1)
    assert grids["denoising"].shape == (steps * steps, 28, 28, 1)
