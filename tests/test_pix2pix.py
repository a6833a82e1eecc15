"""Pix2Pix (Isola et al., 2017): the U-Net's architecture, the objectives against their
formulas (adversarial + 100 * L1, the halved discriminator loss), the L1-only ablation, the
deterministic translate and the conditional PatchGAN. Shared checks (save/load, seeds,
export, tf.distribute) are in tests/test_models.py and the export tests."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import registry
from zoo.data.core import DataError
from zoo.trainers.pix2pix import Pix2Pix
from zoo.translation.patchgan import receptive_field
from zoo.translation.unet import GlobalBatchDropout, build_unet_generator, unet_depth


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    source = rng.uniform(size=(16, 32, 32, 1)).astype(np.float32)
    target = np.clip(1.0 - source + 0.1 * rng.normal(size=source.shape), 0, 1)
    return source, target.astype(np.float32)


def skip_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]


def test_unet_at_256_is_the_papers_encoder_decoder():
    """C64-C128-C256-C512-C512-C512-C512-C512 down to 1x1; decoder inputs (after each
    skip) 1024, 1024, 1024, 1024, 512, 256, 128 channels (appendix 6.1.1); 7 skips."""
    model = zoo.load("pix2pix")  # the paper's 256x256x3 setting, built only
    generator = model.generator
    assert generator.input_shape == (None, 256, 256, 3)
    assert generator.output_shape == (None, 256, 256, 3)
    encoder = [generator.get_layer(f"encoder_{i}").output.shape for i in range(1, 9)]
    assert [s[-1] for s in encoder] == [64, 128, 256, 512, 512, 512, 512, 512]
    assert [s[1] for s in encoder] == [128, 64, 32, 16, 8, 4, 2, 1]
    skips = skip_layers(generator)
    assert [s.output.shape[1:] for s in skips] == [
        (2, 2, 1024), (4, 4, 1024), (8, 8, 1024), (16, 16, 1024),
        (32, 32, 512), (64, 64, 256), (128, 128, 128),
    ]  # fmt: skip
    # the 70x70 PatchGAN on (source, target) pairs
    assert receptive_field(model.discriminator) == 70
    assert len(model.discriminator.inputs) == 2
    assert model.discriminator.output_shape == (None, 32, 32, 1)
    # dropout 0.5 on the first three decoder blocks only
    rates = [layer.rate for layer in generator.layers if isinstance(layer, GlobalBatchDropout)]
    assert rates == [0.5, 0.5, 0.5]


def test_unet_skips_join_mirrored_layers_at_32():
    generator = build_unet_generator((32, 32, 1), 2, filters=8, max_filters=32, seed=0)
    assert generator.output_shape == (None, 32, 32, 2)
    skips = skip_layers(generator)
    assert len(skips) == 4  # depth 5 (32 -> 1), depth - 1 skips
    for j, layer in enumerate(skips, start=1):
        encoder_out = generator.get_layer(f"encoder_{5 - j}_out").output
        assert layer.input[1] is encoder_out  # decoder block j meets encoder layer 5 - j
        assert layer.input[0].shape[1:3] == encoder_out.shape[1:3]
    # tanh output: values inside (-1, 1)
    out = np.asarray(generator(np.full((2, 32, 32, 1), 5.0, np.float32)))
    assert np.all(np.abs(out) < 1.0)


def test_depth_follows_the_image_size_and_rejects_what_does_not_divide():
    assert unet_depth(256, 256) == 8 and unet_depth(32, 32) == 5
    assert unet_depth(48, 64) == 4  # halved down to a 3x4 bottleneck
    with pytest.raises(ValueError, match=r"48x48.*multiple of 32"):
        build_unet_generator((48, 48, 1), 1, depth=5)
    with pytest.raises(ValueError, match=r"33x33.*multiple of 2"):
        build_unet_generator((33, 33, 1), 1)
    with pytest.raises(ValueError, match="same height and width"):
        zoo.load("pix2pix_tiny", target_shape=[16, 16, 1])


def test_filters_is_the_first_width_here_and_a_list_for_image_shape_models():
    assert registry.resolve_config("pix2pix_tiny", {"filters": 16})["filters"] == 16
    with pytest.raises(registry.ConfigError, match="one width per stage"):
        registry.resolve_config("conv_ae_tiny", {"filters": 16})
    with pytest.raises(registry.ConfigError, match="filters must be"):
        registry.resolve_config("pix2pix_tiny", {"filters": 0})


@pytest.mark.parametrize("loss", ["non_saturating", "least_squares"])
def test_losses_equal_their_formulas_on_a_fixed_batch(pairs, loss):
    """g = L_G(D(x, G(x))) + 100 * mean|y - G(x)|, d = 1/2 [L_D(real) + L_D(fake)], on
    [-1, 1] images, from the networks' outputs (test_step: training=False)."""
    model = zoo.load("pix2pix_tiny", loss=loss)
    model.compile()
    source, target = pairs
    logs = model.evaluate(source, target, batch_size=16, verbose=0, return_dict=True)
    x, y = 2 * source - 1, 2 * target - 1
    fake = np.asarray(model.generator(x, training=False))
    real_logits = np.asarray(model.discriminator([x, y], training=False), np.float64)
    fake_logits = np.asarray(model.discriminator([x, fake], training=False), np.float64)
    l1 = np.mean(np.abs(y - fake))
    if loss == "non_saturating":
        adversarial = np.mean(softplus(-fake_logits))
        d_loss = 0.5 * (np.mean(softplus(-real_logits)) + np.mean(softplus(fake_logits)))
    else:
        adversarial = np.mean(0.5 * (fake_logits - 1) ** 2)
        d_loss = 0.5 * (np.mean(0.5 * (real_logits - 1) ** 2) + np.mean(0.5 * fake_logits**2))
    expected = {
        "g_l1": l1,
        "g_adversarial": adversarial,
        "g_loss": adversarial + 100.0 * l1,
        "d_loss": d_loss,
        "d_real": real_logits.mean(),
        "d_fake": fake_logits.mean(),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(logs[key], value, rtol=1e-5, err_msg=key)
    # reference_loss: the mean absolute error on [0, 1] images, g_l1 / 2
    np.testing.assert_allclose(model.reference_loss(source, target), l1 / 2, rtol=1e-5)


def test_a_step_moves_both_players(pairs):
    model = zoo.load("pix2pix_tiny")
    model.compile()
    d_before = [w.copy() for w in model.discriminator.get_weights()]
    model.fit(*pairs, batch_size=16, epochs=1, verbose=0)
    assert int(model.discriminator_optimizer.iterations) == 1
    assert int(model.generator_optimizer.iterations) == 1
    d_after = model.discriminator.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(d_before, d_after, strict=True))


def test_l1_only_ablation_leaves_the_discriminator_alone(pairs):
    model = zoo.load("pix2pix_tiny", adversarial_weight=0.0)
    model.compile()
    assert set(model.trackers) == {"g_loss", "g_l1"}
    d_before = [w.copy() for w in model.discriminator.get_weights()]  # incl. BN statistics
    g_before = [w.copy() for w in model.generator.get_weights()]
    history = model.fit(*pairs, batch_size=16, epochs=1, verbose=0).history
    for a, b in zip(d_before, model.discriminator.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(model.discriminator_optimizer.iterations) == 0
    assert int(model.generator_optimizer.iterations) == 1
    g_after = model.generator.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(g_before, g_after, strict=True))
    np.testing.assert_allclose(history["g_loss"][0], 100.0 * history["g_l1"][0], rtol=1e-6)
    # the config keeps the ablation
    again = Pix2Pix.from_config(model.get_config())
    assert again.adversarial_weight == 0.0 and set(again.trackers) == {"g_loss", "g_l1"}


def test_translate_is_deterministic_in_unit_range_while_training_drops_out(pairs):
    model = zoo.load("pix2pix_tiny", dropout=0.5, normalization="none")
    source = pairs[0][:4]
    first, second = np.asarray(model.translate(source)), np.asarray(model.translate(source))
    np.testing.assert_array_equal(first, second)
    assert first.shape == (4, 32, 32, 1) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    # in training the first decoder block's dropout zeroes about half its units, two
    # passes differently; at inference none
    generator = model.generator
    dropout = generator.get_layer("dropout_1")
    block = keras.Model(generator.input, dropout.output)
    x = 2 * source - 1
    assert np.all(np.asarray(block(x, training=False)) != 0)
    noisy = [np.asarray(block(x, training=True)) == 0 for _ in range(2)]
    assert all(0.4 < mask.mean() < 0.6 for mask in noisy)
    assert (noisy[0] != noisy[1]).mean() > 0.3
    assert not np.array_equal(model(source, training=True), model(source, training=True))


def test_global_batch_dropout_is_inverted_dropout_seeded():
    x = np.ones((64, 16), np.float32)
    layer = GlobalBatchDropout(0.25, seed=3)
    y = np.asarray(layer(x, training=True))
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}  # kept units scaled by 1/(1-p)
    assert 0.2 < (y == 0).mean() < 0.3
    np.testing.assert_array_equal(layer(x, training=False), x)
    again = GlobalBatchDropout.from_config(layer.get_config())
    np.testing.assert_array_equal(again(x, training=True), y)  # same seed, same first mask


def test_patchgan_judges_the_concatenated_pair(pairs):
    model = zoo.load("pix2pix_tiny")
    discriminator = model.discriminator
    assert receptive_field(discriminator) == 34  # patch_layers=2
    source, target = (2 * tf.constant(a[:4]) - 1 for a in pairs)
    logits = np.asarray(discriminator([source, target], training=False))
    assert logits.shape == (4, 8, 8, 1)
    other_source = np.asarray(discriminator([-source, target], training=False))
    other_target = np.asarray(discriminator([source, -target], training=False))
    assert np.abs(logits - other_source).max() > 1e-3
    assert np.abs(logits - other_target).max() > 1e-3


def test_batches_must_be_pairs(pairs):
    model = zoo.load("pix2pix_tiny")
    model.compile()
    with pytest.raises(ValueError, match=r"\(source, target\) pairs.*tuple of 1"):
        model.train_step((tf.constant(pairs[0]),))
    source, target = pairs
    for targets in (target * 255, tf.data.Dataset.from_tensor_slices((source, target * 255))):
        data = (source, targets) if isinstance(targets, np.ndarray) else (targets.batch(8),)
        with pytest.raises(DataError, match=r"fit\(targets\).*divide by 255"):
            model.fit(*data, epochs=1, verbose=0)
