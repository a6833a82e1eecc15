"""The markdown of bench/reports/image_to_image.md, rendered from the per-section results of
:mod:`bench.image_to_image` (each section's JSON), so a section can be rerun alone."""

from __future__ import annotations

import math
from typing import Any

#: The report's sections, in order (bench.image_to_image runs them).
SECTIONS = ("pix2pix", "cyclegan", "sr")

#: Ledig et al. (2017), Table 2, Set5 x4 (PSNR dB / SSIM on Y, trained on ImageNet).
LEDIG_SET5 = {"bicubic": (28.43, 0.8211), "SRResNet": (32.05, 0.9019), "SRGAN": (29.40, 0.8472)}


def rows_text(r: dict[str, Any]) -> str:
    """Which held-out examples a section's grid shows (runs before the spread rows showed the
    first ones: class-ordered splits made them one class)."""
    return "evenly spaced" if r.get("grid_rows") == "spread" else "the first"


def fmt(value: float, digits: int = 3) -> str:
    return "∞" if math.isinf(value) else f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def trained_text(t: dict[str, Any]) -> str:
    clock = ", stopped by the clock" if t["stopped_by_clock"] else ""
    budget = f", `{' '.join(t['overrides'])}`" if t["overrides"] else ""
    planned = [o.split("=", 1)[1] for o in t["overrides"] if o.startswith("epochs=")]
    epochs = (
        f"{t['epochs']} of {planned[0]} epochs planned for the budget instead of the "
        f"recipe's {t['recipe_epochs']}{budget}"
        if planned
        else f"{t['epochs']} of {t['recipe_epochs']} epochs{budget}"
    )
    minutes, budget = t["seconds"] / 60, t["budget_s"] / 60
    return f"{t['steps']:,} steps ({epochs}) in {minutes:.1f} min (budget {budget:.1f}){clock}"


def pix2pix_text(r: dict[str, Any]) -> list[str]:
    rows, t = r["rows"], r["training"]
    gan, l1 = rows["pix2pix (cGAN + 100 L1)"]["fd"], rows["U-Net, L1 only"]["fd"]
    return [
        f"## Pix2Pix: edges → digits (`{r['recipe']}`)", "",
        f"pix2pix: {trained_text(t['pix2pix'])}. The L1-only U-Net (`--set "
        f"model_config.adversarial_weight=0`, the ablation of Isola et al. 2017, Table 1): the "
        f"same steps, {trained_text(t['l1_only'])}. Scores on the recipe's first {r['n']} "
        f"held-out pairs: L1, PSNR, SSIM against the target digits; FD = Fréchet distance in the "
        f"bundled MNIST classifier's features (images resized to 28x28) against "
        f"{r['n_reference']} training digits. The floor is the held-out target digits themselves "
        "against the same reference: what a perfect translation scores.", "",
        "| output | L1 ↓ | PSNR (dB) ↑ | SSIM ↑ | FD ↓ |", "|---|---:|---:|---:|---:|",
        *(f"| {k} | {fmt(v['l1'], 4)} | {fmt(v['psnr'], 2)} | {fmt(v['ssim'])} | "
          f"{fmt(v['fd'], 2)} |" for k, v in rows.items()),
        f"| real held-out digits (floor) | 0 | ∞ | 1 | {fmt(r['fd_floor'], 2)} |", "",
        f"Target (pix2pix beats the L1-only U-Net in FD): {verdict(gan < l1)} ({fmt(gan, 2)} vs "
        f"{fmt(l1, 2)}; floor {fmt(r['fd_floor'], 2)}: pix2pix closes "
        f"{100 * (l1 - gan) / max(l1 - r['fd_floor'], 1e-12):.0f}% of the L1-only U-Net's gap to "
        "the floor; one seed and one held-out set, no error bars). Per pixel, the L1-only U-Net "
        "scores "
        f"{fmt(rows['U-Net, L1 only']['psnr'], 2)} dB PSNR and pix2pix "
        f"{fmt(rows['pix2pix (cGAN + 100 L1)']['psnr'], 2)} dB: the L1 loss alone optimises the "
        "pixel error directly, while the cGAN term pays pixel error for sharper, more digit-like "
        "strokes (Isola et al. 2017, §4.2: L1 alone is blurry).", "",
        f"![pix2pix](image_to_image/{r['grid']}) rows ({rows_text(r)} held-out pairs): "
        "source | L1 only | pix2pix | target", "",
    ]  # fmt: skip


def cyclegan_text(r: dict[str, Any]) -> list[str]:
    d = r["directions"]
    share = min(v["to_target"] for v in d.values())
    cycle = max(v["cycle_l1"] for v in d.values())
    return [
        f"## CycleGAN: digits ↔ animals (`{r['recipe']}`)", "",
        f"cyclegan: {trained_text(r['training']['cyclegan'])}. Domain classifier: a small CNN "
        "(two stride-2 convolutions, a 64-unit dense layer, one logit, 3 epochs) trained here "
        f"on {r['n_reference']} training images of each domain; held-out accuracy "
        f"{100 * r['classifier_accuracy']:.1f}%. "
        f"{r['n']} held-out images per domain. Cycle L1: mean |F(G(x)) - x| on [0, 1]. FD: "
        "Fréchet distance in the bundled MNIST classifier's features for both domains (a digit "
        "classifier's features still separate silhouettes; numbers compare within a row), "
        "against the target domain's training images, beside the target's held-out real images "
        "against the same reference (the floor).", "",
        "| direction | to target domain ↑ | cycle L1 ↓ | FD to target ↓ | floor |",
        "|---|---:|---:|---:|---:|",
        *(f"| {k} | {100 * v['to_target']:.1f}% | {fmt(v['cycle_l1'], 4)} | {fmt(v['fd'], 2)} | "
          f"{fmt(v['fd_floor'], 2)} |" for k, v in d.items()), "",
        f"Targets: ≥ 90% to the target domain {verdict(share >= 0.9)} (lowest {100 * share:.1f}%); "
        f"cycle L1 < 0.05 {verdict(cycle < 0.05)} (highest {fmt(cycle, 4)}).", "",
        *(f"![cyclegan](image_to_image/{g}) rows ({rows_text(r)} held-out images): x | G(x) | "
          "F(G(x))" for g in r["grids"]), "",
    ]  # fmt: skip


def sr_text(r: dict[str, Any]) -> list[str]:
    rows, s = r["rows"], r["scale"]
    gain = rows["SRResNet (MSE)"]["psnr"] - rows["bicubic"]["psnr"]
    where = "Y (BT.601)" if r["y_channel"] else "the gray channel"
    set5 = LEDIG_SET5
    adv = rows["SRGAN"]["psnr"] - rows["SRResNet (MSE)"]["psnr"]
    return [
        f"## Super-resolution x{s} (`{r['recipes'][0]}`, then `{r['recipes'][1]}`)", "",
        f"SRResNet: {trained_text(r['training']['srresnet'])}. SRGAN, started from that "
        f"SRResNet: {trained_text(r['training']['srgan'])}. {r['n']} held-out "
        f"{'x'.join(map(str, r['hr_shape']))} crops of the test photographs; low-resolution "
        f"inputs by antialiased bicubic downscaling. PSNR and SSIM on {where} with a {s}-pixel "
        "border crop, as the SR papers state them; L1 on all channels, no crop.", "",
        "| method | PSNR (dB) ↑ | SSIM ↑ | L1 ↓ |", "|---|---:|---:|---:|",
        *(f"| {k} | {fmt(v['psnr'], 2)} | {fmt(v['ssim'], 4)} | {fmt(v['l1'], 4)} |"
          for k, v in rows.items()), "",
        f"Target (SRResNet ≥ bicubic + 1.5 dB): {verdict(gain >= 1.5)} ({gain:+.2f} dB). "
        f"Ledig et al. (2017, Table 2, Set5 x4, ImageNet training for 10^6 steps): bicubic "
        f"{set5['bicubic'][0]:.2f} dB, SRResNet {set5['SRResNet'][0]:.2f} dB "
        f"({set5['SRResNet'][0] - set5['bicubic'][0]:+.2f} dB), SRGAN "
        f"{set5['SRGAN'][0]:.2f} dB (lower "
        "PSNR by design: its perceptual loss trades pixel fidelity for texture). Here SRGAN is "
        f"{adv:+.2f} dB from its SRResNet start; its content loss is pixel MSE (the offline "
        "default: the paper's SRGAN-MSE variant, not VGG54).", "",
        f"![sr](image_to_image/{r['grid']}) rows ({rows_text(r)} held-out crops), "
        "columns: LR (nearest) | bicubic | SRResNet | SRGAN | HR", "",
    ]  # fmt: skip


TEXTS = {"pix2pix": pix2pix_text, "cyclegan": cyclegan_text, "sr": sr_text}


def render(results: dict[str, dict[str, Any]]) -> str:
    """The report from each section's numbers (``results``: section -> its JSON)."""
    runs = [
        f"- `{name}`: `{r['command']}` on {r['date']} at commit {r.get('commit', '?')}, "
        f"{r['minutes']:.1f} min wall, load "
        f"{r['load'][0]:.1f} → "
        f"{r['load'][1]:.1f}{' (SMOKE: tiny models, 2 steps)' if r['smoke'] else ''}"
        for name, r in results.items()
    ]
    machines = sorted({r["machine"] for r in results.values()})
    body = [
        "# Image-to-image: Pix2Pix, CycleGAN, SRResNet/SRGAN", "",
        "Made by `python -m bench.image_to_image` (sections run as listed):", "", *runs, "",
        f"Machine: {'; '.join(machines)}.", "",
        "Every model trains through `zoo.recipes.train` from its shipped recipe, stopped by a "
        "wall-clock budget (a recipe with a learning-rate schedule instead gets the epochs and "
        "steps per epoch that fit, from a pilot run's measured step time, so its schedule runs "
        "its course); the only other "
        "override is `training.verbose`. Held-out pairs are the recipe's own (`zoo evaluate`'s). "
        "Metrics: "
        "`zoo.metrics.image_quality` (PSNR: 10 log10(1/MSE) on [0, 1]; SSIM: Wang et al. 2004, "
        "11x11 Gaussian window, sigma 1.5).", "",
    ]  # fmt: skip
    for name in SECTIONS:
        if name in results:
            body += TEXTS[name](results[name])
    return "\n".join(body).rstrip() + "\n"


# --------------------------------------------------------------------------- main
