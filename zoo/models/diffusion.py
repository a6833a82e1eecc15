"""Diffusion builders: DDPM with a U-Net denoiser, unconditional (``ddpm``) and class-conditional
with classifier-free guidance (``cddpm``). Both train with the simple ε loss and sample by DDIM
(:class:`zoo.trainers.DiffusionModel`)."""

from __future__ import annotations

from collections.abc import Sequence

from zoo.diffusion import NoiseSchedule, build_unet
from zoo.registry import register
from zoo.trainers.diffusion import DiffusionModel


def _build(
    name: str,
    *,
    image_shape: Sequence[int],
    widths: Sequence[int],
    blocks_per_level: int,
    attention_resolutions: Sequence[int],
    groups: int,
    dropout: float,
    schedule: str,
    num_steps: int,
    num_classes: int,
    seed: int | None,
    **options,
) -> DiffusionModel:
    """One registered diffusion model: the U-Net from the network options, the schedule, and
    the trainer (named ``name``) from the rest."""
    denoiser = build_unet(
        image_shape, widths, blocks_per_level, attention_resolutions, groups=groups,
        dropout=dropout, num_classes=num_classes, seed=seed,
    )  # fmt: skip
    model = DiffusionModel(
        denoiser, schedule=NoiseSchedule(schedule, num_steps), num_classes=num_classes,
        seed=seed, name=name, **options,
    )  # fmt: skip
    model.build()
    return model


@register(
    "ddpm",
    family="diffusion",
    description="DDPM: U-Net denoiser (time embedding, GroupNorm residual blocks, "
    "self-attention), simple eps loss, EMA weights, DDIM sampling in one compiled loop",
    paper="Ho, Jain & Abbeel (2020), Denoising Diffusion Probabilistic Models; Song, Meng & "
    "Ermon (2021), Denoising Diffusion Implicit Models",
    # tiny: a one-level U-Net (its middle block keeps the attention) on a 100-step schedule
    tiny={
        "widths": (8,),
        "attention_resolutions": (),
        "groups": 4,
        "num_steps": 100,
        "sample_steps": 5,
    },
)
def ddpm(
    image_shape: Sequence[int] = (28, 28, 1),
    widths: Sequence[int] = (32, 64, 64),
    blocks_per_level: int = 1,
    attention_resolutions: Sequence[int] = (7,),
    groups: int = 8,
    dropout: float = 0.0,
    schedule: str = "linear",
    num_steps: int = 1000,
    prediction: str = "eps",
    loss_weighting: str = "none",
    ema_decay: float | None = 0.999,
    sample_steps: int = 50,
    clip_denoised: bool = True,
    anomaly_t_star: int | None = None,
    anomaly_steps: int | None = None,
    anomaly_seeds: int = 1,
    seed: int | None = 0,
) -> DiffusionModel:
    """``widths``: channels per U-Net level (each level but the last halves the resolution);
    ``attention_resolutions``: sizes with self-attention; ``schedule``: "linear" (Ho et al.,
    β from 1e-4 to 0.02) or "cosine" (Nichol & Dhariwal 2021) over ``num_steps``;
    ``anomaly_*``: the AnoDDPM score's t* (default 0.5 T), DDIM steps and noise draws."""
    return _build("ddpm", num_classes=0, **locals())


@register(
    "cddpm",
    family="diffusion",
    description="Class-conditional DDPM with classifier-free guidance (labels dropped with "
    "probability label_dropout in training, guidance scale at sampling)",
    paper="Ho & Salimans (2022), Classifier-Free Diffusion Guidance; Ho et al. (2020)",
    # tiny: a one-level U-Net (its middle block keeps the attention) on a 100-step schedule
    tiny={
        "widths": (8,),
        "attention_resolutions": (),
        "groups": 4,
        "num_steps": 100,
        "sample_steps": 5,
    },
)
def cddpm(
    image_shape: Sequence[int] = (28, 28, 1),
    widths: Sequence[int] = (32, 64, 64),
    blocks_per_level: int = 1,
    attention_resolutions: Sequence[int] = (7,),
    groups: int = 8,
    dropout: float = 0.0,
    schedule: str = "linear",
    num_steps: int = 1000,
    num_classes: int = 10,
    label_dropout: float = 0.1,
    guidance_scale: float = 2.0,
    prediction: str = "eps",
    loss_weighting: str = "none",
    ema_decay: float | None = 0.999,
    sample_steps: int = 50,
    clip_denoised: bool = True,
    anomaly_t_star: int | None = None,
    anomaly_steps: int | None = None,
    anomaly_seeds: int = 1,
    seed: int | None = 0,
) -> DiffusionModel:
    """As :func:`ddpm`, conditioned on ``num_classes`` classes; ``guidance_scale`` s mixes
    eps = eps_null + s (eps_y - eps_null) (s = 1: no guidance)."""
    if num_classes < 1:
        raise ValueError(f"cddpm needs num_classes >= 1; got {num_classes} (use ddpm)")
    return _build("cddpm", **locals())
