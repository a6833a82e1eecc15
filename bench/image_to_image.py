"""Image-to-image benchmark (issue 18): Pix2Pix, CycleGAN and SRResNet/SRGAN on the bundled
offline tasks, trained by their shipped recipes under a wall-clock budget.

Every model trains through ``zoo.recipes.train`` (the runner behind ``zoo train``) from its
recipe, for the recipe's epochs, stopped by a wall-clock callback after ``--minutes`` (a
constant learning rate: the same run cut short). A recipe with a learning-rate schedule
(CycleGAN's linear decay, the SR recipes' cosine) instead gets ``--set epochs=N`` (and
``training.steps_per_epoch``) planned from a short pilot run that measures its tracing time,
time per step and epoch-end cost (validation, grids, checkpoint), so its schedule runs its
full course in the budget. The only other override is ``training.verbose``.
Held-out pairs are the recipe's own validation pairs (``zoo.recipes.pair_data``, what
``zoo evaluate`` scores), metrics are :mod:`zoo.metrics.image_quality` and FD is the Fréchet
distance in the bundled MNIST classifier's features (:class:`zoo.metrics.SampleQualityEvaluator`).

Sections (``--only``): ``pix2pix`` (edges -> digits: vs identity and the L1-only U-Net of the
paper's ablation, trained for the same steps), ``cyclegan`` (digits <-> animals: share
assigned to the target domain by a small CNN trained here, cycle L1, FD), ``sr`` (x4: PSNR/SSIM
on Y with a 4-pixel border crop vs bicubic and nearest). Each section writes its numbers to
``<out>/image_to_image/<section>.json``; the report is assembled from every section's file, so
sections can be run one at a time.

    python -m bench.image_to_image [--minutes 5] [--only pix2pix,cyclegan,sr] [--n 1000]
        [--minutes-for srgan_x4=3]
    python -m bench.image_to_image --smoke --out /tmp/x   # tiny models, seconds of budget
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from bench.common import REPORTS, machine
from bench.image_to_image_report import SECTIONS, render
from zoo import registry
from zoo.data import image_grid, save_png
from zoo.metrics import SampleQualityEvaluator
from zoo.metrics import image_quality as iq

RECIPES = {"pix2pix": "pix2pix_edges2digits", "cyclegan": "cyclegan_digits2animals"}
RECIPES.update(srresnet="srresnet_x4", srgan="srgan_x4")
PILOT_EXECUTIONS = 3  # compiled calls the pilot times (the first one traces)
SAFETY = 0.9  # share of the budget the planned epochs may fill


# --------------------------------------------------------------------------- training


class Clock(keras.callbacks.Callback):
    """Wall-clock stop and step timing: stops ``fit`` once ``seconds`` have passed (or after
    ``executions`` compiled calls, or ``max_steps`` steps), recording when each call and
    epoch ended and the steps taken by then."""

    def __init__(self, seconds: float | None = None, executions: int | None = None,
                 max_steps: int | None = None):  # fmt: skip
        super().__init__()
        self.seconds, self.executions, self.max_steps = seconds, executions, max_steps
        self.calls: list[tuple[float, int]] = []
        self.epoch_ends: list[float] = []
        self.stopped = False

    def steps(self) -> int:
        return int(next(iter(self.model.optimizers.values())).iterations.numpy())

    def on_train_begin(self, logs: Any = None) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        now = time.perf_counter()
        self.calls.append((now - self.start, self.steps()))
        over_time = self.seconds is not None and now - self.start >= self.seconds
        enough = self.max_steps is not None and self.calls[-1][1] >= self.max_steps
        if over_time or enough or (self.executions and len(self.calls) >= self.executions):
            self.model.stop_training, self.stopped = True, bool(over_time)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.epoch_ends.append(time.perf_counter() - self.start)

    def on_train_end(self, logs: Any = None) -> None:
        self.elapsed = time.perf_counter() - self.start


class Trained(NamedTuple):
    model: Any  # the trained model, what its training cost (JSON-ready), its run folder
    summary: dict[str, Any]
    run_dir: Path


def _train(recipe: str, overrides: list[str], clock: Clock, workdir: Path, run: str) -> Any:
    from zoo.recipes import train

    keras.utils.set_random_seed(0)
    return train(recipe, logdir=workdir, overrides=overrides, run_name=run, callbacks=[clock])


def plan_budget(recipe: str, seconds: float, workdir: Path, base: list[str]) -> tuple[list, dict]:
    """Budget overrides for ``recipe`` from a pilot run (:func:`budget_overrides`)."""
    clock = Clock(executions=PILOT_EXECUTIONS)
    _train(recipe, [*base, "epochs=1"], clock, workdir, f"pilot_{Path(recipe).stem}")
    (t0, s0), (t1, s1) = clock.calls[0], clock.calls[-1]
    plan = {
        "trace_s": t0,
        # one call only (a short epoch): its time, tracing included, over its steps
        "step_s": (t1 - t0) / (s1 - s0) if s1 > s0 else t0 / max(s0, 1),
        "epoch_end_s": clock.epoch_ends[0] - t1 if clock.epoch_ends else 0.0,
        "steps_per_epoch": int(clock.params["steps"]),
    }
    return budget_overrides(plan, seconds), plan


def budget_overrides(plan: dict[str, float], seconds: float) -> list[str]:
    """The most steps that fit ``SAFETY`` x ``seconds`` after tracing, as ``epochs=E`` (and
    ``training.steps_per_epoch=S`` when shorter epochs fit more steps): each epoch costs
    S x step time + its end (validation, grids, checkpoint); S is at most a full epoch."""
    available = SAFETY * seconds - plan["trace_s"]
    full, step, end = int(plan["steps_per_epoch"]), plan["step_s"], plan["epoch_end_s"]
    best = (1, max(1, min(full, math.floor((available - end) / step + 1e-9))))
    for epochs in range(1, 10_000):
        per_epoch = min(full, math.floor((available / epochs - end) / step + 1e-9))
        if per_epoch < 1:
            break
        if epochs * per_epoch > best[0] * best[1]:
            best = (epochs, per_epoch)
    epochs, per_epoch = best
    return [f"epochs={epochs}"] + (
        [f"training.steps_per_epoch={per_epoch}"] if per_epoch < full else []
    )


def has_schedule(spec: Any) -> bool:
    """Whether a recipe's ``[optimizer]`` holds a learning-rate schedule (a table with
    ``schedule``): its course depends on the planned number of steps."""
    return isinstance(spec, dict) and ("schedule" in spec or any(map(has_schedule, spec.values())))


def train_recipe(
    recipe: str, seconds: float, workdir: Path, extra: list[str], args: argparse.Namespace,
    max_steps: int | None = None,
) -> Trained:  # fmt: skip
    """Train ``recipe`` (with ``extra`` overrides: the ablation's model settings) for its own
    epochs, stopped after ``seconds`` or ``max_steps``. A recipe with a learning-rate schedule
    gets the epochs that fit ``seconds`` instead, planned by a pilot run, so that its schedule
    runs its course; a constant-rate recipe stopped by the clock is the same run cut short."""
    from zoo.recipes import load_recipe

    base = [*extra, "training.verbose=0", *smoke_overrides(recipe, args)]
    budget: list[str] = ["epochs=1", "training.steps_per_epoch=2"] if args.smoke else []
    plan: dict[str, float] = {}
    if not args.smoke and max_steps is None and has_schedule(load_recipe(recipe).optimizer):
        budget, plan = plan_budget(recipe, seconds, workdir, base)
    overrides = [*base, *budget]
    clock = Clock(seconds=seconds, max_steps=max_steps)
    name = Path(recipe).stem + "".join(f"_{o.split('=')[0].split('.')[-1]}" for o in extra)
    print(f"training {recipe} ({' '.join(overrides)}), at most {seconds / 60:.1f} min", flush=True)
    result = _train(recipe, overrides, clock, workdir, name)
    summary = {
        "recipe": recipe, "overrides": [*extra, *budget], "seconds": clock.elapsed,
        "recipe_epochs": load_recipe(recipe).epochs, "budget_s": seconds,
        "steps": clock.steps(), "epochs": len(clock.epoch_ends),
        "stopped_by_clock": clock.stopped, "plan": plan,
    }  # fmt: skip
    print(f"  {summary['steps']} steps in {clock.elapsed:.0f} s", flush=True)
    return Trained(result.model, summary, result.run_dir)


def smoke_overrides(recipe: str, args: argparse.Namespace) -> list[str]:
    """``--smoke``: the registered tiny config's sizes over the recipe's (its shapes and
    scale stay the recipe's, so the data fit)."""
    if not args.smoke:
        return []
    from zoo.recipes import load_recipe

    tiny = registry.get_spec(load_recipe(recipe).model).tiny or {}
    keep = {k: v for k, v in tiny.items() if not k.endswith("_shape") and k != "scale"}
    return [
        f"model_config.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
        for k, v in keep.items()
    ]


# --------------------------------------------------------------------------- data, outputs


def seconds(args: argparse.Namespace, model: str) -> float:
    """The training budget of ``model`` (a key of :data:`RECIPES`) in seconds."""
    return 60 * args.minutes_for.get(RECIPES[model], args.minutes)


def pairs_of(model: Any, recipe: str, n: int | None, train: bool = False) -> tuple:
    """The recipe's first ``n`` held-out (source, target) pairs, as ``zoo evaluate`` has them,
    or (``train``) its first ``n`` training elements before augmentation, as arrays."""
    from zoo.recipes import load_recipe
    from zoo.recipes.pair_data import build_pair_data

    from zoo.tasks import declaration_of

    shapes = declaration_of(model).pair_shapes
    data = build_pair_data(load_recipe(recipe), *shapes, bool(model.paired))
    ds = data.train if train else data.validation
    parts = list((ds if n is None else ds.take(n)).batch(512).as_numpy_iterator())
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def apply(fn: Any, images: np.ndarray, batch: int = 128) -> np.ndarray:
    return np.concatenate(
        [np.asarray(fn(images[i : i + batch])) for i in range(0, len(images), batch)]
    )


def save_grid(columns: list[np.ndarray], path: Path, rows: int = 8) -> str:
    """Rows spread evenly over the held-out set (the digit splits are ordered by class)."""
    pick = np.linspace(0, len(columns[0]) - 1, rows).round().astype(int)
    stacked = np.stack([np.asarray(c, np.float32)[pick] for c in columns], axis=1)
    save_png(image_grid(stacked.reshape(-1, *stacked.shape[2:]), ncols=len(columns)), path)
    return path.name


def digit_size(images: np.ndarray) -> np.ndarray:
    """Images at the bundled MNIST classifier's 28x28x1 (bilinear, antialiased), for FD."""
    import tensorflow as tf

    x = np.asarray(images, np.float32)
    if x.shape[1:3] != (28, 28):
        x = tf.image.resize(x, (28, 28), antialias=True).numpy()
    return np.clip(x[..., :1] if x.shape[-1] == 1 else x.mean(-1, keepdims=True), 0, 1)


# --------------------------------------------------------------------------- sections


def pix2pix_section(args: argparse.Namespace, work: Path, grids: Path) -> dict[str, Any]:
    from zoo.trainers.translation_tasks import to_target_size

    recipe = RECIPES["pix2pix"]
    gan = train_recipe(recipe, seconds(args, "pix2pix"), work, [], args)
    ablation = ["model_config.adversarial_weight=0"]  # the same steps as pix2pix took
    steps, guard = gan.summary["steps"], 3 * gan.summary["seconds"]
    l1 = train_recipe(recipe, guard, work, ablation, args, max_steps=steps)
    sources, targets = pairs_of(gan.model, recipe, args.n)
    _, reference = pairs_of(gan.model, recipe, args.reference, train=True)
    evaluator = SampleQualityEvaluator(digit_size(reference), digit_size(targets), seed=0)
    outputs = {
        "identity (output = source)": to_target_size(sources, targets.shape[1:]),
        "U-Net, L1 only": apply(l1.model.translate, sources),
        "pix2pix (cGAN + 100 L1)": apply(gan.model.translate, sources),
    }
    rows = {
        name: {
            **iq.paired_report(out, targets),
            "fd": evaluator.evaluate(digit_size(out)).generated.fid,
        }
        for name, out in outputs.items()
    }
    grid = save_grid([sources, *list(outputs.values())[1:], targets], grids / "pix2pix.png")
    return {
        "recipe": recipe, "n": len(targets), "n_reference": len(reference),
        "rows": rows, "fd_floor": evaluator.floor.fid,
        "training": {"pix2pix": gan.summary, "l1_only": l1.summary}, "grid": grid,
    }  # fmt: skip


def domain_classifier(a: np.ndarray, b: np.ndarray, epochs: int, seed: int = 0) -> keras.Model:
    """A small CNN telling domain A (0) from domain B (1), one logit."""
    keras.utils.set_random_seed(seed)
    x = np.concatenate([a, b]).astype(np.float32)
    y = np.concatenate([np.zeros(len(a)), np.ones(len(b))]).astype(np.float32)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(a.shape[1:]), layers.Conv2D(32, 3, 2, "same", activation="relu"),
        layers.Conv2D(64, 3, 2, "same", activation="relu"), layers.Flatten(),
        layers.Dense(64, activation="relu"), layers.Dense(1),
    ])  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    return model


def is_b(classifier: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.asarray(classifier.predict(images, batch_size=256, verbose=0))[:, 0] > 0


def cyclegan_section(args: argparse.Namespace, work: Path, grids: Path) -> dict[str, Any]:
    recipe = RECIPES["cyclegan"]
    trained = train_recipe(recipe, seconds(args, "cyclegan"), work, [], args)
    model = trained.model
    a, b = pairs_of(model, recipe, args.n)
    a_train, b_train = pairs_of(model, recipe, args.reference, train=True)
    classifier = domain_classifier(a_train, b_train, epochs=1 if args.smoke else 3)
    accuracy = float(np.mean(np.concatenate([~is_b(classifier, a), is_b(classifier, b)])))
    methods = [getattr(model, method) for method, _ in model.TRANSLATIONS.values()]
    forward, backward = methods[0], methods[-1]  # TRANSLATIONS order: A -> B first
    ab, ba = apply(forward, a), apply(backward, b)
    aba, bab = apply(backward, ab), apply(forward, ba)
    eval_a = SampleQualityEvaluator(digit_size(a_train), digit_size(a), seed=0)
    eval_b = SampleQualityEvaluator(digit_size(b_train), digit_size(b), seed=0)
    directions = {
        label: {
            "to_target": float(np.mean(is_b(classifier, out) == to_b)),
            "cycle_l1": float(iq.l1(back, x).mean()),
            "fd": target.evaluate(digit_size(out)).generated.fid, "fd_floor": target.floor.fid,
        }
        for label, x, out, back, target, to_b in (
            ("A -> B (digits -> animals)", a, ab, aba, eval_b, True),
            ("B -> A (animals -> digits)", b, ba, bab, eval_a, False),
        )
    }  # fmt: skip
    grid_ab = save_grid([a, ab, aba], grids / "cyclegan_a2b.png")
    grid_ba = save_grid([b, ba, bab], grids / "cyclegan_b2a.png")
    return {
        "recipe": recipe, "n": len(a), "n_reference": len(a_train),
        "classifier_accuracy": accuracy, "directions": directions,
        "training": {"cyclegan": trained.summary}, "grids": [grid_ab, grid_ba],
    }  # fmt: skip


def sr_section(args: argparse.Namespace, work: Path, grids: Path) -> dict[str, Any]:
    srresnet = train_recipe(RECIPES["srresnet"], seconds(args, "srresnet"), work, [], args)
    init = srresnet.run_dir / "model.keras"
    if not init.exists():  # the clock stopped it before the runner's final save
        srresnet.model.save(init)
    srgan = train_recipe(RECIPES["srgan"], seconds(args, "srgan"), work, sr_init(init), args)
    srgan.summary["overrides"][0] = sr_init("<the SRResNet above>.keras")[0]
    lr, hr = pairs_of(srresnet.model, RECIPES["srresnet"], args.n)
    scale = hr.shape[1] // lr.shape[1]
    outputs = {
        "nearest": iq.nearest_upscale(lr, scale),
        "bicubic": iq.bicubic_upscale(lr, scale),
        "SRResNet (MSE)": apply(srresnet.model.upscale, lr, 32),
        "SRGAN": apply(srgan.model.upscale, lr, 32),
    }
    y = hr.shape[-1] == 3
    rows = {k: iq.paired_report(v, hr, y_channel=y, border=scale) for k, v in outputs.items()}
    grid = save_grid([outputs["nearest"], *list(outputs.values())[1:], hr], grids / "sr.png", 6)
    return {
        "recipes": [RECIPES["srresnet"], RECIPES["srgan"]], "n": len(hr), "scale": scale,
        "hr_shape": list(hr.shape[1:]), "y_channel": y, "rows": rows,
        "training": {"srresnet": srresnet.summary, "srgan": srgan.summary}, "grid": grid,
    }  # fmt: skip


def sr_init(path: Path | str) -> list[str]:
    """The override that starts ``srgan_x4`` from the SRResNet just trained."""
    return [f'model_config.generator_weights="{path}"']


RUNNERS = {"pix2pix": pix2pix_section, "cyclegan": cyclegan_section, "sr": sr_section}


def run_section(name: str, args: argparse.Namespace, out: Path, command: str) -> dict[str, Any]:
    folder = out / "image_to_image"
    folder.mkdir(parents=True, exist_ok=True)
    start, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"i2i_{name}_") as work:
        result = RUNNERS[name](args, Path(work), folder)
    result.update(
        command=command, minutes=(time.perf_counter() - start) / 60, commit=commit(),
        grid_rows="spread",
        load=[load, os.getloadavg()[0]], machine=machine(), smoke=bool(args.smoke),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )  # fmt: skip
    (folder / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def commit() -> str:
    """The repository's HEAD (short), ``+`` when the working tree has uncommitted changes."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPORTS.parent.parent, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain") else "")


def load_results(out: Path) -> dict[str, dict[str, Any]]:
    folder = out / "image_to_image"
    return {
        name: json.loads((folder / f"{name}.json").read_text())
        for name in SECTIONS
        if (folder / f"{name}.json").is_file()
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument(
        "--minutes-for", action="append", default=[], metavar="RECIPE=MINUTES",
        help="another budget for one recipe (repeatable)",
    )  # fmt: skip
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--n", type=int, default=1000, help="held-out pairs scored (at most)")
    parser.add_argument("--reference", type=int, default=None, help="training images for FD")
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2 steps each")
    parser.add_argument("--out", type=Path, default=REPORTS, help="where the report goes")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.smoke:
        args.n, args.reference = min(args.n, 48), args.reference or 400
    try:
        args.minutes_for = {k: float(v) for k, v in (i.split("=") for i in args.minutes_for)}
    except ValueError:
        parser.error(f"--minutes-for takes RECIPE=MINUTES, e.g. srgan_x4=3; got {args.minutes_for}")
    command = "python -m bench.image_to_image" + (f" {' '.join(argv)}" if argv else "")
    for name in sections:
        run_section(name, args, args.out, command)
    path = args.out / "image_to_image.md"
    text = render(load_results(args.out))
    path.write_text(text)
    print(text)
    return path


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
