"""DDPM with DDIM sampling against the best GAN at the same wall-clock budget (issue 17).

On the bundled MNIST sample, ``ddpm`` is trained with the settings of ``recipes/ddpm_mnist.toml``
and ``cgan`` (the best GAN of ``bench/reports/gan_quality.md``) with those of
``recipes/cgan_mnist.toml`` (model, optimizers, batch size, speed keys, all through
:func:`bench.common.recipe_training`); only the stopping rule differs: a wall-clock budget. The
DDPM trains first for ``--minutes``; the GAN then trains for the DDPM's measured training time
and is scored at the DDPM's measured checkpoint times, so both curves share their time axis.
Evaluation time is excluded from the training clock. Scores: ``zoo.metrics``
(:class:`SampleQualityEvaluator`, the bundled classifier's features) against the training
digits, beside the real-vs-real floor at the same n. The DDPM is scored by DDIM-50 (η = 0) on
its weight average (Song et al. 2021; Ho et al. 2020 sample with EMA weights too).

After training: the DDPM's quality by sampler in the form of Song et al.'s Table 3 (DDIM at 10,
20, 50, 100 steps; DDPM ancestral at all 1000), the compiled sampler (``model.generate``: one
``tf.function`` around a ``fori_loop``) against a keras-io-style Python loop over the same DDIM
steps (one network call per step, eager), the bits/dim bound on the test split
(``DiffusionModel.variational_bound``), and sample / denoising-trajectory grids.

    python -m bench.diffusion_quality [--minutes 6] [--points 4] [--n 200] [--ddpm-n 20]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from keras import ops

from bench.common import REPORTS, interleaved, median, recipe_training, timed, write_report
from zoo.data import batch as batch_data
from zoo.data import image_grid, load_sample, save_png
from zoo.diffusion import ddim_timesteps
from zoo.diffusion.schedules import x0_from_eps
from zoo.metrics import QualityMetrics, SampleQualityEvaluator, generate_samples

GRIDS = REPORTS / "diffusion"
DDPM_RECIPE, GAN_RECIPE = "ddpm_mnist", "cgan_mnist"
DDIM_STEPS = (10, 20, 50, 100)


# --------------------------------------------------------------------------- training


@dataclass
class Point:
    """One evaluation during training: seconds of training so far, steps, scores."""

    seconds: float
    steps: int
    metrics: QualityMetrics


def first_optimizer(model: Any) -> keras.optimizers.Optimizer:
    """The optimizer of the first role (the generator's for a GAN): its iterations count steps."""
    return next(iter(model.optimizers.values()))


class Budget(keras.callbacks.Callback):
    """Stops ``fit`` after ``marks[-1]`` seconds of training and calls ``evaluate(model)``
    when the training clock first passes each of ``marks`` (checked after every execution
    of ``steps_per_execution`` steps). Time spent in ``evaluate`` is off the clock."""

    def __init__(self, marks: list[float], evaluate: Callable[[keras.Model], QualityMetrics]):
        super().__init__()
        self.marks, self.evaluate = list(marks), evaluate
        self.points: list[Point] = []

    def on_train_begin(self, logs: Any = None) -> None:
        self.start, self.paused = time.perf_counter(), 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        seconds = self.elapsed
        while len(self.points) < len(self.marks) and seconds >= self.marks[len(self.points)]:
            begin = time.perf_counter()
            steps = int(first_optimizer(self.model).iterations.numpy())
            self.points.append(Point(seconds, steps, self.evaluate(self.model)))
            self.paused += time.perf_counter() - begin
        if len(self.points) == len(self.marks):
            self.model.stop_training = True


def train_for(recipe_name: str, marks: list[float], evaluate: Callable, seed: int) -> tuple:
    """Train the recipe's model until the last of ``marks`` (seconds of training), scoring it
    at each mark. Returns (model, recipe, points)."""
    keras.utils.set_random_seed(seed)
    recipe, model, train, steps = recipe_training(recipe_name)
    # one epoch, reshuffled (seeded) on every pass; the budget stops the repetition
    data = batch_data(train, recipe.data["batch_size"], seed=recipe.seed).repeat()
    epochs = 1_000_000
    budget = Budget(marks, evaluate)
    model.fit(data, epochs=epochs, steps_per_epoch=steps, callbacks=[budget], verbose=0)
    return model, recipe, budget.points


def progress(model: Any, metrics: QualityMetrics) -> QualityMetrics:
    steps = int(first_optimizer(model).iterations.numpy())
    print(f"  {model.name} step {steps}: FID {metrics.fid:.2f} KID {metrics.kid:.3f}", flush=True)
    return metrics


# --------------------------------------------------------------------------- sampling


def noise(model: Any, n: int, seed: int) -> np.ndarray:
    """x_T for ``n`` samples, as :func:`zoo.metrics.generate_samples` draws it."""
    return np.random.default_rng(seed).standard_normal((n, *model.image_shape)).astype("float32")


@contextmanager
def sample_steps(model: Any, steps: int):
    """``model.generate`` (and so ``generate_samples``) with DDIM-``steps`` for a while."""
    before, model.sample_steps = model.sample_steps, int(steps)
    try:
        yield
    finally:
        model.sample_steps = before


def ddim_samples(model: Any, n: int, steps: int, seed: int) -> tuple[np.ndarray, float]:
    """``n`` DDIM-``steps`` images (η = 0) and the seconds they took (after one traced call)."""
    with sample_steps(model, steps):
        for size in (1, 2):  # trace outside the timing (the second trace is shape-relaxed)
            generate_samples(model, size, seed=seed)
        begin = time.perf_counter()
        images = generate_samples(model, n, seed=seed)
    return images, time.perf_counter() - begin


def ddpm_samples(model: Any, n: int, seed: int, batch: int = 250) -> tuple[np.ndarray, float]:
    """``n`` ancestral DDPM images (all T steps), same x_T as :func:`ddim_samples`."""
    z = noise(model, n, seed)
    for size in (1, 2):  # trace outside the timing (the second trace is shape-relaxed)
        model.ddpm_generate(z[:size], seed=seed)
    begin = time.perf_counter()
    out = [np.asarray(model.ddpm_generate(z[i : i + batch], seed=seed)) for i in range(0, n, batch)]
    return np.concatenate(out), time.perf_counter() - begin


class EagerCall:
    """The network called eagerly, once per step, as the keras-io DDIM example does
    (``network([x, t], training=False)``); ``predict=True`` uses ``predict_on_batch``."""

    def __init__(self, network: keras.Model, predict: bool = False):
        self.network, self.predict = network, predict

    def __call__(self, inputs: list, training: bool = False) -> Any:
        if self.predict:
            return self.network.predict_on_batch(inputs)
        return self.network(inputs, training=False)


def python_loop_ddim(
    model: Any, z: np.ndarray, steps: int, predict: bool = False, record: bool = False
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """DDIM (η = 0) as a Python for-loop of eager steps around one network call each: the same
    maths as ``model.generate(z, steps=steps)`` (``model.eps_fn``'s clipping,
    ``NoiseSchedule.ddim_step``). With ``record``, each step's (x_t, x̂_0) as images in [0, 1]."""
    eps_fn = model.eps_fn(network=EagerCall(model.sampling_denoiser, predict))
    timesteps, targets = ddim_timesteps(model.schedule.num_steps, steps)
    x, n, trajectory = ops.convert_to_tensor(z), len(z), []
    for t, t_prev in zip(timesteps, targets, strict=True):
        t_now, t_next = ops.full((n,), t, "int32"), ops.full((n,), t_prev, "int32")
        eps = eps_fn(x, t_now)
        if record:
            x0 = x0_from_eps(x, eps, model.schedule.alpha_bar_at(t_now, x))
            trajectory.append((np.asarray(model.to_images(x)), np.asarray(model.to_images(x0))))
        x = model.schedule.ddim_step(x, eps, t_now, t_next, eta=0.0)
    return np.asarray(model.to_images(x)), trajectory


def sampler_speed(model: Any, n: int, steps: int, repeats: int, seed: int) -> dict[str, Any]:
    """Images/s of the compiled sampler and the Python loops on the same x_T and step count
    (median of ``repeats`` interleaved runs), and their largest pixel difference."""
    z = noise(model, n, seed)
    compiled = np.asarray(model.generate(z, steps=steps))  # traces
    eager, _ = python_loop_ddim(model, z, steps)
    predicted, _ = python_loop_ddim(model, z, steps, predict=True)
    runs = {
        "compiled": lambda: n / timed(lambda: np.asarray(model.generate(z, steps=steps))),
        "eager": lambda: n / timed(lambda: python_loop_ddim(model, z, steps)),
        "predict": lambda: n / timed(lambda: python_loop_ddim(model, z, steps, predict=True)),
    }
    speed = {name: median(values) for name, values in interleaved(runs, repeats).items()}
    return {
        **speed,
        "n": n,
        "steps": steps,
        "max_diff_eager": float(np.max(np.abs(compiled - eager))),
        "max_diff_predict": float(np.max(np.abs(compiled - predicted))),
    }


def trajectory_grid(model: Any, count: int, steps: int, shown: int, seed: int) -> np.ndarray:
    """Rows in pairs per image: x_t, then the predicted x̂_0, at ``shown`` evenly spaced steps of
    one DDIM-``steps`` run, and the final image in the last column."""
    final, trajectory = python_loop_ddim(model, noise(model, count, seed), steps, record=True)
    picks = np.linspace(0, steps - 1, shown).round().astype(int)
    tiles = []
    for i in range(count):
        for kind in (0, 1):
            tiles.extend(trajectory[j][kind][i] for j in picks)
            tiles.append(final[i])
    return image_grid(np.stack(tiles), ncols=shown + 1)


# --------------------------------------------------------------------------- report


def cells(m: QualityMetrics) -> str:
    return (
        f"{m.fid:.2f} | {m.kid:.3f} | {m.precision:.3f} | {m.recall:.3f} | {m.class_kl:.3f} | {m.n}"
    )


QUALITY_HEAD = [
    "| sampler | steps | FID ↓ | KID ↓ | precision ↑ | recall ↑ | class KL ↓ | n | images/s |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def crossing(ddpm: list[Point], gan: list[Point]) -> str:
    """Where DDIM-50's FID first reaches the GAN's at the same checkpoint, in words."""
    for d, g in zip(ddpm, gan, strict=True):
        if d.metrics.fid <= g.metrics.fid:
            return (
                f"the curves cross by {d.seconds / 60:.1f} min (DDIM-50 FID {d.metrics.fid:.1f} "
                f"<= `cgan` {g.metrics.fid:.1f})"
            )
    gap = ddpm[-1].metrics.fid - gan[-1].metrics.fid
    return (
        f"the curves do not cross within the budget: at its end DDIM-50 FID is "
        f"{ddpm[-1].metrics.fid:.1f}, {gap:.1f} above `cgan`'s {gan[-1].metrics.fid:.1f}"
    )


def describe_recipe(recipe: Any, model: Any) -> str:
    opt = first_optimizer(model)
    rate = float(ops.convert_to_tensor(opt.learning_rate))
    config = ", ".join(f"{k}={v}" for k, v in recipe.model_config.items() if k != "image_shape")
    return (
        f"`{recipe.name}` (model `{recipe.model}`: {config}; {type(opt).__name__} {rate:g}, "
        f"batch {recipe.data['batch_size']}, steps_per_execution "
        f"{recipe.training['steps_per_execution']})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per model")
    parser.add_argument("--points", type=int, default=4, help="evaluations over the budget")
    parser.add_argument("--n", type=int, default=200, help="samples per DDIM row and checkpoint")
    parser.add_argument("--ddpm-n", type=int, default=20, help="samples of DDPM-1000")
    parser.add_argument("--bpd-n", type=int, default=100, help="test digits of the bound")
    parser.add_argument("--bpd-steps", type=int, default=20, help="strata of the bound's sum")
    parser.add_argument("--speed-n", type=int, default=64, help="batch of the speed runs")
    parser.add_argument("--speed-steps", type=int, default=10, help="DDIM steps of the speed runs")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true", help="print only (smoke runs)")
    args = parser.parse_args(argv)
    wall, load_before = time.perf_counter(), os.getloadavg()
    train_x, _ = load_sample("train")
    test_x, _ = load_sample("test")
    evaluator = SampleQualityEvaluator(train_x, test_x, seed=args.seed)

    # the test split is ordered by class: subsets are drawn at random (seeded)
    order = np.random.default_rng(args.seed).permutation(len(test_x))

    def floor(n: int) -> QualityMetrics:
        return evaluator.metrics(*evaluator.extractor.embed(test_x[order[:n]]))

    ddim50: dict[str, Any] = {}

    def score_ddpm(model: Any) -> QualityMetrics:
        images, seconds = ddim_samples(model, args.n, 50, args.seed)
        ddim50.update(images=images, seconds=seconds, steps=int(model.optimizer.iterations))
        return progress(model, evaluator.evaluate(images).generated)

    def score_gan(model: Any) -> QualityMetrics:
        samples = generate_samples(model, args.n, seed=args.seed)
        return progress(model, evaluator.evaluate(samples).generated)

    budget = args.minutes * 60
    marks = [budget * (i + 1) / args.points for i in range(args.points)]
    print(f"training {DDPM_RECIPE} for {args.minutes} min", flush=True)
    ddpm, ddpm_recipe, ddpm_points = train_for(DDPM_RECIPE, marks, score_ddpm, args.seed)
    print(f"training {GAN_RECIPE} at the DDPM's checkpoint times", flush=True)
    gan, gan_recipe, gan_points = train_for(
        GAN_RECIPE, [p.seconds for p in ddpm_points], score_gan, args.seed
    )

    # Table 3 of Song et al. (2021): quality by sampler and steps, the same weights throughout
    assert ddim50["steps"] == int(ddpm.optimizer.iterations), "DDIM-50 samples are stale"
    rows, samples = [], {}
    for steps in DDIM_STEPS:
        images, seconds = ddim_samples(ddpm, args.n, steps, args.seed)  # timed at one load
        if steps == 50:  # the last checkpoint's samples again: deterministic (eta = 0)
            assert np.allclose(images, ddim50["images"], atol=1e-5), "DDIM-50 is not reproducible"
        samples[steps] = images
        rows.append(("DDIM (η = 0)", steps, evaluator.evaluate(images).generated, seconds))
        print(f"  DDIM-{steps}: FID {rows[-1][2].fid:.2f} ({seconds:.0f}s)", flush=True)
    images, seconds = ddpm_samples(ddpm, args.ddpm_n, args.seed)
    samples[1000] = images
    rows.append(("DDPM ancestral (σ² = β)", 1000, evaluator.evaluate(images).generated, seconds))
    print(f"  DDPM-1000: FID {rows[-1][2].fid:.2f} ({seconds:.0f}s)", flush=True)
    floors = {n: floor(n) for n in sorted({args.n, args.ddpm_n})}

    speed = sampler_speed(ddpm, args.speed_n, args.speed_steps, args.repeats, args.seed)
    print(f"  speed: {speed}", flush=True)
    bound = ddpm.variational_bound(
        test_x[order[: args.bpd_n]].astype("float32") / 255.0,
        num_timesteps=args.bpd_steps,
        seed=args.seed,
    )
    print(f"  bits/dim: {float(np.mean(bound['total'])):.3f}", flush=True)
    trajectory = trajectory_grid(ddpm, 4, 50, 6, args.seed)
    if not args.no_report:
        save_png(image_grid(samples[50][:100], ncols=10), GRIDS / "ddim50_samples.png")
        save_png(trajectory, GRIDS / "ddim50_trajectory.png")
    body = report_body(
        args,
        {
            "ddpm": (ddpm_recipe, ddpm, ddpm_points),
            "gan": (gan_recipe, gan, gan_points),
            "rows": rows,
            "floors": floors,
            "speed": speed,
            "bound": bound,
            "minutes": (time.perf_counter() - wall) / 60,
            "load": (load_before, os.getloadavg()),
            "floor_1000": evaluator.floor,
        },
    )
    print(body)
    if not args.no_report:
        command = "python -m bench.diffusion_quality" + (f" {' '.join(argv)}" if argv else "")
        path = write_report("diffusion", "DDPM + DDIM against the best GAN", body, command)
        print(f"\nreport: {path}")


def mean_se(values: np.ndarray) -> str:
    values = np.asarray(values, np.float64)
    return f"{values.mean():.3f} ± {values.std(ddof=1) / np.sqrt(len(values)):.3f}"


def report_body(args: argparse.Namespace, r: dict[str, Any]) -> str:
    ddpm_recipe, ddpm, ddpm_points = r["ddpm"]
    gan_recipe, gan, gan_points = r["gan"]
    rows, floors, speed, bound = r["rows"], r["floors"], r["speed"], r["bound"]
    curve = [
        "| checkpoint | `ddpm` min | `ddpm` steps | DDIM-50 FID | DDIM-50 KID | `cgan` min | "
        "`cgan` steps | `cgan` FID | `cgan` KID |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {i + 1} | {d.seconds / 60:.2f} | {d.steps} | {d.metrics.fid:.2f} | "
            f"{d.metrics.kid:.3f} | {g.seconds / 60:.2f} | {g.steps} | {g.metrics.fid:.2f} | "
            f"{g.metrics.kid:.3f} |"
            for i, (d, g) in enumerate(zip(ddpm_points, gan_points, strict=True))
        ),
    ]
    table = [
        *QUALITY_HEAD,
        *(
            f"| {kind} | {steps} | {cells(m)} | {m.n / seconds:.1f} |"
            for kind, steps, m, seconds in rows
        ),
        *(f"| **real vs real (floor)** | - | {cells(f)} | - |" for f in floors.values()),
    ]
    per_image = {steps: seconds / m.n for _, steps, m, seconds in rows}
    final_d, final_g = ddpm_points[-1].metrics, gan_points[-1].metrics
    met = final_d.fid <= final_g.fid
    terms = " | ".join(mean_se(bound[k]) for k in ("prior", "diffusion", "decoder", "total"))
    load_before, load_after = r["load"]
    return "\n".join(
        [
            "## Setup",
            "",
            f"- DDPM: {describe_recipe(ddpm_recipe, ddpm)}.",
            f"- GAN: {describe_recipe(gan_recipe, gan)}; `cgan` is the best GAN of "
            "`bench/reports/gan_quality.md` (FID 20.2 after 1500 steps, n = 1000).",
            f"- Budget: {args.minutes:g} min of training for the DDPM (checked after each "
            "execution of `steps_per_execution` steps, so it overshoots by up to one), then the "
            "GAN for the DDPM's measured training time, scored at the DDPM's measured checkpoint "
            "times. Evaluation time is off the clock; tracing is on it for both.",
            f"- Scores: n = {args.n} samples (seed {args.seed}; `cgan` labels i mod 10) in the "
            "bundled classifier's features against the 4000 training digits; the floor is "
            "n random test digits against the same reference (FID is biased upwards at small n, "
            f"so compare rows at equal n; the n = 1000 floor is FID {r['floor_1000'].fid:.2f}). "
            "KID in the units of `bench/reports/gan_quality.md`; it is unbiased at any n.",
            "",
            "## FID against training time (same checkpoints for both)",
            "",
            *curve,
            "",
            f"Target (DDIM-50 FID at or below the best GAN's at the same budget): **{'met' if met else 'not met'}**"  # noqa: E501
            f" at this budget; {crossing(ddpm_points, gan_points)}.",
            "",
            "## DDPM quality by sampler (the form of Song et al. 2021, Table 3)",
            "",
            f"EMA weights after the budget ({ddpm_points[-1].steps} steps), η = 0 for DDIM. "
            f"DDPM-1000 costs 1000 network evaluations per image, so it is scored on n = "
            f"{args.ddpm_n} only: read its KID (unbiased), not its FID, against the DDIM rows.",
            "",
            *table,
            "",
            f"Wall time per image: DDIM-50 {per_image[50] * 1000:.0f} ms, DDPM-1000 "
            f"{per_image[1000] * 1000:.0f} ms: **{per_image[1000] / per_image[50]:.1f}x** "
            "(20x fewer network evaluations).",
            "",
            "## Sampler speed: compiled loop against a Python loop",
            "",
            f"DDIM-{speed['steps']}, batch {speed['n']}, the same EMA network and x_T, median of "
            f"{args.repeats} interleaved runs. Compiled: `model.generate` (one `tf.function`, "
            "`fori_loop` over the steps). Python loop (keras-io style): a `for` over the same "
            "steps, the network called once per step, step maths in eager ops.",
            "",
            "| sampler | images/s | compiled / this | max pixel difference to compiled |",
            "|---|---:|---:|---:|",
            f"| compiled `model.generate` | {speed['compiled']:.1f} | 1.00 | 0 |",
            f"| Python loop, `network(...)` eager | {speed['eager']:.1f} | "
            f"**{speed['compiled'] / speed['eager']:.2f}** | {speed['max_diff_eager']:.1e} |",
            f"| Python loop, `predict_on_batch` | {speed['predict']:.1f} | "
            f"**{speed['compiled'] / speed['predict']:.2f}** | {speed['max_diff_predict']:.1e} |",
            "",
            "## Bits/dim bound on the test split",
            "",
            f"`DiffusionModel.variational_bound` (Ho et al. 2020, eq. 5; σ² = β̃) on {args.bpd_n} "
            "random test digits, the sum over t by stratified Monte Carlo with "
            f"{args.bpd_steps} log-spaced strata (unbiased), mean ± s.e. over digits, bits/dim:",
            "",
            "| L_T (prior) | Σ L_{t-1} (diffusion) | L_0 (decoder) | total (bound) |",
            "|---:|---:|---:|---:|",
            f"| {terms} |",
            "",
            "## Grids",
            "",
            "- DDIM-50 samples (10x10): ![samples](diffusion/ddim50_samples.png)",
            "- One DDIM-50 run, 4 images: per image a row of x_t and a row of the predicted x̂_0 "
            "at 6 evenly spaced steps, the final image last: "
            "![trajectory](diffusion/ddim50_trajectory.png)",
            "",
            f"Total wall time {r['minutes']:.1f} min. Machine load (1/5/15-min averages, other "
            f"tenants included) {' / '.join(f'{v:.1f}' for v in load_before)} at the start, "
            f"{' / '.join(f'{v:.1f}' for v in load_after)} at the end, on 2 cores shared with "
            "other jobs: absolute times are slow and noisy; the ratios come from one process.",
        ]
    )


if __name__ == "__main__":
    main()
