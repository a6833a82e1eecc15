"""The autoencoder family's regularisers against their definitions, and its recipes."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from zoo.recipes import train

import zoo
import zoo.data
from zoo.trainers.autoencoder import contractive_penalty, corrupt, kl_sparsity


def test_contractive_penalty_matches_finite_differences(digits):
    """||J_f(x)||_F^2 (Rifai et al., 2011, eq. 2): analytic vs central differences."""
    model = zoo.load("contractive_ae_tiny")
    x = digits[:2].astype("float64")
    analytic = np.asarray(contractive_penalty(model.encoder, digits[:2], training=False))
    encoder = lambda v: np.asarray(model.encoder(v.astype("float32")), dtype="float64")  # noqa: E731
    eps = 1e-2
    flat = x.reshape(2, -1)
    jac = np.zeros((2, model.latent_dim, flat.shape[1]))
    for i in range(flat.shape[1]):
        step = np.zeros_like(flat)
        step[:, i] = eps
        up = encoder((flat + step).reshape(x.shape))
        down = encoder((flat - step).reshape(x.shape))
        jac[:, :, i] = (up - down) / (2 * eps)
    numeric = np.sum(jac**2, axis=(1, 2))
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3)


def test_contractive_penalty_analytic_equals_the_tape_jacobian(digits):
    model = zoo.load("contractive_ae_tiny")
    analytic = contractive_penalty(model.encoder, digits[:3], training=False)
    # a functionally identical encoder that is not recognised as one sigmoid dense layer
    wrapped = keras.Sequential([model.encoder, keras.layers.Identity()])
    through_tape = contractive_penalty(wrapped, tf.constant(digits[:3]), training=False)
    np.testing.assert_allclose(analytic, through_tape, rtol=1e-4)


def test_kl_sparsity_is_the_bernoulli_kl_of_mean_activations():
    codes = np.array([[0.1, 0.9], [0.3, 0.5]], "float32")
    rho, rho_hat = 0.05, codes.mean(axis=0)
    expected = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    assert float(kl_sparsity(codes, rho)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_sparsity(np.full((4, 3), rho, "float32"), rho)) == pytest.approx(0.0, abs=1e-6)


def test_sparse_penalties_are_tracked_and_weighted(digits):
    for penalty in ("kl", "l1"):
        model = zoo.load("sparse_ae_tiny", penalty=penalty, penalty_weight=0.5)
        values = {k: float(v) for k, v in model.step_losses(digits[:8], training=False).items()}
        assert values["penalty"] > 0
        assert values["loss"] == pytest.approx(
            values["reconstruction"] + 0.5 * values["penalty"], rel=1e-5
        )
    codes = np.asarray(zoo.load("sparse_ae_tiny", penalty="l1").encode(digits[:8]))
    l1 = zoo.load("sparse_ae_tiny", penalty="l1").regularization(digits[:8], codes, False)
    assert float(l1) == pytest.approx(np.abs(codes).sum(axis=1).mean(), rel=1e-5)


@pytest.mark.parametrize(
    ("kind", "level"), [("gaussian", 0.3), ("masking", 0.25), ("salt_and_pepper", 0.2)]
)
def test_corruptions_have_their_statistics(kind, level):
    images = np.full((64, 28, 28, 1), 0.5, "float32")
    noisy = np.asarray(corrupt(images, kind, level, keras.random.SeedGenerator(0)))
    changed = noisy != 0.5
    if kind == "gaussian":
        assert noisy.min() >= 0.0 and noisy.max() <= 1.0
        assert np.std(noisy - 0.5) == pytest.approx(level, rel=0.1)  # clipping trims a little
    elif kind == "masking":
        assert set(np.unique(noisy)) == {0.0, 0.5}
        assert changed.mean() == pytest.approx(level, abs=0.01)
    else:
        assert set(np.unique(noisy)) == {0.0, 0.5, 1.0}
        assert changed.mean() == pytest.approx(level, abs=0.01)
        assert (noisy == 1.0).mean() == pytest.approx(level / 2, abs=0.01)


def test_corruption_applies_in_training_only(digits):
    model = zoo.load("denoising_ae_tiny", corruption="masking", noise_level=0.5)
    clean = {k: float(v) for k, v in model.step_losses(digits[:8], training=False).items()}
    again = {k: float(v) for k, v in model.step_losses(digits[:8], training=False).items()}
    assert clean == again  # evaluation is deterministic: no corruption
    noisy = float(model.step_losses(digits[:8], training=True)["reconstruction"])
    assert noisy != clean["reconstruction"]
    np.testing.assert_array_equal(model.denoise(digits[:4]), model.reconstruct(digits[:4]))


def test_overcomplete_requires_a_regulariser_and_undercomplete_a_bottleneck():
    with pytest.raises(ValueError, match=r"can copy its input.*regularizer= one of sparse_l1"):
        zoo.load("overcomplete_ae")
    assert zoo.load("overcomplete_ae", regularizer="denoising").corruption == "masking"
    assert zoo.load("overcomplete_ae", regularizer="contractive").penalty == "contractive"
    with pytest.raises(ValueError, match="latent_dim > input size"):
        zoo.load("overcomplete_ae", regularizer="sparse_kl", latent_dim=100)
    with pytest.raises(ValueError, match="latent_dim < input size"):
        zoo.load("dense_ae", latent_dim=1000)


def test_l1_score_is_the_mean_absolute_error(digits):
    model = zoo.load("dense_ae_tiny", score="l1")
    expected = np.mean(
        np.abs(digits[:4] - np.asarray(model.reconstruct(digits[:4]))), axis=(1, 2, 3)
    )
    np.testing.assert_allclose(model.anomaly_score(digits[:4]), expected, rtol=1e-5)


def test_sequence_scores_ignore_padding():
    model = zoo.load("recurrent_ae_tiny")
    steps, features = model.sequence_shape
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, steps, features)).astype("float32")
    lengths = np.array([steps, 20, 9])
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0  # padding = mask_value in every feature
    step_scores = np.asarray(model.step_scores(x))
    recon = np.asarray(model.reconstruct(x))
    for i, n in enumerate(lengths):
        expected = np.mean((x[i, :n] - recon[i, :n]) ** 2, axis=-1)
        np.testing.assert_allclose(step_scores[i, :n], expected, rtol=1e-5)
        assert np.all(step_scores[i, n:] == 0)
        assert float(model.anomaly_score(x)[i]) == pytest.approx(expected.mean(), rel=1e-5)
    values = model.step_losses(x, training=False)
    manual = np.mean([np.sum((x[i, :n] - recon[i, :n]) ** 2) for i, n in enumerate(lengths)])
    assert float(values["reconstruction"]) == pytest.approx(manual, rel=1e-5)


def test_greedy_layerwise_pretraining_trains_each_depth(digits):
    from zoo.trainers.layerwise import greedy_layerwise_pretrain, layer_pairs

    model = zoo.load("stacked_ae_tiny")
    before = [np.array(enc.kernel) for enc, _ in layer_pairs(model)]
    data = tf.data.Dataset.from_tensor_slices(digits).batch(16)
    histories = greedy_layerwise_pretrain(model, data, epochs=8, verbose=0)
    assert sorted(histories) == [1, 2, 3]  # two hidden layers + the code layer
    for depth, history in histories.items():
        assert history["loss"][-1] < history["loss"][0], depth
    for (enc, _), old in zip(layer_pairs(model), before, strict=True):
        assert np.abs(np.array(enc.kernel) - old).max() > 0  # the model's own layers moved
    with pytest.raises(ValueError, match="needs a dense stacked autoencoder"):
        greedy_layerwise_pretrain(zoo.load("conv_ae_tiny"), data, epochs=1)


def test_stacked_recipe_runs_both_phases_and_logs_each(tiny_recipe, tmp_path):
    recipe = tiny_recipe("stacked_ae_tiny", epochs=1, extra="")
    text = recipe.read_text().replace("verbose = 0", "verbose = 0\npretrain_epochs = 2")
    recipe.write_text(text)
    run = train(recipe, logdir=tmp_path).run_dir
    pretrain = json.loads((run / "pretrain_history.json").read_text())
    assert sorted(pretrain) == ["1", "2", "3"] and all(
        len(h["loss"]) == 2 for h in pretrain.values()
    )
    for depth in (1, 2, 3):
        assert any((run / f"pretrain_layer_{depth}" / "train").iterdir())
    assert len(json.loads((run / "history.json").read_text())["loss"]) == 1


def test_one_class_training_keeps_only_the_chosen_digits(tiny_recipe, tmp_path):
    from zoo.recipes import load_recipe
    from zoo.recipes.runner import build_data

    recipe = load_recipe(tiny_recipe("conv_ae_tiny"), ["data.classes=[3]"])
    _, val_ds, count = build_data(recipe, (28, 28, 1))
    assert count == 400  # 500 threes, 80% in the bundled sample's train split
    assert sum(1 for _ in val_ds) == 100


def test_recurrent_recipe_trains_on_synthetic_series(tiny_recipe, tmp_path):
    recipe = tiny_recipe("recurrent_ae_tiny", epochs=2).read_text()
    recipe = recipe.replace("image_shape = [28, 28, 1]", "sequence_shape = [32, 3]")
    recipe = recipe.replace('source = "sample"', 'source = "synthetic_series"\nn_series = 64')
    path = tmp_path / "seq.toml"
    path.write_text(recipe)
    result = train(path, logdir=tmp_path / "runs")
    assert len(result.history["loss"]) == len(result.history["val_loss"]) == 2
    assert np.all(np.isfinite(result.history["loss"]))
    series = zoo.data.synthetic_series(n_series=4, length=32, n_features=3, seed=9).series
    assert np.asarray(result.model.step_scores(series)).shape == (4, 32)
    assert not (result.run_dir / "samples").exists()  # no image grids for sequences


# -- blurred-residual score -------------------------------------------------------------
def _blur_reference(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by direct 2-D correlation with zero padding (no shared code with
    zoo.losses): radius max(1, round(2 sigma)), normalised weights."""
    radius = max(1, round(2 * sigma))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    out = np.zeros_like(images, dtype=np.float64)
    for i, dy in enumerate(offsets):
        for j, dx in enumerate(offsets):
            out += weights[i, j] * padded[:, radius + dy : radius + dy + h,
                                          radius + dx : radius + dx + w]  # fmt: skip
    return out


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_blur_matches_direct_correlation(sigma):
    from zoo.losses import gaussian_blur

    images = np.random.default_rng(3).random((2, 9, 11, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(gaussian_blur(images, sigma)), _blur_reference(images, sigma), atol=1e-6
    )


def test_blurred_score_is_the_mean_squared_blurred_residual(digits):
    plain = zoo.load("conv_ae_tiny")
    blurred = zoo.load("conv_ae_tiny", score_blur=1.0)  # same seed: the same weights
    residual = digits[:6] - np.asarray(blurred.reconstruct(digits[:6]))
    want = (_blur_reference(residual, 1.0) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(blurred.anomaly_score(digits[:6])), want, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(plain.anomaly_score(digits[:6])), (residual**2).mean(axis=(1, 2, 3)), rtol=1e-5
    )
    assert blurred.get_config()["score_blur"] == 1.0


def test_blur_discounts_a_shifted_stroke_more_than_a_missing_one():
    from zoo.losses import gaussian_blur

    stroke = np.zeros((1, 28, 28, 1), "float32")
    stroke[0, 8:20, 12:14] = 1.0
    shifted = stroke - np.roll(stroke, 1, axis=2)  # residual of a stroke one pixel off
    missing = stroke  # residual of a stroke not reconstructed at all

    def kept(residual):  # share of the squared residual left after the blur
        return float((np.asarray(gaussian_blur(residual, 1.0)) ** 2).sum() / (residual**2).sum())

    assert kept(shifted) < 0.5 * kept(missing)


def test_blurred_score_rejects_bad_settings():
    with pytest.raises(ValueError, match="score_blur must be a sigma in pixels >= 0"):
        zoo.load("conv_ae_tiny", score_blur=-1.0)
    with pytest.raises(zoo.ConfigError, match="score_blur"):
        zoo.load("recurrent_ae_tiny", score_blur=1.0)


def _memae_reference(codes, memory, threshold, sharpness=1.0):
    """Gong et al. (2019), eqs. 3-7: softmax of cosine similarities, hard shrinkage,
    L1 re-normalisation."""
    unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    rows = memory / np.linalg.norm(memory, axis=1, keepdims=True)
    logits = sharpness * unit @ rows.T
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    w = np.maximum(w - threshold, 0) * w / (np.abs(w - threshold) + 1e-12)
    w /= w.sum(axis=1, keepdims=True)
    return w, w @ memory


def test_memory_addressing_follows_the_memae_equations():
    from zoo.layers import MemoryAddressing

    rng = np.random.default_rng(0)
    layer = MemoryAddressing(items=6, shrink_threshold=0.15, entropy_weight=0.0, sharpness=3.0)
    codes = rng.normal(size=(5, 4)).astype("float32")
    layer(codes)  # builds the memory
    memory = rng.normal(size=(6, 4)).astype("float32")
    layer.memory.assign(memory)
    want_w, want_out = _memae_reference(codes, memory, 0.15, sharpness=3.0)
    weights = np.asarray(layer.addressing(codes))
    np.testing.assert_allclose(weights, want_w, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(codes)), want_out, atol=1e-5)
    assert (weights == 0).any() and np.allclose(weights.sum(axis=1), 1.0, atol=1e-6)


def test_memory_entropy_loss_is_added_in_training_only():
    from zoo.layers import MemoryAddressing

    codes = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    layer = MemoryAddressing(items=5, shrink_threshold=0.0, entropy_weight=0.5, seed=0)
    layer(codes, training=False)
    assert not layer.losses
    layer(codes, training=True)
    w = np.asarray(layer.addressing(codes))
    want = 0.5 * np.mean(-(w * np.log(w + 1e-12)).sum(axis=1))
    np.testing.assert_allclose(float(layer.losses[0]), want, rtol=1e-5)
    with pytest.raises(ValueError, match="items must be >= 1"):
        MemoryAddressing(items=0)
    with pytest.raises(ValueError, match="sharpness must be > 0"):
        MemoryAddressing(sharpness=0.0)


def test_memory_addressing_is_scale_free_in_the_code():
    """Cosine addressing: a code and 1000 x that code read the same memory mix (a dot
    product would saturate the softmax on one row for large codes)."""
    from zoo.layers import MemoryAddressing

    layer = MemoryAddressing(items=8, seed=0)
    codes = np.random.default_rng(2).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(layer(1000.0 * codes)), np.asarray(layer(codes)), rtol=1e-4, atol=1e-6
    )


def test_memory_ae_decodes_only_what_its_memory_holds(digits):
    """With every memory row equal, every image is rebuilt from that one row: the
    reconstructions of different digits are identical; the memory entropy term is part
    of the training loss."""
    model = zoo.load("memory_ae_tiny")
    memory = model.decoder.get_layer("memory").memory
    memory.assign(np.broadcast_to(np.asarray(memory)[:1], memory.shape))
    rebuilt = np.asarray(model.reconstruct(digits[:4]))
    np.testing.assert_allclose(rebuilt, np.broadcast_to(rebuilt[:1], rebuilt.shape), atol=1e-6)
    model = zoo.load("memory_ae_tiny", entropy_weight=10.0)
    values = model.step_losses(digits[:8], training=True)
    assert float(values["loss"]) > float(values["reconstruction"]) + 1e-3


def test_convs_per_stage_adds_same_resolution_convolutions(digits):
    import keras

    plain = zoo.load("conv_ae_tiny")
    deeper = zoo.load("conv_ae_tiny", convs_per_stage=3)

    def convs(net):
        return [layer for layer in net.layers if type(layer) is keras.layers.Conv2D]

    # encoder: +2 per stage (two stages); decoder: +2 per stage, the output conv as before
    assert len(convs(deeper.encoder)) == len(convs(plain.encoder)) + 4
    assert len(convs(deeper.decoder)) == len(convs(plain.decoder)) + 4
    extra = [layer for layer in convs(deeper.encoder) if layer.strides == (1, 1)]
    assert all(layer.kernel_size == (3, 3) for layer in extra) and len(extra) == 4
    assert np.asarray(deeper.reconstruct(digits[:2])).shape == digits[:2].shape
    with pytest.raises(ValueError, match="convs_per_stage must be an integer >= 1"):
        zoo.load("conv_ae_tiny", convs_per_stage=0)


def test_top_fraction_score_averages_the_largest_errors(digits):
    model = zoo.load("conv_ae_tiny", score_blur=1.0, score_top_fraction=0.05)
    residual = digits[:6] - np.asarray(model.reconstruct(digits[:6]))
    squared = (_blur_reference(residual, 1.0) ** 2).reshape(6, -1)
    k = round(0.05 * squared.shape[1])
    want = np.sort(squared, axis=1)[:, -k:].mean(axis=1)
    np.testing.assert_allclose(np.asarray(model.anomaly_score(digits[:6])), want, rtol=1e-5)
    assert model.score_top_count == k == 39
    restored = type(model).from_config(model.get_config())
    assert restored.score_top_fraction == 0.05


def test_top_fraction_ranks_a_local_defect_above_diffuse_error_of_equal_energy():
    """Mean error cannot tell a missing stroke from faint noise everywhere with the same
    squared sum; the top-5% score ranks the stroke far higher."""
    model = zoo.load("conv_ae_tiny", score_top_fraction=0.05)
    model.decoder.get_layer("pixels").set_weights(
        [np.zeros_like(w) for w in model.decoder.get_layer("pixels").get_weights()]
    )  # sigmoid(0) = 0.5 everywhere: the residual is x - 0.5
    local = np.full((1, 28, 28, 1), 0.5, "float32")
    local[0, 6:22, 13:15] = 1.5  # a stroke: residual 1 on 32 pixels
    diffuse = np.full((1, 28, 28, 1), 0.5 + np.sqrt(32 / 784), "float32")
    plain = zoo.load("conv_ae_tiny")
    plain.set_weights(model.get_weights())
    both = np.concatenate([local, diffuse])
    np.testing.assert_allclose(*np.asarray(plain.anomaly_score(both)), rtol=1e-4)
    top = np.asarray(model.anomaly_score(both))
    assert top[0] > 10 * top[1]


def test_top_fraction_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"score_top_fraction must be in \(0, 1\]"):
        zoo.load("conv_ae_tiny", score_top_fraction=0.0)
    with pytest.raises(ValueError, match=r"score_top_fraction must be in \(0, 1\]"):
        zoo.load("recurrent_ae_tiny", score_top_fraction=1.5)


def test_sequence_top_fraction_score_averages_the_largest_valid_steps():
    model = zoo.load("recurrent_ae_tiny", score_top_fraction=0.25)
    steps, features = model.sequence_shape
    x = np.random.default_rng(0).normal(size=(3, steps, features)).astype("float32")
    lengths = np.array([steps, 21, 9])  # k = 8, 5 (5.25 rounds down), 2 (2.25)
    for i, n in enumerate(lengths):
        x[i, n:] = model.mask_value
    step_scores = np.asarray(model.step_scores(x))
    got = np.asarray(model.anomaly_score(x))
    np.testing.assert_allclose(
        got, zoo.data.per_sequence_scores(step_scores, lengths, top_fraction=0.25), rtol=1e-5
    )
    for i, (n, k) in enumerate(zip(lengths, [8, 5, 2], strict=True)):
        assert got[i] == pytest.approx(np.sort(step_scores[i, :n])[-k:].mean(), rel=1e-5)
    restored = type(model).from_config(model.get_config())
    assert restored.score_top_fraction == 0.25
    np.testing.assert_allclose(restored.anomaly_score(x), got, rtol=1e-6)


def test_sequence_top_fraction_ranks_a_spike_above_diffuse_error_of_equal_energy():
    """A two-step spike and small error on every step, with the same squared sum, tie
    under the mean step score; the top-10% score ranks the spike far higher."""
    model = zoo.load("recurrent_ae_tiny", score_top_fraction=0.1)
    values = model.decoder.get_layer("values")
    values.set_weights([np.zeros_like(w) for w in values.get_weights()])  # rebuilds 0
    steps, features = model.sequence_shape
    spike = np.full((1, steps, features), 0.1, "float32")
    spike[0, 10:12] = np.sqrt(0.01 + (steps * 0.25 - steps * 0.01) / 2)
    diffuse = np.full((1, steps, features), 0.5, "float32")
    both = np.concatenate([spike, diffuse])
    plain = zoo.load("recurrent_ae_tiny")
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(*np.asarray(plain.anomaly_score(both)), rtol=1e-4)
    top = np.asarray(model.anomaly_score(both))
    assert top[0] > 5 * top[1]
