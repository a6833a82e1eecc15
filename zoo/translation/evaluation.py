"""``zoo evaluate --task translation``: how well an image-to-image model does on held-out data.

- Paired models (Pix2Pix, super-resolution): L1, PSNR and SSIM of the outputs against the
  targets (:mod:`zoo.metrics.image_quality`), beside the baseline that does nothing: the
  source itself (identity) when source and target have one size, bicubic upsampling when
  the model upscales. Super-resolution is scored as its papers do: on the Y channel of RGB
  images with a border of ``scale`` pixels cropped (Ledig et al., 2017, §3.2).
- Unpaired models (CycleGAN): cycle-reconstruction L1 both ways, |F(G(a)) - a| and
  |G(F(b)) - b| on [0, 1] images (Zhu et al., 2017, eq. 2), and how much each translation
  changes its input. Whether translations land in the target domain needs a domain
  classifier: bench/image_to_image.py trains one.

The report goes to ``report.md`` and ``metrics.json`` with a grid of held-out rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo import data as zdata
from zoo.fileio import atomic_write_text
from zoo.metrics import image_quality as iq
from zoo.tasks import declaration_of

__all__ = ["evaluate_translation", "run_in_batches"]


def run_in_batches(fn: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``fn`` over ``images`` in batches, as one float32 array."""
    parts = [np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def paired_metrics(model: Any, sources: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """The model's and the do-nothing baseline's L1 / PSNR / SSIM on the pairs."""
    outputs = run_in_batches(model.translate, sources)
    scale = targets.shape[1] // sources.shape[1]
    y_channel = scale > 1 and targets.shape[-1] == 3
    border = scale if scale > 1 else 0
    if scale > 1:
        baseline_name, baseline = "bicubic", iq.bicubic_upscale(sources, scale)
    else:
        baseline_name, baseline = "identity", sources
    if baseline.shape[-1] != targets.shape[-1]:
        baseline = np.repeat(baseline[..., :1], targets.shape[-1], axis=-1)
    settings = {"y_channel": y_channel, "border": border}
    return {
        "model": iq.paired_report(outputs, targets, **settings),
        baseline_name: iq.paired_report(baseline, targets, **settings),
        "scored_on": ("Y channel (BT.601)" if y_channel else "all channels")
        + (f", {border}-pixel border cropped" if border else ""),
    }


def cycle_metrics(model: Any, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Cycle-reconstruction L1 both ways and the mean change each translation makes."""
    methods = [getattr(model, m) for m, _ in declaration_of(model).translations.values()]
    forward, backward = methods[0], methods[-1]
    a_to_b = run_in_batches(forward, a)
    b_to_a = run_in_batches(backward, b)
    return {
        "cycle_l1_a": float(np.mean(iq.l1(run_in_batches(backward, a_to_b), a))),
        "cycle_l1_b": float(np.mean(iq.l1(run_in_batches(forward, b_to_a), b))),
        "change_a_to_b": float(np.mean(iq.l1(a_to_b, a))),
        "change_b_to_a": float(np.mean(iq.l1(b_to_a, b))),
        "n": len(a),
    }


def _markdown(model: Any, metrics: dict[str, Any], description: str) -> str:
    lines = [f"# Translation quality of {model.name}", "", f"Data: {description}.", ""]
    if "model" in metrics:
        lines += [
            f"Scored on {metrics['scored_on']}; n = {metrics['model']['n']}.",
            "",
            "| | L1 | PSNR (dB) | SSIM |",
            "|---|---|---|---|",
        ]
        for name, row in metrics.items():
            if isinstance(row, dict):
                lines.append(
                    f"| {name} | {row['l1']:.4f} | {row['psnr']:.2f} | {row['ssim']:.4f} |"
                )
    else:
        lines += [
            f"n = {metrics['n']} per domain, images in [0, 1].",
            "",
            "| | a -> b -> a | b -> a -> b |",
            "|---|---|---|",
            "| cycle L1 | {cycle_l1_a:.4f} | {cycle_l1_b:.4f} |".format(**metrics),
            "| change made (L1) | {change_a_to_b:.4f} | {change_b_to_a:.4f} |".format(**metrics),
        ]
    return "\n".join(lines) + "\n"


def evaluate_translation(
    model: Any,
    sources: np.ndarray,
    targets: np.ndarray,
    out_dir: str | os.PathLike,
    description: str = "held-out pairs",
) -> tuple[dict[str, Any], Path]:
    """Score ``model`` on held-out ``(sources, targets)`` (unpaired models: ``(a, b)``) and
    write ``report.md``, ``metrics.json`` and ``translations.png`` into ``out_dir``."""
    declaration = declaration_of(model)
    if model.paired:
        metrics = paired_metrics(model, sources, targets)
    else:
        metrics = cycle_metrics(model, sources, targets)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    atomic_write_text(out / "report.md", _markdown(model, metrics, description))
    grid = declaration.triples(sources[:8], targets[:8])
    zdata.save_png(zdata.image_grid(grid, ncols=6), out / "translations.png")
    return metrics, out
