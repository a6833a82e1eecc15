"""bench/image_to_image.py: the budget plan from a pilot's timings, the report's tables and
verdicts from given numbers, and a smoke run (tiny pix2pix, two steps) whose report holds the
numbers it computed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import zoo
from bench import image_to_image as bench
from bench import image_to_image_report as report
from zoo.metrics import image_quality as iq

PLAN = {"trace_s": 10.0, "step_s": 0.1, "epoch_end_s": 5.0, "steps_per_epoch": 100}


def test_only_recipes_with_a_learning_rate_schedule_are_planned():
    from zoo.recipes import load_recipe

    assert bench.has_schedule(load_recipe("cyclegan_digits2animals").optimizer)
    assert not bench.has_schedule(load_recipe("pix2pix_edges2digits").optimizer)
    assert not bench.has_schedule({"name": "adam", "learning_rate": 1e-4})


def test_the_budget_fills_whole_epochs_after_tracing():
    # 0.9 * 300 - 10 = 260 s; an epoch is 100 * 0.1 + 5 = 15 s: 17 epochs (255 s)
    assert bench.budget_overrides(PLAN, 300) == ["epochs=17"]
    # 0.9 * 20 - 10 = 8 s: no whole epoch fits; (8 - 5) / 0.1 = 30 steps in one epoch
    assert bench.budget_overrides(PLAN, 20) == ["epochs=1", "training.steps_per_epoch=30"]
    assert bench.budget_overrides(PLAN, 1) == ["epochs=1", "training.steps_per_epoch=1"]
    # costly epoch ends (validation): 0.9 * 480 - 83 = 349 s; one full epoch (250 steps) leaves
    # 114 s unused, two epochs of 174 steps take 2 * (174 * 0.81 + 33) = 347.9 s: 348 steps
    slow = {"trace_s": 83.0, "step_s": 0.81, "epoch_end_s": 33.0, "steps_per_epoch": 250}
    assert bench.budget_overrides(slow, 480) == ["epochs=2", "training.steps_per_epoch=174"]


def training(steps: int, seconds: float = 60.0, clock: bool = False) -> dict:
    return {
        "recipe": "r", "overrides": [], "seconds": seconds, "budget_s": 90.0,
        "steps": steps, "epochs": steps // 10, "recipe_epochs": 20, "stopped_by_clock": clock,
        "plan": {},
    }  # fmt: skip


def test_a_budget_plan_is_reported_beside_the_recipes_epochs():
    planned = {**training(1540), "epochs": 7, "recipe_epochs": 6,
               "overrides": ["epochs=7", "training.steps_per_epoch=220"]}  # fmt: skip
    assert report.trained_text(planned).startswith(
        "1,540 steps (7 of 7 epochs planned for the budget instead of the recipe's 6, "
        "`epochs=7 training.steps_per_epoch=220`) in 1.0 min (budget 1.5)"
    )
    assert report.trained_text(training(300)).startswith("300 steps (30 of 20 epochs) in")


def run_info(**extra) -> dict:
    return {
        "command": "python -m bench.image_to_image --only x", "date": "2026-12-01 10:00 UTC",
        "minutes": 3.0, "load": [1.0, 2.0], "machine": "test box",
        "smoke": False, **extra,
    }  # fmt: skip


def pix2pix_result(gan_fd: float, l1_fd: float) -> dict:
    row = {"l1": 0.05, "psnr": 18.25, "ssim": 0.8}
    return run_info(
        recipe="pix2pix_edges2digits", n=100, n_reference=400, fd_floor=1.5, grid="p.png",
        rows={
            "identity (output = source)": {"l1": 0.2, "psnr": 9.0, "ssim": 0.1, "fd": 60.0},
            "U-Net, L1 only": {**row, "fd": l1_fd},
            "pix2pix (cGAN + 100 L1)": {**row, "psnr": 17.5, "fd": gan_fd},
        },
        training={"pix2pix": training(500), "l1_only": training(500, 40.0)},
    )  # fmt: skip


def cyclegan_result(share: float, cycle: float) -> dict:
    return run_info(
        recipe="cyclegan_digits2animals", n=100, n_reference=400, classifier_accuracy=0.995,
        grids=["a.png", "b.png"], training={"cyclegan": training(300, clock=True)},
        directions={
            "A -> B (digits -> animals)": {
                "to_target": 0.97, "cycle_l1": 0.03, "fd": 12.0, "fd_floor": 3.0},
            "B -> A (animals -> digits)": {
                "to_target": share, "cycle_l1": cycle, "fd": 8.0, "fd_floor": 1.5},
        },
    )  # fmt: skip


def sr_result(srresnet_psnr: float) -> dict:
    rows = {
        "nearest": {"l1": 0.06, "psnr": 22.0, "ssim": 0.6},
        "bicubic": {"l1": 0.05, "psnr": 23.5, "ssim": 0.65},
        "SRResNet (MSE)": {"l1": 0.04, "psnr": srresnet_psnr, "ssim": 0.7},
        "SRGAN": {"l1": 0.045, "psnr": 24.0, "ssim": 0.68},
    }
    return run_info(
        recipes=["srresnet_x4", "srgan_x4"], n=50, scale=4, hr_shape=[64, 64, 3], y_channel=True,
        rows=rows, training={"srresnet": training(800), "srgan": training(200)}, grid="s.png",
    )  # fmt: skip


def test_report_tables_and_verdicts_follow_the_numbers():
    text = bench.render(
        {"pix2pix": pix2pix_result(5.0, 9.0), "cyclegan": cyclegan_result(0.95, 0.04),
         "sr": sr_result(25.25)}
    )  # fmt: skip
    assert "| pix2pix (cGAN + 100 L1) | 0.0500 | 17.50 | 0.800 | 5.00 |" in text
    assert "| real held-out digits (floor) | 0 | ∞ | 1 | 1.50 |" in text
    assert "Target (pix2pix beats the L1-only U-Net in FD): **met** (5.00 vs 9.00" in text
    assert "| B -> A (animals -> digits) | 95.0% | 0.0400 | 8.00 | 1.50 |" in text
    assert "≥ 90% to the target domain **met** (lowest 95.0%)" in text
    assert "cycle L1 < 0.05 **met** (highest 0.0400)" in text
    assert "held-out accuracy 99.5%" in text
    assert "300 steps (30 of 20 epochs) in 1.0 min (budget 1.5), stopped by the clock" in text
    assert "| SRResNet (MSE) | 25.25 | 0.7000 | 0.0400 |" in text
    assert "(SRResNet ≥ bicubic + 1.5 dB): **met** (+1.75 dB)" in text
    assert "SRResNet 32.05 dB (+3.62 dB)" in text  # Ledig et al.'s Set5 figures
    # each section's command and run facts are listed
    assert text.count("`python -m bench.image_to_image --only x` on 2026-12-01 10:00 UTC") == 3

    worse = bench.render(
        {"pix2pix": pix2pix_result(9.5, 9.0), "cyclegan": cyclegan_result(0.85, 0.07),
         "sr": sr_result(24.75)}
    )  # fmt: skip
    assert "in FD): **not met** (9.50 vs 9.00" in worse
    assert "≥ 90% to the target domain **not met** (lowest 85.0%)" in worse
    assert "cycle L1 < 0.05 **not met** (highest 0.0700)" in worse
    assert "**not met** (+1.25 dB)" in worse
    # only the sections given are rendered
    only = bench.render({"sr": sr_result(25.0)})
    assert "## Super-resolution x4" in only and "Pix2Pix" not in only.split("\n\n", 3)[-1]


def test_smoke_run_writes_a_report_holding_its_numbers(tmp_path):
    path = bench.main(["--smoke", "--only", "pix2pix", "--out", str(tmp_path)])
    text = path.read_text()
    result = json.loads((tmp_path / "image_to_image" / "pix2pix.json").read_text())
    assert result["smoke"] and result["n"] == 48
    assert result["training"]["pix2pix"]["steps"] == 2 == result["training"]["l1_only"]["steps"]
    for name, row in result["rows"].items():
        assert math.isfinite(row["fd"]) and 0 <= row["l1"] <= 1 and -1 <= row["ssim"] <= 1
        cells = f"| {name} | {row['l1']:.4f} | {row['psnr']:.2f} | {row['ssim']:.3f} | "
        assert cells + f"{row['fd']:.2f} |" in text
    # the identity baseline is the sources scored as outputs: its numbers are recomputed here
    model = zoo.load("pix2pix_tiny")
    sources, targets = bench.pairs_of(model, "pix2pix_edges2digits", 48)
    identity = result["rows"]["identity (output = source)"]
    assert identity["l1"] == pytest.approx(float(np.mean(iq.l1(sources, targets))))
    assert identity["psnr"] == pytest.approx(float(np.mean(iq.psnr(sources, targets))))
    assert f"{result['fd_floor']:.2f} |" in text
    assert (tmp_path / "image_to_image" / "pix2pix.png").is_file()
    assert "(SMOKE: tiny models, 2 steps)" in text
