"""SRResNet / SRGAN (Ledig et al., 2017): the generator's shapes at any size, the sub-pixel
layer, the objectives against their formulas, the two-stage initialisation and the
pluggable content loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.metrics import image_quality
from zoo.registry import ConfigError
from zoo.trainers.super_resolution import SuperResolution
from zoo.translation.content import (
    VGG_FEATURE_SCALE,
    CaffePreprocessing,
    content_loss,
    vgg19_extractor,
)
from zoo.translation.srresnet import (
    Interpolation,
    PixelShuffle,
    build_sr_discriminator,
    build_srresnet,
)


def flat_config(model):
    """The trainer's own config (the networks' configs hold auto-numbered layer names)."""
    return {k: v for k, v in model.get_config().items() if k not in model.NETWORKS}


def softplus(x):
    return np.logaddexp(0.0, x)


@pytest.fixture(scope="module")
def pairs():
    """16 random 32x32 grey high-resolution patches and their 8x8 downscales."""
    rng = np.random.default_rng(0)
    hr = rng.uniform(size=(16, 32, 32, 1)).astype("float32")
    lr = tf.image.resize(hr, (8, 8), method="area").numpy()
    return lr, hr


@pytest.fixture(scope="module")
def trained_srresnet(pairs, tmp_path_factory):
    """srresnet_tiny after two fit steps, saved as .keras (the first stage of the recipe)."""
    model = zoo.load("srresnet_tiny")
    model.compile()
    discriminator_before = [w.copy() for w in model.discriminator.get_weights()]
    generator_before = [w.copy() for w in model.generator.get_weights()]
    model.fit(*pairs, batch_size=8, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("stage1") / "srresnet.keras"
    model.save(path)
    return model, path, generator_before, discriminator_before


def test_generator_upscales_any_size_with_the_same_weights():
    generator = build_srresnet(3, scale=4, filters=8, n_blocks=2, seed=0)
    assert generator.input_shape == (None, None, None, 3)
    rng = np.random.default_rng(1)
    for shape in [(2, 8, 8, 3), (1, 5, 11, 3)]:
        out = generator(rng.uniform(size=shape).astype("float32"), training=False).numpy()
        assert out.shape == (shape[0], 4 * shape[1], 4 * shape[2], 3)
        assert out.dtype == np.float32 and np.all(np.abs(out) <= 1.0)  # tanh
    x2 = build_srresnet(1, scale=2, filters=4, n_blocks=0, seed=0)
    assert x2(np.zeros((1, 3, 7, 1), "float32")).shape == (1, 6, 14, 1)
    shuffles = [layer for layer in generator.layers if isinstance(layer, PixelShuffle)]
    assert len(shuffles) == 2  # log2(4) x2 blocks
    norms = [
        layer for layer in generator.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 2 * 2 + 1  # two per block and one before the long skip
    plain = build_srresnet(3, scale=4, filters=8, n_blocks=2, batch_norm=False, seed=0)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    assert plain(np.zeros((1, 3, 5, 3), "float32")).shape == (1, 12, 20, 3)


def test_pixel_shuffle_is_depth_to_space():
    r, c = 2, 3
    x = np.arange(2 * 2 * 3 * r * r * c, dtype="float32").reshape(2, 2, 3, r * r * c)
    out = PixelShuffle(r)(x).numpy()
    want = np.zeros((2, 2 * r, 3 * r, c), "float32")
    for h in range(2):
        for w in range(3):
            for i in range(r):
                for j in range(r):
                    # output pixel (h r + i, w r + j) takes channels (i r + j) C ... + C - 1
                    want[:, h * r + i, w * r + j, :] = x[
                        :, h, w, (i * r + j) * c : (i * r + j + 1) * c
                    ]
    np.testing.assert_array_equal(out, want)
    assert PixelShuffle(r).compute_output_shape((None, None, 5, 12)) == (None, None, 10, 3)


def test_global_skip_starts_at_the_interpolation_and_learns_the_residual(pairs):
    """Not in Ledig et al.: with global_skip the untrained model IS the interpolation (the
    residual convolution starts at zero), at any size, and a step moves it off."""
    lr, hr = pairs
    odd = np.random.default_rng(5).uniform(size=(2, 5, 9, 1)).astype("float32")
    for method in ("nearest", "bicubic"):
        model = zoo.load("srresnet_tiny", global_skip=method)
        for x in (lr, odd):
            want = (
                image_quality.bicubic_upscale(x, 4)
                if method == "bicubic"
                else image_quality.nearest_upscale(x, 4)
            )  # both clipped to [0, 1], as upscale is
            np.testing.assert_allclose(model.upscale(x), want, atol=2e-6)
    assert Interpolation(4, "nearest").compute_output_shape((None, 3, None, 2)) == (
        None, 12, None, 2
    )  # fmt: skip
    model.compile(run_eagerly=True)
    before = model.upscale(lr).numpy()
    model.fit(lr, hr, batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(model.upscale(lr), before)
    with pytest.raises(ConfigError, match="unknown global_skip 'area'"):
        zoo.load("srresnet_tiny", global_skip="area")


@pytest.mark.parametrize("scale", [3, 6, 1])
def test_scale_must_be_a_power_of_two(scale):
    with pytest.raises(ValueError, match="power of 2"):
        build_srresnet(1, scale=scale, filters=4, n_blocks=0)
    with pytest.raises(ConfigError, match="power of 2"):
        zoo.load("srresnet_tiny", scale=scale)


def test_patch_size_must_be_a_multiple_of_the_scale():
    with pytest.raises(ConfigError, match="multiple of the scale 4"):
        zoo.load("srresnet_tiny", patch_size=34, discriminator_pooling="average")


def test_discriminator_is_ledigs():
    d = build_sr_discriminator((32, 32, 3), filters=4, seed=0)
    convs = [layer for layer in d.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [4, 4, 8, 8, 16, 16, 32, 32]
    assert [c.strides[0] for c in convs] == [1, 2] * 4
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in d.layers) == 7
    dense = [layer for layer in d.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [64, 1]  # 16 * filters (1024 at 64), logit
    assert d.output_shape == (None, 1)
    pooled = build_sr_discriminator((32, 32, 3), filters=4, pooling="average", seed=0)
    assert pooled(np.zeros((2, 48, 16, 3), "float32")).shape == (2, 1)  # any size
    with pytest.raises(ValueError, match="multiples of 16"):
        build_sr_discriminator((40, 40, 3))


def test_contract_members(pairs):
    model = zoo.load("srgan_tiny")
    assert model.TRANSLATIONS == {"upscale": ("upscale", "upscaled")} and model.paired
    assert model.scale == 4 and model.fully_convolutional
    assert model.source_shape == (8, 8, 1) and model.target_shape == (32, 32, 1)
    assert model.translation_networks == [model.generator]
    lr, hr = pairs
    up = model.upscale(lr[:2]).numpy()
    assert up.shape == (2, 32, 32, 1) and up.min() >= 0.0 and up.max() <= 1.0
    np.testing.assert_array_equal(model.translate(lr[:2]), up)
    want = np.mean((up - hr[:2]) ** 2)
    np.testing.assert_allclose(float(model.reference_loss(lr[:2], hr[:2])), want, rtol=1e-5)
    # the same seed builds the same weights
    again = zoo.load("srgan_tiny")
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_srresnet_loss_is_pixel_mse(pairs):
    model = zoo.load("srresnet_tiny")
    model.compile()
    lr, hr = pairs
    sr = model.generator(lr, training=False).numpy()
    mse = np.mean((sr - (2 * hr - 1)) ** 2, axis=(1, 2, 3))  # on [-1, 1], as the paper
    psnr = np.mean(10 * np.log10(4.0 / mse))  # on [0, 1]
    logs = model.evaluate(lr, hr, batch_size=16, verbose=0, return_dict=True)
    assert set(logs) == {"g_loss", "content_loss", "psnr"}
    np.testing.assert_allclose(logs["content_loss"], mse.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["g_loss"], mse.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["psnr"], psnr, rtol=1e-5)


def test_srgan_losses_add_the_weighted_adversarial_term(pairs):
    model = zoo.load("srgan_tiny")
    model.compile()
    lr, hr = pairs
    sr = model.generator(lr, training=False).numpy()
    fake = model.discriminator(sr, training=False).numpy()[:, 0]
    real = model.discriminator(2 * hr - 1, training=False).numpy()[:, 0]
    mse = np.mean((sr - (2 * hr - 1)) ** 2)
    adversarial = np.mean(softplus(-fake))  # -log D(G(x)), eq. 6
    logs = model.evaluate(lr, hr, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["g_adversarial"], adversarial, rtol=1e-5)
    np.testing.assert_allclose(logs["g_loss"], mse + 1e-3 * adversarial, rtol=1e-5)
    np.testing.assert_allclose(logs["d_loss"], np.mean(softplus(-real) + softplus(fake)), rtol=1e-5)


def test_srresnet_never_touches_the_discriminator(trained_srresnet):
    model, _, generator_before, discriminator_before = trained_srresnet
    for a, b in zip(model.discriminator.get_weights(), discriminator_before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(model.discriminator_optimizer.iterations) == 0
    assert int(model.generator_optimizer.iterations) == 2
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(model.generator.get_weights(), generator_before, strict=True)
    ]
    assert any(changed)


def test_srgan_steps_both_players(pairs):
    model = zoo.load("srgan_tiny")
    model.compile(run_eagerly=True)  # one step: tracing it would cost more than it runs
    before = [w.numpy().copy() for w in model.discriminator.trainable_weights]
    model.fit(*pairs, batch_size=16, epochs=1, verbose=0)
    assert int(model.discriminator_optimizer.iterations) == 1
    assert int(model.generator_optimizer.iterations) == 1
    after = model.discriminator.trainable_weights
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("form", ["keras", "weights_h5", "checkpoint"])
def test_generator_weights_start_srgan_from_srresnet(trained_srresnet, form, tmp_path):
    stage1, path, *_ = trained_srresnet
    if form == "weights_h5":
        path = tmp_path / "generator.weights.h5"
        stage1.generator.save_weights(path)
    elif form == "checkpoint":
        tf.train.Checkpoint(model=stage1).save(str(tmp_path / "checkpoints" / "ckpt"))
        path = tmp_path  # a run folder holding checkpoints/, as zoo train writes
    srgan = zoo.load("srgan_tiny", generator_weights=str(path))
    for a, b in zip(srgan.generator.get_weights(), stage1.generator.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = zoo.load("srgan_tiny")  # the discriminator starts from its own initialisation
    for a, b in zip(
        srgan.discriminator.get_weights(), fresh.discriminator.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_generator_weights_errors(trained_srresnet, tmp_path):
    _, path, *_ = trained_srresnet
    with pytest.raises(FileNotFoundError, match=r"missing\.keras' not found"):
        zoo.load("srgan_tiny", generator_weights=str(tmp_path / "missing.keras"))
    with pytest.raises(ConfigError, match="another shape"):
        zoo.load("srgan_tiny", generator_weights=str(path), n_blocks=2)


def test_custom_extractor_content_loss_is_the_feature_mse(pairs):
    extractor = keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(
                3, 3, strides=2, kernel_initializer=keras.initializers.RandomNormal(seed=3)
            ),
        ]
    )
    _, hr = pairs
    sr = np.random.default_rng(2).uniform(-1, 1, size=hr.shape).astype("float32")
    hr_signed = 2 * hr - 1
    loss = content_loss(extractor, feature_scale=0.5)(hr_signed, sr).numpy()
    # the extractor sees [0, 1] images
    f_hr, f_sr = extractor(hr).numpy() * 0.5, extractor((sr + 1) / 2).numpy() * 0.5
    np.testing.assert_allclose(loss, np.mean((f_hr - f_sr) ** 2, axis=(1, 2, 3)), rtol=1e-5)
    pixel = content_loss(None)(hr_signed, sr).numpy()
    np.testing.assert_allclose(pixel, np.mean((hr_signed - sr) ** 2, axis=(1, 2, 3)), rtol=1e-6)
    # in the trainer: the loss it reports is that one, and the extractor is never saved
    model = zoo.load("srresnet_tiny")
    weights = len(model.weights)
    model.content_extractor = extractor
    assert len(model.weights) == weights and model.content_extractor is extractor
    model.compile()
    lr = tf.image.resize(hr, (8, 8), method="area").numpy()
    up = model.generator(lr, training=False).numpy()
    want = np.mean((extractor(hr).numpy() - extractor((up + 1) / 2).numpy()) ** 2)
    logs = model.evaluate(lr, hr, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["content_loss"], want, rtol=1e-4)


def test_missing_vgg_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "vgg19_notop.h5"
    with pytest.raises(FileNotFoundError, match=r"vgg19_notop\.h5.*not found.*pixel"):
        vgg19_extractor(missing)
    with pytest.raises(FileNotFoundError, match="not found"):
        zoo.load("srresnet_tiny", vgg19_weights=str(missing))


def test_vgg19_extractor_from_a_weights_file(tmp_path):
    """A VGG19 weights file (random weights here: nothing is downloaded) gives the
    block5_conv4 features of caffe-preprocessed images, scaled by 1/12.75 in the loss."""
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg19.weights.h5"
    vgg.save_weights(path)
    images = np.random.default_rng(4).uniform(size=(2, 32, 48, 3)).astype("float32")
    features = vgg19_extractor(path)(images).numpy()
    trunk = keras.Model(vgg.inputs, vgg.get_layer("block5_conv4").output)
    caffe = keras.applications.vgg19.preprocess_input(images * 255.0)
    np.testing.assert_allclose(features, trunk(caffe).numpy(), rtol=1e-4, atol=1e-4)
    assert features.shape == (2, 2, 3, 512)  # four poolings before block5
    np.testing.assert_allclose(
        CaffePreprocessing()(images[..., :1]).numpy(),
        keras.applications.vgg19.preprocess_input(np.repeat(images[..., :1], 3, -1) * 255.0),
        atol=1e-4,
    )
    model = zoo.load("srresnet_tiny", vgg19_weights=str(path))
    assert model.content_extractor is not None and model._content.feature_scale == VGG_FEATURE_SCALE
    assert model.get_config()["vgg19_weights"] == str(path)
    with pytest.raises(ValueError, match="no layer 'block9'"):
        vgg19_extractor(path, layer="block9")


def test_config_round_trip_and_keras_file(trained_srresnet, pairs):
    model, path, *_ = trained_srresnet
    again = keras.saving.load_model(path)
    assert isinstance(again, SuperResolution) and again.adversarial_weight == 0.0
    assert flat_config(again) == flat_config(model)
    lr, _ = pairs
    np.testing.assert_array_equal(again.upscale(lr), model.upscale(lr))
    assert int(again.generator_optimizer.iterations) == 2
    clone = SuperResolution.from_config(model.get_config())
    assert clone.patch_size == 32 and clone.scale == 4 and clone.loss_kind == "non_saturating"
