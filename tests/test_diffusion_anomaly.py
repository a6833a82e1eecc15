"""The AnoDDPM-style diffusion anomaly score (zoo.diffusion.anomaly): closed forms with an oracle
denoiser, determinism, the t* chooser, and the model's score through its export signatures."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.diffusion import NoiseSchedule, ddim_timesteps, eps_from_x0
from zoo.diffusion.anomaly import (
    anomaly_timesteps,
    choose_t_star,
    default_t_star,
    diffusion_anomaly_score,
    fixed_noise,
    reconstruct_from_t_star,
    t_star_candidates,
)

T = 200
SHAPE = (6, 6, 1)


def one_point_oracle(schedule: NoiseSchedule, image: np.ndarray):
    """The exact ε of a data distribution holding the single image ``image`` (in [0, 1]):
    ε* = (x_t - √ᾱ_t x*) / √(1 - ᾱ_t), x* = 2 · image - 1."""
    x_star = tf.constant(2.0 * image[None] - 1.0, tf.float32)

    def eps_fn(x_t, t):
        return eps_from_x0(x_t, x_star, schedule.alpha_bar_at(t, x_t))

    return eps_fn


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule("linear", num_steps=T)


@pytest.fixture(scope="module")
def x_star() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.1, 0.9, SHAPE).astype(np.float32)


def test_timesteps_run_from_t_star_to_clean_data():
    timesteps, targets = anomaly_timesteps(T, 49, 10)
    assert timesteps[0] == 49 and timesteps[-1] == 0 and targets[-1] == -1
    assert len(timesteps) == 10 and np.all(np.diff(timesteps) < 0)
    np.testing.assert_array_equal(targets[:-1], timesteps[1:])
    # t* = T - 1 is the sampler's own sub-sequence
    for got, want in zip(anomaly_timesteps(T, T - 1, 20), ddim_timesteps(T, 20), strict=True):
        np.testing.assert_array_equal(got, want)
    assert default_t_star(1000) == 499 and default_t_star(T) == 99
    assert t_star_candidates(1000) == [49, 99, 149, 249, 349, 499, 649, 799]
    with pytest.raises(ValueError, match=r"t\* = 200 must be a step index in 0..199"):
        anomaly_timesteps(T, T, 10)
    with pytest.raises(ValueError, match=r"12 DDIM steps cannot run from t\* = 10"):
        anomaly_timesteps(T, 10, 12)


def test_fixed_noise_is_a_pure_function_of_shape_and_seed():
    a, b = fixed_noise(SHAPE, (0, 1)), fixed_noise(SHAPE, (0, 1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, *SHAPE) and a.dtype == np.float32
    assert not np.allclose(a[0], a[1])
    big = fixed_noise((64, 64, 3), (3,))
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1.0) < 0.02


def test_oracle_reconstructs_the_data_point_and_scores_distance_from_it(schedule, x_star):
    eps_fn = one_point_oracle(schedule, x_star)
    rng = np.random.default_rng(1)
    far = rng.uniform(0.0, 1.0, (3, *SHAPE)).astype(np.float32)
    images = np.concatenate([x_star[None], far])
    # Whatever the input, the oracle's DDIM lands on x*: x̂_0 is exact at every step.
    noise = fixed_noise(SHAPE, (0,))[0]
    rebuilt = reconstruct_from_t_star(schedule, eps_fn, 2.0 * images - 1.0, noise, 49, 10)
    np.testing.assert_allclose(rebuilt.numpy(), np.broadcast_to(2 * x_star - 1, images.shape),
                               atol=1e-4)  # fmt: skip
    scores = diffusion_anomaly_score(schedule, eps_fn, images, t_star=49, steps=10, seeds=(0, 1))
    assert scores.shape == (4,) and scores.dtype == tf.float32
    assert float(scores[0]) < 1e-8  # x* itself: score ≈ 0
    # Closed form: the mean squared distance to x*, in [0, 1] units.
    want = ((far - x_star) ** 2).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(scores.numpy()[1:], want, rtol=1e-4)
    assert np.all(scores.numpy()[1:] > 100 * float(scores[0]) + 1e-3)


def test_score_is_deterministic_eager_and_compiled_and_batch_independent(schedule, x_star):
    """A non-trivial denoiser (ε of Gaussian data around x*): the reconstruction depends on the
    noise, so this checks the noise is fixed, not drawn."""
    centre = tf.constant(2.0 * x_star[None] - 1.0, tf.float32)

    def eps_fn(x_t, t):  # exact ε for x_0 ~ N(x*, 0.3²)
        ab = schedule.alpha_bar_at(t, x_t)
        var = ab * 0.09 + (1.0 - ab)
        return tf.sqrt(1.0 - ab) * (x_t - tf.sqrt(ab) * centre) / var

    images = np.random.default_rng(2).uniform(0, 1, (5, *SHAPE)).astype(np.float32)

    def score(x):
        return diffusion_anomaly_score(schedule, eps_fn, x, t_star=99, steps=8, seeds=(0, 1, 2))

    eager = score(images).numpy()
    compiled = tf.function(score, input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)])
    np.testing.assert_allclose(compiled(images).numpy(), eager, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(score(images).numpy(), eager)
    one_by_one = np.concatenate([compiled(images[i : i + 1]).numpy() for i in range(5)])
    np.testing.assert_allclose(one_by_one, eager, rtol=1e-5, atol=1e-7)
    # another seed set gives another (fixed) draw, so other scores
    other = diffusion_anomaly_score(schedule, eps_fn, images, t_star=99, steps=8, seeds=(5,))
    assert not np.allclose(other.numpy(), eager)


def test_choose_t_star_picks_the_separating_candidate():
    normal = np.random.default_rng(3).uniform(0.0, 0.2, (40, 28, 28, 1)).astype(np.float32)
    calls = []

    def score_at(images, t):
        calls.append(t)
        centre = images[:, 8:20, 8:20].reshape(len(images), -1).mean(axis=1)
        if t == 49:  # only this t* sees the inverted centre patch of corrupt_images
            return centre
        return np.random.default_rng(t).uniform(size=len(images))  # chance elsewhere

    choice = choose_t_star(score_at, normal, candidates=[99, 49, 149, 49], seed=0)
    assert choice.t_star == 49 and choice.aurocs[49] == 1.0
    assert set(choice.aurocs) == {49, 99, 149} and max(choice.aurocs[99], choice.aurocs[149]) < 0.8
    assert "corrupt_images" in choice.anomalies and sorted(set(calls)) == [49, 99, 149]
    # Given anomalies instead; a tie goes to the smaller t*.
    bright = np.full((10, 28, 28, 1), 0.9, np.float32)
    tied = choose_t_star(lambda x, t: x.mean(axis=(1, 2, 3)), normal, candidates=[149, 99],
                         anomalous=bright)  # fmt: skip
    assert tied.t_star == 99 and tied.aurocs == {99: 1.0, 149: 1.0}
    assert tied.to_dict()["t_star"] == 99
    with pytest.raises(ValueError, match="candidate"):
        choose_t_star(score_at, normal, candidates=[])


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """64 bundled test digits, block-averaged to 7x7 (a small model exports fast)."""
    from zoo.data import load_sample

    images, _ = load_sample("test")
    small = images[:64].reshape(64, 7, 4, 7, 4).mean(axis=(2, 4)) / 255.0
    return small.astype("float32")[..., None]


def test_model_score_and_its_score_signatures(digits):
    """ddpm_tiny (on 7x7 images, weights perturbed so ε ≠ 0) scores like zoo.diffusion.anomaly
    on its own sampling denoiser, and the ``score`` / ``score_with_threshold`` signatures its
    declaration gives the exporter (given a calibrated threshold) return the model's scores.
    (The exporter's own parity check then holds them to Keras in SavedModel, TF1 and ONNX: a
    full ``export_model`` of ddpm_tiny with calibration passed it for all four backends, but
    takes 40-160 s, beyond this file's budget.)"""
    import keras

    import zoo
    from zoo.diffusion.anomaly import default_t_star
    from zoo.tasks import AnomalyScorer, Images, declaration_of

    model = zoo.load("ddpm_tiny", image_shape=(7, 7, 1), sample_steps=1)
    rng = np.random.default_rng(0)
    for network in {id(n): n for n in (model.denoiser, model.sampling_denoiser)}.values():
        network.set_weights(
            [w + 0.05 * rng.standard_normal(w.shape) for w in network.get_weights()]
        )
    declaration = declaration_of(model)
    assert declaration.implements(AnomalyScorer) and "anomaly" in declaration.evaluations
    assert declaration.examples == Images((7, 7, 1))  # what zoo evaluate / export calibrate on
    assert model.anomaly_t_star == default_t_star(100) == 49 and model.anomaly_steps == 10
    model.anomaly_steps, model.anomaly_seeds = 4, 2  # read at each call
    again = type(model).from_config(model.get_config())
    assert (again.anomaly_t_star, again.anomaly_steps, again.anomaly_seeds) == (49, 4, 2)

    scores = model.anomaly_score(digits[:8]).numpy()
    direct = diffusion_anomaly_score(
        model.schedule, model.eps_fn(None, 1.0), digits[:8], t_star=49, steps=4, seeds=(0, 1)
    )
    np.testing.assert_allclose(scores, direct.numpy(), rtol=1e-5)
    assert scores.shape == (8,) and np.all(scores > 0) and np.ptp(scores) > 0
    with pytest.raises(ValueError, match="unconditional"):
        model.anomaly_score(digits[:2], labels=np.zeros(2))

    threshold = float(np.median(scores))
    signatures = declaration.signatures(threshold, (float(scores.mean()), float(scores.std())))
    assert {"generate", "denoise", "score", "score_with_threshold"} <= set(signatures.signatures)
    assert signatures.signatures["score"].onnx  # no random op: the fixed noise is a constant
    assert "t* = 49 of 100" in declaration.score_definition()
    out = signatures.signatures["score"].function(tf.constant(digits[:8]))
    np.testing.assert_allclose(out["anomaly_score"].numpy(), scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out["is_anomaly"].numpy(), scores > threshold)
    # without a threshold (not an export) the declaration gives no score signatures
    assert "score" not in declaration.signatures().signatures
    keras.backend.clear_session()


def test_one_class_bench_scores_a_diffusion_model_with_the_zoos_code(digits):
    """bench.one_class_mnist's ``t:<t*>`` scores are the model's own ``anomaly_score`` at that
    t* (what the exported ``score`` computes), and the model's t* is restored after."""
    import zoo
    from bench import one_class_mnist, one_class_scores
    from zoo.calibration import anomaly_scores

    assert one_class_mnist.model_configs()["ddpm"]["scoring"].startswith("t:")
    model = zoo.load("ddpm_tiny", image_shape=(7, 7, 1))
    model.anomaly_steps = 3
    names = one_class_scores.candidate_names(model)
    assert names == ["model", "t:14", "t:34", "t:49", "t:64", "t:79"]
    scores = one_class_scores.member_scores(model, digits[:8], digits[8:16], ["t:49"])
    assert model.anomaly_t_star == 49  # restored
    model.anomaly_t_star = 49
    np.testing.assert_array_equal(scores["t:49"][0], anomaly_scores(model, digits[:8]))
    np.testing.assert_array_equal(scores["t:49"][1], anomaly_scores(model, digits[8:16]))
