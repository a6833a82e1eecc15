"""The README's main job (``make demo``): train the demo models on the bundled sample."""

from __future__ import annotations

import os
import time
from pathlib import Path

from zoo.recipes import train

#: (recipe, overrides) for each demo model: brief, but long enough to see digits.
DEMO_RUNS: dict[str, list[str]] = {
    "dcgan_mnist": ["epochs=15", "training.verbose=2"],
    "conv_ae_mnist": ["epochs=5", "training.verbose=2"],
}
QUICK = ["epochs=1", "training.steps_per_epoch=2", "training.verbose=0", "logging.num_samples=16"]


def run_demo(out: str | os.PathLike = "demo_output", *, quick: bool = False) -> dict[str, Path]:
    """Train each demo recipe into ``out/runs`` and print where everything went."""
    out = Path(out)
    logdir = out / "runs"
    results = {}
    started = time.perf_counter()
    for recipe, overrides in DEMO_RUNS.items():
        print(f"\n== training {recipe} ({' '.join(overrides)}) ==", flush=True)
        result = train(
            recipe, logdir=logdir, overrides=overrides + (QUICK if quick else []), overwrite=True
        )
        results[recipe] = result.run_dir
    elapsed = time.perf_counter() - started
    print(f"\n== demo finished in {elapsed:.0f} s ==")
    for recipe, run_dir in results.items():
        grids = sorted((run_dir / "samples").glob("*.png"))
        print(f"{recipe}:")
        print(f"  model       {run_dir / 'model.keras'}")
        print(f"  checkpoints {run_dir / 'checkpoints'}")
        print(f"  last grid   {grids[-1] if grids else '(none)'}")
    print(f"TensorBoard:  tensorboard --logdir {logdir}")
    return results
