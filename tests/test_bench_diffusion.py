"""bench/diffusion_quality.py at a tiny size: the Python-loop reference sampler gives the compiled
sampler's images, the trajectory ends on the sample, the budget callback scores at its marks and
stops, and the report's tables and verdict follow from the numbers."""

from __future__ import annotations

import argparse

import keras
import numpy as np
import pytest

import zoo
from bench import diffusion_quality as bench
from zoo.metrics import QualityMetrics


@pytest.fixture(scope="module")
def model():
    model = zoo.load("ddpm_tiny", image_shape=(8, 8, 1), seed=0)
    model.compile()
    rng = np.random.default_rng(0)  # the output layer starts at zero: perturb so eps != 0
    for w in model.ema_denoiser.weights:
        w.assign(w.numpy() + 0.05 * rng.standard_normal(w.shape).astype("float32"))
    return model


def test_python_loop_matches_compiled_sampler_and_trajectory_ends_on_sample(model):
    z = bench.noise(model, 3, seed=1)
    compiled = np.asarray(model.generate(z, steps=4))
    eager, trajectory = bench.python_loop_ddim(model, z, 4, record=True)
    predicted, _ = bench.python_loop_ddim(model, z, 4, predict=True)
    assert compiled.shape == (3, 8, 8, 1) and np.std(compiled) > 0.01
    np.testing.assert_allclose(eager, compiled, atol=1e-5)
    np.testing.assert_allclose(predicted, compiled, atol=1e-5)
    assert len(trajectory) == 4
    np.testing.assert_allclose(trajectory[0][0], np.asarray(model.to_images(z)), atol=1e-6)
    # the last step goes to t = -1 (alpha_bar = 1, eta = 0): x_{-1} is that step's x0-hat
    np.testing.assert_allclose(trajectory[-1][1], eager, atol=1e-5)
    grid = bench.trajectory_grid(model, 2, 4, 3, seed=1)
    assert grid.shape == (4 * 9 - 1, 4 * 9 - 1, 1)


class Regression(keras.Sequential):
    """A network with the trainers' ``optimizers`` mapping (role -> optimizer)."""

    @property
    def optimizers(self):
        return {"optimizer": self.optimizer}


def test_budget_scores_at_each_mark_and_stops():
    model = Regression([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    seen = []
    budget = bench.Budget([0.0, 0.0, 1e9], lambda m: seen.append(int(m.optimizer.iterations)))
    x = np.ones((32, 2), "float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=3, callbacks=[budget], verbose=0)
    # the first two marks are passed after the first step, the last never: 12 steps, 2 scores
    assert [p.steps for p in budget.points] == [1, 1] == seen
    assert int(model.optimizer.iterations) == 12
    budget = bench.Budget([0.0, 0.0], lambda m: seen.append(int(m.optimizer.iterations)))
    model.fit(x, x[:, :1], batch_size=8, epochs=3, callbacks=[budget], verbose=0)
    # every mark scored: fit stops after its first step
    assert [p.steps for p in budget.points] == [13, 13] and int(model.optimizer.iterations) == 13


def metrics(fid: float, n: int = 200) -> QualityMetrics:
    return QualityMetrics(
        fid=fid, kid=fid / 20, kid_std=0.01, inception_score=5.0, precision=0.5, recall=0.5,
        density=0.4, coverage=0.2, class_kl=0.1, class_histogram=np.full(10, 0.1), n=n,
    )  # fmt: skip


def test_report_tables_and_verdict_follow_the_numbers():
    ddpm = [bench.Point(60.0 * i, 10 * i, metrics(f)) for i, f in ((1, 90.0), (2, 30.0))]
    gan = [bench.Point(60.0 * i, 100 * i, metrics(f)) for i, f in ((1, 40.0), (2, 35.0))]
    assert "cross by 2.0 min" in bench.crossing(ddpm, gan)
    assert "do not cross" in bench.crossing(ddpm[:1], gan[:1])

    class Recipe:
        name, model = "ddpm_mnist", "ddpm"
        model_config = {"widths": [8]}
        data, training = {"batch_size": 64}, {"steps_per_execution": 32}

    class Model:
        optimizers = {"optimizer": keras.optimizers.Adam(1e-3)}

    rows = [("DDIM (η = 0)", s, metrics(30.0 + s / 10), 10.0) for s in bench.DDIM_STEPS]
    rows.append(("DDPM ancestral (σ² = β)", 1000, metrics(50.0, 20), 40.0))
    args = argparse.Namespace(
        minutes=2.0, n=200, ddpm_n=20, bpd_n=4, bpd_steps=3, repeats=3, seed=0
    )
    bound = {k: np.array([1.0, 2.0, 3.0]) for k in ("prior", "diffusion", "decoder", "total")}
    speed = {"compiled": 20.0, "eager": 5.0, "predict": 8.0, "n": 8, "steps": 4,
             "max_diff_eager": 1e-7, "max_diff_predict": 2e-7}  # fmt: skip
    body = bench.report_body(
        args,
        {
            "ddpm": (Recipe, Model, ddpm), "gan": (Recipe, Model, gan), "rows": rows,
            "floors": {20: metrics(1.0, 20), 200: metrics(0.5)}, "speed": speed, "bound": bound,
            "minutes": 9.0, "load": ((1, 2, 3), (2, 2, 2)), "floor_1000": metrics(0.4, 1000),
        },
    )  # fmt: skip
    assert "**met**" in body and "cross by 2.0 min" in body
    table = [line for line in body.splitlines() if line.startswith(("| DDIM", "| **real"))]
    assert len(table) == len(bench.DDIM_STEPS) + 2  # DDIM rows and the two floors
    assert "| DDPM ancestral (σ² = β) | 1000 | 50.00 |" in body
    # per image: DDPM-1000 40 s / 20 = 2000 ms against DDIM-50's 10 s / 200 = 50 ms
    assert "DDIM-50 50 ms, DDPM-1000 2000 ms: **40.0x**" in body
    assert "| Python loop, `network(...)` eager | 5.0 | **4.00** |" in body
    assert "| 2.000 ± 0.577 |" in body
