"""CycleGAN (Zhu et al., 2017): two ResNet generators (:mod:`zoo.translation.resnet`), two
PatchGANs with instance norm (:mod:`zoo.translation.patchgan`), trained by
:class:`zoo.trainers.cyclegan.CycleGAN`."""

from __future__ import annotations

from collections.abc import Sequence

from zoo.registry import register
from zoo.trainers.cyclegan import CycleGAN
from zoo.translation.patchgan import patch_discriminator
from zoo.translation.resnet import build_resnet_generator

# CycleGAN's learning-rate schedule (recipes: schedule = "linear_decay"); imported here so that
# loading every model module registers it and .keras files whose optimizers use it load.
from zoo.translation.schedules import LinearDecay  # noqa: F401


@register(
    "cyclegan",
    family="translator",
    description="CycleGAN: unpaired image-to-image translation, two ResNet generators, two "
    "PatchGANs, least-squares GAN, cycle and identity L1, 50-image history",
    paper="Zhu et al. 2017, Unpaired Image-to-Image Translation using Cycle-Consistent "
    "Adversarial Networks",
    tiny={"image_shape": (32, 32, 1), "filters": 8, "n_blocks": 1, "patch_layers": 2},
)
def build_cyclegan(
    image_shape: Sequence[int] = (256, 256, 3),
    filters: int = 64,
    n_blocks: int = 9,
    patch_layers: int = 3,
    lambda_cycle: float = 10.0,
    identity_weight: float = 0.5,
    pool_size: int = 50,
    seed: int | None = 0,
) -> CycleGAN:
    """Both domains have ``image_shape`` (H and W multiples of 4). ``filters``: the first
    layer's width of every network (64 in the paper); ``n_blocks`` residual blocks (9 at
    256x256, 6 at 128x128 in the paper); ``patch_layers`` stride-2 layers of each PatchGAN
    (3: 70x70 patches; 2: 34x34, for small images); ``lambda_cycle`` weighs cycle
    consistency, ``identity_weight * lambda_cycle`` the identity loss; ``pool_size`` images
    of history per discriminator (0: none)."""
    shape = tuple(int(d) for d in image_shape)
    seeds = [None if seed is None else seed * 4 + i for i in range(4)]
    generators = [
        build_resnet_generator(shape, filters=filters, n_blocks=n_blocks, seed=s, name=name)
        for s, name in zip(seeds[:2], ("generator_ab", "generator_ba"), strict=True)
    ]
    discriminators = [
        patch_discriminator(
            shape,
            filters=filters,
            n_layers=patch_layers,
            normalization="instance",
            seed=s,
            name=name,
        )
        for s, name in zip(seeds[2:], ("discriminator_a", "discriminator_b"), strict=True)
    ]
    model = CycleGAN(
        *generators,
        *discriminators,
        lambda_cycle=lambda_cycle,
        identity_weight=identity_weight,
        pool_size=pool_size,
        seed=seed,
        name="cyclegan",
    )
    model.build()
    return model
